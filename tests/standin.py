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
    for f, k in sorted(overrides):
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
        if (
            name == "SadTalker_V0.0.2_512.safetensors"
            and (out_dir / FILES[0]).is_file()
            and not any(f == name for f, _ in (overrides or {}))
        ):
            # fill.py depends on key, shape and seed only: the 512 stand-in equals the 256 one.
            os.link(out_dir / FILES[0], out_dir / name)
            paths[name] = out_dir / name
            continue
        paths[name] = write_checkpoint(name, standin_tensors(name, seed, overrides), out_dir)
    return paths


# ------------------------------------------------------------------ reduced-width renderer stand-ins
def _tiny_configs():
    """The reduced-width renderer configs (3 keypoints, a few channels per layer; official key names).

    Official widths / 8 still cost seconds per frame on a CPU (the 7x7x7 mask conv keeps its 80 skip
    channels), so the end-to-end, cache, WebUI and bench runs use these.
    """
    from sadtalker_ext.nets.dense_motion import DenseMotionConfig
    from sadtalker_ext.nets.generator import GeneratorConfig
    from sadtalker_ext.nets.kp_detector import KPDetectorConfig
    from sadtalker_ext.nets.mapping import MappingConfig
    from sadtalker_ext.nets.spade_decoder import SpadeDecoderConfig

    kp = KPDetectorConfig(
        num_kp=3, block_expansion=2, max_features=8, num_blocks=2, reshape_channel=16, reshape_depth=2
    )
    gen = GeneratorConfig(
        block_expansion=4,
        max_features=16,
        num_down_blocks=2,
        reshape_channel=4,
        reshape_depth=4,
        num_resblocks=1,
        dense_motion=DenseMotionConfig(
            num_kp=3,
            feature_channel=4,
            block_expansion=2,
            max_features=8,
            num_blocks=2,
            reshape_depth=4,
            compress=2,
        ),
        decoder=SpadeDecoderConfig(input_nc=16, hidden_nc=4, output_nc=4, num_middle_blocks=1),
    )
    mapping = MappingConfig(coeff_nc=70, descriptor_nc=8, layer=3, num_kp=3, num_bins=66)
    return kp, gen, mapping


def _eighth_configs():
    """The official widths divided by 8 (num_kp, compress, depths, kernels unchanged): seconds per frame on
    a CPU, but frames that clearly move with the driving keypoints (the tiny ones barely do)."""
    from sadtalker_ext.nets.dense_motion import DenseMotionConfig
    from sadtalker_ext.nets.generator import GeneratorConfig
    from sadtalker_ext.nets.kp_detector import KPDetectorConfig
    from sadtalker_ext.nets.mapping import MappingConfig
    from sadtalker_ext.nets.spade_decoder import SpadeDecoderConfig

    kp = KPDetectorConfig(block_expansion=4, max_features=128, reshape_channel=2048)
    gen = GeneratorConfig(
        block_expansion=8,
        max_features=64,
        reshape_channel=4,
        dense_motion=DenseMotionConfig(feature_channel=4, block_expansion=4, max_features=128),
        decoder=SpadeDecoderConfig(input_nc=32, hidden_nc=16, output_nc=8),
    )
    return kp, gen, MappingConfig(descriptor_nc=128)


TINY_KP, TINY_GEN, TINY_MAP = _tiny_configs()
EIGHTH_KP, EIGHTH_GEN, EIGHTH_MAP = _eighth_configs()
MOTION_PREFIXES = ("audio2exp", "audio2pose", "face_3drecon")


def filled_state(prefix: str, module, seed: int = 0) -> dict[str, np.ndarray]:
    """fill.py values for every state-dict key of ``module`` (a torch module), stored under ``prefix``."""
    import torch

    fill = fill_module()
    out = {}
    for key, value in module.state_dict().items():
        full = prefix + key
        dtype = "int64" if value.dtype == torch.int64 else "float32"
        out[full] = np.ascontiguousarray(fill.fill_tensor(full, tuple(value.shape), dtype, seed))
    return out


def renderer_tensors(kp_cfg=TINY_KP, gen_cfg=TINY_GEN, seed: int = 0) -> dict[str, np.ndarray]:
    """``kp_extractor.*`` + ``generator.*`` fill.py tensors for the given configs.

    Each spectral-normed conv gets its top singular vectors as ``weight_u``/``weight_v`` (sigma = top
    singular value, i.e. unit spectral norm), so the decoder stays well-conditioned.
    """
    from sadtalker_ext.nets.generator import OcclusionAwareSPADEGenerator
    from sadtalker_ext.nets.kp_detector import KPDetector

    tensors = filled_state("kp_extractor.", KPDetector(kp_cfg), seed)
    tensors.update(filled_state("generator.", OcclusionAwareSPADEGenerator(gen_cfg), seed))
    for key in [k for k in tensors if k.endswith(".weight_orig")]:
        base = key[: -len("weight_orig")]
        mat = tensors[key].reshape(tensors[key].shape[0], -1).astype(np.float64)
        u, _, vt = np.linalg.svd(mat, full_matrices=False)
        tensors[base + "weight_u"] = np.ascontiguousarray(u[:, 0], dtype=np.float32)
        tensors[base + "weight_v"] = np.ascontiguousarray(vt[0], dtype=np.float32)
    return tensors


def mapping_state(map_cfg=TINY_MAP, seed: int = 0) -> dict:
    """A MappingNet state dict (torch tensors, keys without the ``mapping.`` file prefix) of fill.py values."""
    import torch

    from sadtalker_ext.nets.mapping import MappingNet

    filled = filled_state("mapping.", MappingNet(map_cfg), seed)
    return {k[len("mapping.") :]: torch.from_numpy(v) for k, v in filled.items()}


def motion_tensors(seed: int = 0, overrides=None) -> dict[str, np.ndarray]:
    """Official-width ``audio2exp``/``audio2pose``/``face_3drecon`` stand-in tensors of the 256 file."""
    keys = {k for k in manifest(FILES[0]) if k.split(".")[0] in MOTION_PREFIXES}
    return standin_tensors(FILES[0], seed, overrides, keys=keys)


def write_reduced_checkpoints(
    folder: Path,
    *,
    seed: int = 0,
    motion: dict[str, np.ndarray] | None = None,
    kp_cfg=TINY_KP,
    gen_cfg=TINY_GEN,
    map_cfg=TINY_MAP,
    link_512: bool = True,
) -> Path:
    """Write the four checkpoint files with a reduced-width renderer into ``folder``; returns ``folder``.

    The safetensors file holds ``motion`` (e.g. :func:`motion_tensors`; omitted when None) plus
    :func:`renderer_tensors`; the 512 file holds the same tensors (a hard link when ``link_512``, else a
    separate copy). The mapping files hold ``map_cfg`` with 70 (crop, epoch 229) and 73 (full, epoch 109)
    coefficient channels.
    """
    import dataclasses

    import torch
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = dict(motion or {})
    tensors.update(renderer_tensors(kp_cfg, gen_cfg, seed))
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    st256, st512, map_crop, map_full = FILES
    save_file(tensors, str(folder / st256))
    if link_512:
        os.link(folder / st256, folder / st512)
    else:
        save_file(tensors, str(folder / st512))
    for name, coeff_nc in ((map_crop, 70), (map_full, 73)):
        state = mapping_state(dataclasses.replace(map_cfg, coeff_nc=coeff_nc), seed)
        torch.save({"mapping": state, "epoch": EPOCHS[name]}, str(folder / name))
    return folder


def write_eighth_checkpoints(folder: Path) -> Path:
    """:func:`write_reduced_checkpoints` with the 1/8-width renderer (``EIGHTH_*``), 256 only."""
    return write_reduced_checkpoints(
        folder, kp_cfg=EIGHTH_KP, gen_cfg=EIGHTH_GEN, map_cfg=EIGHTH_MAP, link_512=False
    )
