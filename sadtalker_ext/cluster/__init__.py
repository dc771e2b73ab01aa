"""Batches on a Ray cluster: every GPU of a machine, or many machines (optional: ``pip install "ray>=2.40"``).

One actor per worker slot holds a warm :class:`~sadtalker_ext.pipeline.SadTalker`; jobs are handed out as
workers free up; inputs go to the workers through Ray's object store and the finished videos come back to
the driver, which writes them under the result folder (temporary name, then rename). A job whose worker dies
is retried on a new worker; a job that fails for its own input is reported and not retried. A batch run
again skips the videos it made before (same input contents, same settings). Nothing here imports Ray until
a batch runs (:func:`.config.import_ray`).

Python::

    from sadtalker_ext.cluster import ClusterConfig, run_batch
    from sadtalker_ext.options import GenerationOptions

    jobs = [GenerationOptions(source="a.png", driven_audio="a.wav", output="out/a.mp4"), ...]
    report = run_batch(jobs, ClusterConfig(address="10.0.0.5:6379"))
"""

from .config import ClusterConfig, ClusterUnavailable, check_address, import_ray
from .driver import BatchEvent, BatchJob, BatchReport, JobOutcome, run_batch
from .worker import WorkerSettings

__all__ = [
    "BatchEvent",
    "BatchJob",
    "BatchReport",
    "ClusterConfig",
    "ClusterUnavailable",
    "JobOutcome",
    "WorkerSettings",
    "check_address",
    "import_ray",
    "run_batch",
]
