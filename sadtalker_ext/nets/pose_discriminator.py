"""Pose-sequence discriminator of Audio2Pose (official ``PoseSequenceDiscriminator``, ``netD_motion``).

Only used when training the PoseVAE; it exists here so that the ``audio2pose.netD_motion.*`` tensors of the
official checkpoint load strictly. Pure torch.

Layout (auido2pose.yaml: INPUT_CHANNELS 6, LEAKY_RELU False, batch norm): three Conv1d (no bias) + BatchNorm1d +
ReLU units (6 -> 256 kernel 4 stride 2, 256 -> 512 kernel 4 stride 2, 512 -> 1024 kernel 3 stride 1) and a final
Conv1d 1024 -> 1 (kernel 3, bias). Keys: ``seq.{0,1,2}.conv.weight``, ``seq.{0,1,2}.norm.*``, ``seq.3.*``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PoseDiscriminatorConfig:
    input_channels: int = 6
    leaky_relu: bool = False


class ConvNormAct1d(nn.Module):
    """Conv1d (no bias) -> BatchNorm1d -> ReLU (or LeakyReLU 0.2). Keys: ``conv.weight``, ``norm.*``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, leaky: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride, padding, bias=False)
        self.norm = nn.BatchNorm1d(cout)
        self.act = nn.LeakyReLU(0.2) if leaky else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class PoseSequenceDiscriminator(nn.Module):
    """(B, T, 6) pose motion -> (B, T / 4) realism logits."""

    def __init__(self, config: PoseDiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or PoseDiscriminatorConfig()
        leaky = self.config.leaky_relu
        self.seq = nn.Sequential(
            ConvNormAct1d(self.config.input_channels, 256, 4, 2, 1, leaky),
            ConvNormAct1d(256, 512, 4, 2, 1, leaky),
            ConvNormAct1d(512, 1024, 3, 1, 1, leaky),
            nn.Conv1d(1024, 1, kernel_size=3, stride=1, padding=1, bias=True),
        )

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        x = motion.reshape(motion.shape[0], motion.shape[1], -1).transpose(1, 2)
        return self.seq(x).squeeze(1)
