"""Wav2Lip-style mel-window encoder shared by ExpNet and the PoseVAE (pure torch).

One mel window is an (80, 16) log-mel patch (80 bands x 16 mel frames of 12.5 ms, i.e. 0.2 s) around a
video frame. Thirteen conv blocks reduce it to a 512-vector:

======  ============  =======  ======  ========
block   channels      kernel   stride  residual
======  ============  =======  ======  ========
0       1 -> 32       3, p1    1       no
1, 2    32 -> 32      3, p1    1       yes
3       32 -> 64      3, p1    (3, 1)  no
4, 5    64 -> 64      3, p1    1       yes
6       64 -> 128     3, p1    3       no
7, 8    128 -> 128    3, p1    1       yes
9       128 -> 256    3, p1    (3, 2)  no
10      256 -> 256    3, p1    1       yes
11      256 -> 512    3, p0    1       no
12      512 -> 512    1, p0    1       no
======  ============  =======  ======  ========

Each block is conv -> batch norm -> (+ input when residual) -> ReLU. Spatial size goes
80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1.

State-dict keys of the stack: ``{block}.conv_block.0.*`` (conv) and ``{block}.conv_block.1.*`` (BN).
:class:`PoseAudioEncoder` nests it under ``audio_encoder.`` as the official Audio2Pose does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# (in, out, kernel, stride, padding, residual) per block; the Wav2Lip audio encoder layout.
_BLOCKS: tuple[tuple[int, int, int, int | tuple[int, int], int, bool], ...] = (
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, 512, 1, 1, 0, False),
)


@dataclass(frozen=True)
class MelEncoderConfig:
    """Shape of one mel window and of the embedding (official values)."""

    num_mels: int = 80
    window_frames: int = 16
    embed_dim: int = 512


class ConvNormBlock(nn.Module):
    """Conv2d -> BatchNorm2d -> optional identity skip -> ReLU. Keys: ``conv_block.{0,1}.*``."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int], padding: int, residual: bool
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_block(x)
        if self.residual:
            y = y + x
        return torch.relu(y)


def build_mel_conv_stack() -> nn.Sequential:
    """The 13-block conv stack: (N, 1, 80, 16) -> (N, 512, 1, 1)."""
    return nn.Sequential(*(ConvNormBlock(*spec) for spec in _BLOCKS))


class PoseAudioEncoder(nn.Module):
    """Audio encoder of Audio2Pose: a sequence of mel windows -> a sequence of 512-vectors.

    Keys: ``audio_encoder.{block}.conv_block.{0,1}.*``.
    """

    def __init__(self, config: MelEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or MelEncoderConfig()
        self.audio_encoder = build_mel_conv_stack()

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """``windows`` (B, T, 1, 80, 16) log-mel in [-4, 4] -> (B, T, 512) embeddings.

        All B*T windows are encoded as one conv batch (frames are independent in eval mode).
        """
        b, t = windows.shape[:2]
        cfg = self.config
        flat = windows.reshape(b * t, 1, cfg.num_mels, cfg.window_frames)
        emb = self.audio_encoder(flat)
        return emb.reshape(b, t, -1)
