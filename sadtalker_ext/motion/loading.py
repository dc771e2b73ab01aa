"""Loading ExpNet and the PoseVAE from the packaged ``SadTalker_V0.0.2_{256,512}.safetensors`` file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoints import (
    ModelCache,
    cached,
    file_identity,
    load_strict,
    read_safetensors_prefix,
    safetensors_name,
)
from ..nets.expnet import ExpNet, ExpNetConfig
from ..nets.posevae import Audio2PoseNet, PoseVAEConfig


@dataclass(frozen=True)
class MotionNets:
    """The two audio-to-motion networks, in eval mode, frozen, on ``device`` with float ``dtype``."""

    expnet: ExpNet
    posenet: Audio2PoseNet
    device: torch.device
    dtype: torch.dtype


def _frozen(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module.to(device=device, dtype=dtype)


def build_motion_nets(
    exp_state: dict[str, torch.Tensor],
    pose_state: dict[str, torch.Tensor],
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    file: str | Path = "<state dict>",
) -> MotionNets:
    """Build both networks from state dicts whose keys have the ``audio2exp.``/``audio2pose.`` prefixes stripped."""
    device = torch.device(device)
    expnet = ExpNet(ExpNetConfig())
    load_strict(expnet, exp_state, file=file, component="ExpNet (audio2exp)")
    posenet = Audio2PoseNet(PoseVAEConfig())
    load_strict(posenet, pose_state, file=file, component="PoseVAE (audio2pose)")
    return MotionNets(_frozen(expnet, device, dtype), _frozen(posenet, device, dtype), device, dtype)


def load_motion_nets(
    checkpoint_dir: str | Path,
    size: int,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    *,
    cache: ModelCache | None = None,
) -> MotionNets:
    """ExpNet + PoseVAE from ``checkpoint_dir/SadTalker_V0.0.2_{size}.safetensors`` (strict keys).

    Kept in ``cache`` (default: the process cache) by (file identity, device, dtype); raises CheckpointError
    for a missing/damaged file.
    """
    path = Path(checkpoint_dir) / safetensors_name(size)
    device = torch.device(device)
    # file_identity needs the file; a missing file is reported by read_safetensors_prefix below.
    ident = file_identity(path) if path.is_file() else (str(path), -1, -1)

    def factory() -> MotionNets:
        exp_state = read_safetensors_prefix(path, "audio2exp", "ExpNet (audio2exp)")
        pose_state = read_safetensors_prefix(path, "audio2pose", "PoseVAE (audio2pose)")
        return build_motion_nets(exp_state, pose_state, device, dtype, file=path)

    if ident[1] < 0:
        return factory()
    return cached(("motion_nets", ident, str(device), str(dtype)), factory, cache)
