"""Occlusion-aware SPADE generator of the face-vid2vid renderer (checkpoint prefix ``generator.``).

The work is split so a source picture is encoded once per generation:
``encode_source`` (image -> 3D feature volume) and ``decode`` (volume + keypoints -> frame).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import winograd
from .blocks import ConvBNAct2d, EncodeStep2d, PreActResidual3d, channel_ladder, compute_layout
from .dense_motion import DenseMotionConfig, DenseMotionNetwork
from .spade_decoder import SpadeDecoder, SpadeDecoderConfig


@dataclass(frozen=True)
class GeneratorConfig:
    """Hyperparameters; defaults are the official ``generator_params`` of facerender.yaml."""

    image_channel: int = 3
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)
    decoder: SpadeDecoderConfig = field(default_factory=SpadeDecoderConfig)

    def __post_init__(self) -> None:
        if self.reshape_channel * self.reshape_depth != self.max_features:
            raise ValueError(
                f"max_features {self.max_features} must equal reshape_channel {self.reshape_channel} "
                f"x reshape_depth {self.reshape_depth}"
            )
        if self.dense_motion.feature_channel != self.reshape_channel:
            raise ValueError("dense_motion.feature_channel must equal reshape_channel")
        if self.decoder.input_nc != self.decoded_channels:
            raise ValueError(f"decoder.input_nc must be {self.decoded_channels}")

    @property
    def decoded_channels(self) -> int:
        """Channels of the warped 2D feature fed to the decoder: block_expansion * 2**num_down_blocks."""
        return self.block_expansion * 2**self.num_down_blocks

    @classmethod
    def from_state_shapes(cls, shapes: Mapping[str, tuple[int, ...]]) -> GeneratorConfig:
        """Infer widths from ``{key: shape}`` of a ``generator`` state dict (prefix stripped).

        Raises ``ValueError`` naming the key when a needed key is absent or shapes are inconsistent.
        """
        try:
            first = shapes["first.conv.weight"]
            second = shapes["second.weight"]
            res_ch = shapes["resblocks_3d.3dr0.conv1.weight"][0]
        except (KeyError, IndexError) as exc:
            raise ValueError(f"generator state lacks key {exc}") from exc
        downs = sum(1 for k in shapes if k.startswith("down_blocks.") and k.endswith(".conv.weight"))
        resblocks = sum(1 for k in shapes if k.startswith("resblocks_3d.") and k.endswith(".conv1.weight"))
        if int(second[0]) % int(res_ch):
            raise ValueError("second.weight out-channels not divisible by the 3D residual width")
        return cls(
            image_channel=int(first[1]),
            block_expansion=int(first[0]),
            max_features=int(second[0]),
            num_down_blocks=downs,
            reshape_channel=int(res_ch),
            reshape_depth=int(second[0]) // int(res_ch),
            num_resblocks=resblocks,
            dense_motion=DenseMotionConfig.from_state_shapes(shapes, "dense_motion_network."),
            decoder=SpadeDecoderConfig.from_state_shapes(shapes, "decoder."),
        )


@dataclass(frozen=True)
class EncodedSource:
    """Everything :meth:`OcclusionAwareSPADEGenerator.decode` needs from the source picture, computed once.

    ``volume``: :meth:`~OcclusionAwareSPADEGenerator.encode_source` output ``(B, C, D, H/4, W/4)``;
    ``compressed``: the dense-motion network's compressed copy ``(B, compress, D, H/4, W/4)``.
    """

    volume: torch.Tensor
    compressed: torch.Tensor


class OcclusionAwareSPADEGenerator(nn.Module):
    """Renders the source face moved from ``kp_source`` to ``kp_driving``.

    * ``encode_source(source_image (B, 3, H, W) in [0, 1])`` -> feature volume
      ``(B, reshape_channel, reshape_depth, H/4, W/4)`` (32 x 16 x H/4 x W/4 officially).
    * ``decode(feature, kp_source (B, K, 3), kp_driving (B, K, 3))`` -> dict with ``prediction``
      ``(B, 3, H, W)`` in [0, 1], ``decoder_logits`` (pre-sigmoid, same shape), ``occlusion_map``
      ``(B, 1, H/4, W/4)``, ``deformation`` ``(B, D, H/4, W/4, 3)``, ``mask`` ``(B, K+1, D, H/4, W/4)``
      and ``decoder_input`` ``(B, 256, H/4, W/4)``. A feature of batch 1 is broadcast to the keypoint batch.
    * ``forward(source_image, kp_driving, kp_source)`` (the official argument order) = both.
    """

    def __init__(self, cfg: GeneratorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GeneratorConfig()
        be, mx = cfg.block_expansion, cfg.max_features
        self.dense_motion_network = DenseMotionNetwork(cfg.dense_motion)
        self.first = ConvBNAct2d(cfg.image_channel, be, 3)
        self.down_blocks = nn.ModuleList(
            EncodeStep2d(channel_ladder(be, mx, i), channel_ladder(be, mx, i + 1))
            for i in range(cfg.num_down_blocks)
        )
        self.second = nn.Conv2d(channel_ladder(be, mx, cfg.num_down_blocks), mx, kernel_size=1)
        self.resblocks_3d = nn.Sequential(
            OrderedDict((f"3dr{i}", PreActResidual3d(cfg.reshape_channel)) for i in range(cfg.num_resblocks))
        )
        self.third = ConvBNAct2d(mx, cfg.decoded_channels, 3, leaky=True)
        self.fourth = nn.Conv2d(cfg.decoded_channels, cfg.decoded_channels, kernel_size=1)
        self.decoder = SpadeDecoder(cfg.decoder)

    def reduce_precision(self, dtype: torch.dtype) -> None:
        """Run the per-frame convolutions in ``dtype`` (bfloat16, float16): the dense-motion hourglass, its
        mask and occlusion convs, ``third`` / ``fourth`` and the SPADE decoder (~99 % of a frame's work).

        Keypoint Gaussians, sampling grids, the mask softmax, the warps and the source encoding stay in
        the input's precision: the Gaussians (variance 0.01) and grids do not survive 8 mantissa bits,
        the convolutions that read them do (speed and error: ``sadtalker_ext/precision.py``).
        """
        motion_net = self.dense_motion_network
        for module in (motion_net.hourglass, motion_net.mask, motion_net.occlusion, self.third, self.fourth):
            if module is not None:
                module.to(dtype=dtype)
        self.decoder.to(dtype=dtype)

    def encode_source(self, source_image: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, reshape_channel, reshape_depth, H/4, W/4)``."""
        h = self.first(source_image)
        for step in self.down_blocks:
            h = step(h)
        h = self.second(h)
        b, _, hh, ww = h.shape
        return self.resblocks_3d(h.view(b, self.cfg.reshape_channel, self.cfg.reshape_depth, hh, ww))

    def prepare_source(self, source_image: torch.Tensor) -> EncodedSource:
        """``encode_source`` plus the source-only part of the dense-motion network, for :meth:`decode`."""
        volume = self.encode_source(source_image)
        return EncodedSource(volume, self.dense_motion_network.compress_feature(volume))

    def decode(
        self, feature: torch.Tensor | EncodedSource, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Warp the encoded source to the driving keypoints and decode a frame (see class docstring).

        ``feature``: the ``encode_source`` volume or a :class:`EncodedSource` from :meth:`prepare_source`
        (then the source-only dense-motion work is not repeated). A feature or ``kp_source`` of batch 1 is
        used for every row of ``kp_driving``.
        """
        with winograd.scratch():  # the Winograd convs' buffers, reused across this call's convs
            compressed = None
            if isinstance(feature, EncodedSource):
                feature, compressed = feature.volume, feature.compressed
            n = kp_driving.shape[0]
            if feature.shape[0] == 1 and n > 1:
                feature = feature.expand(n, *feature.shape[1:])
            if kp_source.shape[0] not in (1, n):
                raise ValueError(f"kp_source batch {kp_source.shape[0]} does not fit kp_driving batch {n}")
            motion = self.dense_motion_network(feature, kp_driving, kp_source, compressed=compressed)
            grid = motion["deformation"]
            if grid.shape[1:4] != feature.shape[2:]:
                grid = F.interpolate(grid.permute(0, 4, 1, 2, 3), size=feature.shape[2:], mode="trilinear")
                grid = grid.permute(0, 2, 3, 4, 1)
            warped = F.grid_sample(feature, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            b, c, d, hh, ww = warped.shape
            h = self.fourth(
                self.third(compute_layout(warped.reshape(b, c * d, hh, ww), self.fourth.weight.dtype))
            )
            out = {"mask": motion["mask"], "deformation": motion["deformation"]}
            occlusion = motion.get("occlusion_map")
            if occlusion is not None:
                out["occlusion_map"] = occlusion
                if occlusion.shape[2:] != h.shape[2:]:
                    occlusion = F.interpolate(occlusion, size=h.shape[2:], mode="bilinear")
                h = h * occlusion.to(h.dtype)
            out["decoder_input"] = h
            logits = self.decoder(h).to(warped.dtype)  # a reduced precision ends here
            out["decoder_logits"] = logits
            out["prediction"] = torch.sigmoid(logits)
            return out

    def forward(
        self, source_image: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return self.decode(self.encode_source(source_image), kp_source, kp_driving)
