"""Command line: ``python -m sadtalker_ext`` -- one picture + one recording -> one mp4, or many in one call.

Flag names follow the official ``inference.py`` (``--driven_audio``, ``--source_image``, ...); every
multi-word flag also accepts the dashed spelling (``--driven-audio``). Models are loaded once per call,
however many videos are made.

Batch: ``--source_image`` and ``--driven_audio`` take several files and/or folders; every picture is
paired with every recording (one video per pair). ``--pairs LIST`` adds explicit pairs, one
``picture<TAB>audio`` per line (``#`` comments and blank lines ignored; relative paths are relative to
the list file; an empty audio column means idle mode and needs ``--idle_seconds``). A failing job is
reported and the others go on; a summary is printed at the end. ``--cluster ADDRESS`` runs the batch on a
Ray cluster instead (:mod:`sadtalker_ext.cluster`; it skips the videos made before).

Output names: ``<result_dir>/<picture>__<audio>.mp4``; a name already taken (by an earlier video or
by another run writing into the same folder at the same time) becomes ``-2``, ``-3``... and the path
printed is the file written. ``--output FILE`` that exists is refused unless ``--overwrite``. The
output folders are checked (created) with the other inputs, before any model loads.

Streaming: ``--fragmented`` writes the video as a fragmented MP4 (one fragment per second, each from a
keyframe, audio interleaved; it plays like any mp4). ``--stream_to -`` (one job only) also writes that
fragmented MP4 to standard output while the frames are rendered, fragment by fragment, so it can be piped
into a player (``... --stream_to - | ffplay -``); everything else (progress, messages, the path of the
saved file) then goes to standard error, and the file is still saved as usual. If the reader goes away
(the player is closed), the generation goes on and the file is still written.

Exit status: 0 when every video was made, 1 when a job or the setup failed, 2 for bad arguments,
130 when interrupted (Ctrl-C; the video being made is discarded, or kept as ``<name>.partial.mp4``
with ``--keep_partial``), 143 when terminated (SIGTERM; handled like Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, allocator
from .errors import CheckpointError, InputError, SadTalkerError
from .options import (
    BACKGROUND_ENHANCERS,
    DTYPES,
    ENHANCERS,
    number_text,
    option_default,
    option_spec,
    range_text,
    value_type,
)
from .precision import DTYPE_HELP
from .weights import DETECTOR_FILE, GFPGAN_FILE, PARSENET_FILE, REALESRGAN_FILE, downloader

PICTURE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
AUDIO_SUFFIXES = frozenset(
    {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus", ".wma", ".aiff", ".aif"}
)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C (temp files removed, a partial
    video kept with ``--keep_partial``)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"terminated (signal {signum})")


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While inside: SIGTERM raises :class:`Terminated` (main thread only; elsewhere nothing changes)."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _add(group: Any, name: str, **kw: Any) -> None:
    """Add ``--name`` and, for multi-word names, the dashed spelling ``--na-me`` too."""
    flags = [f"--{name}"]
    if "_" in name:
        flags.append("--" + name.replace("_", "-"))
    group.add_argument(*flags, dest=kw.pop("dest", name), **kw)


def _enhancer(value: str) -> str:
    """``--enhancer``: a face enhancer name in any case (``GFPGAN``, ``None``), refused before any model
    loads when it is not one (``RestoreFormer``: not supported)."""
    from .options import enhancer_error

    problem = enhancer_error(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value.lower()


GROUP_TITLES = {"inputs": "inputs and outputs", "basic": "basic", "motion": "motion", "advanced": "advanced"}
"""``--help`` sections: the option table's groups, then ``system``."""


def option_help(name: str, note: str = "") -> str:
    """``--help`` text of option ``name`` from the option table: its help, then in parentheses ``note``,
    its range (choices show in the flag itself) and its default."""
    spec, default = option_spec(name), option_default(name)
    notes = [note] + ([] if spec.choices is not None else [range_text(name)])
    if default is not None and value_type(name) is not bool:
        notes.append(f"default {number_text(default) if value_type(name) is not str else default}")
    notes = [n for n in notes if n]
    return spec.help + (f" ({'; '.join(notes)})" if notes else "")


def _option(groups: dict[str, Any], name: str, note: str = "", **kw: Any) -> None:
    """Add the flag of :class:`GenerationOptions` field ``name`` to its group, its type, choices, default
    and help from the option table (``kw`` adds to / overrides them)."""
    spec, kind = option_spec(name), value_type(name)
    args: dict[str, Any] = {"help": option_help(name, note)}
    if kind is bool:
        args["action"] = "store_true"
    else:
        args["default"] = option_default(name)
        if kind is not str:
            args["type"] = kind
        if spec.choices is not None:
            args["choices"] = spec.choices
        elif spec.minimum is not None and spec.maximum is not None:
            args["metavar"] = f"{number_text(spec.minimum)}-{number_text(spec.maximum)}"
    args.update(kw)
    _add(groups[spec.group], name, **args)


def add_runtime_flags(group: Any, *, cpu_flag: bool = True) -> None:
    """The flags that set up a pipeline (model folders, device, precision, Winograd), shared by the
    command line and the standalone app; ``cpu_flag`` adds ``--cpu``."""
    _add(
        group,
        "checkpoint_dir",
        metavar="DIR",
        help="SadTalker weights folder (default: $SADTALKER_CHECKPOINTS or the extension's checkpoints/)",
    )
    _add(
        group,
        "gfpgan_dir",
        metavar="DIR",
        help="face-model weights folder (default: $SADTALKER_GFPGAN_DIR or the extension's gfpgan/weights/)",
    )
    _add(
        group,
        "device",
        default="auto",
        metavar="DEV",
        help="auto (CUDA when available), cpu, cuda, cuda:N, mps",
    )
    if cpu_flag:
        _add(group, "cpu", action="store_true", help="same as --device cpu")
    _add(group, "dtype", default=DTYPES[0], choices=DTYPES, help=DTYPE_HELP.replace("%", "%%"))
    _add(
        group,
        "no_winograd",
        action="store_true",
        help="CPU, float32: direct convolutions in the renderer's decoder instead of Winograd "
        "(for comparison; Winograd takes 4x fewer multiplies)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line: every generation option's help, choices, range and default come from the option
    table (:class:`~sadtalker_ext.options.OptionSpec`), plus the flags of the command line itself."""
    p = _Parser(
        prog="python -m sadtalker_ext",
        description="SadTalker: one face picture + speech -> talking-head mp4 (25 fps, H.264 + AAC).",
        epilog="Every multi-word flag also accepts dashes (--driven-audio). Missing weights: "
        f"`{downloader()}` fetches them.",
    )
    g = {group: p.add_argument_group(title) for group, title in GROUP_TITLES.items()}
    io, mo = g["inputs"], g["motion"]
    _add(
        io,
        "source_image",
        nargs="+",
        metavar="PATH",
        help="face picture(s), or video(s) whose first frame is used, or folders of pictures",
    )
    _add(
        io,
        "driven_audio",
        nargs="+",
        metavar="PATH",
        help="speech recording(s) (wav, mp3, flac, ... or a video's sound) or folders of recordings; "
        "every picture is paired with every recording",
    )
    _add(
        io,
        "pairs",
        metavar="LIST",
        help="text file of 'picture<TAB>audio' lines (one video per line, paths relative to the file)",
    )
    _add(
        io, "result_dir", default="./results", metavar="DIR", help="folder for the videos (default ./results)"
    )
    _option(
        g, "output", "single job only; an existing file is refused unless --overwrite", metavar="FILE.mp4"
    )
    _add(
        io,
        "overwrite",
        action="store_true",
        help="let --output replace an existing file (and its .json); with --cluster: redo the videos made before",
    )
    _add(
        io,
        "keep_partial",
        action="store_true",
        help="on Ctrl-C (or SIGTERM) keep the frames made so far as <name>.partial.mp4",
    )
    _option(g, "idle_seconds", metavar="S")
    _add(
        io,
        "fragmented",
        action="store_true",
        help="write the video as a fragmented MP4 (a fragment per second, each from a keyframe)",
    )
    _add(
        io,
        "stream_to",
        metavar="-",
        help="'-': also write the fragmented MP4 to standard output while it is made (pipe it into a "
        "player); messages go to standard error; one job only",
    )
    _add(
        io,
        "ref_eyeblink",
        metavar="VIDEO",
        help="reference video providing eye blinks (--ref_pose may name another)",
    )
    _add(io, "ref_pose", metavar="VIDEO", help="reference video providing head pose")
    _option(g, "ref_video", metavar="VIDEO")
    _option(g, "ref_mode", default=None)  # None: pose, unless --ref_eyeblink/--ref_pose say otherwise
    for name in ("preprocess", "still", "size", "pose_style", "expression_scale"):
        _option(g, name)
    _add(mo, "no_blink", action="store_true", help="no generated eye blinks")
    _option(g, "seed", metavar="N")
    for axis in ("yaw", "pitch", "roll"):
        _option(g, f"input_{axis}", nargs="+", metavar="DEG")
    _option(g, "batch_size")
    _option(
        g,
        "enhancer",
        f"gfpgan/weights/{GFPGAN_FILE}",
        type=_enhancer,
        choices=None,
        metavar="{" + ",".join(ENHANCERS) + "}",
    )
    _option(g, "enhancer_mode", f"official needs {DETECTOR_FILE} and {PARSENET_FILE}")
    _option(
        g,
        "background_enhancer",
        f"gfpgan/weights/{REALESRGAN_FILE}; full modes upscale the picture once",
        choices=(*BACKGROUND_ENHANCERS, "None"),
    )
    _option(g, "face_detector")
    _option(g, "face_index", metavar="I")
    _option(g, "max_audio_seconds", metavar="S", default=None)  # None: the option's own default

    sy = p.add_argument_group("system")
    add_runtime_flags(sy)
    _add(sy, "no_progress", action="store_true", help="no progress bars")
    _add(sy, "verbose", action="store_true", help="debug logging and full tracebacks on errors")
    from .cluster.cli import add_arguments as add_cluster_arguments

    add_cluster_arguments(p, _add)
    p.add_argument("--version", action="version", version=f"sadtalker_ext {__version__}")
    return p


# --------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    picture: Path
    audio: Path | None


def _expand(paths: Sequence[str] | None, suffixes: frozenset[str], what: str) -> list[Path]:
    out: list[Path] = []
    for raw in paths or ():
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(q for q in path.iterdir() if q.is_file() and q.suffix.lower() in suffixes)
            if not found:
                raise InputError(f"no {what} files ({', '.join(sorted(suffixes))}) in folder {path}")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise InputError(f"{what} not found: {path}")
    return out


def read_pairs(list_file: str | Path) -> list[Job]:
    """Jobs from a ``picture<TAB>audio`` list file (see the module docstring)."""
    list_path = Path(list_file).expanduser()
    try:
        lines = list_path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the pairs file {list_path}: {exc.strerror or exc}") from exc
    jobs = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = line.rstrip("\r\n").split("\t")
        if len(cols) > 2 or not cols[0].strip():
            raise InputError(f"{list_path}:{number}: expected 'picture<TAB>audio', got {line!r}")

        def resolve(text: str) -> Path:
            p = Path(text.strip()).expanduser()
            return p if p.is_absolute() else list_path.parent / p

        audio = cols[1].strip() if len(cols) == 2 else ""
        jobs.append(Job(resolve(cols[0]), resolve(audio) if audio else None))
    if not jobs:
        raise InputError(f"the pairs file {list_path} lists no pairs")
    return jobs


def collect_jobs(args: argparse.Namespace) -> list[Job]:
    """Pictures x recordings (or pictures alone in idle mode), plus the ``--pairs`` list."""
    pictures = _expand(args.source_image, PICTURE_SUFFIXES, "picture")
    audios = _expand(args.driven_audio, AUDIO_SUFFIXES, "audio")
    jobs: list[Job] = []
    if pictures:
        if audios:
            jobs += [Job(p, a) for p in pictures for a in audios]
        elif args.idle_seconds is not None or args.ref_mode == "all":
            jobs += [Job(p, None) for p in pictures]
        else:
            raise InputError("--driven_audio is required (or --idle_seconds for idle mode)")
    elif audios:
        raise InputError("--source_image is required")
    if args.pairs:
        jobs += read_pairs(args.pairs)
    if not jobs:
        raise InputError("nothing to do: give --source_image and --driven_audio, or --pairs")
    return jobs


def options_for(job: Job, args: argparse.Namespace):
    """GenerationOptions for one job (validated; raises InputError)."""
    from .options import GenerationOptions

    ref_video, ref_mode, ref_pose_video = args.ref_video, args.ref_mode or "pose", None
    if args.ref_eyeblink or args.ref_pose:
        if args.ref_video:
            raise InputError("use either --ref_video/--ref_mode or --ref_eyeblink/--ref_pose, not both")
        ref_video = args.ref_eyeblink or args.ref_pose
        ref_mode = (
            "pose+blink" if (args.ref_eyeblink and args.ref_pose) else ("pose" if args.ref_pose else "blink")
        )
        if args.ref_eyeblink and args.ref_pose and Path(args.ref_eyeblink) != Path(args.ref_pose):
            ref_pose_video = args.ref_pose  # blinks from --ref_eyeblink, head pose from this one
    enhancer = "none" if args.enhancer in (None, "None") else args.enhancer
    background = "none" if args.background_enhancer in (None, "None") else args.background_enhancer
    values: dict[str, Any] = {
        "source": str(job.picture),
        "driven_audio": str(job.audio) if job.audio else None,
        "idle_seconds": args.idle_seconds if job.audio is None else None,
        "preprocess": args.preprocess,
        "still": args.still,
        "pose_style": args.pose_style,
        "expression_scale": args.expression_scale,
        "size": args.size,
        "batch_size": args.batch_size,
        "use_blink": not args.no_blink,
        "seed": args.seed,
        "ref_video": ref_video,
        "ref_mode": ref_mode,
        "ref_pose_video": ref_pose_video,
        "input_yaw": args.input_yaw,
        "input_pitch": args.input_pitch,
        "input_roll": args.input_roll,
        "face_index": args.face_index,
        "face_detector": args.face_detector,
        "enhancer": enhancer,
        "background_enhancer": background,
        "enhancer_mode": args.enhancer_mode,
        "extra": {"front_end": "cli"},
    }
    if args.max_audio_seconds is not None:
        values["max_audio_seconds"] = args.max_audio_seconds
    return GenerationOptions.from_mapping(values)


def output_stem(job: Job, args: argparse.Namespace) -> str:
    """``<picture>__<audio>`` (``<picture>__idle<S>s`` in idle mode): a job's video name without suffix."""
    return job.picture.stem + "__" + (job.audio.stem if job.audio else f"idle{args.idle_seconds:g}s")


def output_path(job: Job, args: argparse.Namespace, taken: set[Path]) -> Path:
    """``--output``, else ``<result_dir>/<picture>__<audio>.mp4`` made unique (``-2``, ``-3``...).

    Automatic names are a first guess: the writer claims the name that is really free when the video
    starts (another run may take this one first); see :func:`on_exists_for`."""
    if args.output:
        return Path(args.output).expanduser()
    stem = output_stem(job, args)
    folder = Path(args.result_dir).expanduser()
    candidate = folder / f"{stem}.mp4"
    n = 1
    while candidate in taken or candidate.exists():
        n += 1
        candidate = folder / f"{stem}-{n}.mp4"
    taken.add(candidate)
    return candidate


def on_exists_for(args: argparse.Namespace) -> str:
    """What the writer does when the output name is taken: ``--output`` is refused (or replaced with
    ``--overwrite``); an automatic name moves on to the next free ``-N``."""
    if args.output:
        return "overwrite" if args.overwrite else "error"
    return "unique"


def check_outputs(paths: Sequence[Path], on_exists: str) -> None:
    """Every output folder usable (not created yet) and, for ``--output``, the file free: InputError now,
    before any model loads, instead of after the motion."""
    from .video.writer import check_folder, check_output_free

    for folder in dict.fromkeys(p.parent for p in paths):
        check_folder(folder)
    for path in paths:
        check_output_free(path, on_exists)


def check_stream_to(args: argparse.Namespace, jobs: int) -> None:
    """``--stream_to``: only ``-``, one job, and standard output not a terminal (InputError otherwise)."""
    if args.stream_to is None:
        return
    if args.stream_to != "-":
        raise InputError(
            f"--stream_to {args.stream_to}: only '-' (standard output) is supported; the file itself is "
            "saved under --result_dir / --output anyway"
        )
    if jobs > 1:
        raise InputError(
            f"--stream_to - streams one video but there are {jobs} jobs; give one picture and one recording"
        )
    if sys.stdout.isatty():
        raise InputError(
            "--stream_to -: standard output is a terminal; pipe it into a player or a file "
            "(e.g. '... --stream_to - | ffplay -')"
        )


class StdoutSink:
    """Hands the fragments to standard output as they come, from its own thread, so a player that reads
    slowly (a pipe fills up) never holds back the rendering: fragments wait in memory until it reads.
    When the reader has gone (closed pipe), it stops writing there (standard output then points at
    /dev/null, so Python's exit flush cannot fail). :meth:`close` waits until everything is written."""

    def __init__(self) -> None:
        self.out = sys.stdout.buffer
        self.gone = False
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name="sadtalker-stdout", daemon=True)
        self._thread.start()

    def __call__(self, data: bytes) -> None:
        if not self.gone:
            self._queue.put(data)

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            if self.gone:
                continue
            try:
                self.out.write(data)
                self.out.flush()
            except (BrokenPipeError, OSError) as exc:
                self.gone = True
                with contextlib.suppress(OSError):
                    null = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(null, self.out.fileno())
                    os.close(null)
                logging.getLogger(__name__).warning(
                    "standard output closed (%s); the video is still being saved", exc.strerror or exc
                )

    def close(self, timeout: float | None = None) -> None:
        """Write what is queued, then stop (``timeout`` seconds at most; ``None``: until written)."""
        self._queue.put(None)
        self._thread.join(timeout)


def resolve_device(name: str, force_cpu: bool) -> str:
    if force_cpu:
        return "cpu"
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


# --------------------------------------------------------------------------- progress
class ProgressBars:
    """tqdm bar per pipeline stage (one line at a time on stderr)."""

    def __init__(self, enabled: bool, prefix: str = "") -> None:
        self.enabled = enabled
        self.prefix = prefix
        self._bar = None
        self._stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(
                total=total,
                desc=f"{self.prefix}{stage}",
                unit="frame" if stage in ("render", "reference") else "step",
                leave=False,
                dynamic_ncols=True,
            )
        bar = self._bar
        if bar is None:
            return
        if total != bar.total:
            bar.total = total
        bar.update(max(0, done - bar.n))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


# --------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    with _sigterm_as_interrupt():
        try:
            return _main(argv)
        except KeyboardInterrupt as exc:  # before or between the jobs (during one, _main reports it)
            terminated = isinstance(exc, Terminated)
            print("terminated" if terminated else "interrupted", file=sys.stderr)
            return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    allocator.tune_from_environment()  # before any thread starts (unless SADTALKER_MALLOC=default)

    def fail(exc: BaseException, code: int = EXIT_FAILED) -> int:
        if args.verbose:
            logging.getLogger(__name__).exception("failed")
        if isinstance(exc, CheckpointError):  # the file list reads better one file per line
            print(f"error: {str(exc).strip()}", file=sys.stderr)
        else:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
        return code

    try:
        jobs = collect_jobs(args)
        if args.output and len(jobs) > 1:
            raise InputError(f"--output names one file but there are {len(jobs)} jobs; use --result_dir")
        if args.overwrite and not args.output and not args.cluster:
            raise InputError(
                "--overwrite only applies to --output FILE (names in --result_dir are never reused)"
            )
        taken: set[Path] = set()
        planned = [(job, options_for(job, args)) for job in jobs]
        from .cluster.cli import check_flags, run_cluster_batch

        check_flags(args)
        if args.cluster:  # the batch runs on Ray (optional dependency), see sadtalker_ext.cluster
            return run_cluster_batch(args, planned)
        planned = [(job, opts.replace(output=str(output_path(job, args, taken)))) for job, opts in planned]
        on_exists = on_exists_for(args)
        check_outputs([Path(opts.output) for _, opts in planned], on_exists)
        check_stream_to(args, len(planned))
    except SadTalkerError as exc:
        return fail(exc, EXIT_USAGE)

    from .pipeline import SadTalker

    try:
        talker = SadTalker(
            checkpoint_dir=args.checkpoint_dir,
            gfpgan_dir=args.gfpgan_dir,
            device=resolve_device(args.device, args.cpu),
            dtype=args.dtype,
            keep_partial=args.keep_partial,
            winograd=not args.no_winograd,
        )
        # Weights and face models are the same for every job of this call: check them once, up front.
        talker.check_weights(planned[0][1])
    except SadTalkerError as exc:
        return fail(exc)
    if talker.precision_advice:
        print(f"note: {talker.precision_advice}", file=sys.stderr)

    failures: list[tuple[Job, str]] = []
    made: list[Path] = []
    started = time.perf_counter()
    cancel = threading.Event()
    stream = StdoutSink() if args.stream_to == "-" else None
    report = sys.stderr if stream is not None else sys.stdout  # stdout carries the video
    streaming: dict[str, Any] = {}
    if stream is not None or args.fragmented:
        streaming = {"fragmented": True, "stream": stream}
    for index, (job, opts) in enumerate(planned, 1):
        label = f"[{index}/{len(planned)}] " if len(planned) > 1 else ""
        bars = ProgressBars(enabled=not args.no_progress, prefix=label)
        try:
            try:
                result = talker.generate(opts, progress=bars, cancel=cancel, on_exists=on_exists, **streaming)
            except BaseException:
                if stream is not None:  # what was streamed still reaches the reader, briefly
                    stream.close(timeout=5)
                raise
            if stream is not None:
                stream.close()
        except KeyboardInterrupt as exc:
            bars.close()
            kept = getattr(exc, "partial_path", None)
            what = "terminated" if isinstance(exc, Terminated) else "interrupted"
            print(what + (f"; partial video kept: {kept}" if kept else ""), file=sys.stderr)
            return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
        except SadTalkerError as exc:
            bars.close()
            if isinstance(exc, CheckpointError) or len(planned) == 1:
                return fail(exc)
            failures.append((job, _one_line(exc)))
            print(f"{label}failed: {job.picture.name} + {job.audio.name if job.audio else 'idle'}: "
                  f"{_one_line(exc)}", file=sys.stderr)  # fmt: skip
            continue
        except Exception as exc:  # unexpected: report, keep going with the other jobs
            bars.close()
            if args.verbose:
                logging.getLogger(__name__).exception("job failed")
            failures.append((job, f"{type(exc).__name__}: {_one_line(exc)}"))
            print(
                f"{label}failed: {job.picture.name}: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr
            )
            if len(planned) == 1:
                return EXIT_FAILED
            continue
        bars.close()
        made.append(result.video_path)
        print(f"{label}{result.video_path}  ({result.num_frames} frames, seed {result.seed}, "
              f"{result.timings.get('total', 0.0):.1f} s)", file=report)  # fmt: skip

    if len(planned) > 1:
        elapsed = time.perf_counter() - started
        print(f"done: {len(made)} of {len(planned)} videos made in {elapsed:.1f} s"
              + (f", {len(failures)} failed" if failures else ""))  # fmt: skip
        for job, why in failures:
            print(f"  failed: {job.picture} + {job.audio or 'idle'}: {why}", file=sys.stderr)
    return EXIT_OK if not failures else EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
