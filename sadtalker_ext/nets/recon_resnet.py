"""3DMM coefficient regressor: ResNet-50 trunk plus seven 1x1-conv heads (Deep3DFaceRecon, as in SadTalker).

Input ``(B, 3, 224, 224)`` float RGB in [0, 1] (the aligned face); output ``(B, 257)``:
identity 0:80, expression 80:144, texture 144:224, angles 224:227 (radians), lighting (SH gamma) 227:254,
translation 254:257 (x, y from one head, z from another).

State-dict keys equal the official ``face_3drecon.`` keys with the prefix stripped
(``backbone.conv1.weight``, ``backbone.layer3.5.bn2.running_var``, ``final_layers.6.bias``, ...).
Pure torch, no torchvision; BatchNorm is used in eval mode (running statistics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

COEFF_LAYOUT: dict[str, tuple[int, int]] = {
    "id": (0, 80),
    "exp": (80, 144),
    "tex": (144, 224),
    "angle": (224, 227),
    "gamma": (227, 254),
    "trans": (254, 257),
}
"""Column ranges of the 257 outputs."""


@dataclass(frozen=True)
class ReconNetConfig:
    """Shape of the network (defaults: the official ResNet-50 with 257 outputs)."""

    blocks_per_stage: tuple[int, ...] = (3, 4, 6, 3)
    stage_widths: tuple[int, ...] = (64, 128, 256, 512)
    expansion: int = 4
    stem_channels: int = 64
    head_sizes: tuple[int, ...] = (80, 64, 80, 3, 27, 2, 1)
    bn_eps: float = 1e-5

    @property
    def feature_channels(self) -> int:
        """Channels of the pooled trunk output."""
        return self.stage_widths[-1] * self.expansion

    @property
    def output_size(self) -> int:
        """Number of regressed values (257 by default)."""
        return sum(self.head_sizes)


class _BottleneckUnit(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, each with BatchNorm; residual add, ReLU."""

    def __init__(self, in_ch: int, width: int, out_ch: int, stride: int, eps: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=eps)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=eps)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=eps)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch, eps=eps)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + shortcut)


class _ResNetTrunk(nn.Module):
    """7x7/2 stem conv, BN, ReLU, 3x3/2 max-pool, four bottleneck stages, global average pool -> (B, C, 1, 1)."""

    def __init__(self, cfg: ReconNetConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(3, cfg.stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.stem_channels, eps=cfg.bn_eps)
        in_ch = cfg.stem_channels
        for index, (count, width) in enumerate(zip(cfg.blocks_per_stage, cfg.stage_widths, strict=True)):
            out_ch = width * cfg.expansion
            units = []
            for k in range(count):
                stride = 2 if (k == 0 and index > 0) else 1
                units.append(_BottleneckUnit(in_ch, width, out_ch, stride, cfg.bn_eps))
                in_ch = out_ch
            self.add_module(f"layer{index + 1}", nn.Sequential(*units))
        self.stage_count = len(cfg.blocks_per_stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        for index in range(self.stage_count):
            x = getattr(self, f"layer{index + 1}")(x)
        return F.adaptive_avg_pool2d(x, (1, 1))


class FaceReconNet(nn.Module):
    """ResNet trunk + one 1x1 conv head per coefficient group; ``forward`` returns ``(B, 257)``."""

    def __init__(self, cfg: ReconNetConfig | None = None):
        super().__init__()
        cfg = cfg or ReconNetConfig()
        self.cfg = cfg
        self.backbone = _ResNetTrunk(cfg)
        self.final_layers = nn.ModuleList(
            nn.Conv2d(cfg.feature_channels, n, 1, bias=True) for n in cfg.head_sizes
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` (B, 3, 224, 224) float in [0, 1] -> (B, 257) coefficients (see :data:`COEFF_LAYOUT`)."""
        features = self.backbone(image)
        heads = torch.cat([head(features) for head in self.final_layers], dim=1)
        return torch.flatten(heads, 1)


def split_coefficients(coeffs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named column groups of a ``(B, 257)`` output (views)."""
    return {name: coeffs[:, a:b] for name, (a, b) in COEFF_LAYOUT.items()}
