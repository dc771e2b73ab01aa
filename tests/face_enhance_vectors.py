"""Stand-in weight files for the ``face_*`` / ``enhance_*`` parity vectors (RetinaFace, AWing, GFPGAN, RRDBNet).

Rule of the vectors (../shared/parity/README.md): value(key) = ``override::<key>`` if the key is in
``override_keys``; else fill.py(key) x ``scale::<key>`` (float32 multiply) if it is in ``scale_keys``; else
fill.py(key). Keys and shapes are those of the official files: the facexlib manifest of the project
(``models/facexlib_face_keys.json``) for RetinaFace / AWing, the official-layout networks' own state dicts for
GFPGAN / RRDBNet (their key layout is checked against the official files in tests/test_enhance.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tests import standin

FACE_KEYS = standin.REPO / "models" / "facexlib_face_keys.json"


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def facexlib_manifest(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{key: (shape, dtype)}`` of a facexlib file (``num_batches_tracked`` is int64, the rest float32)."""
    raw = json.loads(FACE_KEYS.read_text())[name]
    return {
        k: (tuple(shape), "int64" if k.endswith("num_batches_tracked") else "float32")
        for k, shape in raw.items()
    }


def module_manifest(module: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{key: (shape, dtype)}`` of a module's state dict (built on the meta device)."""
    return {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in module.state_dict().items()}


def vector_state(vec: dict[str, np.ndarray], manifest: dict, seed: int) -> dict[str, torch.Tensor]:
    """The stand-in state dict of a vector file: fill.py of ``seed`` with its ``scale::`` / ``override::``."""
    fill = standin.fill_module()
    overrides = {str(k) for k in vec.get("override_keys", [])}
    scales = {str(k) for k in vec.get("scale_keys", [])}
    unknown = (overrides | scales) - set(manifest)
    assert not unknown, f"override/scale keys not in the official file: {sorted(unknown)[:5]}"
    state = {}
    for key, (shape, dtype) in manifest.items():
        if key in overrides:
            value = np.asarray(vec[f"override::{key}"])
            assert value.shape == tuple(shape), (key, value.shape, shape)
        else:
            value = fill.fill_tensor(key, shape, dtype, seed)
            if key in scales:
                value = (value * np.float32(vec[f"scale::{key}"])).astype(value.dtype)
        state[key] = torch.from_numpy(np.ascontiguousarray(value))
    return state


def save(state: dict[str, torch.Tensor], path: Path, container: str | None = None) -> Path:
    """``torch.save`` in the official container: the plain state dict, or ``{container: state}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state if container is None else {container: state}, str(path))
    return path


def match_rows(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Index into ``got`` of the row nearest (max abs over the box columns) to each row of ``want``.

    Detections whose scores differ by ~1e-5 may come out in either order, so rows are matched by position.
    """
    assert got.shape == want.shape, (got.shape, want.shape)
    dist = np.abs(want[:, None, :4].astype(np.float64) - got[None, :, :4]).max(axis=2)
    idx = dist.argmin(axis=1)
    assert len(set(idx.tolist())) == len(idx), "two official detections match the same row"
    return idx


def uint8_close(got: np.ndarray, want: np.ndarray, min_identical: float) -> tuple[int, float]:
    """(max level difference, share of identical values) of two uint8 images; asserts the .md tolerance."""
    assert got.shape == want.shape and got.dtype == want.dtype == np.uint8, (got.shape, want.shape)
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    same = float((diff == 0).mean())
    assert diff.max() <= 1, f"uint8 values differ by up to {diff.max()} levels"
    assert same >= min_identical, f"only {same:.4%} of uint8 values identical"
    return int(diff.max()), same
