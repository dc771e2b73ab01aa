"""Standalone web app: ``python -m sadtalker_ext.app`` (gradio, bound to 127.0.0.1 by default).

gradio is an optional dependency, imported only inside :func:`build_app` / :func:`main`; without it
``main`` says how to install it and exits with status 1. The form-to-options logic
(:func:`options_from_form`) and the status text (:func:`status_markdown`) are plain functions, so
they can be tested without gradio. The UI runs under gradio 3.41 (A1111 1.x) and 4.x; the one
difference: under gradio 3 the picture input is a file input with a preview beside it, because gradio 3's
picture component sends the pixels without the file name (output videos are named after the picture).

File inputs are never preprocessed by gradio (``preprocess=False``): a client of the HTTP API can send any
path in a file value, and gradio 3 would open and copy it. :class:`UploadGuard` accepts only files inside
gradio's upload folder (or the folders given with ``--allowed_dir``), resolved with symlinks followed, and
inline (base64) uploads, which it writes into a private temporary folder under the user's file name.

HTTP streaming: ``POST /sadtalker/v1/stream`` (added to gradio's FastAPI app by :func:`serve`; contract in
:mod:`.http_stream`) takes the JSON body of the WebUI's ``/sadtalker/v1/generate``; its paths must lie inside
the folders the file inputs may read (gradio's upload folder, ``--allowed_dir``). It waits for a running
generation to end (one at a time; the page's Stop button stops a streamed one too).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import allocator, form
from .cli import add_runtime_flags, resolve_device
from .errors import CheckpointError, InputError, SadTalkerError
from .form import decode_inline, options_from_values, sniff_suffix
from .live_streams import LIVE_DONE_JS, STREAM_SLOT, LiveStreams, attach_route, player_route
from .options import GenerationOptions
from .weights import downloader

log = logging.getLogger(__name__)

GRADIO_MISSING = (
    "The standalone app needs gradio, which is not installed in this environment. "
    "Install it with `pip install gradio` (3.41 or 4.x), or use the command line: `python -m sadtalker_ext --help`."
)

FORM_FIELDS = (*form.FORM_FIELDS, "max_audio_seconds")
"""Order of the form components passed to the generate handler (then the "Play while generating" box and
the stream token, see :data:`.live_streams.STREAM_SLOT`)."""
LOAD_PLAYER_JS = """() => {
    if (!document.getElementById('sadtalker-player-script')) {
        const script = document.createElement('script');
        script.id = 'sadtalker-player-script';
        script.src = 'sadtalker/v1/player.js';
        document.head.appendChild(script);
    }
}"""
"""Runs on page load: loads the live player (its route is added by :func:`serve`)."""
SUBMIT_JS = (
    "(...a) => (typeof sadtalker_app_submit === 'function' ? sadtalker_app_submit(...a) : a)"
    f".slice(0, {len(FORM_FIELDS) + 2})"
)
"""Generate's browser side: a stream token when the player plays (the inputs as they are without it). Only
the inputs' values go on: gradio 3 also hands the outputs' values to the function, and with
``preprocess=False`` it would pass whatever comes back to the handler unchanged."""


def options_from_form(values: Mapping[str, Any]) -> GenerationOptions:
    """Form values (keys of :data:`FORM_FIELDS`) -> validated options. Seed < 0 or empty: random."""
    return options_from_values(values, {"front_end": "app"})


def status_markdown(talker: Any) -> str:
    """Weight files (present / missing / corrupt) and loaded models, as Markdown."""
    try:
        rows = talker.model_status()
    except SadTalkerError as exc:
        return f"**Model status unavailable:** {exc}"
    lines = [
        f"Checkpoints: `{talker.dirs.checkpoints}` ({talker.dirs.checkpoints_source}); "
        f"face models: `{talker.dirs.gfpgan}` ({talker.dirs.gfpgan_source})",
        "",
        "| file | state | needed for |",
        "|---|---|---|",
    ]
    for r in rows:
        mark = {"present": "present", "missing": "**missing**"}.get(r.state, f"**{r.state}**")
        lines.append(f"| {r.name} | {mark} | {', '.join(r.needed_for)} |")
    if any(r.state != "present" for r in rows):
        lines += [
            "",
            "Fetch missing files with **Download missing weights** below, or with "
            f"`{downloader()}` (see `--help` there).",
        ]
    loaded = talker.loaded
    lines += ["", f"Device: `{talker.device}`, dtype `{str(talker.dtype).removeprefix('torch.')}`; "
              f"models in memory: {', '.join(loaded) if loaded else 'none'}"]  # fmt: skip
    if talker.precision_advice:
        lines += ["", f"Precision: {talker.precision_advice}."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- uploads
UPLOAD_FIELDS = {"source": "face picture", "driven_audio": "speech recording", "ref_video": "reference video"}
"""File inputs of the form and how messages name them."""

DEFAULT_UPLOAD_NAMES = {"source": "picture", "driven_audio": "speech", "ref_video": "reference"}


def gradio_upload_dir() -> Path:
    """The folder gradio (3.41 and 4.x alike) saves uploads into: ``$GRADIO_TEMP_DIR`` or ``<temp>/gradio``."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def upload_name(name: Any, field: str, suffix: str = "") -> str:
    """The user's file name from an upload value, reduced to a safe base name (no folders, no control
    characters, no leading dot, at most 120 characters); ``picture`` / ``speech`` / ``reference`` when
    there is none. ``suffix`` is added when the name has none."""
    text = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if ch.isprintable()).strip().lstrip(".").strip()
    if not text:
        text = DEFAULT_UPLOAD_NAMES[field]
    stem, dot, ext = text.rpartition(".")
    if not dot:
        stem, ext = text, ""
    stem, ext = stem[:100] or DEFAULT_UPLOAD_NAMES[field], ext[:15]
    return f"{stem}.{ext}" if ext else stem + suffix


class UploadGuard:
    """Turns the raw value of a file input (what a browser or an API client sent) into a local path the
    pipeline may read, or refuses it with :class:`InputError`.

    Accepted: a path (string, gradio 3 ``{'name', 'is_file': True}`` or gradio 4 ``{'path'}``) whose real
    location (symlinks and ``..`` resolved) is inside gradio's upload folder or one of ``allowed_dirs``;
    inline data (a ``data:`` URL, or gradio 3 ``{'name', 'data'}``), written into ``scratch``. The user's
    original file name (``orig_name`` or the uploaded name) is kept, so output names say ``face__speech``.
    """

    def __init__(self, allowed_dirs: Iterable[str | Path] = (), upload_dir: str | Path | None = None) -> None:
        self.allowed_dirs = tuple(Path(d) for d in allowed_dirs)
        roots: list[Path] = []
        for d in (upload_dir or gradio_upload_dir(), *self.allowed_dirs):
            real = Path(os.path.realpath(Path(d).expanduser()))
            if real not in roots:
                roots.append(real)
        self.roots = tuple(roots)

    def resolve(self, value: Any, field: str, scratch: Path) -> str | None:
        """The value of input ``field`` -> a readable local path (None when empty); see the class."""
        label = UPLOAD_FIELDS[field]
        if isinstance(value, list | tuple):
            if len(value) > 1:
                raise InputError(f"{label}: one file is expected, got {len(value)}")
            value = value[0] if value else None
        if value is None or value == "" or value == {}:
            return None
        if isinstance(value, str):
            if value.startswith("data:"):
                data = decode_inline(value, label)
                return self._write(data, upload_name(None, field, sniff_suffix(data, field)), field, scratch)
            return self._inside(value, None, field, scratch)
        if not isinstance(value, Mapping):
            raise InputError(f"{label}: expected an uploaded file, got {type(value).__name__}")
        crop = (value.get("crop_min") or 0, value.get("crop_max", 100))
        if crop != (0, 100) and crop != (0, None):
            raise InputError(
                f"{label}: trimming in the player is not applied here; trim the recording before uploading it"
            )
        if value.get("path"):  # gradio 4 FileData
            return self._inside(value["path"], value.get("orig_name"), field, scratch)
        name = value.get("name")
        if value.get("is_file"):  # gradio 3: a file already on the server
            return self._inside(name, value.get("orig_name"), field, scratch)
        if value.get("data"):  # gradio 3: the file inline, base64
            data = decode_inline(value["data"], label)
            return self._write(data, upload_name(value.get("orig_name") or name, field, sniff_suffix(data, field)),
                               field, scratch)  # fmt: skip
        if value.get("url"):
            raise InputError(f"{label}: URLs are not accepted; upload the file itself")
        raise InputError(f"{label}: the upload has no file in it; upload the file again")

    def _inside(self, raw: Any, orig_name: Any, field: str, scratch: Path) -> str:
        label = UPLOAD_FIELDS[field]
        if not isinstance(raw, str) or not raw.strip() or "\x00" in raw:
            raise InputError(f"{label}: invalid file reference; upload the file again")
        if "://" in raw:
            raise InputError(f"{label}: URLs are not accepted; upload the file itself")
        real = Path(os.path.realpath(Path(raw).expanduser()))
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            extra = " or a folder given with --allowed_dir" if self.allowed_dirs else ""
            raise InputError(
                f"{label}: refused: the file is not one uploaded through this app (only files in gradio's "
                f"upload folder{extra} are read); upload the file in the page"
            )
        if not real.is_file():
            raise InputError(
                f"{label}: the uploaded file is no longer there (uploads are temporary); upload it again"
            )
        name = upload_name(orig_name or Path(raw).name, field, real.suffix)
        if name == real.name:
            return str(real)
        link = self._slot(scratch, field) / name
        try:
            link.symlink_to(real)
        except OSError:  # no symlinks here (Windows without the privilege): a copy
            shutil.copyfile(real, link)
        return str(link)

    @staticmethod
    def _slot(scratch: Path, field: str) -> Path:
        folder = scratch / field
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _write(self, data: bytes, name: str, field: str, scratch: Path) -> str:
        path = self._slot(scratch, field) / name
        path.write_bytes(data)
        return str(path)


# ---------------------------------------------------------------------------------------------- first contact
def dlib_usable(model_dir: str | Path | None = None) -> bool:
    """True when the dlib face backend can run: dlib importable and its 68-point model present."""
    if importlib.util.find_spec("dlib") is None:
        return False
    from .face.dlib_backend import predictor_path

    try:
        predictor_path(model_dir)
    except InputError:
        return False
    return True


def one_line(message: str) -> str:
    """A message for gradio's error pop-up, which does not render line breaks: lines joined with ``; ``."""
    parts = [line.strip().removeprefix("- ").strip() for line in str(message).splitlines()]
    return "; ".join(p for p in parts if p).replace(":;", ":")


def missing_rows(talker: Any, options: GenerationOptions) -> list[Any]:
    """Weight files the generation ``options`` needs that are missing or incomplete."""
    from .weights import missing_files

    return missing_files(talker.required_weights(options), talker.dirs)


def missing_weights_error(talker: Any, options: GenerationOptions) -> str | None:
    """One-line message naming the weight files ``options`` lacks and how to get them; None when none."""
    from .weights import download_command

    rows = missing_rows(talker, options)
    if not rows:
        return None
    names = ", ".join(f"{r.name} ({r.state}, goes in {r.path.parent})" for r in rows)
    command = download_command(talker.required_weights(options), talker.dirs)
    return (
        f"Weight files missing for these settings: {names}. Press 'Download missing weights' in the "
        f"Models panel, or run: {command}"
    )


def first_contact(talker: Any) -> tuple[str, str]:
    """``(face detector to preselect, Markdown banner)`` for the first view.

    The detector is RetinaFace unless its weights are missing and dlib can run. The banner (empty when all
    is well) lists, as a Markdown list, the weight files the default settings lack and says where the
    Download button is, and says when dlib was preselected and why.
    """
    from .weights import download_command

    try:
        base = GenerationOptions(source="picture.png", idle_seconds=1.0)
        detector_rows = missing_rows(talker, base)  # retinaface: the default
        detector_missing = [r for r in detector_rows if "detector" in r.needed_for]
        detector = "dlib" if detector_missing and dlib_usable(talker.dirs.gfpgan) else "retinaface"
        options = base.replace(face_detector=detector)
        rows = missing_rows(talker, options)
    except SadTalkerError as exc:
        return "retinaface", f"**Model status unavailable:** {exc}"
    lines: list[str] = []
    if rows:
        lines.append(f"**Weight files are missing** for the default settings (size 256, crop, {detector}):")
        lines.append("")
        lines += [f"- `{r.name}` ({r.state}) → `{r.path.parent}`" for r in rows]
        lines.append("")
        lines.append(
            "Press **Download missing weights** in the *Models* panel below, or run "
            f"`{download_command(talker.required_weights(options), talker.dirs)}`."
        )
    if detector == "dlib":
        if lines:
            lines.append("")
        names = ", ".join(f"`{r.name}`" for r in detector_missing)
        lines.append(
            f"**Face detector: dlib** (preselected because the RetinaFace weights {names} are missing; dlib's "
            "68-point model is installed, non-commercial licence). The Download button fetches RetinaFace "
            "too; then choose it under *Advanced*."
        )
    return detector, "\n".join(lines)


def download_missing(talker: Any, options: GenerationOptions, progress: Any = None) -> str:
    """Fetch the weight files ``options`` need plus the RetinaFace detector; the summary as Markdown."""
    from .download import download

    selection = talker.required_weights(options.replace(face_detector="retinaface"))

    def on_progress(p: Any) -> None:
        total = max(int(p.total or 0), 1)
        progress((min(int(p.done or 0), total), total), desc=f"[{p.index}/{p.count}] {p.name}: {p.phase}")

    report = download(selection, talker.dirs, progress=on_progress if progress is not None else None)
    verdict = "All needed files are present." if report.ok else "**Some files could not be fetched:**"
    return f"{verdict}\n\n```\n{report.summary()}\n```"


# ---------------------------------------------------------------------------------------------- the UI
def build_app(talker: Any = None, *, allowed_dirs: Iterable[str | Path] = (), **talker_kw: Any):
    """Build the gradio Blocks UI around one :class:`~sadtalker_ext.pipeline.SadTalker` (made from
    ``talker_kw`` when not given). ``allowed_dirs``: server folders whose files the file inputs may name
    besides gradio's upload folder. Returns the ``gr.Blocks`` (not launched)."""
    import gradio as gr

    if talker is None:
        from .pipeline import SadTalker

        talker = SadTalker(**talker_kw)
    gradio3 = int(str(gr.__version__).split(".")[0]) < 4
    js = "_js" if gradio3 else "js"
    guard = UploadGuard(allowed_dirs)
    live = LiveStreams()
    cancel_event = threading.Event()
    busy = threading.Lock()
    detector, banner_text = first_contact(talker)

    def banner_update(text: str) -> Any:
        return gr.update(value=text, visible=bool(text))

    def generate(*values: Any, progress=gr.Progress()):  # noqa: B008 - gradio injects the tracker
        count = len(FORM_FIELDS)
        if len(values) not in (count, count + 2):
            raise gr.Error(f"expected {count} form values (+ play box and stream token), got {len(values)}")
        form = dict(zip(FORM_FIELDS, values[:count], strict=True))
        stream = live.open(values[count + 1]) if len(values) == count + 2 and values[count] is True else None
        try:
            return generate_form(form, progress, stream)
        except BaseException as exc:
            if stream is not None:
                stream.close(error=str(exc) or type(exc).__name__)
            raise
        finally:
            if stream is not None:
                stream.close()

    def generate_form(form: dict[str, Any], progress: Any, stream: Any):
        scratch = Path(tempfile.mkdtemp(prefix="sadtalker_app_"))
        try:
            try:
                for field in UPLOAD_FIELDS:
                    form[field] = guard.resolve(form[field], field, scratch)
                options = options_from_form(form)
            except SadTalkerError as exc:
                raise gr.Error(one_line(str(exc))) from exc
            if not busy.acquire(blocking=False):
                raise gr.Error("a generation is already running; wait or press Stop")
            cancel_event.clear()
            try:

                def on_progress(stage: str, done: int, total: int) -> None:
                    progress((done, max(total, 1)), desc=stage)

                extra = {"fragmented": True, "stream": stream.append} if stream is not None else {}
                result = talker.generate(options, progress=on_progress, cancel=cancel_event, **extra)
            except CheckpointError as exc:
                raise gr.Error(missing_weights_error(talker, options) or one_line(str(exc))) from exc
            except SadTalkerError as exc:
                raise gr.Error(one_line(str(exc))) from exc
            finally:
                busy.release()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        info = (
            f"{result.video_path}\n{result.num_frames} frames ({result.num_frames / 25:.2f} s), "
            f"{result.width}x{result.height}, seed {result.seed}\n"
            + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
        )
        return str(result.video_path), info, status_markdown(talker), banner_update(first_contact(talker)[1])

    def preview(value: Any):
        """gradio 3: the picture input is a file input (it keeps the file name); this shows the picture."""
        from .images import load_rgb

        scratch = Path(tempfile.mkdtemp(prefix="sadtalker_app_"))
        try:
            path = guard.resolve(value, "source", scratch)
            return None if path is None else load_rgb(path)
        except SadTalkerError as exc:
            raise gr.Error(one_line(str(exc))) from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def stop() -> str:
        cancel_event.set()
        return "stopping after the current batch of frames..."

    def unload() -> str:
        talker.unload()
        return status_markdown(talker)

    def fetch(size: Any, preprocess_mode: Any, enhancer_name: Any, background: Any, progress=gr.Progress()):  # noqa: B008
        try:
            options = GenerationOptions.from_mapping({
                "source": "picture.png", "idle_seconds": 1.0, "size": int(float(size or 256)),
                "preprocess": preprocess_mode or "crop", "enhancer": enhancer_name or "none",
                "background_enhancer": background or "none",
            })  # fmt: skip
        except (SadTalkerError, TypeError, ValueError) as exc:
            raise gr.Error(one_line(str(exc))) from exc
        text = download_missing(talker, options, progress)
        return text, status_markdown(talker), banner_update(first_contact(talker)[1])

    c: dict[str, Any] = {}  # the form's components by field name
    with gr.Blocks(title="SadTalker") as demo:
        gr.Markdown("## SadTalker: one face picture + speech -> talking-head video")
        banner = gr.Markdown(banner_text, visible=bool(banner_text))
        with gr.Row():
            with gr.Column():
                if gradio3:
                    # gradio 3's picture component sends the pixels without the file name; a file input
                    # keeps it (output videos are named after the picture), with a preview beside it
                    source = c["source"] = gr.File(
                        label="Face picture", file_types=["image"], elem_id="sadtalker_app_source"
                    )
                    source_preview = gr.Image(
                        label="Picture", interactive=False, height=240, elem_id="sadtalker_app_preview"
                    )
                else:
                    source = c["source"] = gr.Image(
                        label="Face picture", type="filepath", elem_id="sadtalker_app_source"
                    )
                # the player needs no server-side ffmpeg: the event hands the raw upload to the pipeline,
                # which decodes any format (wav, mp3, m4a, ...) with the bundled ffmpeg
                c["driven_audio"] = gr.Audio(
                    label="Speech recording (wav, mp3, m4a, ...)",
                    type="filepath",
                    elem_id="sadtalker_app_audio",
                )
                with gr.Row():
                    c["idle_mode"] = gr.Checkbox(label="Idle mode (no speech)", value=False)
                    c["idle_seconds"] = form.component(gr, "idle_seconds")
                with gr.Accordion("Reference video", open=False):
                    c["ref_video"] = gr.File(label="Reference video")
                    c["ref_mode"] = form.component(gr, "ref_mode")
            with gr.Column():
                for name in (*form.form_fields("basic"), *form.form_fields("motion")):
                    c[name] = form.component(gr, name)
                with gr.Accordion("Advanced", open=False):
                    for name in (*form.form_fields("advanced"), "max_audio_seconds"):
                        c[name] = form.component(
                            gr, name, **({"value": detector} if name == "face_detector" else {})
                        )
            with gr.Column():
                # the live player's place (not an output of Generate: gradio's pending overlay covers those)
                gr.HTML(elem_id="sadtalker_app_live")
                video = gr.Video(label="Result", elem_id="sadtalker_app_video")
                info = gr.Textbox(label="Details", lines=4)
                with gr.Row():
                    run_button = gr.Button("Generate", variant="primary", elem_id="sadtalker_app_generate")
                    stop_button = gr.Button("Stop")
                play_live = gr.Checkbox(
                    label="Play while generating", value=True, elem_id="sadtalker_app_play_live"
                )
                stream_token = gr.Textbox(value=STREAM_SLOT, visible=False)
        with gr.Accordion("Models", open=bool(banner_text)):
            status = gr.Markdown(status_markdown(talker))
            with gr.Row():
                download_button = gr.Button("Download missing weights", variant="primary")
                refresh_button = gr.Button("Refresh status")
                unload_button = gr.Button("Unload models")
            download_log = gr.Markdown("")
        inputs = [c[name] for name in FORM_FIELDS]
        # preprocess=False: gradio must not open the file values itself (see UploadGuard)
        run_button.click(
            generate,
            inputs=[*inputs, play_live, stream_token],
            outputs=[video, info, status, banner],
            preprocess=False,
            api_name="generate",
            **{js: SUBMIT_JS},
        ).then(None, inputs=[video], outputs=None, **{js: LIVE_DONE_JS})
        demo.load(None, None, None, **{js: LOAD_PLAYER_JS})
        if gradio3:
            source.change(preview, inputs=[source], outputs=[source_preview], preprocess=False)
        stop_button.click(stop, inputs=None, outputs=[info])
        refresh_button.click(
            lambda: (status_markdown(talker), banner_update(first_contact(talker)[1])),
            inputs=None,
            outputs=[status, banner],
        )
        unload_button.click(unload, inputs=None, outputs=[status])
        download_button.click(
            fetch,
            inputs=[c["size"], c["preprocess"], c["enhancer"], c["background_enhancer"]],
            outputs=[download_log, status, banner],
        )

    def shutdown(timeout: float | None = None) -> bool:
        """Stop a running generation and wait (``timeout`` seconds, ``None``: no limit) until it has
        cleaned up its files; False when it is still running."""
        cancel_event.set()
        if not busy.acquire(timeout=-1 if timeout is None else timeout):
            return False
        busy.release()
        return True

    def add_routes(app: Any) -> None:
        """``POST /sadtalker/v1/stream`` on gradio's FastAPI ``app`` (see the module docstring)."""
        from .http_stream import ROUTE, stream_response

        async def sadtalker_stream(request: Any) -> Any:
            return await stream_response(
                request, lambda body: prepare_stream(talker, guard, busy, cancel_event, body)
            )

        app.add_route(ROUTE, sadtalker_stream, methods=["POST"])
        # the page's live player: its script, and the stream of the job it started ("Play while generating")
        app.router.routes.extend([attach_route(live), player_route()])

    demo.sadtalker_shutdown = shutdown
    demo.sadtalker_live = live
    demo.sadtalker_add_routes = add_routes
    demo.sadtalker = talker  # for tests and embedding
    demo.sadtalker_components = c
    demo.upload_guard = guard
    return demo


def prepare_stream(
    talker: Any, guard: UploadGuard, busy: threading.Lock, stop: threading.Event, body: Any
) -> tuple[Any, str]:
    """Check a ``/sadtalker/v1/stream`` request (:class:`.http_request.ApiError`), then ``(work, label)`` for
    :func:`.http_stream.stream_response`: ``work`` waits for the app's one generation slot, then generates,
    streaming; cancelled by the client going away or the page's Stop button."""
    from .errors import CancelledError
    from .http_request import NO_RESTORER, ApiError, parse_request

    tmp = Path(tempfile.mkdtemp(prefix="sadtalker_app_stream_"))
    try:
        options, restorer, _mode = parse_request(body, list(guard.roots), tmp)
        if restorer != NO_RESTORER:
            raise ApiError(
                422, "face_restoration: the standalone app has no WebUI face restorers; use enhancer"
            )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    def work(sink: Any, cancelled: Any, on_output: Any) -> Any:
        try:
            while not busy.acquire(timeout=0.2):  # one generation at a time, as the page
                if cancelled():
                    raise CancelledError("the client went away while waiting for the running generation")
            try:
                stop.clear()
                return talker.generate(
                    options,
                    cancel=lambda: cancelled() or stop.is_set(),
                    fragmented=True,
                    stream=sink,
                    on_output=on_output,
                )
            finally:
                busy.release()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    return work, Path(options.source).name


def serve(demo: Any, *, block: bool = True, **launch_kw: Any) -> Any:
    """Launch ``demo`` (queue on) with the HTTP streaming route added; ``block``: wait until Ctrl-C / SIGTERM
    (as ``launch()`` does). Returns gradio's FastAPI app."""
    launched = demo.queue().launch(prevent_thread_lock=True, **launch_kw)
    app = launched[0] if isinstance(launched, tuple) and launched else getattr(demo, "app", None)
    add_routes = getattr(demo, "sadtalker_add_routes", None)
    if add_routes is not None and app is not None:
        add_routes(app)
    block_thread = getattr(demo, "block_thread", None)
    if block and block_thread is not None:
        block_thread()
    return app


def build_parser() -> argparse.ArgumentParser:
    """The app's command line: address and folders, then the pipeline flags of the command line."""
    p = argparse.ArgumentParser(
        prog="python -m sadtalker_ext.app", description="SadTalker standalone web app."
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="create a public gradio.live link (off by default)")
    p.add_argument(
        "--result_dir", "--result-dir", dest="result_dir", default="./results", help="video folder"
    )
    p.add_argument(
        "--allowed_dir",
        "--allowed-dir",
        dest="allowed_dirs",
        action="append",
        default=[],
        metavar="DIR",
        help="a server folder whose files the file inputs may name (repeatable); by default only files "
        "uploaded through the page (gradio's upload folder) are read",
    )
    add_runtime_flags(p, cpu_flag=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    allocator.tune_from_environment()  # before gradio starts its threads (unless SADTALKER_MALLOC=default)
    try:
        import gradio  # noqa: F401
    except ImportError:
        log.error(GRADIO_MISSING)
        return 1
    try:
        demo = build_app(
            checkpoint_dir=args.checkpoint_dir,
            gfpgan_dir=args.gfpgan_dir,
            device=resolve_device(args.device, False),
            dtype=args.dtype,
            result_dir=args.result_dir,
            winograd=not args.no_winograd,
            allowed_dirs=args.allowed_dirs,
        )
    except SadTalkerError as exc:
        log.error("%s", exc)
        return 1
    terminated = threading.Event()
    shutdown = getattr(demo, "sadtalker_shutdown", None)

    def on_sigterm(signum: int, frame: Any) -> None:
        # like Ctrl-C: a running generation stops at its next batch and removes its temp files, and
        # gradio's launch() closes the server on the KeyboardInterrupt
        terminated.set()
        if shutdown is not None:
            shutdown(timeout=0)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        serve(demo, server_name=args.host, server_port=args.port, share=args.share)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if shutdown is not None:
            shutdown(timeout=120)
    return 143 if terminated.is_set() else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
