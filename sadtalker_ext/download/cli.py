"""Command line of the model manager: ``python -m sadtalker_ext.download`` (see the package docstring)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import urllib.parse
from pathlib import Path

from ..errors import CheckpointError
from ..paths import ModelDirs, resolve_model_dirs
from ..weights import CORRUPT, Selection, load_manifest, model_status
from . import WOULD_DOWNLOAD, Progress, download


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"


class _CliProgress:
    """Renders Progress with tqdm when installed, else as plain lines (every ~2 s per file)."""

    def __init__(self, stream=None, use_tqdm: bool | None = None):
        self.stream = stream or sys.stderr
        if use_tqdm is None:
            try:
                import tqdm  # noqa: F401

                use_tqdm = True
            except ImportError:
                use_tqdm = False
        self.use_tqdm = use_tqdm
        self._bar = None
        self._bar_name = ""
        self._last_line = 0.0

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __call__(self, p: Progress) -> None:
        head = f"[{p.index}/{p.count}] {p.name}"
        if p.phase == "download" and self.use_tqdm:
            from tqdm import tqdm

            if self._bar is None or self._bar_name != p.name:
                self._close_bar()
                self._bar = tqdm(
                    total=p.total or None,
                    initial=p.done,
                    unit="B",
                    unit_scale=True,
                    desc=head,
                    file=self.stream,
                )
                self._bar_name = p.name
            self._bar.update(p.done - self._bar.n)
            return
        if p.phase == "download":
            now = time.monotonic()
            if now - self._last_line < 2.0 and p.done < p.total:
                return
            self._last_line = now
            eta = f", ETA {p.eta:.0f} s" if p.eta is not None else ""
            total = f"/{_human(p.total)}" if p.total else ""
            print(f"{head}: {_human(p.done)}{total} at {_human(p.speed)}/s{eta}", file=self.stream)
            return
        if p.phase in ("check",):
            return
        self._close_bar()
        text = {
            "present": "already present",
            "done": "downloaded and verified",
            "verify": "verifying",
            "retry": "retry",
            "corrupt": "CORRUPT",
            "failed": "FAILED",
        }.get(p.phase, p.phase)
        print(
            f"{head}: {text}{': ' + p.message if p.message and p.phase != 'done' else ''}", file=self.stream
        )

    def close(self) -> None:
        self._close_bar()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m sadtalker_ext.download",
        description="Download and verify the official SadTalker weights (resumable; safe to re-run).",
    )
    ap.add_argument(
        "--size", choices=["256", "512", "all"], default="256", help="renderer size(s) (default 256)"
    )
    ap.add_argument("--full", action="store_true", help="also the MappingNet for the full/extfull modes")
    ap.add_argument("--enhancer", action="store_true", help="also GFPGAN v1.4 (face enhancer)")
    ap.add_argument(
        "--detector", action="store_true", help="also RetinaFace + AWing FAN (official face detector)"
    )
    ap.add_argument("--background", action="store_true", help="also Real-ESRGAN x2plus (background enhancer)")
    ap.add_argument("--all", action="store_true", help="every file of the manifest")
    ap.add_argument("--checkpoint_dir", "--checkpoint-dir", default=None, help="SadTalker checkpoint folder")
    ap.add_argument("--gfpgan_dir", "--gfpgan-dir", default=None, help="face model folder (gfpgan/weights)")
    ap.add_argument(
        "--mirror", default=None, metavar="BASE_URL", help="a mirror serving BASE_URL/<file name>"
    )
    ap.add_argument("--dry-run", action="store_true", help="only list what is missing or corrupt")
    ap.add_argument("--status", action="store_true", help="print the status of every file and exit")
    ap.add_argument("--replace-corrupt", action="store_true", help="re-download files that fail the check")
    ap.add_argument("--verify", action="store_true", help="also check the sha256 of files already present")
    ap.add_argument("--retries", type=int, default=4, help="extra attempts per source (default 4)")
    ap.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    ap.add_argument("--manifest", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-tqdm", action="store_true", help=argparse.SUPPRESS)
    return ap


def selection_from_args(args: argparse.Namespace) -> Selection | None:
    if args.all:
        return None
    sizes = (256, 512) if args.size == "all" else (int(args.size),)
    return Selection(
        sizes=sizes,
        full=args.full,
        enhancer=args.enhancer,
        detector=args.detector,
        background=args.background,
    )


def mirror_problem(mirror: str) -> str | None:
    """Why ``mirror`` cannot be a download base URL (None when it is an http(s) URL with a host)."""
    parts = urllib.parse.urlsplit(mirror)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return (
            f"--mirror {mirror!r} is not an http:// or https:// URL; give the base URL that serves "
            "<base>/<file name>, e.g. --mirror https://my.mirror/sadtalker"
        )
    return None


def folder_problem(folder: Path, option: str) -> str | None:
    """Why ``folder`` cannot hold downloaded files (it or a parent is a file), or None."""
    if folder.exists() and not folder.is_dir():
        return f"{option} {folder} is a file, not a folder; give a folder (it is created when missing)"
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{option} {folder} cannot be created: {parent} is a file, not a folder"
            break
    return None


def _input_problems(args: argparse.Namespace, dirs: ModelDirs) -> list[str]:
    problems = []
    if args.mirror is not None and (why := mirror_problem(args.mirror)):
        problems.append(why)
    for folder, option in ((dirs.checkpoints, "--checkpoint_dir"), (dirs.gfpgan, "--gfpgan_dir")):
        if why := folder_problem(folder, option):
            problems.append(why)
    return problems


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit code 0 when everything selected is present and verified, 1 when not, 2 for
    unusable arguments (a one-line ``error:`` each, before anything is downloaded)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        manifest = load_manifest(args.manifest) if args.manifest else load_manifest()
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dirs = resolve_model_dirs(args.checkpoint_dir, args.gfpgan_dir)
    problems = _input_problems(args, dirs)
    for why in problems:
        print(f"error: {why}", file=sys.stderr)
    if problems:
        return 2
    print(f"checkpoints: {dirs.checkpoints} ({dirs.checkpoints_source})")
    print(f"face models: {dirs.gfpgan} ({dirs.gfpgan_source})")
    if args.status:
        for row in model_status(dirs, manifest=manifest, verify_hash=args.verify):
            print(
                f"{row.state:>8}  {row.name:<36} {_human(row.size):>10}  for {','.join(row.needed_for)}  {row.detail}"
            )
        return 0
    selection = selection_from_args(args)
    render = _CliProgress(use_tqdm=False if args.no_tqdm else None)
    try:
        report = download(
            selection, dirs, progress=render, mirror=args.mirror, replace_corrupt=args.replace_corrupt,
            dry_run=args.dry_run, verify_existing=args.verify, manifest=manifest, retries=max(args.retries, 0),
            timeout=args.timeout,
        )  # fmt: skip
    except KeyboardInterrupt:
        render.close()
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        render.close()
    if args.dry_run:
        todo = report.by_status(WOULD_DOWNLOAD, CORRUPT)
        if not todo:
            print("nothing missing")
        total = 0
        for r in todo:
            total += r.size
            what = "missing" if r.status == WOULD_DOWNLOAD else "corrupt"
            print(f"{what}: {r.name} ({_human(r.size) if r.size else 'size unknown'}) -> {r.path}")
            print(f"         from {r.source}")
        if todo:
            print(f"{len(todo)} file(s), {_human(total)} to download")
        return 0 if not todo else 1
    print(report.summary())
    return 0 if report.ok else 1
