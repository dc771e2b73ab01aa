"""Residual U-Net over a (seq_len x 6) pose "image", used inside the PoseVAE (pure torch).

The input is a 1-channel map (B, 1, L, 6): L frames (32) by 6 pose values. The encoder halves the time axis
three times (stride (2, 1)), the decoder doubles it back with transposed convs (kernel and stride (2, 1)) and
concatenates the skip of the same level; a 1x1 conv and a sigmoid give a (B, 1, L, 6) map in (0, 1).
L must be divisible by 8.

Keys (official ``ResUnet``): ``input_layer.{0,1,3}``, ``input_skip.0``, ``residual_conv_{1,2}``, ``bridge``,
``upsample_{1,2,3}.upsample``, ``up_residual_conv{1,2,3}``, ``output_layer.0``; each residual unit has
``conv_block.{0,2,3,5}`` and ``conv_skip.{0,1}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ResUnetConfig:
    """Official defaults: one input channel, filters 32/64/128/256."""

    channels: int = 1
    filters: tuple[int, int, int, int] = (32, 64, 128, 256)


class PreActResidual(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv plus a conv-BN shortcut; the first conv and the shortcut carry the stride."""

    def __init__(self, cin: int, cout: int, stride: int | tuple[int, int]) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(),
            nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, kernel_size=3, padding=1),
        )
        self.conv_skip = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class TimeUpsample(nn.Module):
    """Transposed conv doubling the time axis: (B, C, L, W) -> (B, C, 2L, W). Key: ``upsample.*``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(channels, channels, kernel_size=(2, 1), stride=(2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)


class ResUnet(nn.Module):
    """(B, C, L, W) -> (B, 1, L, W) in (0, 1)."""

    def __init__(self, config: ResUnetConfig | None = None) -> None:
        super().__init__()
        self.config = config or ResUnetConfig()
        c = self.config.channels
        f0, f1, f2, f3 = self.config.filters
        down = (2, 1)
        self.input_layer = nn.Sequential(
            nn.Conv2d(c, f0, kernel_size=3, padding=1),
            nn.BatchNorm2d(f0),
            nn.ReLU(),
            nn.Conv2d(f0, f0, kernel_size=3, padding=1),
        )
        self.input_skip = nn.Sequential(nn.Conv2d(c, f0, kernel_size=3, padding=1))
        self.residual_conv_1 = PreActResidual(f0, f1, down)
        self.residual_conv_2 = PreActResidual(f1, f2, down)
        self.bridge = PreActResidual(f2, f3, down)
        self.upsample_1 = TimeUpsample(f3)
        self.up_residual_conv1 = PreActResidual(f3 + f2, f2, 1)
        self.upsample_2 = TimeUpsample(f2)
        self.up_residual_conv2 = PreActResidual(f2 + f1, f1, 1)
        self.upsample_3 = TimeUpsample(f1)
        self.up_residual_conv3 = PreActResidual(f1 + f0, f0, 1)
        self.output_layer = nn.Sequential(nn.Conv2d(f0, 1, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level0 = self.input_layer(x) + self.input_skip(x)  # L
        level1 = self.residual_conv_1(level0)  # L/2
        level2 = self.residual_conv_2(level1)  # L/4
        deep = self.bridge(level2)  # L/8
        up = self.up_residual_conv1(torch.cat([self.upsample_1(deep), level2], dim=1))
        up = self.up_residual_conv2(torch.cat([self.upsample_2(up), level1], dim=1))
        up = self.up_residual_conv3(torch.cat([self.upsample_3(up), level0], dim=1))
        return self.output_layer(up)
