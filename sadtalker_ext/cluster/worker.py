"""What runs inside a Ray actor: one :class:`~sadtalker_ext.pipeline.SadTalker`, kept warm across jobs.

No ``ray`` import here: the driver wraps :class:`ClusterWorker` with ``ray.remote`` and passes the input
files' bytes as arguments (Ray resolves them from its object store). A job's inputs are written into a
private staging folder under their own names, the video is made there and its bytes returned; the driver
writes it under the result folder. With a shared file system the worker reads and writes the user's paths.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import allocator
from ..errors import CancelledError, CheckpointError, InputError, SadTalkerError
from ..options import GenerationOptions
from ..video.writer import sidecar_path

STAGING_PREFIX = "sadtalker-worker-"
"""Staging folders are ``<staging root>/sadtalker-worker-<pid>-<random>``."""


@dataclass(frozen=True)
class WorkerSettings:
    """How every worker builds its pipeline: weight folders as seen on the worker's machine (``None``:
    the usual lookup there), ``device`` (``auto``: the GPU Ray gave the worker, else the CPU), ``dtype``,
    ``winograd``; ``threads``: torch CPU threads (``None``: Ray's CPU share of the worker)."""

    checkpoint_dir: str | None = None
    gfpgan_dir: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    winograd: bool = True
    threads: int | None = None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def remove_stale_staging(root: Path) -> list[Path]:
    """Remove staging folders under ``root`` whose worker process is gone (killed mid-job); returns them."""
    removed = []
    if not root.is_dir():
        return removed
    for folder in root.glob(STAGING_PREFIX + "*"):
        pid_text = folder.name.removeprefix(STAGING_PREFIX).split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _alive(int(pid_text)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class ClusterWorker:
    """A Ray actor's state: the pipeline (models load on the first job and stay), a staging folder and a
    cancel flag. Methods return plain dicts (what the driver needs), never raise for a job's failure."""

    def __init__(self, settings: WorkerSettings, shared_fs: bool = False, staging_root: str | None = None):
        import torch

        from ..pipeline import SadTalker

        allocator.tune_from_environment()  # SADTALKER_MALLOC where the worker runs (a local cluster that the
        # command starts inherits its environment; on other machines set it before `ray start`)
        threads = settings.threads
        if threads is None:
            with contextlib.suppress(Exception):
                import ray

                threads = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 0)) or None
        if threads:
            torch.set_num_threads(threads)
        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda:") and os.environ.get("CUDA_VISIBLE_DEVICES"):
            device = "cuda"  # Ray made the worker's own GPU(s) visible, numbered from 0
        self.talker = SadTalker(
            checkpoint_dir=settings.checkpoint_dir,
            gfpgan_dir=settings.gfpgan_dir,
            device=device,
            dtype=settings.dtype,
            winograd=settings.winograd,
            post_threads=threads,
        )
        self.shared_fs = shared_fs
        self.cancel = threading.Event()
        root = Path(staging_root) if staging_root else Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(root)
        self.staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=root))

    def info(self) -> dict[str, Any]:
        """``pid``, ``device`` and ``staging`` folder of this worker."""
        return {"pid": os.getpid(), "device": str(self.talker.device), "staging": str(self.staging)}

    def cancel_jobs(self) -> None:
        """Stop the running job at its next check (its files are removed) and refuse later ones."""
        self.cancel.set()

    def close(self) -> None:
        """Remove the staging folder (the driver calls this before it lets the worker go)."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def run(self, job: dict[str, Any], *data: bytes) -> dict[str, Any]:
        """Make one video. ``job``: ``options`` (``GenerationOptions.to_dict()``, ``output`` = the final
        name on the driver), ``inputs`` (``[(field, file name)]``, one per ``data`` item; empty with a
        shared file system), with a shared file system ``paths`` (``{field: absolute path}``, output too),
        ``fragmented`` (write a fragmented MP4). Returns ``status`` (``done``, ``input``, ``checkpoint``,
        ``error``, ``cancelled``), ``error``, ``video`` (bytes) and ``sidecar`` (text) when done, ``seed``,
        ``num_frames``, ``pid``, ``started`` / ``finished`` (epoch seconds)."""
        out: dict[str, Any] = {"pid": os.getpid(), "started": time.time()}
        folder = self.staging / f"job-{uuid.uuid4().hex[:12]}"
        try:
            if self.cancel.is_set():
                raise CancelledError("cancelled before the job started")
            wanted = GenerationOptions.from_mapping(job["options"])
            if self.shared_fs:  # the driver's absolute paths (its working folder is not ours)
                local = dict(job["paths"])
            else:
                local = {}
                for (field, name), content in zip(job["inputs"], data, strict=True):
                    path = folder / "in" / field / Path(name).name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(content)
                    local[field] = str(path)
                local["output"] = str(folder / "out" / Path(str(wanted.output)).name)
            result = self.talker.generate(
                wanted.replace(**local),
                cancel=self.cancel,
                on_exists="overwrite",
                recorded_as=wanted,
                fragmented=bool(job.get("fragmented")),
            )
            if not self.shared_fs:
                out["video"] = result.video_path.read_bytes()
                out["sidecar"] = sidecar_path(result.video_path).read_text(encoding="utf-8")
            out.update(status="done", seed=result.seed, num_frames=result.num_frames)
        except CancelledError as exc:
            out.update(status="cancelled", error=str(exc))
        except CheckpointError as exc:
            out.update(status="checkpoint", error=str(exc).strip())
        except InputError as exc:
            out.update(status="input", error=" ".join(str(exc).split()))
        except SadTalkerError as exc:
            out.update(status="error", error=" ".join(str(exc).split()))
        except Exception as exc:  # a bug or the machine: reported with the job, the worker goes on
            out.update(status="error", error=f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        out["finished"] = time.time()
        return out
