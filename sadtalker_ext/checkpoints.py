"""Safe reading of the official weight files.

* ``SadTalker_V0.0.2_{256,512}.safetensors``: one flat file, five prefixes
  (``kp_extractor.``, ``generator.``, ``audio2exp.``, ``audio2pose.``, ``face_3drecon.``).
  A stage reads only the tensors under its exact prefix (``safe_open``, no full load).
* ``mapping_00229/00109-model.pth.tar``: a pickle; read with ``torch.load(weights_only=True)``,
  only the ``mapping`` entry is used. Anything that needs more than plain tensors is refused.

Every failure raises :class:`CheckpointError` naming the file, the component and what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import re
import struct
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .errors import CheckpointError
from .paths import ModelDirs, resolve_model_dirs
from .preprocess.mode import PreprocessMode
from .weights import MAPPING_FILES, SAFETENSORS_256, SAFETENSORS_512, downloader

log = logging.getLogger(__name__)

_MAX_HEADER = 100 * 1024 * 1024
_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


def safetensors_name(size: int) -> str:
    """File name of the packaged checkpoint for render size 256 or 512."""
    if size not in (256, 512):
        raise CheckpointError(f"size must be 256 or 512, got {size}")
    return SAFETENSORS_256 if size == 256 else SAFETENSORS_512


def mapping_name(preprocess: str | PreprocessMode) -> str:
    """MappingNet file for a preprocess mode: 00109 (73 inputs) for full modes, else 00229 (70)."""
    return MAPPING_FILES[PreprocessMode.parse(preprocess).mapping_feature]


def _missing(path: Path, component: str) -> CheckpointError:
    return CheckpointError(
        f"{component}: weight file not found: {path}. Put '{path.name}' into '{path.parent}' "
        f"(run `{downloader()}` to fetch the official weights)."
    )


def read_safetensors_header(path: Path, component: str = "checkpoint") -> dict[str, dict]:
    """Parse and validate a safetensors header without reading tensor data.

    Returns ``{key: {"dtype", "shape", "data_offsets"}}``; raises on a non-safetensors or truncated file.
    """
    path = Path(path)
    if not path.is_file():
        raise _missing(path, component)
    file_size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{component}: {path} is not a safetensors file (only {file_size} bytes).")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len <= 1 or header_len > _MAX_HEADER or 8 + header_len > file_size:
            raise CheckpointError(
                f"{component}: {path} is not a valid safetensors file or is truncated "
                f"(header length {header_len}, file size {file_size}). Download it again."
            )
        try:
            header = json.loads(fh.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(
                f"{component}: {path} has an unreadable safetensors header ({exc})."
            ) from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{component}: {path} has a malformed safetensors header.")
    header.pop("__metadata__", None)
    data_size = file_size - 8 - header_len
    end = 0
    for key, info in header.items():
        try:
            start, stop = info["data_offsets"]
            expected = _DTYPE_BYTES[info["dtype"]]
            for dim in info["shape"]:
                expected *= int(dim)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{component}: {path}: malformed header entry for '{key}'.") from exc
        if stop - start != expected:
            raise CheckpointError(f"{component}: {path}: tensor '{key}' has inconsistent offsets.")
        end = max(end, stop)
    if end > data_size:
        raise CheckpointError(
            f"{component}: {path} is truncated: its header needs {end} data bytes, the file has {data_size}. "
            "Download it again."
        )
    return header


def read_safetensors_prefix(
    path: str | Path, prefix: str, component: str | None = None
) -> dict[str, torch.Tensor]:
    """Read the tensors whose key starts exactly with ``prefix + '.'``, prefix stripped.

    Returns float/int tensors on the CPU, as stored. Only the selected tensors are read.
    """
    from safetensors import safe_open

    path = Path(path)
    component = component or prefix
    header = read_safetensors_header(path, component)
    lead = prefix + "."
    keys = [k for k in header if k.startswith(lead)]
    if not keys:
        raise CheckpointError(
            f"{component}: {path} holds no tensor starting with '{lead}'. "
            "Is this an official SadTalker_V0.0.2 safetensors file?"
        )
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            for key in keys:
                out[key[len(lead) :]] = fh.get_tensor(key)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{component}: cannot read {path}: {exc}") from exc
    return out


def _refused_pickle_message(path: Path, component: str, torch_text: str) -> str:
    """What a refused pickle is and where the official file comes from. torch's own text advises turning the
    safety off (``weights_only=False``, allow-listing globals): only the name of what was refused is kept."""
    from .weights import download_command_for

    get = f"Get the official file with: {download_command_for(path.name, _dirs_of(path))}"
    found = re.search(r"GLOBAL ([\w.]+)", torch_text)
    if found:
        return (
            f"{component}: {path} is not a plain weight file: it refers to the Python object "
            f"'{found.group(1)}', and loading it could run code, so it was refused. {get}"
        )
    return (
        f"{component}: {path} cannot be read: it is not a plain weight file (not a torch checkpoint of plain "
        f"tensors). {get}"
    )


def _dirs_of(path: Path) -> ModelDirs:
    """Model folders with ``path``'s folder in the role its file has (for the downloader command)."""
    from .weights import DEST_CHECKPOINTS, load_manifest

    default = resolve_model_dirs()
    try:
        wf = load_manifest().get(path.name)
    except (KeyError, CheckpointError):
        return default
    if wf.dest == DEST_CHECKPOINTS:
        return dataclasses.replace(default, checkpoints=path.parent)
    return dataclasses.replace(default, gfpgan=path.parent)


def read_torch_pickle(path: str | Path, component: str) -> object:
    """Unpickle a torch ``.pth``/``.pth.tar`` file onto the CPU without running code.

    ``torch.load(weights_only=True)`` refuses any pickle that needs more than tensors and plain containers.
    The caller checks that the file exists (with its own 'not found' advice). Raises :class:`CheckpointError`
    naming ``component`` and ``path`` for a refused, damaged or truncated file.
    """
    try:
        # torch.serialization.load is torch.load itself; the WebUI replaces the ``torch.load`` attribute with its
        # own pickle scanner (modules/safe.py), which refuses files written by torch >= 2.1 (their
        # ``.format_version`` entry) and then returns None. weights_only=True is the stricter check anyway.
        return torch.serialization.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # not chained: torch's text advises turning the safety off
        raise CheckpointError(_refused_pickle_message(Path(path), component, str(exc))) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        if "weights_only" in str(exc):  # a refusal worded by torch, whatever its exception type
            raise CheckpointError(_refused_pickle_message(Path(path), component, str(exc))) from None
        raise CheckpointError(
            f"{component}: {path} cannot be read: it is not a readable torch checkpoint or is truncated: {exc}. "
            "Download it again."
        ) from exc


def read_mapping_checkpoint(path: str | Path, component: str = "mapping") -> dict[str, torch.Tensor]:
    """Read the ``mapping`` state dict of a ``mapping_*-model.pth.tar`` file (:func:`read_torch_pickle`)."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, component)
    ckpt = read_torch_pickle(path, component)
    if not isinstance(ckpt, Mapping) or "mapping" not in ckpt or not isinstance(ckpt["mapping"], Mapping):
        raise CheckpointError(
            f"{component}: {path} has no 'mapping' state dict; is it a SadTalker mapping file?"
        )
    state = dict(ckpt["mapping"])
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{component}: {path}: entries that are not tensors: {bad[:5]}")
    return state


def _listed(items: list[str], limit: int) -> str:
    """``a, b, c`` (every item when at most ``limit``, else the first ``limit`` and how many more)."""
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def describe_key_problems(missing: list[str], extra: list[str], limit: int = 20) -> str:
    """``N missing key(s): ...; M unexpected key(s) (not in the network): ...`` (names listed up to
    ``limit`` each); empty parts are left out."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listed(missing, limit)}")
    if extra:
        parts.append(f"{len(extra)} unexpected key(s) (not in the network): {_listed(extra, limit)}")
    return "; ".join(parts)


def load_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, file: str | Path, component: str
) -> None:
    """Copy ``state`` into ``module``; every key must match in name and shape (0-d and [1] BN counters both accepted)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    fixed: dict[str, torch.Tensor] = {}
    mismatched = []
    for key, target in expected.items():
        if key not in state:
            continue
        value = state[key]
        if tuple(value.shape) != tuple(target.shape):
            if value.numel() == 1 and target.numel() == 1 and key.endswith("num_batches_tracked"):
                value = value.reshape(target.shape)
            else:
                mismatched.append(f"{key}: file {tuple(value.shape)} vs network {tuple(target.shape)}")
                continue
        fixed[key] = value
    problems = []
    if missing or unexpected:
        problems.append(describe_key_problems(missing, unexpected))
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_listed(mismatched, 5)}")
    if problems:
        raise CheckpointError(
            f"{component}: {file} does not fit the network: " + "; ".join(problems) + ". "
            "The file is damaged or not the official release; download it again."
        )
    module.load_state_dict(fixed, strict=True)


_Net = TypeVar("_Net", bound=nn.Module)


def build_from_state(
    config_cls: Any,
    net_cls: Callable[[Any], _Net],
    state: Mapping[str, torch.Tensor],
    path: Path,
    component: str,
    device: torch.device | str,
    dtype: torch.dtype,
    hint: str,
) -> _Net:
    """``net_cls(config)`` with ``config = config_cls.from_state_shapes(shapes of state)``, built on the meta
    device, ``state`` loaded strictly (:func:`load_strict`), moved to ``device``/``dtype``; eval mode, no
    gradients. A state that fits no configuration is a :class:`CheckpointError` ending with ``hint``; a
    configuration other than ``config_cls()`` (the official one) is logged."""
    try:
        cfg = config_cls.from_state_shapes({k: tuple(v.shape) for k, v in state.items()})
    except ValueError as exc:
        name = getattr(net_cls, "__name__", "the")
        raise CheckpointError(f"{component}: {path} does not fit the {name} network ({exc}). {hint}") from exc
    if cfg != config_cls():
        log.info("%s: %s has a non-official configuration: %s", component, path.name, cfg)
    with torch.device("meta"):
        net = net_cls(cfg)
    net = net.to_empty(device="cpu")
    load_strict(net, state, file=path, component=component)
    net = net.to(device=device, dtype=dtype).eval()
    net.requires_grad_(False)
    return net


_T = TypeVar("_T")


class LockedDict:
    """A dict behind a lock: what the caches share (snapshots of keys and items, ``clear()``, ``len()``).

    Subclasses read and write ``self._items`` only while holding ``self._lock``."""

    def __init__(self, items: dict | None = None) -> None:
        self._items: dict = {} if items is None else items
        self._lock = threading.Lock()

    def keys(self) -> list:
        """The keys held, in insertion order (a snapshot)."""
        with self._lock:
            return list(self._items)

    def items(self) -> list[tuple]:
        """``(key, value)`` pairs held, in insertion order (a snapshot)."""
        with self._lock:
            return list(self._items.items())

    def clear(self) -> None:
        """Drop everything held (frees memory; the next use builds again)."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class ModelCache(LockedDict):
    """Built models by key (file identity, device, dtype, ...): thread-safe, one per owner.

    A :class:`.pipeline.SadTalker` owns one and passes it to the loaders, so pipelines (e.g. on two devices)
    never share or drop each other's models. Loaders called without one use :data:`PROCESS_CACHE`.
    """

    def get(self, key: tuple, factory: Callable[[], _T]) -> _T:
        """The model under ``key``, built by ``factory()`` (outside the lock) when not held yet."""
        with self._lock:
            if key in self._items:
                return self._items[key]
        value = factory()
        with self._lock:
            return self._items.setdefault(key, value)


PROCESS_CACHE = ModelCache()
"""The cache of loader calls made without a cache of their own (library use, tests); pipelines do not use it."""


def cached(key: tuple, factory: Callable[[], _T], cache: ModelCache | None = None) -> _T:
    """``cache.get(key, factory)`` (default :data:`PROCESS_CACHE`). ``key`` should include file identity,
    device and dtype."""
    return (PROCESS_CACHE if cache is None else cache).get(key, factory)


def file_identity(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns): a cache key part that changes when the file is replaced."""
    p = Path(path).resolve()
    st = p.stat()
    return (str(p), st.st_size, st.st_mtime_ns)


def clear_cache() -> None:
    """Drop every model of :data:`PROCESS_CACHE` (pipelines' own caches are not touched)."""
    PROCESS_CACHE.clear()
