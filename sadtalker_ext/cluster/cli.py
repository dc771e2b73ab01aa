"""The command line's ``--cluster`` flags and the batch run behind them (``python -m sadtalker_ext
--cluster auto ...``); everything else about the command line stays in :mod:`sadtalker_ext.cli`."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError, SadTalkerError
from .config import ClusterConfig, ClusterUnavailable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser, add: Any) -> None:
    """The cluster group of flags (``add(group, name, **kw)`` adds a flag and its dashed spelling)."""
    group = parser.add_argument_group('cluster (Ray; optional: pip install "ray>=2.40")')
    add(
        group,
        "cluster",
        metavar="ADDRESS",
        help="run the batch on a Ray cluster: auto (the cluster running on this machine, else a local one), "
        "HOST:PORT (the head printed by `ray start --head`) or ray://HOST:PORT (Ray Client); a batch run "
        "again skips the videos made before (same inputs and settings) unless --overwrite",
    )
    add(group, "workers", type=int, metavar="N", help="workers (default: as many as the cluster fits)")
    add(
        group,
        "gpus_per_worker",
        type=float,
        metavar="G",
        help="GPUs per worker (default 1 when the cluster has GPUs, else 0)",
    )
    add(
        group,
        "cpus_per_worker",
        type=float,
        default=1.0,
        metavar="C",
        help="CPU cores per worker (default 1)",
    )
    add(
        group,
        "max_retries",
        type=int,
        default=2,
        metavar="N",
        help="new tries of a job whose worker died (default 2; a job failing for its input is not retried)",
    )
    add(
        group,
        "shared_fs",
        action="store_true",
        help="every worker sees the inputs and the result folder at the same paths: read and write them "
        "directly instead of sending bytes through Ray",
    )


def check_flags(args: argparse.Namespace) -> None:
    """:class:`InputError` when a cluster flag is given without ``--cluster`` (it would do nothing), or
    ``--keep_partial`` with it (an interrupted cluster job leaves nothing behind)."""
    if args.cluster:
        if args.keep_partial:
            raise InputError(
                "--keep_partial does not apply to a batch on a cluster (--cluster): leave it out"
            )
        return
    defaults = {
        "workers": None,
        "gpus_per_worker": None,
        "cpus_per_worker": 1.0,
        "max_retries": 2,
        "shared_fs": False,
    }
    given = [f"--{name}" for name, default in defaults.items() if getattr(args, name) != default]
    if given:
        raise InputError(
            f"{', '.join(given)} only apply to a batch on a cluster: add --cluster auto (or an address)"
        )


@contextlib.contextmanager
def _remember_sigterm() -> Iterator[list[int]]:
    """While inside, a SIGTERM is noted in the yielded list before the handler in place runs."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:  # pragma: no cover - not the main thread
        previous = None
    received: list[int] = []
    if not callable(previous):
        yield received
        return

    def note(signum: int, frame: Any) -> None:
        received.append(signum)
        previous(signum, frame)

    try:
        signal.signal(signal.SIGTERM, note)
    except ValueError:  # pragma: no cover - not the main thread
        yield received
        return
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _job_label(options: Any) -> str:
    audio = Path(options.driven_audio).name if options.driven_audio else "idle"
    return f"{Path(options.source).name} + {audio}"


def run_cluster_batch(args: argparse.Namespace, planned: Sequence[tuple[Any, Any]]) -> int:
    """Run ``planned`` (``(Job, GenerationOptions)`` from :mod:`sadtalker_ext.cli`) on the cluster; prints
    one line per job and the summary; returns the exit status (0, 1, or 2 for bad cluster flags).
    ``KeyboardInterrupt`` passes through after the running jobs are cancelled and cleaned up."""
    from .. import cli
    from ..video.writer import ensure_folder
    from .driver import BatchEvent, BatchJob, run_batch
    from .worker import WorkerSettings

    try:
        config = ClusterConfig(
            address=args.cluster,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            cpus_per_worker=args.cpus_per_worker,
            max_retries=args.max_retries,
            shared_fs=args.shared_fs,
        )
        jobs = []
        for job, opts in planned:
            if args.output:
                wanted, on_exists = (
                    Path(args.output).expanduser(),
                    ("overwrite" if args.overwrite else "error"),
                )
            else:
                wanted, on_exists = (
                    Path(args.result_dir).expanduser() / f"{cli.output_stem(job, args)}.mp4",
                    "unique",
                )
            ensure_folder(wanted.parent)
            jobs.append(BatchJob(opts.replace(output=str(wanted)), on_exists))
        settings = WorkerSettings(
            checkpoint_dir=args.checkpoint_dir,
            gfpgan_dir=args.gfpgan_dir,
            device="cpu" if args.cpu else args.device,
            dtype=args.dtype,
            winograd=not args.no_winograd,
        )
    except SadTalkerError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE

    total = len(jobs)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="batch", unit="video", dynamic_ncols=True, leave=False)
    started = time.perf_counter()
    frames = [0]
    counts = {"done": 0, "failed": 0, "skipped": 0}

    def say(text: str, err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout
        if bar is not None:
            bar.write(text, file=stream)
        else:
            print(text, file=stream, flush=True)

    def on_event(event: BatchEvent) -> None:
        o = event.outcome
        if event.kind == "workers":
            say(f"cluster: {event.message}", err=True)
            return
        if o is None:
            return
        label = f"[{o.index + 1}/{total}] "
        if event.kind == "skipped":
            say(f"{label}{o.path}  (made before: same inputs and settings; skipped)")
        elif event.kind == "done":
            frames[0] += o.num_frames
            seconds = (o.finished or 0) - (o.started or 0)
            say(f"{label}{o.path}  ({o.num_frames} frames, seed {o.seed}, {seconds:.1f} s)")
        elif event.kind == "failed":
            say(f"{label}failed: {_job_label(o.job.options)}: {o.error}", err=True)
        elif event.kind == "retry":
            say(f"{label}{event.message}; trying again ({o.tries + 1} of {args.max_retries + 1})", err=True)
        if event.kind in counts:
            counts[event.kind] += 1
            if bar is not None:
                elapsed = max(time.perf_counter() - started, 1e-6)
                bar.set_postfix(
                    done=counts["done"], failed=counts["failed"], fps=f"{frames[0] / elapsed:.2f}"
                )
                bar.update(1)

    try:
        with _remember_sigterm() as terminated:
            try:
                report = run_batch(
                    jobs, config, settings, overwrite=args.overwrite, progress=on_event, verbose=args.verbose
                )
            except KeyboardInterrupt as exc:
                # Ray turns any KeyboardInterrupt raised while it waits into a plain one: keep SIGTERM's
                if terminated and not isinstance(exc, cli.Terminated):
                    raise cli.Terminated(f"terminated (signal {terminated[0]})") from None
                raise
    except (ClusterUnavailable, InputError) as exc:
        print(f"error: {str(exc).strip()}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if bar is not None:
            bar.close()
    made, skipped, failed = report.count("done"), report.count("skipped"), report.count("failed")
    if report.fatal:
        print(f"error: {report.fatal}", file=sys.stderr)
    if total > 1:
        print(
            f"done: {made} of {total} videos made in {report.seconds:.1f} s"
            + (f" on {report.workers} workers" if report.workers else "")
            + (f", {skipped} skipped (made before)" if skipped else "")
            + (f", {failed} failed" if failed else "")
        )
        for o in report.outcomes:
            if o.status == "failed":
                print(f"  failed: {o.job.options.source} + {o.job.options.driven_audio or 'idle'}: {o.error}",
                      file=sys.stderr)  # fmt: skip
    return EXIT_OK if made + skipped == total else EXIT_FAILED
