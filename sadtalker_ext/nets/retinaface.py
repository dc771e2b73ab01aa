"""RetinaFace with a ResNet-50 backbone (the face detector SadTalker uses through facexlib).

State-dict keys equal those of facexlib's ``RetinaFace(network_name='resnet50')`` (the file
``detection_Resnet50_Final.pth``, after stripping an optional ``module.`` prefix): ``body.*`` (ResNet-50 up to
``layer4``, no ``fc``), ``fpn.output{1,2,3}`` / ``fpn.merge{1,2}``, ``ssh{1,2,3}.*``, and the per-level heads
``ClassHead.{i}.conv1x1``, ``BboxHead.{i}.conv1x1``, ``LandmarkHead.{i}.conv1x1``.

Also here: the anchor ("prior box") grid and the decoding of box / five-point offsets, as torch functions.
No torchvision: the backbone is written out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RetinaFaceConfig:
    """facexlib's ``cfg_re50`` values that matter at inference."""

    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    """Anchor sizes in pixels per pyramid level (two anchors per position)."""
    steps: tuple[int, ...] = (8, 16, 32)
    """Feature stride in pixels per pyramid level."""
    variance: tuple[float, float] = (0.1, 0.2)
    """Offset scale for centres and for log sizes."""
    blocks: tuple[int, ...] = (3, 4, 6, 3)
    """ResNet-50 bottleneck counts of layer1..layer4."""
    fpn_channels: int = 256
    """Channels of the FPN / SSH / head inputs."""
    mean_bgr: tuple[float, float, float] = (104.0, 117.0, 123.0)
    """Per-channel mean subtracted from the 0..255 input (channel order of the input as given)."""

    @property
    def anchors_per_position(self) -> int:
        return len(self.min_sizes[0])


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ ReLU); keys ``0.weight``, ``1.*``."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (stride here) -> 1x1 (x4 channels), identity or projected shortcut."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class _ResNet50Body(nn.Module):
    """Stem + layer1..layer4; returns the outputs of layer2, layer3, layer4 (strides 8, 16, 32)."""

    def __init__(self, blocks: tuple[int, ...]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
            layer = []
            for j in range(count):
                layer.append(_Bottleneck(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width * 4
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


class _FPN(nn.Module):
    """Lateral 1x1 projections, top-down nearest upsampling + 3x3 merges (ReLU after every BN)."""

    def __init__(self, in_channels: tuple[int, int, int], out: int):
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], out, 1)
        self.output2 = _conv_bn(in_channels[1], out, 1)
        self.output3 = _conv_bn(in_channels[2], out, 1)
        self.merge1 = _conv_bn(out, out, 3)
        self.merge2 = _conv_bn(out, out, 3)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[2:], mode="nearest"))
        return [p3, p4, p5]


class _SSH(nn.Module):
    """Context module: 3x3 branch (C/2) + two stacked branches (C/4 each) emulating 5x5 and 7x7, ReLU after concat."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv3X3 = _conv_bn(cin, cout // 2, 3, relu=False)
        self.conv5X5_1 = _conv_bn(cin, cout // 4, 3)
        self.conv5X5_2 = _conv_bn(cout // 4, cout // 4, 3, relu=False)
        self.conv7X7_2 = _conv_bn(cout // 4, cout // 4, 3)
        self.conv7x7_3 = _conv_bn(cout // 4, cout // 4, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.conv5X5_1(x)
        return F.relu(
            torch.cat([self.conv3X3(x), self.conv5X5_2(mid), self.conv7x7_3(self.conv7X7_2(mid))], 1)
        )


class _Head(nn.Module):
    """1x1 conv predicting ``per_anchor`` values for each anchor; output (B, H*W*anchors, per_anchor)."""

    def __init__(self, cin: int, anchors: int, per_anchor: int):
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(cin, anchors * per_anchor, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1x1(x).permute(0, 2, 3, 1)
        return y.reshape(y.shape[0], -1, self.per_anchor)


class RetinaFaceR50(nn.Module):
    """RetinaFace-ResNet50.

    ``forward(x)``: x (B, 3, H, W) float, 0..255 pixel values minus ``cfg.mean_bgr``.
    Returns ``loc`` (B, N, 4) box offsets, ``scores`` (B, N, 2) softmax [background, face],
    ``landmarks`` (B, N, 10) five-point offsets, with N = :func:`prior_boxes` count for (H, W).
    """

    def __init__(self, cfg: RetinaFaceConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or RetinaFaceConfig()
        c = cfg.fpn_channels
        self.body = _ResNet50Body(cfg.blocks)
        self.fpn = _FPN((512, 1024, 2048), c)
        self.ssh1 = _SSH(c, c)
        self.ssh2 = _SSH(c, c)
        self.ssh3 = _SSH(c, c)
        a = cfg.anchors_per_position
        levels = len(cfg.steps)
        self.ClassHead = nn.ModuleList(_Head(c, a, 2) for _ in range(levels))
        self.BboxHead = nn.ModuleList(_Head(c, a, 4) for _ in range(levels))
        self.LandmarkHead = nn.ModuleList(_Head(c, a, 10) for _ in range(levels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pyramid = self.fpn(self.body(x))
        feats = [ssh(p) for ssh, p in zip((self.ssh1, self.ssh2, self.ssh3), pyramid, strict=True)]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], 1)
        logits = torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], 1)
        landmarks = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], 1)
        return loc, F.softmax(logits, dim=-1), landmarks


def prior_boxes(height: int, width: int, cfg: RetinaFaceConfig) -> torch.Tensor:
    """Anchors (N, 4) float32 as (cx, cy, w, h), fractions of the picture size.

    Order: level, then row, column, then anchor size; a level of stride s covers ceil(H/s) x ceil(W/s)
    positions with centres at ((col + 0.5) * s / W, (row + 0.5) * s / H). Values are computed in float64 and
    rounded once to float32.
    """
    parts = []
    for sizes, step in zip(cfg.min_sizes, cfg.steps, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width
        gy, gx = torch.meshgrid(cy, cx, indexing="ij")
        per_size = []
        for s in sizes:
            sw = torch.full_like(gx, s / width)
            sh = torch.full_like(gy, s / height)
            per_size.append(torch.stack([gx, gy, sw, sh], dim=-1))
        parts.append(torch.stack(per_size, dim=2).reshape(-1, 4))
    return torch.cat(parts, 0).to(torch.float32)


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, variance: tuple[float, float]) -> torch.Tensor:
    """(N, 4) offsets + (N, 4) anchors -> (N, 4) boxes (x1, y1, x2, y2) as picture fractions.

    centre = anchor centre + off[:2] * v0 * anchor size; size = anchor size * exp(off[2:] * v1).
    """
    centre = priors[:, :2] + loc[:, :2] * variance[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * variance[1])
    top_left = centre - size / 2
    return torch.cat([top_left, size + top_left], 1)


def decode_landmarks(off: torch.Tensor, priors: torch.Tensor, variance: tuple[float, float]) -> torch.Tensor:
    """(N, 10) offsets + (N, 4) anchors -> (N, 10) five points (x, y interleaved) as picture fractions."""
    pts = off.reshape(-1, 5, 2) * variance[0] * priors[:, None, 2:] + priors[:, None, :2]
    return pts.reshape(-1, 10)
