"""Dense motion network: sparse keypoint motions -> dense 3D warp field and occlusion map.

Checkpoint prefix ``generator.dense_motion_network.``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Hourglass3d, compute_layout, coordinate_grid_3d


@dataclass(frozen=True)
class DenseMotionConfig:
    """Hyperparameters; defaults are the official ``dense_motion_params`` (+ common num_kp, feature_channel)."""

    num_kp: int = 15
    feature_channel: int = 32
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4
    estimate_occlusion_map: bool = True
    kp_variance: float = 0.01

    @property
    def hourglass_in(self) -> int:
        """Channels fed to the hourglass: (num_kp + 1) x (compress + 1)."""
        return (self.num_kp + 1) * (self.compress + 1)

    @classmethod
    def from_state_shapes(cls, shapes: Mapping[str, tuple[int, ...]], prefix: str = "") -> DenseMotionConfig:
        """Infer widths from ``{key: shape}`` (keys under ``prefix``); ``ValueError`` if a key is absent."""
        p = prefix
        try:
            compress = shapes[p + "compress.weight"]
            mask = shapes[p + "mask.weight"]
            enc0 = shapes[p + "hourglass.encoder.down_blocks.0.conv.weight"]
            levels = sum(
                1
                for k in shapes
                if k.startswith(p + "hourglass.encoder.down_blocks.") and k.endswith(".conv.weight")
            )
            top = shapes[f"{p}hourglass.encoder.down_blocks.{levels - 1}.conv.weight"][0]
            out_ch = shapes[p + "hourglass.decoder.conv.weight"][0]
        except (KeyError, IndexError) as exc:
            raise ValueError(f"dense motion state lacks key {exc}") from exc
        occlusion = shapes.get(p + "occlusion.weight")
        depth = int(occlusion[1]) // int(out_ch) if occlusion is not None else cls.reshape_depth
        return cls(
            num_kp=int(mask[0]) - 1,
            feature_channel=int(compress[1]),
            block_expansion=int(enc0[0]) // 2,
            max_features=int(top),
            num_blocks=levels,
            reshape_depth=depth,
            compress=int(compress[0]),
            estimate_occlusion_map=occlusion is not None,
        )


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor, variance: float) -> torch.Tensor:
    """Unnormalised Gaussians ``exp(-|grid - kp|^2 / (2 variance))``: kp ``(B, K, 3)``, grid ``(D, H, W, 3)``
    from :func:`coordinate_grid_3d` -> ``(B, K, D, H, W)``.

    The grid is separable (x varies over W only, y over H, z over D), so the Gaussian is the product of
    three 1-D Gaussians: ``D + H + W`` exponentials per keypoint instead of ``D * H * W``.
    """
    axes = (grid[0, 0, :, 0], grid[0, :, 0, 1], grid[:, 0, 0, 2])  # x (W,), y (H,), z (D,)
    gx, gy, gz = (
        torch.exp(-0.5 * (axis.view(1, 1, -1) - kp[..., i : i + 1]).square() / variance)
        for i, axis in enumerate(axes)
    )
    return gz[..., :, None, None] * gy[..., None, :, None] * gx[..., None, None, :]


def keypoint_heat(kp_driving: torch.Tensor, kp_source: torch.Tensor, grid: torch.Tensor, variance: float):
    """Driving minus source :func:`keypoint_gaussians` ``(B, K, D, H, W)``, with subnormal values set to 0.

    Far from a keypoint the Gaussians fall below the smallest normal float (1.2e-38 in float32). x86 CPUs
    multiply subnormal numbers through a slow microcode path, and the hourglass convolutions that read this
    map ran 2.6-3.5x slower for it (1.1-1.6 % of the values). Zeroing them changes no output bit of those
    convolutions (``bench/PROFILE.md``). ``torch.set_flush_denormal`` would not do: it sets the calling
    thread only, not the convolution's worker threads.
    """
    heat = keypoint_gaussians(kp_driving, grid, variance) - keypoint_gaussians(kp_source, grid, variance)
    tiny = torch.finfo(heat.dtype).tiny
    return heat.masked_fill_(heat.abs() < tiny, 0.0)


class DenseMotionNetwork(nn.Module):
    """``forward(feature, kp_driving, kp_source)`` with feature ``(B, feature_channel, D, H, W)`` and keypoints
    ``(B, K, 3)`` -> dict:

    * ``mask`` ``(B, K+1, D, H, W)``: softmax weights of the background (index 0) and each keypoint motion;
    * ``deformation`` ``(B, D, H, W, 3)``: sampling grid (x, y, z in [-1, 1]) into the source volume;
    * ``occlusion_map`` ``(B, 1, H, W)`` in (0, 1) when ``estimate_occlusion_map``.
    """

    def __init__(self, cfg: DenseMotionConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DenseMotionConfig()
        self.hourglass = Hourglass3d(cfg.hourglass_in, cfg.block_expansion, cfg.max_features, cfg.num_blocks)
        out_ch = self.hourglass.out_channels
        self.mask = nn.Conv3d(out_ch, cfg.num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(cfg.feature_channel, cfg.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(cfg.compress)
        if cfg.estimate_occlusion_map:
            self.occlusion = nn.Conv2d(out_ch * cfg.reshape_depth, 1, kernel_size=7, padding=3)
        else:
            self.occlusion = None

    def compress_feature(self, feature: torch.Tensor) -> torch.Tensor:
        """``(B, feature_channel, D, H, W)`` -> ``(B, compress, D, H, W)`` (1x1x1 conv, BN, ReLU).

        Depends on the source only: compute it once per source and pass it to :meth:`forward`.
        """
        return F.relu(self.norm(self.compress(feature)))

    def forward(
        self,
        feature: torch.Tensor | None,
        kp_driving: torch.Tensor,
        kp_source: torch.Tensor,
        *,
        compressed: torch.Tensor | None = None,
        direct: bool = False,
    ) -> dict[str, torch.Tensor]:
        """See the class docstring. ``compressed``: :meth:`compress_feature` of ``feature`` computed
        beforehand (``feature`` is then not used and may be ``None``). ``compressed`` and ``kp_source``
        may have batch 1 for a driving batch ``B`` (one source for every frame). ``direct``: the hourglass in
        the official arrangement (same value, more multiply-adds; for comparisons)."""
        small = self.compress_feature(feature) if compressed is None else compressed
        b, k = kp_driving.shape[0], self.cfg.num_kp
        _, c, d, h, w = small.shape
        if small.shape[0] == 1 and b > 1:
            small = small.expand(b, c, d, h, w)
        grid = coordinate_grid_3d(d, h, w, dtype=small.dtype, device=small.device)

        # Per keypoint: where in the source each driving-space voxel comes from (index 0 = no motion).
        ident = grid.view(1, 1, d, h, w, 3)
        src = kp_source.view(kp_source.shape[0], k, 1, 1, 1, 3)
        moved = ident - kp_driving.view(b, k, 1, 1, 1, 3) + src
        motions = torch.cat((ident.expand(b, 1, d, h, w, 3), moved), dim=1)  # (B, K+1, D, H, W, 3)

        stacked = small.unsqueeze(1).expand(b, k + 1, c, d, h, w).reshape(b * (k + 1), c, d, h, w)
        warped = F.grid_sample(
            stacked,
            motions.reshape(b * (k + 1), d, h, w, 3),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        ).view(b, k + 1, c, d, h, w)

        heat = keypoint_heat(kp_driving, kp_source, grid, self.cfg.kp_variance)
        heat = torch.cat((heat.new_zeros(b, 1, d, h, w), heat), dim=1).unsqueeze(2)
        hourglass_in = torch.cat((heat, warped), dim=2).view(b, -1, d, h, w)

        hidden = self.hourglass(compute_layout(hourglass_in, self.mask.weight.dtype), direct=direct)
        mask = F.softmax(self.mask(hidden).to(small.dtype), dim=1)
        out = {"mask": mask}
        weights = mask.unsqueeze(2)
        weights = torch.where(weights < 1e-3, torch.zeros_like(weights), weights)
        deformation = (motions.permute(0, 1, 5, 2, 3, 4) * weights).sum(dim=1)
        out["deformation"] = deformation.permute(0, 2, 3, 4, 1)
        if self.occlusion is not None:
            occlusion = self.occlusion(hidden.reshape(b, -1, h, w).contiguous())
            out["occlusion_map"] = torch.sigmoid(occlusion.to(small.dtype))
        return out
