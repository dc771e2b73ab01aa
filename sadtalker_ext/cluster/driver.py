"""The batch driver: connect to (or start) a Ray cluster, one actor per worker slot, hand jobs out as
workers free up, write the videos that come back, retry jobs whose worker died.

Names: a job's output name is claimed (:func:`~sadtalker_ext.video.writer.reserve_output`) when the job
is handed out, and the finished video replaces that placeholder in one rename; a job that fails, or a batch
that is interrupted, gives the name back. Nothing is ever left half-written under a final name.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..options import GenerationOptions
from ..provenance import INPUT_FIELDS, file_sha256
from ..video.writer import ensure_folder, install_finished, release_output, reserve_output, temp_files_of
from .config import ClusterConfig, ClusterUnavailable, import_ray
from .resume import find_done
from .worker import ClusterWorker, WorkerSettings

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 20.0
"""How long an interrupted batch waits for running jobs to stop and clean up before their workers are
killed."""


@dataclass(frozen=True)
class BatchJob:
    """One video: its options (``output`` = the wanted file) and what to do when that name is taken
    (``unique``: the next free ``-N`` name; ``error``; ``overwrite``)."""

    options: GenerationOptions
    on_exists: str = "unique"


@dataclass
class JobOutcome:
    """What became of one job. ``status``: ``done``, ``skipped`` (an earlier run made it: ``path``),
    ``failed`` (``error``), ``cancelled`` or ``pending`` (never handed out)."""

    index: int
    job: BatchJob
    status: str = "pending"
    path: Path | None = None
    error: str | None = None
    tries: int = 0
    seed: int | None = None
    num_frames: int = 0
    worker_pid: int | None = None
    started: float | None = None
    """Epoch seconds on the worker when its last try started / finished."""
    finished: float | None = None


@dataclass(frozen=True)
class BatchEvent:
    """Reported to ``progress`` as the batch goes: ``kind`` is ``workers`` (``message`` says how many),
    ``skipped``, ``started``, ``done``, ``failed``, ``retry`` (a worker died; ``message`` why)."""

    kind: str
    outcome: JobOutcome | None = None
    message: str = ""


@dataclass
class BatchReport:
    """All outcomes in job order, plus how the batch ran."""

    outcomes: list[JobOutcome]
    workers: int = 0
    started_cluster: bool = False
    interrupted: bool = False
    seconds: float = 0.0
    fatal: str | None = None
    """A problem that stopped the whole batch (missing weights on a worker)."""

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


@dataclass
class _Slot:
    actor: Any
    busy: int | None = None
    """Index of the job it runs."""


@dataclass
class _Plan:
    digests: dict[str, str] = field(default_factory=dict)
    target: Path | None = None
    placeholder: Any = None
    on_exists: str = "unique"


def _connect(ray: Any, config: ClusterConfig, verbose: bool) -> bool:
    """Join or start the cluster; returns whether this call started it (and must shut it down). The
    caller's SIGTERM handling is kept (``ray.init`` installs its own, which exits without cleaning up)."""
    try:
        sigterm = signal.getsignal(signal.SIGTERM)
    except ValueError:  # pragma: no cover - not the main thread
        sigterm = None
    try:
        return _init(ray, config, verbose)
    finally:
        if sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)


def _init(ray: Any, config: ClusterConfig, verbose: bool) -> bool:
    common: dict[str, Any] = {
        "log_to_driver": verbose,
        "logging_level": logging.INFO if verbose else "warning",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Ray's notes on env vars and pydantic 1
        if config.address == "auto":
            if _announced_cluster(ray):
                try:  # no address: Ray takes $RAY_ADDRESS, else the cluster `ray start` runs here
                    ray.init(**common)
                    return False
                except ConnectionError as exc:  # a stale note of a cluster that has stopped
                    log.warning("no Ray cluster at the announced address (%s); starting a local one", exc)
            try:
                ray.init(
                    num_cpus=config.local_cpus,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    **common,
                )
            except Exception as exc:
                raise ClusterUnavailable(f"cannot start a local Ray cluster: {exc}") from exc
            return True
        try:
            ray.init(address=config.address, **common)
        except Exception as exc:
            raise ClusterUnavailable(
                f"cannot reach the Ray cluster at {config.address}: {' '.join(str(exc).split())}; start one "
                "with `ray start --head` on its first machine (it prints the address), or use --cluster auto"
            ) from exc
        return False


def _worker_runtime_env() -> dict[str, Any] | None:
    """Run from a checkout (not installed), this package is found through the driver's working folder or
    ``PYTHONPATH``, which Ray's workers do not share: put the checkout first on their ``PYTHONPATH``
    (machines where that folder does not exist need the package installed)."""
    root = Path(__file__).resolve().parents[2]
    if root.name in ("site-packages", "dist-packages"):
        return None
    return {"env_vars": {"PYTHONPATH": f"{root}{os.pathsep}${{PYTHONPATH}}"}}


def _death_reason(exc: BaseException) -> str:
    """Ray's error type, plus the error that stopped the worker when its start failed (e.g. no
    ``sadtalker_ext`` on that machine)."""
    text = str(exc)
    if "creation task" in text:
        errors = [ln.strip() for ln in text.splitlines() if re.match(r"\s*\w+(Error|Exception): ", ln)]
        if errors:
            return f"{type(exc).__name__}: it could not start: {errors[-1][:300]}"
    return type(exc).__name__


def _announced_cluster(ray: Any) -> bool:
    """Whether ``$RAY_ADDRESS`` or ``ray start`` on this machine names a cluster to join. (Ray's own
    ``address="auto"`` would also join any Ray instance it finds running here, such as another program's
    private one.)"""
    if os.environ.get("RAY_ADDRESS"):
        return True
    try:
        return bool(ray._private.utils.read_ray_address())
    except Exception:  # the note's location is Ray's business: without it, start a local cluster
        return False


def _worker_shape(ray: Any, config: ClusterConfig, jobs: int, device: str) -> tuple[int, float, float]:
    """``(workers, gpus per worker, cpus per worker)`` that the cluster's resources allow (no GPU by
    default for workers told to run on the CPU)."""
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    gpw = config.gpus_per_worker
    if gpw is None:
        gpw = 1.0 if gpus >= 1 and device != "cpu" else 0.0
    cpw = config.cpus_per_worker
    fit = math.floor(cpus / cpw + 1e-9)
    if gpw > 0:
        fit = min(fit, math.floor(gpus / gpw + 1e-9))
    if fit < 1:
        raise ClusterUnavailable(
            f"the cluster has {cpus:g} CPUs and {gpus:g} GPUs: not enough for one worker of {cpw:g} CPUs and "
            f"{gpw:g} GPUs; lower --cpus_per_worker / --gpus_per_worker or add machines"
        )
    wanted = config.workers or fit
    if wanted > fit:
        log.warning("%d workers asked for, the cluster's resources fit %d", wanted, fit)
    return max(1, min(wanted, fit, jobs)), gpw, cpw


def run_batch(
    jobs: Sequence[BatchJob | GenerationOptions],
    config: ClusterConfig | None = None,
    worker: WorkerSettings | None = None,
    *,
    address: str | None = None,
    resume: bool = True,
    overwrite: bool = False,
    staging_dir: str | None = None,
    progress: Callable[[BatchEvent], None] | None = None,
    cancel: threading.Event | None = None,
    verbose: bool = False,
) -> BatchReport:
    """Make every job's video on a Ray cluster; returns a :class:`BatchReport`.

    Each job's ``options.output`` is the file wanted. ``address`` overrides ``config.address``. With
    ``resume`` a job is skipped when a video of it exists (``output`` or a ``-N`` sibling, with a sidecar
    naming the same input contents and settings); ``overwrite`` redoes such a job and replaces that video.
    When Ray is already connected in this process (``ray.init`` by the caller) that cluster is used and
    left running; a cluster started here is shut down at the end. ``staging_dir``: where workers stage
    inputs (default: their machine's temp folder). ``cancel`` set: running jobs stop, their files are
    removed, the report says ``interrupted``. Ctrl-C does the same and raises ``KeyboardInterrupt``.
    Raises :class:`ClusterUnavailable` (no Ray, no cluster, too few resources) and :class:`InputError`.
    """
    config = config or ClusterConfig()
    if address is not None:
        from dataclasses import replace

        config = replace(config, address=address)
    worker = worker or WorkerSettings()
    batch = [j if isinstance(j, BatchJob) else BatchJob(j) for j in jobs]
    outcomes = [JobOutcome(i, j) for i, j in enumerate(batch)]
    report = BatchReport(outcomes)
    started_at = time.perf_counter()

    def emit(kind: str, outcome: JobOutcome | None = None, message: str = "") -> None:
        if progress is not None:
            progress(BatchEvent(kind, outcome, message))

    # 1. plan: input digests, resume
    plans: list[_Plan] = []
    for outcome in outcomes:
        opts = outcome.job.options
        if not opts.output:
            raise InputError(f"job {outcome.index + 1}: options.output (the video file wanted) is not set")
        ensure_folder(Path(opts.output).parent)  # a file in the way is reported now, not per job
        plan = _Plan(digests={f: file_sha256(p) for f in INPUT_FIELDS if (p := getattr(opts, f))})
        plan.on_exists = outcome.job.on_exists
        plans.append(plan)
        done = find_done(Path(opts.output), opts, plan.digests, worker.dtype) if resume else None
        if done is not None and not overwrite:
            outcome.status, outcome.path = "skipped", done
            emit("skipped", outcome)
        elif done is not None:
            plan.target, plan.on_exists = done, "overwrite"
    todo = deque(o.index for o in outcomes if o.status == "pending")
    if not todo:
        report.seconds = time.perf_counter() - started_at
        return report

    def give_back(index: int) -> None:
        """Release the name claimed for a job that did not finish (and, with a shared file system, the
        temporary files a killed worker left beside it)."""
        plan = plans[index]
        if plan.target is None:
            return
        release_output(plan.target, plan.placeholder)
        if config.shared_fs:
            for stray in temp_files_of(plan.target):
                with contextlib.suppress(OSError):
                    stray.unlink()

    ray = import_ray()
    own_connection = not ray.is_initialized()
    started = _connect(ray, config, verbose) if own_connection else False
    report.started_cluster = started
    slots: list[_Slot] = []
    in_flight: dict[Any, int] = {}
    data_refs: dict[str, Any] = {}
    """Input bytes in the object store by resolved path; dropped once no unsettled job needs them."""
    keys = {
        i: [str(Path(p).resolve()) for f in INPUT_FIELDS if (p := getattr(outcomes[i].job.options, f))]
        for i in todo
    }
    uses: dict[str, int] = {}
    for ks in keys.values():
        for k in ks:
            uses[k] = uses.get(k, 0) + 1

    def settled(index: int) -> None:
        for k in keys.pop(index, ()):
            uses[k] -= 1
            if uses[k] == 0:
                data_refs.pop(k, None)

    try:
        count, gpw, cpw = _worker_shape(ray, config, len(todo), worker.device)
        remote = ray.remote(ClusterWorker).options(
            num_cpus=cpw,
            num_gpus=gpw,
            max_restarts=0,
            max_task_retries=0,
            max_concurrency=2,
            runtime_env=_worker_runtime_env(),
        )

        def new_actor() -> Any:
            return remote.remote(worker, config.shared_fs, staging_dir)

        slots = [_Slot(new_actor()) for _ in range(count)]
        report.workers = count
        emit("workers", message=f"{count} worker{'s' if count > 1 else ''} ({cpw:g} CPU, {gpw:g} GPU each)")

        def hand_out(slot: _Slot, index: int) -> None:
            outcome, plan = outcomes[index], plans[index]
            opts = outcome.job.options
            if plan.target is None:
                plan.target, made = reserve_output(Path(str(opts.output)), plan.on_exists)
                plan.placeholder = plan.target.stat() if made else None
            wanted = opts.replace(output=str(plan.target))
            inputs, refs = [], []
            if not config.shared_fs:
                for f, key in zip((f for f in INPUT_FIELDS if getattr(opts, f)), keys[index], strict=True):
                    if key not in data_refs:
                        data_refs[key] = ray.put(Path(key).read_bytes())
                    inputs.append((f, Path(getattr(opts, f)).name))
                    refs.append(data_refs[key])
            paths = {}
            if config.shared_fs:  # absolute: a worker's working folder is not the driver's
                for f in (*INPUT_FIELDS, "output"):
                    if getattr(wanted, f):
                        paths[f] = str(Path(getattr(wanted, f)).resolve())
            job = {"options": wanted.to_dict(), "inputs": inputs, "paths": paths}
            outcome.tries += 1
            slot.busy = index
            in_flight[slot.actor.run.remote(job, *refs)] = index
            emit("started", outcome)

        def finish(index: int, result: dict[str, Any]) -> None:
            outcome, plan = outcomes[index], plans[index]
            outcome.worker_pid = result.get("pid")
            outcome.started, outcome.finished = result.get("started"), result.get("finished")
            status = result.get("status")
            if status == "done":
                assert plan.target is not None
                try:
                    if not config.shared_fs:
                        install_finished(plan.target, result["video"], result.get("sidecar"))
                except Exception as exc:
                    give_back(index)
                    outcome.status, outcome.error = "failed", " ".join(str(exc).split())
                    emit("failed", outcome)
                    return
                outcome.status, outcome.path = "done", plan.target
                outcome.seed, outcome.num_frames = result.get("seed"), int(result.get("num_frames") or 0)
                emit("done", outcome)
                return
            give_back(index)
            if status == "cancelled":
                outcome.status, outcome.error = "cancelled", result.get("error")
                return
            outcome.status, outcome.error = "failed", result.get("error") or "failed"
            emit("failed", outcome)
            if status == "checkpoint":  # the same weights for every job: stop the batch
                report.fatal = outcome.error
                todo.clear()

        dead_errors = tuple(
            getattr(ray.exceptions, name)
            for name in ("RayActorError", "WorkerCrashedError", "ActorUnavailableError", "NodeDiedError")
            if hasattr(ray.exceptions, name)
        )

        def worker_died(slot: _Slot, index: int, exc: BaseException) -> None:
            outcome = outcomes[index]
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)
            slot.actor = new_actor()
            why = f"its worker died ({_death_reason(exc)})"
            log.info("job %d: %s: %s", index + 1, why, exc)
            if config.shared_fs and plans[index].target is not None:
                for stray in temp_files_of(plans[index].target):
                    with contextlib.suppress(OSError):
                        stray.unlink()
            if outcome.tries <= config.max_retries:
                todo.appendleft(index)
                emit("retry", outcome, why)
            else:
                give_back(index)
                outcome.status = "failed"
                outcome.error = f"{why}; tried {outcome.tries} times (--max_retries {config.max_retries})"
                emit("failed", outcome)

        # 2. hand jobs out as workers free up
        while todo or in_flight:
            if cancel is not None and cancel.is_set():
                report.interrupted = True
                break
            for slot in slots:
                if slot.busy is None and todo:
                    hand_out(slot, todo.popleft())
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                index = in_flight.pop(ref)
                slot = next(s for s in slots if s.busy == index)
                slot.busy = None
                try:
                    result = ray.get(ref)
                except dead_errors as exc:
                    worker_died(slot, index, exc)
                except Exception as exc:  # the call itself failed (not the job): report, go on
                    give_back(index)
                    outcomes[index].status = "failed"
                    outcomes[index].error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                    emit("failed", outcomes[index])
                else:
                    finish(index, result)
                if outcomes[index].status != "pending":
                    settled(index)
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        try:
            _stop(ray, slots, in_flight, outcomes, report.interrupted)
            for outcome in outcomes:
                if outcome.status in ("pending", "cancelled"):
                    give_back(outcome.index)
        finally:
            if started:
                ray.shutdown()
            report.seconds = time.perf_counter() - started_at
    return report


def _stop(
    ray: Any, slots: list[_Slot], in_flight: dict[Any, int], outcomes: list[JobOutcome], cancelled: bool
) -> None:
    """Cancel what still runs (each worker removes its job's files), then let every worker go."""
    if in_flight:
        for slot in slots:
            with contextlib.suppress(Exception):
                slot.actor.cancel_jobs.remote()
        with contextlib.suppress(Exception):
            ray.wait(list(in_flight), num_returns=len(in_flight), timeout=CANCEL_GRACE_S)
        for index in in_flight.values():
            if outcomes[index].status == "pending":
                outcomes[index].status = "cancelled" if cancelled else "pending"
    closing = []
    for slot in slots:
        with contextlib.suppress(Exception):
            closing.append(slot.actor.close.remote())
    with contextlib.suppress(Exception):
        ray.wait(closing, num_returns=len(closing), timeout=10)
    for slot in slots:
        with contextlib.suppress(Exception):
            ray.kill(slot.actor, no_restart=True)
