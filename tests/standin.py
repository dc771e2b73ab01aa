"""Stand-in checkpoint files in the official formats, built from the manifests and fill.py.

The weights are deterministic (``fill.py``: key, shape, seed); vector files may carry
``override::<key>`` arrays that replace a few of them (``override_files[i]`` names the file).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from functools import cache
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
FORMAT_DIR = SHARED / "sadtalker-format"
MEDIA_DIR = SHARED / "media"

FILES = (
    "SadTalker_V0.0.2_256.safetensors",
    "SadTalker_V0.0.2_512.safetensors",
    "mapping_00229-model.pth.tar",
    "mapping_00109-model.pth.tar",
)
EPOCHS = {"mapping_00229-model.pth.tar": 229, "mapping_00109-model.pth.tar": 109}


def parity_dir() -> Path:
    """The vector directory: ``$SADTALKER_PARITY_DIR`` or ``../shared/parity/vectors``."""
    return Path(os.environ.get("SADTALKER_PARITY_DIR") or SHARED / "parity" / "vectors")


@cache
def fill_module():
    """Import ``fill.py`` (beside the vector folder, else the shared one) by file path."""
    for candidate in (parity_dir().parent / "fill.py", SHARED / "parity" / "fill.py"):
        if candidate.is_file():
            spec = importlib.util.spec_from_file_location("sadtalker_fill", candidate)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError("fill.py not found beside the parity vectors nor in ../shared/parity")


@cache
def manifest(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{stored key: (shape, dtype)}`` of an official file, in state-dict order."""
    raw = json.loads((FORMAT_DIR / f"{name}.json").read_text())
    return {k: (tuple(v[0]), v[1]) for k, v in raw.items()}


def overrides_of(npz) -> dict[tuple[str, str], np.ndarray]:
    """``{(file name, stored key): array}`` from a vector file's ``override_keys``/``override_files``."""
    if "override_keys" not in npz.files:
        return {}
    keys = [str(k) for k in npz["override_keys"]]
    files = [str(f) for f in npz["override_files"]]
    return {(f, k): np.asarray(npz[f"override::{k}"]) for f, k in zip(files, keys, strict=True)}


def overrides_digest(overrides: dict[tuple[str, str], np.ndarray]) -> str:
    h = hashlib.sha256()
    for (f, k) in sorted(overrides):
        h.update(f.encode() + b"\0" + k.encode() + b"\0")
        h.update(np.ascontiguousarray(overrides[(f, k)]).tobytes())
    return h.hexdigest()[:16]


def standin_tensors(name: str, seed: int, overrides=None, keys=None) -> dict[str, np.ndarray]:
    """fill.py values for every key of ``name`` (or only ``keys``), with overrides for that file applied."""
    fill = fill_module()
    man = manifest(name)
    out = {}
    for key, (shape, dtype) in man.items():
        if keys is not None and key not in keys:
            continue
        over = (overrides or {}).get((name, key))
        if over is not None:
            if tuple(over.shape) != tuple(shape):
                raise ValueError(f"override {key} has shape {over.shape}, manifest {shape}")
            out[key] = np.ascontiguousarray(over.astype(dtype))
        else:
            out[key] = fill.fill_tensor(key, shape, dtype, seed)
    return out


def write_checkpoint(name: str, tensors: dict[str, np.ndarray], out_dir: Path) -> Path:
    """Write tensors in the official format of ``name`` (safetensors, or the mapping pickle)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    if name.endswith(".safetensors"):
        from safetensors.numpy import save_file

        save_file(tensors, str(path))
    else:
        import torch

        state = {k[len("mapping.") :]: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
        torch.save({"mapping": state, "epoch": EPOCHS.get(name, 0)}, str(path))
    return path


def build_checkpoints(out_dir: Path, seed: int, overrides=None, names=FILES) -> dict[str, Path]:
    """Write the stand-in files ``names`` for ``seed`` into ``out_dir``; returns name -> path."""
    paths = {}
    for name in names:
        if (out_dir / name).is_file():
            paths[name] = out_dir / name
            continue
        if name == "SadTalker_V0.0.2_512.safetensors" and (out_dir / FILES[0]).is_file() and not any(
            f == name for f, _ in (overrides or {})
        ):
            # fill.py depends on key, shape and seed only: the 512 stand-in equals the 256 one.
            os.link(out_dir / FILES[0], out_dir / name)
            paths[name] = out_dir / name
            continue
        paths[name] = write_checkpoint(name, standin_tensors(name, seed, overrides), out_dir)
    return paths
