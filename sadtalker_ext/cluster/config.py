"""Cluster settings (frozen) and the one place that imports Ray, with the message when it is missing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

from ..errors import InputError, SadTalkerError

INSTALL_HINT = (
    'install it with `pip install "ray>=2.40"` (or this package\'s extra: `pip install ".[cluster]"`); '
    "with pydantic 1 in the environment (gradio 3.x) Ray 2.56 or newer cannot start: "
    '`pip install "ray>=2.40,<2.56"`'
)
_HOST_PORT = re.compile(r"^(?:ray://)?(?:\[[0-9A-Fa-f:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class ClusterUnavailable(SadTalkerError):
    """Ray is not installed, or the cluster cannot be reached or started."""


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how wide a batch runs.

    ``address``: ``auto`` (join the cluster running on this machine, else start a local one),
    ``HOST:PORT`` (a cluster's GCS, as printed by ``ray start --head``, default port 6379) or
    ``ray://HOST:PORT`` (Ray Client, default port 10001). ``workers``: actors (one pipeline each);
    ``None`` = as many as the cluster's resources allow. ``gpus_per_worker``: ``None`` = 1 when the cluster
    has GPUs, else 0. ``cpus_per_worker``: CPU cores reserved per actor (its torch threads).
    ``max_retries``: new tries of a job whose worker died. ``shared_fs``: workers read the inputs and write
    the videos at their paths instead of receiving and returning bytes. ``local_cpus``: CPUs of a local
    cluster started by ``auto`` (``None``: all).
    """

    address: str = "auto"
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    max_retries: int = 2
    shared_fs: bool = False
    local_cpus: int | None = None

    def __post_init__(self) -> None:
        check_address(self.address)
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be at least 1; got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise InputError(f"--gpus_per_worker must be 0 or more; got {self.gpus_per_worker}")
        if not self.cpus_per_worker > 0:
            raise InputError(f"--cpus_per_worker must be more than 0; got {self.cpus_per_worker}")
        if self.max_retries < 0:
            raise InputError(f"--max_retries must be 0 or more; got {self.max_retries}")
        if self.local_cpus is not None and self.local_cpus < 1:
            raise InputError(f"local_cpus must be at least 1; got {self.local_cpus}")


def check_address(address: str) -> str:
    """``address`` when it is one of the accepted forms, else :class:`InputError` listing them."""
    match = _HOST_PORT.match(address)
    if address == "auto" or (match and 0 < int(match.group(1)) < 65536):
        return address
    raise InputError(
        f"--cluster {address!r}: expected auto, HOST:PORT (a Ray cluster's head, e.g. 10.0.0.5:6379) "
        "or ray://HOST:PORT (Ray Client, e.g. ray://10.0.0.5:10001)"
    )


def import_ray() -> ModuleType:
    """The ``ray`` module, or :class:`ClusterUnavailable` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ClusterUnavailable(f"--cluster needs Ray, which is not installed here; {INSTALL_HINT}") from exc
    _check_pydantic(ray.__version__)
    return ray


def _check_pydantic(ray_version: str) -> None:
    """Ray 2.56+ refuses pydantic 1 in its dashboard agent, so a local node times out after ~30 s with
    a traceback in its logs: say it at once instead."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pydantic = version("pydantic")
    except PackageNotFoundError:
        return
    ray_parts = tuple(int(p) for p in re.findall(r"\d+", ray_version)[:2])
    if pydantic.split(".")[0] == "1" and ray_parts >= (2, 56):
        raise ClusterUnavailable(
            f"Ray {ray_version} needs pydantic 2, but this environment has pydantic {pydantic} "
            '(gradio 3.x pins it); install `pip install "ray>=2.40,<2.56"` here, or run the cluster '
            "from an environment with pydantic 2"
        )
