"""ExpNet (official ``SimpleWrapperV2``): one mel window + reference expression + blink ratio -> 64 expression
coefficients of the 3DMM, per video frame (pure torch).

Per frame: the (1, 80, 16) mel window goes through the Wav2Lip conv stack to a 512-vector, which is concatenated
with the frame's reference expression (64) and its eye-blink ratio (1) and mapped by one linear layer
(577 -> 64). There is no temporal layer and no residual onto the reference, so frames are independent.

State-dict keys equal the official ``audio2exp.*`` keys with the prefix stripped:
``audio_encoder.{0..12}.conv_block.{0,1}.*`` and ``mapping1.{weight,bias}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .audio_encoder import MelEncoderConfig, build_mel_conv_stack


@dataclass(frozen=True)
class ExpNetConfig:
    """Official values (src/config/auido2exp.yaml: EXP_DIM 64; the 512 audio embedding; 1 blink ratio)."""

    exp_dim: int = 64
    ratio_dim: int = 1
    mel: MelEncoderConfig = field(default_factory=MelEncoderConfig)
    chunk_frames: int = 10  # Audio2Exp.test runs the network on 10 frames at a time


class ExpNet(nn.Module):
    """Audio-driven expression regressor (SadTalker ExpNet)."""

    def __init__(self, config: ExpNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or ExpNetConfig()
        cfg = self.config
        self.audio_encoder = build_mel_conv_stack()
        self.mapping1 = nn.Linear(cfg.mel.embed_dim + cfg.exp_dim + cfg.ratio_dim, cfg.exp_dim)

    def forward(self, windows: torch.Tensor, ref_exp: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """Predict expression coefficients for N independent frames.

        windows: (N, 1, 80, 16) log-mel windows in [-4, 4].
        ref_exp: (N, 64) reference expression of each frame (the source's, or a reference video's).
        ratio:   (N, 1) eye-blink ratio in [0, 1] (0 = open).
        Returns (N, 64) expression coefficients.
        """
        n = windows.shape[0]
        audio = self.audio_encoder(windows).reshape(n, -1)
        features = torch.cat([audio, ref_exp.reshape(n, -1), ratio.reshape(n, -1)], dim=1)
        return self.mapping1(features)
