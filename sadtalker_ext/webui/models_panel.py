"""The Models panel: weight files present / missing / corrupt (with sizes), and the Download button."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from ..errors import CancelledError, SadTalkerError
from .jobs import Session, cancel_requested, message_html


def download_weights(
    session: Session,
    id_task: str,
    sizes: Sequence[Any],
    full: bool,
    detector: bool,
    enhancer: bool = False,
    background: bool = False,
) -> list[Any]:
    """The Download button: fetch the selected weight files with the host progress bar; ``[status html, log]``."""
    from ..download import download
    from ..weights import Selection

    state = session.host.state
    chosen = tuple(sorted({int(s) for s in (sizes or [256])}))
    selection = Selection(
        sizes=chosen,
        full=bool(full),
        detector=bool(detector),
        enhancer=bool(enhancer),
        background=bool(background),
        crop=True,
    )
    state.job_count = 1
    state.textinfo = "SadTalker: checking weight files"

    def on_progress(p: Any) -> None:
        state.job_no = 0
        state.sampling_steps = max(int(p.total), 1)
        state.sampling_step = min(int(p.done), state.sampling_steps)
        mb = f" {p.done / 1e6:.0f}/{p.total / 1e6:.0f} MB" if p.total else ""
        state.textinfo = f"SadTalker download [{p.index}/{p.count}] {p.name}: {p.phase}{mb}"

    try:
        report = download(
            selection, session.model_dirs(), progress=on_progress, cancel=cancel_requested(state)
        )
    except CancelledError:
        return [
            status_html(session),
            message_html("Download interrupted; partial files are resumed next time."),
        ]
    text = report.summary() or "nothing selected"
    verdict = "All selected files are present." if report.ok else "Some files could not be fetched:"
    return [status_html(session), f"<div><p>{html.escape(verdict)}</p><pre>{html.escape(text)}</pre></div>"]


def status_rows(session: Session) -> list[dict[str, Any]]:
    """Weight files: name, state (present/missing/corrupt), size in bytes, path, what needs them."""
    from ..weights import model_status

    rows = model_status(session.model_dirs(), check_structure=False)
    return [
        {
            "name": r.name,
            "state": r.state,
            "size": r.size,
            "path": str(r.path),
            "needed_for": list(r.needed_for),
            "detail": r.detail,
        }
        for r in rows
    ]


def status_html(session: Session) -> str:
    """The model status panel: folders, one table row per weight file, models in memory."""
    try:
        dirs = session.model_dirs()
        rows = status_rows(session)
    except SadTalkerError as exc:
        return message_html(f"Model status unavailable: {exc}", "error")
    body = "".join(
        f"<tr class='sadtalker-{html.escape(r['state'])}'><td>{html.escape(r['name'])}</td>"
        f"<td>{html.escape(r['state'])}</td><td>{r['size'] / 1e6:.1f} MB</td>"
        f"<td>{html.escape(', '.join(r['needed_for']))}</td></tr>"
        for r in rows
    )
    missing = sum(r["state"] != "present" for r in rows)
    loaded = session.loaded()
    return (
        "<div class='sadtalker-status'>"
        f"<p>Checkpoints: <code>{html.escape(str(dirs.checkpoints))}</code> ({html.escape(dirs.checkpoints_source)})<br>"
        f"Face models: <code>{html.escape(str(dirs.gfpgan))}</code> ({html.escape(dirs.gfpgan_source)})</p>"
        "<table><thead><tr><th>file</th><th>state</th><th>size</th><th>needed for</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
        f"<p>{len(rows) - missing} of {len(rows)} files present. Models in memory: "
        f"{html.escape(', '.join(loaded)) if loaded else 'none'}</p></div>"
    )
