"""ParseNet: the 19-class face parser of facexlib (``parsing_parsenet.pth``), as a plain torch module.

Published architecture (PSFRGAN's parsing network as facexlib 0.3.0 builds it for ``GFPGANer``:
``ParseNet(in_size=512, out_size=512, parsing_ch=19)``, LeakyReLU(0.2), BatchNorm, channels clipped to
[32, 256]):

* ``encoder``: a 3x3 conv 3 -> 64 (bias, no norm, no activation), then 4 residual blocks that halve the side
  (512 -> 32) while doubling the channels (64 -> 128 -> 256 -> 256 -> 256 after clipping);
* ``body``: 10 residual blocks at 32x32, 256 channels, identity shortcuts; the body's output is ADDED to
  its input (``feat + body(feat)``);
* ``decoder``: 4 residual blocks that double the side (nearest x2 before the first conv) while halving the
  channels (256 -> 256 -> 256 -> 128 -> 64);
* two heads, 3x3 convs with bias: ``out_mask_conv`` (19 parsing logits) and ``out_img_conv`` (3 channels,
  an auxiliary image output that the face helper does not use).

Every 3x3 conv is preceded by reflection padding of 1; a "down" conv has stride 2. A residual block is
``shortcut(x) + conv2(conv1(x))`` with ``conv1`` = conv, BN, LeakyReLU(0.2) and ``conv2`` = conv, BN (no
activation, no bias in BN-followed convs). The shortcut is the identity when the block keeps size and
channels, else a plain 3x3 conv with bias at the block's scale (stride 2 for "down", nearest x2 first for
"up"). "down" blocks put the stride on ``conv2``; "up" blocks upsample before ``conv1``.

Keys (as stored in the official file, a plain state dict): ``encoder.0.conv2d.*``,
``encoder.<i>.{conv1,conv2}.conv2d.weight``, ``...{conv1,conv2}.norm.norm.{weight,bias,running_mean,
running_var,num_batches_tracked}``, ``...shortcut_func.conv2d.{weight,bias}``, ``body.<i>...``,
``decoder.<i>...``, ``out_img_conv.conv2d.*``, ``out_mask_conv.conv2d.*``.

Widths are a :class:`ParseNetConfig` (inferred from a state dict by :meth:`ParseNetConfig.from_state_shapes`),
so reduced stand-ins load the same way as the official file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_SLOPE = 0.2


@dataclass(frozen=True)
class ParseNetConfig:
    """Hyperparameters; the defaults are the official ``parsing_parsenet.pth`` (in/out 512, min feature 32)."""

    base_ch: int = 64
    min_ch: int = 32
    max_ch: int = 256
    down_steps: int = 4
    up_steps: int = 4
    res_depth: int = 10
    parsing_ch: int = 19

    def clip(self, channels: int) -> int:
        """Channel count clipped to ``[min_ch, max_ch]``."""
        return max(self.min_ch, min(channels, self.max_ch))

    def block_channels(self) -> tuple[list[tuple[int, int]], int, list[tuple[int, int]], int]:
        """``(encoder blocks (c_in, c_out), body channels, decoder blocks (c_in, c_out), head channels)``."""
        head = self.base_ch
        encoder = []
        for _ in range(self.down_steps):
            encoder.append((self.clip(head), self.clip(head * 2)))
            head *= 2
        body = self.clip(head)
        decoder = []
        for _ in range(self.up_steps):
            decoder.append((self.clip(head), self.clip(head // 2)))
            head //= 2
        return encoder, body, decoder, self.clip(head)

    @classmethod
    def from_state_shapes(cls, shapes: Mapping[str, tuple[int, ...]]) -> ParseNetConfig:
        """Infer the config from ``{key: shape}``; raises ValueError when the keys are not a ParseNet's."""

        def blocks(prefix: str) -> list[str]:
            found = {k.split(".")[1] for k in shapes if k.startswith(prefix + ".") and ".conv1." in k}
            return sorted(found, key=int)

        try:
            base = int(shapes["encoder.0.conv2d.weight"][0])
            parsing = int(shapes["out_mask_conv.conv2d.weight"][0])
            down = len(blocks("encoder"))
            up = len(blocks("decoder"))
            depth = len(blocks("body"))
            widths = [
                int(v[0])
                for k, v in shapes.items()
                if k.endswith("conv2d.weight") and not k.startswith("out_")
            ]
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"not a ParseNet state dict (missing or odd key: {exc})") from exc
        if not widths or down < 1 or up < 1:
            raise ValueError("not a ParseNet state dict (no encoder/decoder blocks)")
        head = int(shapes["out_mask_conv.conv2d.weight"][1])
        cfg = cls(
            base_ch=base,
            min_ch=min(cls.min_ch, *widths),
            max_ch=max(widths),
            down_steps=down,
            up_steps=up,
            res_depth=depth,
            parsing_ch=parsing,
        )
        if cfg.block_channels()[3] != head:
            raise ValueError(f"ParseNet head width {head} does not follow from the inferred config {cfg}")
        return cfg


class _BatchNorm(nn.Module):
    """Holds the BN under ``norm`` (official key ``<layer>.norm.norm.*``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ConvLayer(nn.Module):
    """Optional nearest x2 upsampling, reflection pad 1, 3x3 conv (stride 2 when ``down``), optional BN and
    LeakyReLU(0.2). Keys: ``conv2d.weight`` (+ ``conv2d.bias`` without BN), ``norm.norm.*`` with BN."""

    def __init__(
        self, c_in: int, c_out: int, *, scale: str = "none", bn: bool = False, act: bool = False
    ) -> None:
        super().__init__()
        self.up = scale == "up"
        self.conv2d = nn.Conv2d(c_in, c_out, 3, 2 if scale == "down" else 1, bias=not bn)
        self.norm = _BatchNorm(c_out) if bn else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        if self.norm is not None:
            x = self.norm(x)
        if self.act:
            x = F.leaky_relu(x, _SLOPE)
        return x


class ResidualBlock(nn.Module):
    """``shortcut(x) + conv2(conv1(x))``; ``scale`` 'down' strides ``conv2``, 'up' upsamples before ``conv1``."""

    def __init__(self, c_in: int, c_out: int, scale: str = "none") -> None:
        super().__init__()
        if scale == "none" and c_in == c_out:
            self.shortcut_func = None
        else:
            self.shortcut_func = ConvLayer(c_in, c_out, scale=scale)
        self.conv1 = ConvLayer(c_in, c_out, scale="up" if scale == "up" else "none", bn=True, act=True)
        self.conv2 = ConvLayer(c_out, c_out, scale="down" if scale == "down" else "none", bn=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut_func is None else self.shortcut_func(x)
        return identity + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    """``forward(x (B, 3, 512, 512) RGB in [-1, 1]) -> (parsing logits (B, 19, 512, 512), image (B, 3, ..))``."""

    def __init__(self, cfg: ParseNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ParseNetConfig()
        enc, body_ch, dec, head = cfg.block_channels()
        self.encoder = nn.Sequential(
            ConvLayer(3, cfg.base_ch), *(ResidualBlock(a, b, "down") for a, b in enc)
        )
        self.body = nn.Sequential(*(ResidualBlock(body_ch, body_ch) for _ in range(cfg.res_depth)))
        self.decoder = nn.Sequential(*(ResidualBlock(a, b, "up") for a, b in dec))
        self.out_img_conv = ConvLayer(head, 3)
        self.out_mask_conv = ConvLayer(head, cfg.parsing_ch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.encoder(x)
        y = self.decoder(feat + self.body(feat))
        return self.out_mask_conv(y), self.out_img_conv(y)
