"""SPADE image decoder of the renderer (checkpoint prefix ``generator.decoder.``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SpadeResidual, conv3x3, conv3x3_on_upsampled


@dataclass(frozen=True)
class SpadeDecoderConfig:
    """Widths; defaults are the values hard-coded in the official SPADEDecoder (ic 256, oc 64, hidden 128)."""

    input_nc: int = 256
    hidden_nc: int = 128
    output_nc: int = 64
    num_middle_blocks: int = 6
    image_channel: int = 3

    @classmethod
    def from_state_shapes(cls, shapes: Mapping[str, tuple[int, ...]], prefix: str = "") -> SpadeDecoderConfig:
        """Infer widths from ``{key: shape}`` (keys under ``prefix``); ``ValueError`` if a key is absent."""
        p = prefix
        try:
            fc = shapes[p + "fc.weight"]
            hidden = shapes[p + "G_middle_0.norm_0.mlp_shared.0.weight"][0]
            out_nc = shapes[p + "up_1.conv_1.weight_orig"][0]
            img = shapes[p + "conv_img.weight"][0]
        except (KeyError, IndexError) as exc:
            raise ValueError(f"SPADE decoder state lacks key {exc}") from exc
        middle = sum(1 for k in shapes if k.startswith(p + "G_middle_") and k.endswith(".conv_0.weight_orig"))
        return cls(
            input_nc=int(fc[1]),
            hidden_nc=int(hidden),
            output_nc=int(out_nc),
            num_middle_blocks=middle,
            image_channel=int(img),
        )


class SpadeDecoder(nn.Module):
    """``(B, input_nc, h, w)`` feature (also the SPADE label map) -> RGB logits ``(B, 3, 4h, 4w)``.

    3x3 conv to 2*input_nc, ``num_middle_blocks`` SPADE residual blocks, nearest x2, ``up_0`` (-> input_nc),
    nearest x2, ``up_1`` (-> output_nc), LeakyReLU(0.2), 3x3 conv to RGB. Apply a sigmoid for [0, 1] images.
    """

    def __init__(self, cfg: SpadeDecoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or SpadeDecoderConfig()
        ic, wide, hid = cfg.input_nc, 2 * cfg.input_nc, cfg.hidden_nc
        self.fc = nn.Conv2d(ic, wide, kernel_size=3, padding=1)
        for i in range(cfg.num_middle_blocks):
            self.add_module(f"G_middle_{i}", SpadeResidual(wide, wide, ic, hid))
        self.up_0 = SpadeResidual(wide, ic, ic, hid)
        self.up_1 = SpadeResidual(ic, cfg.output_nc, ic, hid)
        self.conv_img = nn.Conv2d(cfg.output_nc, cfg.image_channel, kernel_size=3, padding=1)

    phase_form = True
    """Label convs of the upsampled levels in the phase form (:func:`.blocks.set_phase_form`)."""
    winograd = False
    """``fc`` and the middle blocks' stacked label conv by Winograd (:func:`.blocks.set_winograd`)."""

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid logits, in the decoder's own dtype (``feature`` is cast to it).

        Same math as running every block with ``block(x, label)``, arranged for speed: the label convs
        (``mlp_shared``) of all norms that see the same label map run as one stacked conv; at the
        upsampled levels they run on the low-resolution feature (:func:`conv3x3_on_upsampled`) instead
        of on its nearest-upsampled copy; see also :meth:`SpadeResidual.forward_shared`.
        """
        feature = feature.to(self.fc.weight.dtype)
        x = conv3x3(self, "fc", feature, self.fc.out_channels, lambda: (self.fc.weight, self.fc.bias))
        middle = [getattr(self, f"G_middle_{i}") for i in range(self.cfg.num_middle_blocks)]
        shared = self._label_features(feature, middle, 1)
        for block, maps in zip(middle, shared, strict=True):
            x = block.forward_shared(x, maps)
        for block in (self.up_0, self.up_1):
            size = (x.shape[2] * 2, x.shape[3] * 2)
            factor = size[0] // feature.shape[2]
            if size == (feature.shape[2] * factor, feature.shape[3] * factor):
                (maps,) = self._label_features(feature, [block], factor, phase=self.phase_form)
                x = block.forward_shared(x, maps, upsample=2)
            else:  # not an integer multiple: the direct form
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
                x = block(x, F.interpolate(feature, size=x.shape[2:], mode="nearest"))
        return self.conv_img(F.leaky_relu(x, 0.2))

    def forward_reference(self, feature: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid logits computed block by block in the direct (official) arrangement."""
        feature = feature.to(self.fc.weight.dtype)

        def label_at(x: torch.Tensor) -> torch.Tensor:
            if x.shape[2:] == feature.shape[2:]:
                return feature
            return F.interpolate(feature, size=x.shape[2:], mode="nearest")

        x = self.fc(feature)
        for i in range(self.cfg.num_middle_blocks):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.up_0(x, label_at(x))
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.up_1(x, label_at(x))
        return self.conv_img(F.leaky_relu(x, 0.2))

    def _label_features(
        self, feature: torch.Tensor, blocks: list[SpadeResidual], factor: int, *, phase: bool = True
    ) -> list[list[torch.Tensor]]:
        """``relu(mlp_shared(label))`` of every norm of ``blocks`` (one stacked conv), label = ``feature``
        nearest-upsampled ``factor`` times; returned per block, per norm."""
        convs = [norm.label_conv for block in blocks for norm in block.norms()]
        widths = [c.out_channels for c in convs]

        def stacked() -> tuple[torch.Tensor, torch.Tensor]:
            return torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs])

        if factor == 1:
            key = "labels:" + ",".join(str(id(block)) for block in blocks)
            maps = conv3x3(self, key, feature, sum(widths), stacked)
        else:
            maps = conv3x3_on_upsampled(feature, *stacked(), factor, phase=phase)
        chunks = iter(F.relu(maps, inplace=True).split(widths, dim=1))
        return [[next(chunks) for _ in block.norms()] for block in blocks]
