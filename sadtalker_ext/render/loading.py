"""Build the renderer networks from the official weight files.

* ``SadTalker_V0.0.2_<size>.safetensors``: only the ``kp_extractor.`` and ``generator.`` tensors are read.
* ``mapping_00229-model.pth.tar`` (crop / extcrop / resize) or ``mapping_00109-model.pth.tar``
  (full / extfull): the ``mapping`` state dict, read without executing pickled code.

Network widths are inferred from the stored shapes (so reduced-width stand-in files drive the same
code); every tensor must then fit the network exactly (strict load), else :class:`CheckpointError`.
Built networks are kept in a :class:`..checkpoints.ModelCache` (the caller's, e.g. a pipeline's, else the
process cache), keyed by file identity, device and dtype.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import checkpoints
from ..errors import CheckpointError
from ..nets.blocks import set_phase_form, set_winograd
from ..nets.generator import GeneratorConfig, OcclusionAwareSPADEGenerator
from ..nets.kp_detector import KPDetector, KPDetectorConfig
from ..nets.mapping import MappingConfig, MappingNet
from ..preprocess.mode import PreprocessMode
from ..weights import downloader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RendererNets:
    """The three renderer networks, in eval mode, on one device; float32 except the generator's SPADE
    decoder, which runs in the dtype asked of :func:`load_renderer_nets`."""

    kp_detector: KPDetector
    generator: OcclusionAwareSPADEGenerator
    mapping: MappingNet


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _infer(config_cls, state: dict[str, torch.Tensor], *, file: Path, component: str):
    try:
        cfg = config_cls.from_state_shapes(_shapes(state))
    except (ValueError, ZeroDivisionError) as exc:
        raise CheckpointError(
            f"{component}: {file} does not fit the network ({exc}). "
            "The file is damaged or not the official release; download it again."
        ) from exc
    if cfg == config_cls():
        log.info("%s: %s has the official configuration", component, file.name)
    else:
        log.info("%s: %s has a non-official configuration: %s", component, file.name, cfg)
    return cfg


def _key_names(net_cls, cfg) -> set[str]:
    """State-dict key names of ``net_cls(cfg)``, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return set(net_cls(cfg).state_dict())


def _official_key_problem(net_cls, config_cls, state, cfg, *, file: Path, component: str) -> str | None:
    """When ``state``'s key names are closer to the official network's than to the network inferred from
    its shapes (``cfg``; None when inference failed), the file is an official one with keys missing or
    added, and the inferred widths/block counts are an artefact of those: a message naming exactly the
    missing and the extra keys. None when the inferred network explains the file at least as well."""
    official = config_cls()
    if cfg == official:
        return None  # load_strict compares against this very network
    names = set(state)
    try:
        expected = _key_names(net_cls, official)
    except (ValueError, RuntimeError):
        return None
    missing = sorted(expected - names)
    extra = sorted(names - expected)
    if not missing and not extra:
        return None
    if cfg is None and len(missing) + len(extra) > len(expected) // 10:
        return None  # not an official file with a few keys off: the inference error says more
    if cfg is not None:
        try:
            inferred = _key_names(net_cls, cfg)
        except (ValueError, RuntimeError):
            inferred = None
        if inferred is not None and len(inferred ^ names) <= len(missing) + len(extra):
            return None
    return (
        f"{component}: {file} does not fit the network: "
        + checkpoints.describe_key_problems(missing, extra)
        + ". The file is damaged or not the official release; download it again."
    )


def _build(net_cls, config_cls, state, *, file: Path, component: str, device) -> nn.Module:
    """The network of ``state``, float32, eval mode, on ``device``."""
    try:
        cfg = _infer(config_cls, state, file=file, component=component)
    except CheckpointError:
        problem = _official_key_problem(net_cls, config_cls, state, None, file=file, component=component)
        if problem:
            raise CheckpointError(problem) from None
        raise
    problem = _official_key_problem(net_cls, config_cls, state, cfg, file=file, component=component)
    if problem:
        raise CheckpointError(problem)
    try:
        with torch.device("meta"):
            net = net_cls(cfg)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{component}: {file} describes an impossible network ({exc}).") from exc
    net = net.to_empty(device="cpu")
    checkpoints.load_strict(net, state, file=file, component=component)
    net = net.to(device=device, dtype=torch.float32).eval()
    net.requires_grad_(False)
    return net


def _load_face_nets(
    path: Path, device, dtype, winograd: bool
) -> tuple[KPDetector, OcclusionAwareSPADEGenerator]:
    kp_state = checkpoints.read_safetensors_prefix(
        path, "kp_extractor", component="renderer keypoint detector"
    )
    kp = _build(
        KPDetector,
        KPDetectorConfig,
        kp_state,
        file=path,
        component="renderer keypoint detector",
        device=device,
    )
    del kp_state
    gen_state = checkpoints.read_safetensors_prefix(path, "generator", component="renderer generator")
    gen = _build(
        OcclusionAwareSPADEGenerator,
        GeneratorConfig,
        gen_state,
        file=path,
        component="renderer generator",
        device=device,
    )
    gen.reduce_precision(dtype)
    # Upsampled 3x3 convs: the phase form saves multiply-adds, which is what counts on a CPU; on a GPU
    # one large convolution runs faster (bench --sections arrangements).
    set_phase_form(gen, device.type == "cpu")
    # Winograd for the decoder's wide 3x3 convs: on a CPU in float32 (other dtypes keep the direct form).
    set_winograd(gen, winograd and device.type == "cpu")
    return kp, gen


def _load_mapping(path: Path, device) -> MappingNet:
    state = checkpoints.read_mapping_checkpoint(path, component="renderer mapping")
    return _build(
        MappingNet,
        MappingConfig,
        state,
        file=path,
        component="renderer mapping",
        device=device,
    )


def load_renderer_nets(
    checkpoint_dir: str | Path,
    size: int,
    preprocess: str | PreprocessMode,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    winograd: bool = True,
    cache: checkpoints.ModelCache | None = None,
) -> RendererNets:
    """Load (or reuse from ``cache``, default: the process cache) the KPDetector, generator and MappingNet.

    ``size`` 256 or 512 picks the safetensors file; ``preprocess`` picks the mapping file
    (:attr:`.PreprocessMode.mapping_feature`: ``full``/``extfull`` -> 00109, 73 inputs; otherwise 00229,
    70 inputs). Raises ``CheckpointError``.

    ``dtype`` (float32, float16, bfloat16) applies to the per-frame convolutions
    (:meth:`.OcclusionAwareSPADEGenerator.reduce_precision`: hourglass, mask and occlusion convs, third /
    fourth, SPADE decoder), which then run channels-last; keypoints, Gaussians, grids, warps, the source
    encoding and the mapping net stay float32 (in half precision the keypoint Gaussians, variance 0.01, and
    the sampling grids move whole regions of the frame).

    ``winograd``: on a CPU, the decoder's wide 3x3 convolutions in float32 run by Winograd F(4x4, 3x3)
    (4x fewer multiplies; the transformed kernels are built per call). ``False``: direct convolutions.
    ``cache``: where the built networks are kept (default: the process cache, see :func:`.checkpoints.cached`).
    """
    folder = Path(checkpoint_dir)
    face_path = folder / checkpoints.safetensors_name(size)
    map_path = folder / checkpoints.mapping_name(preprocess)
    for p, comp in ((face_path, "renderer"), (map_path, "renderer mapping")):
        if not p.is_file():
            raise CheckpointError(
                f"{comp}: weight file not found: {p}. Put '{p.name}' into '{folder}' "
                f"(run `{downloader()}` to fetch the official weights)."
            )
    dev = torch.device(device)
    kp, gen = checkpoints.cached(
        ("renderer-face", checkpoints.file_identity(face_path), str(dev), str(dtype), winograd),
        lambda: _load_face_nets(face_path, dev, dtype, winograd),
        cache,
    )
    mapping = checkpoints.cached(
        ("renderer-mapping", checkpoints.file_identity(map_path), str(dev)),
        lambda: _load_mapping(map_path, dev),
        cache,
    )
    return RendererNets(kp_detector=kp, generator=gen, mapping=mapping)
