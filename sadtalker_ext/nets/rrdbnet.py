"""RRDBNet (ESRGAN trunk with Real-ESRGAN's x2 / x1 pixel-unshuffle front), as a plain torch module.

Weights: the ``params_ema`` state dict of ``RealESRGAN_x2plus.pth`` (the official SadTalker background
enhancer: ``num_feat 64, num_block 23, num_grow_ch 32, scale 2``). Keys: ``conv_first``,
``body.<i>.rdb<1..3>.conv<1..5>``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``.

Math: for scale 2 (1) the input is pixel-unshuffled by 2 (4) so the trunk always runs at 1/4 of the output
side; the trunk is ``num_block`` residual-in-residual dense blocks (residuals scaled by 0.2) with a global
skip; two nearest x2 upsamplings follow, each with a 3x3 conv and leaky ReLU(0.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_SLOPE = 0.2
_RESIDUAL = 0.2
"""Scale of the residual branch in dense blocks and RRDBs."""

_UNSHUFFLE = {4: 1, 2: 2, 1: 4}
"""Output scale -> pixel-unshuffle factor applied to the input (the trunk then upsamples x4)."""


@dataclass(frozen=True)
class RRDBNetConfig:
    """Hyperparameters; defaults are those of ``RealESRGAN_x2plus.pth`` as SadTalker builds it."""

    num_in_ch: int = 3
    num_out_ch: int = 3
    scale: int = 2
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32

    def __post_init__(self) -> None:
        if self.scale not in _UNSHUFFLE:
            raise ValueError(f"scale must be 1, 2 or 4, got {self.scale}")

    @property
    def unshuffle(self) -> int:
        """Pixel-unshuffle factor of the input (1 = none)."""
        return _UNSHUFFLE[self.scale]

    @classmethod
    def from_state_shapes(cls, shapes: Mapping[str, tuple[int, ...]]) -> RRDBNetConfig:
        """Infer the config from ``{key: shape}`` (input channels assumed equal to output channels)."""
        try:
            first = shapes["conv_first.weight"]
            out_ch = int(shapes["conv_last.weight"][0])
            grow = int(shapes["body.0.rdb1.conv1.weight"][0])
        except (KeyError, IndexError) as exc:
            raise ValueError(f"RRDBNet state lacks key {exc}") from exc
        blocks = sum(1 for k in shapes if k.startswith("body.") and k.endswith(".rdb1.conv1.weight"))
        ratio, rest = divmod(int(first[1]), out_ch)
        by_ratio = {1: 4, 4: 2, 16: 1}
        if rest or ratio not in by_ratio:
            raise ValueError(f"conv_first.weight takes {first[1]} channels; not 1, 4 or 16 x {out_ch}")
        return cls(
            num_in_ch=out_ch,
            num_out_ch=out_ch,
            scale=by_ratio[ratio],
            num_feat=int(first[0]),
            num_block=blocks,
            num_grow_ch=grow,
        )


class DenseBlock(nn.Module):
    """Five 3x3 convs, each fed the concatenation of the input and all earlier outputs.

    ``(B, F, H, W) -> (B, F, H, W)``: ``x + 0.2 * conv5([x, y1..y4])`` with ``y_k = lrelu(conv_k([x, y1..]))``.
    Keys ``conv1`` ... ``conv5``.
    """

    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        for k in range(1, 6):
            out_ch = num_feat if k == 5 else num_grow_ch
            self.add_module(f"conv{k}", nn.Conv2d(num_feat + (k - 1) * num_grow_ch, out_ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for k in range(1, 5):
            conv = getattr(self, f"conv{k}")
            features.append(F.leaky_relu(conv(torch.cat(features, dim=1)), _SLOPE))
        return x + self.conv5(torch.cat(features, dim=1)) * _RESIDUAL


class RRDB(nn.Module):
    """Three dense blocks in sequence with a 0.2-scaled residual around them. Keys ``rdb1..rdb3``."""

    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        self.rdb1 = DenseBlock(num_feat, num_grow_ch)
        self.rdb2 = DenseBlock(num_feat, num_grow_ch)
        self.rdb3 = DenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.rdb3(self.rdb2(self.rdb1(x))) * _RESIDUAL


class RRDBNet(nn.Module):
    """``forward(x (B, C_in, H, W) in [0, 1]) -> (B, C_out, H * scale, W * scale)``, unclamped.

    H and W must be multiples of the unshuffle factor (2 for scale 2; the caller pads).
    """

    def __init__(self, cfg: RRDBNetConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or RRDBNetConfig()
        feat = cfg.num_feat
        self.conv_first = nn.Conv2d(cfg.num_in_ch * cfg.unshuffle**2, feat, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(feat, cfg.num_grow_ch) for _ in range(cfg.num_block)))
        self.conv_body = nn.Conv2d(feat, feat, 3, padding=1)
        self.conv_up1 = nn.Conv2d(feat, feat, 3, padding=1)
        self.conv_up2 = nn.Conv2d(feat, feat, 3, padding=1)
        self.conv_hr = nn.Conv2d(feat, feat, 3, padding=1)
        self.conv_last = nn.Conv2d(feat, cfg.num_out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.unshuffle > 1:
            # channel order c * r * r + dy * r + dx, as torch's pixel_unshuffle and the official helper
            x = F.pixel_unshuffle(x, self.cfg.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), _SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), _SLOPE))
