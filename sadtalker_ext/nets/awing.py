"""AWing FAN: stacked hourglasses with CoordConv, predicting WFLW 98-point heatmaps (+ one boundary map).

State-dict keys equal those of facexlib's / SadTalker's ``FAN(num_modules=4, num_landmarks=98)``
(``alignment_WFLW_4HG.pth``, its ``state_dict`` entry): ``conv1.conv``, ``bn1``, ``conv2``..``conv4``
(ConvBlocks), and per stack ``m{i}`` (hourglass: ``coordconv.conv``, ``b1_{d}``, ``b2_{d}``, ``b3_{d}``,
``b2_plus_1``), ``top_m_{i}``, ``conv_last{i}``, ``bn_end{i}``, ``l{i}`` and, between stacks, ``bl{i}``, ``al{i}``.

Input (B, 3, 256, 256) float BGR in [0, 1]; output: one (B, L+1, 64, 64) heatmap tensor per stack
(the last channel is the boundary map).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class AWingConfig:
    """Hyperparameters of facexlib's ``alignment_WFLW_4HG`` model."""

    num_modules: int = 4
    """Stacked hourglasses."""
    num_landmarks: int = 98
    """Heatmap channels before the boundary channel."""
    depth: int = 4
    """Hourglass recursion depth (64 -> 4 pixels)."""
    features: int = 256
    """Channels inside the hourglasses."""
    input_size: int = 256
    """Input height and width in pixels."""

    @property
    def heatmap_size(self) -> int:
        return self.input_size // 4


def coord_channels(
    size: int, batch: int, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three (B, 1, size, size) coordinate maps: row position and column position in [-1, 1], and their radius
    ``sqrt(r^2 + c^2)`` divided by its maximum. (AWing calls the row map "x" and the column map "y".)"""
    idx = torch.arange(size, dtype=torch.int32, device=like.device).float()
    pos = idx / (size - 1) * 2 - 1
    rows = pos.view(1, 1, size, 1).expand(batch, 1, size, size)
    cols = pos.view(1, 1, 1, size).expand(batch, 1, size, size)
    radius = torch.sqrt(torch.pow(rows, 2) + torch.pow(cols, 2))
    radius = radius / torch.max(radius)
    dtype = like.dtype
    return rows.to(dtype), cols.to(dtype), radius.to(dtype)


class CoordConv(nn.Module):
    """Appends coordinate maps (and, given a boundary heatmap, the coordinates masked by boundary > 0.05) then convolves."""

    def __init__(
        self, size: int, cin: int, cout: int, kernel: int, stride: int, padding: int, boundary: bool
    ):
        super().__init__()
        self.size = size
        self.boundary = boundary
        self.conv = nn.Conv2d(cin + 3 + (2 if boundary else 0), cout, kernel, stride, padding)

    def forward(self, x: torch.Tensor, heatmap: torch.Tensor | None = None) -> torch.Tensor:
        rows, cols, radius = coord_channels(self.size, x.shape[0], x)
        parts = [x, rows, cols, radius]
        if self.boundary:
            if heatmap is None:
                raise ValueError("this CoordConv expects the previous stack's heatmaps")
            edge = torch.clamp(heatmap[:, -1:], 0.0, 1.0) > 0.05
            zero = torch.zeros_like(rows)
            parts += [torch.where(edge, rows, zero), torch.where(edge, cols, zero)]
        return self.conv(torch.cat(parts, 1))


class ConvBlock(nn.Module):
    """Pre-activation block: three 3x3 convs (C/2, C/4, C/4 channels) concatenated, plus a shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        half, quarter = cout // 2, cout // 4
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, half, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, quarter, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, quarter, 3, 1, 1, bias=False)
        self.downsample = (
            nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(True), nn.Conv2d(cin, cout, 1, bias=False))
            if cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(F.relu(self.bn1(x)))
        b = self.conv2(F.relu(self.bn2(a)))
        c = self.conv3(F.relu(self.bn3(b)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.cat([a, b, c], 1) + shortcut


class HourGlass(nn.Module):
    """CoordConv 1x1 then a recursive hourglass: ``b1`` keeps resolution, ``b2`` / ``b3`` run at half size."""

    def __init__(self, depth: int, features: int, size: int, first: bool):
        super().__init__()
        self.depth = depth
        self.coordconv = CoordConv(size, features, features, 1, 1, 0, boundary=not first)
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(features, features))
            self.add_module(f"b2_{level}", ConvBlock(features, features))
            self.add_module(f"b3_{level}", ConvBlock(features, features))
        self.add_module("b2_plus_1", ConvBlock(features, features))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = self._modules[f"b1_{level}"](x)
        low = self._modules[f"b2_{level}"](F.avg_pool2d(x, 2, stride=2))
        low = self._level(level - 1, low) if level > 1 else self._modules["b2_plus_1"](low)
        low = self._modules[f"b3_{level}"](low)
        return upper + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor, heatmap: torch.Tensor | None) -> torch.Tensor:
        return self._level(self.depth, self.coordconv(x, heatmap))


class AWingFAN(nn.Module):
    """AWing face-alignment network; ``forward`` returns the list of per-stack heatmaps (B, L+1, 64, 64)."""

    def __init__(self, cfg: AWingConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or AWingConfig()
        f, hm = cfg.features, cfg.heatmap_size
        self.conv1 = CoordConv(cfg.input_size, 3, 64, 7, 2, 3, boundary=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, f)
        out = cfg.num_landmarks + 1
        for i in range(cfg.num_modules):
            self.add_module(f"m{i}", HourGlass(cfg.depth, f, hm, first=i == 0))
            self.add_module(f"top_m_{i}", ConvBlock(f, f))
            self.add_module(f"conv_last{i}", nn.Conv2d(f, f, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(f))
            self.add_module(f"l{i}", nn.Conv2d(f, out, 1))
            if i < cfg.num_modules - 1:
                self.add_module(f"bl{i}", nn.Conv2d(f, f, 1))
                self.add_module(f"al{i}", nn.Conv2d(out, f, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2, stride=2)))
        previous = x
        heatmaps: list[torch.Tensor] = []
        last: torch.Tensor | None = None
        for i in range(self.cfg.num_modules):
            y = self._modules[f"m{i}"](previous, last)
            y = self._modules[f"top_m_{i}"](y)
            y = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](y)))
            last = self._modules[f"l{i}"](y)
            heatmaps.append(last)
            if i < self.cfg.num_modules - 1:
                previous = previous + self._modules[f"bl{i}"](y) + self._modules[f"al{i}"](last)
        return heatmaps
