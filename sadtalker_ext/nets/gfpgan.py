"""GFPGAN v1.4 face restoration network ("clean" variant, no compiled CUDA ops), as a plain torch module.

Structure (the facts of the official ``GFPGANv1Clean`` with ``StyleGAN2GeneratorCSFT``):

* a U-Net encoder: a 1x1 conv, then ``log2(out_size) - 2`` residual blocks that halve the resolution
  down to 4x4, a 3x3 conv and a linear layer that produces one 512-wide latent per decoder layer
  (``different_w``; the latents are used as-is, ``input_is_latent``);
* a U-Net decoder that climbs back from 4x4 to ``out_size``; at every resolution two small conv heads
  turn its features into an SFT scale and shift;
* a StyleGAN2 generator (modulated convs, per-pixel noise, RGB skip outputs) whose second half of the
  channels after each upsampling conv is modulated as ``x * scale + shift`` (``sft_half``).

State-dict keys and shapes equal those of the ``params_ema`` dict in the official ``GFPGANv1.4.pth``
(86.4 M parameters at the official configuration), including the parts inference does not use: the
style MLP (skipped because the latents come from the encoder), the intermediate RGB heads ``toRGB.*``
(the official helper calls the network with ``return_rgb=False``) and the stored noise maps
``stylegan_decoder.noises.noise<i>``.

Noise: each styled conv adds ``strength * noise`` with a ``(1 or B, 1, H, W)`` map. The official helper
leaves ``randomize_noise=True``, so every call draws fresh N(0, 1) maps and its output is not
repeatable. Here the caller passes the maps explicitly (:func:`sample_noise` draws them from a seeded
``torch.Generator``); with ``noise=None`` the stored maps of the checkpoint are used, which is the
official ``randomize_noise=False`` behaviour. ``fix_decoder`` only freezes gradients during training and
has no counterpart here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_SLOPE = 0.2
"""Negative slope of every leaky ReLU in the network."""


@dataclass(frozen=True)
class GFPGANConfig:
    """Hyperparameters; defaults are those the official ``GFPGANer`` uses for ``GFPGANv1.4.pth``.

    ``out_size``: input and output side in pixels (a power of two >= 8). ``num_style_feat``: latent width.
    ``channel_multiplier`` and ``narrow`` scale the StyleGAN2 channel table (the U-Net uses half of it).
    ``num_mlp``: linear layers of the (unused at inference) style MLP. ``sft_half``: SFT on half the
    channels. ``different_w``: one latent per decoder layer. ``input_is_latent``: skip the style MLP.
    """

    out_size: int = 512
    num_style_feat: int = 512
    channel_multiplier: int = 2
    narrow: float = 1.0
    num_mlp: int = 8
    sft_half: bool = True
    different_w: bool = True
    input_is_latent: bool = True

    def __post_init__(self) -> None:
        side = self.out_size
        if side < 8 or side & (side - 1):
            raise ValueError(f"out_size must be a power of two >= 8, got {side}")
        if side > 1024:
            raise ValueError(f"out_size above 1024 has no channel entry, got {side}")

    @property
    def log_size(self) -> int:
        """``log2(out_size)``: 9 for 512."""
        return int(math.log2(self.out_size))

    @property
    def num_levels(self) -> int:
        """Resolution steps between 4x4 and ``out_size`` (7 for 512)."""
        return self.log_size - 2

    @property
    def num_latents(self) -> int:
        """Latent vectors the decoder consumes: ``2 * log_size - 2`` (16 for 512)."""
        return 2 * self.log_size - 2

    @property
    def num_noise(self) -> int:
        """Noise maps (one per styled conv): ``2 * num_levels + 1`` (15 for 512)."""
        return 2 * self.num_levels + 1

    def decoder_channels(self, resolution: int) -> int:
        """StyleGAN2 feature width at ``resolution`` (4 ... 1024)."""
        base = {4: 512, 8: 512, 16: 512, 32: 512}
        if resolution in base:
            return int(base[resolution] * self.narrow)
        per_multiplier = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}[resolution]
        return int(per_multiplier * self.channel_multiplier * self.narrow)

    def unet_channels(self, resolution: int) -> int:
        """U-Net feature width at ``resolution``: the decoder table with half the ``narrow``."""
        base = {4: 512, 8: 512, 16: 512, 32: 512}
        half = self.narrow * 0.5
        if resolution in base:
            return int(base[resolution] * half)
        per_multiplier = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}[resolution]
        return int(per_multiplier * self.channel_multiplier * half)

    def noise_sides(self) -> list[int]:
        """Side of each noise map in layer order: 4, then two per resolution 8 ... out_size."""
        return [4] + [2**level for level in range(3, self.log_size + 1) for _ in range(2)]

    @classmethod
    def from_state_shapes(cls, shapes: Mapping[str, tuple[int, ...]]) -> GFPGANConfig:
        """Infer the config from ``{key: shape}`` of a GFPGANv1Clean state dict.

        Needs ``out_size >= 64`` to see ``channel_multiplier``; raises ``ValueError`` naming a missing key.
        """
        try:
            levels = sum(1 for k in shapes if k.startswith("conv_body_down.") and k.endswith(".conv1.weight"))
            out_size = 2 ** (levels + 2)
            style_rows = shapes["stylegan_decoder.style_mlp.1.weight"]
            num_style_feat = int(style_rows[1])
            num_mlp = sum(
                1 for k in shapes if k.startswith("stylegan_decoder.style_mlp.") and k.endswith(".weight")
            )
            width4 = int(shapes["stylegan_decoder.constant_input.weight"][1])
            narrow = width4 / 512
            if levels >= 4:
                # the upsampling conv of resolution 64 is style_convs.(2 * (6 - 3)) -> index 6
                width64 = int(shapes["stylegan_decoder.style_convs.6.modulated_conv.weight"][1])
                multiplier = round(width64 / (256 * narrow))
            else:
                multiplier = cls.channel_multiplier
            linear_out = int(shapes["final_linear.weight"][0])
            sft_rows = int(shapes["condition_scale.0.2.weight"][0])
        except (KeyError, IndexError) as exc:
            raise ValueError(f"GFPGAN state lacks key {exc}") from exc
        if levels < 1:
            raise ValueError("GFPGAN state has no conv_body_down blocks")
        cfg = cls(
            out_size=out_size,
            num_style_feat=num_style_feat,
            channel_multiplier=int(multiplier),
            narrow=narrow,
            num_mlp=num_mlp,
            different_w=linear_out != num_style_feat,
            sft_half=sft_rows != 2 * int(shapes["condition_scale.0.0.weight"][0]),
        )
        if cfg.different_w and linear_out != cfg.num_latents * num_style_feat:
            raise ValueError(
                f"final_linear.weight has {linear_out} rows, expected {cfg.num_latents * num_style_feat}"
            )
        return cfg


# --------------------------------------------------------------------------- U-Net parts


class ResampleResBlock(nn.Module):
    """Residual block that rescales by ``factor`` (0.5 down, 2 up) with bilinear interpolation.

    ``(B, C_in, H, W) -> (B, C_out, H * factor, W * factor)``. Main path: 3x3 conv (C_in), leaky ReLU,
    resample, 3x3 conv (C_out), leaky ReLU. Shortcut: resample then a bias-free 1x1 conv.
    Keys: ``conv1``, ``conv2``, ``skip``.
    """

    def __init__(self, in_channels: int, out_channels: int, factor: float):
        super().__init__()
        self.factor = factor
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self._resample(F.leaky_relu(self.conv1(x), _SLOPE))
        main = F.leaky_relu(self.conv2(main), _SLOPE)
        return main + self.skip(self._resample(x))


def _sft_head(channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv, leaky ReLU, 3x3 conv: features -> SFT scale or shift. Keys ``0`` and ``2``."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.LeakyReLU(_SLOPE),
        nn.Conv2d(channels, out_channels, 3, padding=1),
    )


# --------------------------------------------------------------------------- StyleGAN2 parts


class _RMSNormalize(nn.Module):
    """Scale each style vector ``(B, C)`` to unit root-mean-square (eps 1e-8). No parameters."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class ModulatedConv(nn.Module):
    """StyleGAN2 convolution whose kernel is scaled per sample by an affine map of the latent.

    ``forward(x (B, C_in, H, W), w (B, num_style_feat)) -> (B, C_out, H', W')`` with H' = 2H when
    ``upsample`` (bilinear x2 before the conv) else H. No bias. With ``demodulate`` each output filter
    of each sample is divided by its L2 norm (eps 1e-8 under the root).
    Keys: ``modulation`` (Linear num_style_feat -> C_in), ``weight`` ``(1, C_out, C_in, k, k)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        num_style_feat: int,
        *,
        demodulate: bool,
        upsample: bool = False,
    ):
        super().__init__()
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.modulation = nn.Linear(num_style_feat, in_channels)
        nn.init.ones_(self.modulation.bias)  # start with unit gains (official initialisation)
        self.weight = nn.Parameter(torch.empty(1, out_channels, in_channels, kernel_size, kernel_size))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(in_channels * kernel_size**2))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch, in_ch = x.shape[:2]
        gain = self.modulation(w).reshape(batch, 1, in_ch, 1, 1)
        kernels = self.weight * gain  # (B, C_out, C_in, k, k)
        if self.demodulate:
            norm = torch.rsqrt(kernels.pow(2).sum(dim=(2, 3, 4)) + 1e-8)
            kernels = kernels * norm.reshape(batch, self.out_channels, 1, 1, 1)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        height, width = x.shape[2:]
        # one grouped convolution: sample b uses kernel group b
        grouped = F.conv2d(
            x.reshape(1, batch * in_ch, height, width),
            kernels.reshape(batch * self.out_channels, in_ch, self.kernel_size, self.kernel_size),
            padding=self.kernel_size // 2,
            groups=batch,
        )
        return grouped.reshape(batch, self.out_channels, *grouped.shape[2:])


class StyledConv(nn.Module):
    """Modulated 3x3 conv x sqrt(2), plus ``weight * noise``, plus bias, then leaky ReLU(0.2).

    ``forward(x (B, C_in, H, W), w (B, S), noise (1 or B, 1, H', W')) -> (B, C_out, H', W')``.
    Keys: ``modulated_conv.*``, ``weight`` ``(1,)`` (noise strength), ``bias`` ``(1, C_out, 1, 1)``.
    """

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, *, upsample: bool):
        super().__init__()
        self.modulated_conv = ModulatedConv(
            in_channels, out_channels, 3, num_style_feat, demodulate=True, upsample=upsample
        )
        self.weight = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        y = self.modulated_conv(x, w) * math.sqrt(2.0)
        y = y + self.weight * noise
        return F.leaky_relu(y + self.bias, _SLOPE)


class RGBOut(nn.Module):
    """Modulated 1x1 conv (no demodulation) to 3 channels plus bias, added to the (x2 bilinear
    upsampled when ``upsample``) previous RGB image.

    ``forward(x (B, C, H, W), w (B, S), previous (B, 3, H/2, W/2) or None) -> (B, 3, H, W)``.
    Keys: ``modulated_conv.*``, ``bias`` ``(1, 3, 1, 1)``.
    """

    def __init__(self, in_channels: int, num_style_feat: int, *, upsample: bool):
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        rgb = self.modulated_conv(x, w) + self.bias
        if previous is None:
            return rgb
        if self.upsample:
            previous = F.interpolate(previous, scale_factor=2, mode="bilinear", align_corners=False)
        return rgb + previous


class LearnedConstant(nn.Module):
    """The learned 4x4 start tensor, repeated over the batch: ``-> (B, C, 4, 4)``. Key ``weight``."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class SFTStyleDecoder(nn.Module):
    """StyleGAN2 generator with spatial feature transform from the U-Net (checkpoint prefix
    ``stylegan_decoder.``).

    ``forward(latents (B, num_latents, S), sft (list of (scale, shift) per level), noise) -> (B, 3, out, out)``.
    Layer ``j`` of the 15 (for 512) styled convs takes latent ``j`` and noise map ``j``; the RGB head after
    conv ``j`` takes latent ``j + 1``. After the upsampling conv of level ``l`` the second half of the
    channels (``sft_half``; all channels otherwise) becomes ``x * scale_l + shift_l``.
    """

    def __init__(self, cfg: GFPGANConfig):
        super().__init__()
        self.cfg = cfg
        style = cfg.num_style_feat
        mlp: list[nn.Module] = [_RMSNormalize()]
        for _ in range(cfg.num_mlp):
            mlp += [nn.Linear(style, style), nn.LeakyReLU(_SLOPE)]
        self.style_mlp = nn.Sequential(*mlp)

        width = cfg.decoder_channels(4)
        self.constant_input = LearnedConstant(width)
        self.style_conv1 = StyledConv(width, width, style, upsample=False)
        self.to_rgb1 = RGBOut(width, style, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for level in range(3, cfg.log_size + 1):
            out_width = cfg.decoder_channels(2**level)
            self.style_convs.append(StyledConv(width, out_width, style, upsample=True))
            self.style_convs.append(StyledConv(out_width, out_width, style, upsample=False))
            self.to_rgbs.append(RGBOut(out_width, style, upsample=True))
            width = out_width
        self.noises = nn.Module()
        for index, side in enumerate(cfg.noise_sides()):
            self.noises.register_buffer(f"noise{index}", torch.randn(1, 1, side, side))

    def stored_noise(self) -> list[torch.Tensor]:
        """The checkpoint's fixed noise maps ``(1, 1, s, s)`` in layer order."""
        return [getattr(self.noises, f"noise{i}") for i in range(self.cfg.num_noise)]

    def map_styles(self, z: torch.Tensor) -> torch.Tensor:
        """Style MLP ``(B, S) -> (B, S)`` (RMS over dim 1); unused by GFPGAN v1.4 (``input_is_latent``)."""
        return self.style_mlp(z)

    def _sft(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        if not self.cfg.sft_half:
            return x * scale + shift
        half = x.shape[1] // 2
        kept, modulated = x[:, :half], x[:, half:]
        return torch.cat([kept, modulated * scale + shift], dim=1)

    def forward(
        self,
        latents: torch.Tensor,
        sft: Sequence[tuple[torch.Tensor, torch.Tensor]],
        noise: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        batch = latents.shape[0]
        x = self.style_conv1(self.constant_input(batch), latents[:, 0], noise[0])
        rgb = self.to_rgb1(x, latents[:, 1])
        for level, rgb_head in enumerate(self.to_rgbs):
            first = 1 + 2 * level  # index of this level's upsampling conv (latent and noise)
            x = self.style_convs[2 * level](x, latents[:, first], noise[first])
            if level < len(sft):
                x = self._sft(x, *sft[level])
            x = self.style_convs[2 * level + 1](x, latents[:, first + 1], noise[first + 1])
            rgb = rgb_head(x, latents[:, first + 2], rgb)
        return rgb


# --------------------------------------------------------------------------- the whole network


class GFPGANv1Clean(nn.Module):
    """GFPGAN v1 (clean): ``forward(x (B, 3, out, out) RGB in [-1, 1], noise) -> (B, 3, out, out)``.

    The output is not clamped (the caller clamps to [-1, 1]). ``noise``: a list of ``cfg.num_noise``
    maps, map ``j`` of shape ``(1 or B, 1, s_j, s_j)`` with ``s_j = cfg.noise_sides()[j]`` (see
    :func:`sample_noise`); ``None`` uses the maps stored in the checkpoint.
    """

    def __init__(self, cfg: GFPGANConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GFPGANConfig()
        top = cfg.out_size
        self.conv_body_first = nn.Conv2d(3, cfg.unet_channels(top), 1)

        self.conv_body_down = nn.ModuleList()
        width = cfg.unet_channels(top)
        for level in range(cfg.log_size, 2, -1):  # out_size -> 4
            out_width = cfg.unet_channels(2 ** (level - 1))
            self.conv_body_down.append(ResampleResBlock(width, out_width, 0.5))
            width = out_width
        self.final_conv = nn.Conv2d(width, cfg.unet_channels(4), 3, padding=1)

        # attribute order = state-dict order of the official file
        self.conv_body_up = nn.ModuleList()
        self.toRGB = nn.ModuleList()
        latent_width = cfg.num_latents * cfg.num_style_feat if cfg.different_w else cfg.num_style_feat
        self.final_linear = nn.Linear(cfg.unet_channels(4) * 16, latent_width)
        self.stylegan_decoder = SFTStyleDecoder(cfg)
        self.condition_scale = nn.ModuleList()
        self.condition_shift = nn.ModuleList()
        width = cfg.unet_channels(4)
        for level in range(3, cfg.log_size + 1):  # 8 -> out_size
            out_width = cfg.unet_channels(2**level)
            self.conv_body_up.append(ResampleResBlock(width, out_width, 2.0))
            self.toRGB.append(nn.Conv2d(out_width, 3, 1))
            sft_width = out_width if cfg.sft_half else 2 * out_width
            self.condition_scale.append(_sft_head(out_width, sft_width))
            self.condition_shift.append(_sft_head(out_width, sft_width))
            width = out_width

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """U-Net pass: ``(B, 3, out, out)`` -> latents ``(B, num_latents, S)`` and per-level SFT
        ``(scale, shift)``, level ``l`` at resolution ``2 ** (l + 3)``."""
        cfg = self.cfg
        feat = F.leaky_relu(self.conv_body_first(x), _SLOPE)
        skips: list[torch.Tensor] = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = F.leaky_relu(self.final_conv(feat), _SLOPE)

        latents = self.final_linear(feat.flatten(1))
        if cfg.different_w:
            latents = latents.reshape(latents.shape[0], cfg.num_latents, cfg.num_style_feat)
        if not cfg.input_is_latent:
            # as in the official code the MLP sees the tensor as it is; for (B, L, S) its RMS
            # normalisation then runs over dim 1 (the latents), a quirk kept for fidelity
            latents = self.stylegan_decoder.map_styles(latents)
        if not cfg.different_w:
            latents = latents.unsqueeze(1).expand(-1, cfg.num_latents, -1)

        sft: list[tuple[torch.Tensor, torch.Tensor]] = []
        for level, up in enumerate(self.conv_body_up):
            feat = up(feat + skips[-1 - level])  # skip of the same resolution, deepest first
            sft.append((self.condition_scale[level](feat), self.condition_shift[level](feat)))
        return latents, sft

    def forward(self, x: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        if noise is None:
            noise = self.stylegan_decoder.stored_noise()
        if len(noise) != self.cfg.num_noise:
            raise ValueError(f"expected {self.cfg.num_noise} noise maps, got {len(noise)}")
        latents, sft = self.encode(x)
        return self.stylegan_decoder(latents, sft, noise)


def sample_noise(
    cfg: GFPGANConfig,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Draw the ``cfg.num_noise`` noise maps ``(1, 1, s, s)`` from N(0, 1), in layer order.

    Drawn on the CPU in float32 from ``generator`` (so a seed gives the same maps on every device), then
    moved to ``device``/``dtype``. The leading 1 broadcasts one set of maps over the whole batch.
    """
    maps = [torch.randn(1, 1, side, side, generator=generator) for side in cfg.noise_sides()]
    return [m.to(device=device, dtype=dtype) for m in maps]
