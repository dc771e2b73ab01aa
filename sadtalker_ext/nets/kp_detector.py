"""Canonical keypoint detector of the face-vid2vid renderer (checkpoint prefix ``kp_extractor.``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DecodeStep3d, EncodeStep2d, channel_ladder, coordinate_grid_3d


@dataclass(frozen=True)
class KPDetectorConfig:
    """Hyperparameters; defaults are the official ``kp_detector_params`` of facerender.yaml."""

    num_kp: int = 15
    image_channel: int = 3
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_channel: int = 16384
    reshape_depth: int = 16
    temperature: float = 0.1
    scale_factor: float = 0.25

    def __post_init__(self) -> None:
        top = channel_ladder(self.block_expansion, self.max_features, self.num_blocks)
        if self.reshape_channel != top * self.reshape_depth:
            raise ValueError(
                f"reshape_channel {self.reshape_channel} must equal {top} x reshape_depth {self.reshape_depth}"
            )

    @classmethod
    def from_state_shapes(cls, shapes: Mapping[str, tuple[int, ...]]) -> KPDetectorConfig:
        """Infer widths from ``{key: shape}`` of a ``kp_extractor`` state dict (prefix stripped).

        Raises ``ValueError`` naming the key when a needed key is absent or inconsistent.
        """
        try:
            num_blocks = sum(
                1 for k in shapes if k.startswith("predictor.down_blocks.") and k.endswith(".conv.weight")
            )
            first = shapes["predictor.down_blocks.down0.conv.weight"]
            top = shapes[f"predictor.down_blocks.down{num_blocks - 1}.conv.weight"][0]
            reshape_channel = shapes["predictor.conv.weight"][0]
            up_in = shapes["predictor.up_blocks.up0.conv.weight"][1]
            num_kp = shapes["kp.weight"][0]
        except (KeyError, IndexError) as exc:
            raise ValueError(f"kp_extractor state lacks key {exc}") from exc
        if reshape_channel % up_in:
            raise ValueError(
                "predictor.conv.weight out-channels not divisible by predictor.up_blocks.up0 in-channels"
            )
        return cls(
            num_kp=int(num_kp),
            image_channel=int(first[1]),
            block_expansion=int(first[0]) // 2,
            max_features=int(top),
            num_blocks=num_blocks,
            reshape_channel=int(reshape_channel),
            reshape_depth=int(reshape_channel) // int(up_in),
        )


class AntiAliasDownsample(nn.Module):
    """Gaussian blur (depthwise, zero padded) then stride subsampling by ``1 / scale``.

    The kernel lives in the buffer ``weight`` (C, 1, k, k). It is initialised to the official Gaussian
    (sigma = (1/scale - 1)/2, k = 2*round(4 sigma) + 1), but the checkpoint stores its own copy which
    replaces it on load (stand-in checkpoints hold arbitrary values there).
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.pad_before = size // 2
        self.pad_after = self.pad_before - 1 if size % 2 == 0 else self.pad_before
        self.stride = int(1 / scale)
        centre = (size - 1) / 2
        # Built on the CPU explicitly (cheap even when the module is constructed under a meta device).
        t = torch.arange(size, dtype=torch.float32, device="cpu")
        g = torch.exp(-((t - centre) ** 2) / (2 * sigma**2))
        kernel = g[:, None] * g[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, size, size).clone())
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H*scale, W*scale)``."""
        p0, p1 = self.pad_before, self.pad_after
        blurred = F.conv2d(F.pad(x, (p0, p1, p0, p1)), self.weight, groups=self.channels)
        return blurred[:, :, :: self.stride, :: self.stride]


class KPHourglass2dTo3d(nn.Module):
    """2D encoder -> 1x1 conv -> reshape to a 3D volume -> 3D upsampling decoder."""

    def __init__(self, cfg: KPDetectorConfig):
        super().__init__()
        n, be, mx = cfg.num_blocks, cfg.block_expansion, cfg.max_features
        downs = OrderedDict()
        for i in range(n):
            in_ch = cfg.image_channel if i == 0 else channel_ladder(be, mx, i)
            downs[f"down{i}"] = EncodeStep2d(in_ch, channel_ladder(be, mx, i + 1))
        self.down_blocks = nn.Sequential(downs)
        self.conv = nn.Conv2d(channel_ladder(be, mx, n), cfg.reshape_channel, kernel_size=1)
        ups = OrderedDict()
        for i in range(n):
            ups[f"up{i}"] = DecodeStep3d(channel_ladder(be, mx, n - i), channel_ladder(be, mx, n - i - 1))
        self.up_blocks = nn.Sequential(ups)
        self.depth = cfg.reshape_depth
        self.out_channels = channel_ladder(be, mx, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.down_blocks(x))
        b, c, hh, ww = h.shape
        return self.up_blocks(h.view(b, c // self.depth, self.depth, hh, ww))


class KPDetector(nn.Module):
    """Canonical 3D keypoints of a face image.

    ``forward(image)``: image ``(B, 3, H, W)`` float in [0, 1] -> keypoints ``(B, num_kp, 3)`` (x, y, z),
    the expectation of a normalised grid under a softmax (temperature) heatmap over a
    ``(reshape_depth, H*scale, W*scale)`` volume.
    """

    def __init__(self, cfg: KPDetectorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or KPDetectorConfig()
        self.predictor = KPHourglass2dTo3d(cfg)
        self.kp = nn.Conv3d(self.predictor.out_channels, cfg.num_kp, kernel_size=3, padding=1)
        if cfg.scale_factor != 1:
            self.down = AntiAliasDownsample(cfg.image_channel, cfg.scale_factor)
        else:
            self.down = None

    def heatmap_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Keypoint logits ``(B, num_kp, D, H*scale, W*scale)`` before the temperature softmax."""
        x = self.down(image) if self.down is not None else image
        return self.kp(self.predictor(x))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.heatmap_logits(image)
        b, k, d, h, w = logits.shape
        prob = F.softmax(logits.view(b, k, -1) / self.cfg.temperature, dim=2).view(b, k, d, h, w)
        grid = coordinate_grid_3d(d, h, w, dtype=prob.dtype, device=prob.device)
        return (prob.unsqueeze(-1) * grid).sum(dim=(2, 3, 4))
