"""Building blocks shared by the face-vid2vid renderer networks.

Every block keeps the parameter names of the official checkpoint (``conv``, ``norm``, ``conv1`` ...),
so a state dict read from the file loads strictly. BatchNorm layers are plain ``nn.BatchNorm2d/3d``
(eps 1e-5); in ``eval()`` they use the stored running statistics, like the official synchronized
BatchNorm does at inference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import winograd


def coordinate_grid_3d(depth: int, height: int, width: int, *, dtype: torch.dtype, device) -> torch.Tensor:
    """Normalised sampling grid ``(D, H, W, 3)``; last axis is (x over W, y over H, z over D), each in [-1, 1]."""

    def axis(n: int) -> torch.Tensor:
        steps = torch.arange(n, dtype=dtype, device=device)
        return 2 * (steps / (n - 1)) - 1

    zs, ys, xs = axis(depth), axis(height), axis(width)
    return torch.stack(
        (
            xs.view(1, 1, width).expand(depth, height, width),
            ys.view(1, height, 1).expand(depth, height, width),
            zs.view(depth, 1, 1).expand(depth, height, width),
        ),
        dim=-1,
    )


def channel_ladder(base: int, cap: int, power: int) -> int:
    """Width of level ``power`` of an encoder: ``min(cap, base * 2**power)``."""
    return min(cap, base * (2**power))


def conv3x3(
    owner: nn.Module,
    key: str,
    x: torch.Tensor,
    out_channels: int,
    make: Callable[[], tuple[torch.Tensor, torch.Tensor | None]],
    epilogue: winograd.Epilogue | None = None,
) -> torch.Tensor | None:
    """``F.conv2d(x, *make(), padding=1)`` for a ``(weight (Co, Ci, 3, 3), bias)`` derived from ``owner``'s
    parameters. With ``owner.winograd`` (:func:`set_winograd`), on inputs :func:`.winograd.applies` takes and
    widths where it pays, by :func:`.winograd.conv3x3` with the derived weights kept on ``owner`` under
    ``key``; otherwise ``make()`` is called and convolved directly. With an ``epilogue`` the output goes to it
    (by strips on the Winograd path, whole otherwise) and None is returned."""
    if (
        getattr(owner, "winograd", False)
        and winograd.applies(x)
        and winograd.worthwhile(x.shape[1], out_channels)
    ):
        return _kernel_cache(owner).conv3x3(key, x, owner, make, epilogue)
    weight, bias = make()
    out = F.conv2d(x, weight, bias, padding=1)
    if epilogue is None:
        return out
    epilogue((slice(None),) * 3, out)
    return None


def _kernel_cache(owner: nn.Module) -> winograd.KernelCache:
    """``owner``'s Winograd weights, created on first use (:func:`set_winograd` with False drops them)."""
    cache = owner.__dict__.get("_winograd_kernels")
    if cache is None:
        cache = owner.__dict__["_winograd_kernels"] = winograd.KernelCache()
    return cache


def conv3x3x3(owner: nn.Module, conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for ``owner``'s 3x3x3 conv (padding 1). With ``owner.winograd`` (:func:`set_winograd`), on
    inputs :func:`.winograd.applies_3d` takes and sizes where it pays (:func:`.winograd.worthwhile_3d`), by
    :func:`.winograd.conv3x3x3`."""
    if (
        getattr(owner, "winograd", False)
        and winograd.applies_3d(x)
        and winograd.worthwhile_3d(x.shape[1], conv.out_channels, x.shape[3], x.shape[4])
    ):
        return _kernel_cache(owner).conv3x3("conv", x, owner, lambda: (conv.weight, conv.bias))
    return conv(x)


class ConvBNAct2d(nn.Module):
    """Conv2d -> BatchNorm2d -> ReLU (or LeakyReLU(0.01)); resolution kept. Keys ``conv``, ``norm``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, *, leaky: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=kernel, padding=kernel // 2)
        self.norm = nn.BatchNorm2d(out_ch)
        self.leaky = leaky

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x))
        return F.leaky_relu(y, 0.01) if self.leaky else F.relu(y)


class EncodeStep2d(nn.Module):
    """Conv3x3 -> BN -> ReLU -> 2x2 average pool: ``(B, in, H, W) -> (B, out, H/2, W/2)``."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class EncodeStep3d(nn.Module):
    """Conv3x3x3 -> BN -> ReLU -> (1, 2, 2) average pool: depth kept, H and W halved."""

    winograd = False
    """The conv by Winograd where it pays (:func:`set_winograd`)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm(conv3x3x3(self, self.conv, x)))
        # = avg_pool3d(h, (1, 2, 2)), as a 2D pool over depth slices (it also has CPU bfloat16 kernels)
        b, c, d, height, width = h.shape
        if memory_format_of(h) == torch.channels_last_3d:  # reduced precision: slices stay channels-last
            slices = h.permute(0, 2, 1, 3, 4).reshape(b * d, c, height, width)
            pooled = F.avg_pool2d(slices, kernel_size=2).view(b, d, c, height // 2, width // 2)
            return pooled.permute(0, 2, 1, 3, 4)
        return F.avg_pool2d(h.reshape(b, c * d, height, width), kernel_size=2).view(
            b, c, d, height // 2, width // 2
        )


class DecodeStep3d(nn.Module):
    """Nearest x(1, 2, 2) upsampling -> Conv3x3x3 -> BN -> ReLU: depth kept, H and W doubled."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch)

    # Below this many input pixels per depth slice the phase kernels cost more to build than they save.
    PHASE_FORM_MIN_PIXELS = 64
    phase_form = True
    """Use the phase form when it applies (:func:`set_phase_form`)."""

    def forward(self, x: torch.Tensor, *, direct: bool = False) -> torch.Tensor:
        """``direct``: upsample, then convolve (the official arrangement); otherwise, with :attr:`phase_form`
        and on inputs of at least :attr:`PHASE_FORM_MIN_PIXELS` pixels, the same value from
        :func:`conv3x3_on_upsampled` at 4/9 of the multiply-adds."""
        small = x.shape[-1] * x.shape[-2] < self.PHASE_FORM_MIN_PIXELS
        if direct or small or not self.phase_form:
            h = self.conv(F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest"))
        else:
            h = conv3x3_on_upsampled(x, self.conv.weight, self.conv.bias, 2)
        return F.relu(self.norm(h))


class PreActResidual3d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(bn2(conv1(relu(bn1(x)))))), channels and size kept."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels)
        self.norm2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        return h + x


class _HourglassDown(nn.Module):
    def __init__(self, in_ch: int, base: int, cap: int, levels: int):
        super().__init__()
        widths = [in_ch] + [channel_ladder(base, cap, i + 1) for i in range(levels)]
        self.down_blocks = nn.ModuleList(EncodeStep3d(widths[i], widths[i + 1]) for i in range(levels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [x]
        for step in self.down_blocks:
            feats.append(step(feats[-1]))
        return feats


class _HourglassUp(nn.Module):
    winograd = False
    """The last conv by Winograd where it pays (:func:`set_winograd`)."""

    def __init__(self, in_ch: int, base: int, cap: int, levels: int):
        super().__init__()
        steps = []
        for level in reversed(range(levels)):
            skip_factor = 1 if level == levels - 1 else 2
            steps.append(
                DecodeStep3d(
                    skip_factor * channel_ladder(base, cap, level + 1), channel_ladder(base, cap, level)
                )
            )
        self.up_blocks = nn.ModuleList(steps)
        self.out_channels = base + in_ch
        self.conv = nn.Conv3d(self.out_channels, self.out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_channels)

    def forward(self, feats: list[torch.Tensor], *, direct: bool = False) -> torch.Tensor:
        h = feats[-1]
        for i, step in enumerate(self.up_blocks):
            h = torch.cat((step(h, direct=direct), feats[-2 - i]), dim=1)
        return F.relu(self.norm(conv3x3x3(self, self.conv, h)))


class Hourglass3d(nn.Module):
    """3D U-Net: ``(B, in, D, H, W) -> (B, base + in, D, H, W)``; pools H and W only (H, W divisible by 2**levels)."""

    def __init__(self, in_ch: int, base: int, cap: int, levels: int):
        super().__init__()
        self.encoder = _HourglassDown(in_ch, base, cap, levels)
        self.decoder = _HourglassUp(in_ch, base, cap, levels)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor, *, direct: bool = False) -> torch.Tensor:
        """``direct``: the decoder's upsampling convs in the official arrangement (see :class:`DecodeStep3d`)."""
        return self.decoder(self.encoder(x), direct=direct)


class SpectralConv2d(nn.Module):
    """Conv2d whose weight is ``weight_orig / sigma`` with ``sigma = u . (W v)`` from the stored u, v.

    Stores ``weight_orig`` (out, in, k, k), ``weight_u`` (out,), ``weight_v`` (in*k*k,) and an optional
    ``bias`` exactly as the official (torch spectral-norm) checkpoint does. Inference only: no power
    iteration is run, u and v are used as stored.
    """

    winograd = False
    """3x3 kernels by Winograd where it pays (:func:`set_winograd`)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, bias: bool = True):
        super().__init__()
        self.padding = kernel // 2
        self.weight_orig = nn.Parameter(torch.empty(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.register_buffer("weight_u", torch.zeros(out_ch))
        self.register_buffer("weight_v", torch.zeros(in_ch * kernel * kernel))
        nn.init.kaiming_uniform_(self.weight_orig, a=5**0.5)

    def effective_weight(self) -> torch.Tensor:
        """The normalised kernel (out, in, k, k)."""
        w = self.weight_orig
        sigma = torch.dot(self.weight_u, torch.mv(w.reshape(w.shape[0], -1), self.weight_v))
        return w / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), self.bias, padding=self.padding)

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward`, a 3x3 kernel by Winograd where :func:`set_winograd` allows it."""
        if self.padding != 1:
            return self(x)
        return conv3x3(self, "w", x, self.weight_orig.shape[0], lambda: (self.effective_weight(), self.bias))


class SpadeNorm(nn.Module):
    """SPADE: instance-normalise x (no affine), then ``x_n * (1 + gamma(seg)) + beta(seg)``.

    ``seg`` must already have x's spatial size. Keys ``mlp_shared.0``, ``mlp_gamma``, ``mlp_beta``.
    """

    winograd = False
    """The gamma/beta conv by Winograd where it pays (:func:`set_winograd`)."""

    def __init__(self, channels: int, label_ch: int, hidden: int):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_ch, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalised = instance_norm(x)
        shared = self.mlp_shared(seg)
        return normalised * (1 + self.mlp_gamma(shared)) + self.mlp_beta(shared)

    @property
    def label_conv(self) -> nn.Conv2d:
        """The 3x3 conv of the label map (``mlp_shared.0``), applied before the ReLU."""
        return self.mlp_shared[0]

    def _stacked_scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma's and beta's kernels stacked (one conv gives ``(1 + gamma, beta)``), the 1 folded into gamma's
        bias."""
        weight = torch.cat((self.mlp_gamma.weight, self.mlp_beta.weight))
        return weight, torch.cat((self.mlp_gamma.bias + 1, self.mlp_beta.bias))

    def modulate(
        self, normalised: torch.Tensor, shared: torch.Tensor, *, slope: float | None = None
    ) -> torch.Tensor:
        """As :meth:`forward`, given ``instance_norm(x)`` and ``shared = relu(label_conv(seg))``
        ``(B, hidden, H, W)`` already computed; ``slope``: then LeakyReLU with that negative slope.

        Without autograd the result is written over ``normalised`` (callers pass its last use), strip by strip
        as the gamma / beta conv produces it (:func:`conv3x3` with an epilogue): the ``(B, 2C, H, W)`` pair
        (268 MB at the 256x256 level at batch 2) is never stored whole."""
        if torch.is_grad_enabled():  # autograd (e.g. fine-tuning) does not take out=
            scale, shift = F.conv2d(shared, *self._stacked_scale_shift(), padding=1).chunk(2, dim=1)
            out = torch.addcmul(shift, normalised, scale)
            return out if slope is None else F.leaky_relu(out, slope)

        def write(index: winograd.Region, values: torch.Tensor) -> None:
            target = normalised[index]
            scale, shift = values.chunk(2, dim=1)
            torch.addcmul(shift, target, scale, out=target)
            if slope is not None:
                F.leaky_relu_(target, slope)

        width = 2 * self.mlp_gamma.out_channels
        conv3x3(self, "scale_shift", shared, width, self._stacked_scale_shift, epilogue=write)
        return normalised


class SpadeResidual(nn.Module):
    """SPADE residual block with spectral-normed 3x3 convs (and a learned 1x1 shortcut when widths differ)."""

    winograd = False
    """The shortcut's gamma/beta conv by Winograd where it pays (:func:`set_winograd`)."""

    def __init__(self, in_ch: int, out_ch: int, label_ch: int, hidden: int):
        super().__init__()
        mid = min(in_ch, out_ch)
        self.learned_shortcut = in_ch != out_ch
        self.conv_0 = SpectralConv2d(in_ch, mid, 3)
        self.conv_1 = SpectralConv2d(mid, out_ch, 3)
        self.norm_0 = SpadeNorm(in_ch, label_ch, hidden)
        self.norm_1 = SpadeNorm(mid, label_ch, hidden)
        if self.learned_shortcut:
            self.conv_s = SpectralConv2d(in_ch, out_ch, 1, bias=False)
            self.norm_s = SpadeNorm(in_ch, label_ch, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        h = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        h = self.conv_1(F.leaky_relu(self.norm_1(h, seg), 0.2))
        return skip + h

    def norms(self) -> list[SpadeNorm]:
        """The SPADE norms in the order :meth:`forward_shared` expects their label features: (s,) 0, 1."""
        return ([self.norm_s] if self.learned_shortcut else []) + [self.norm_0, self.norm_1]

    def forward_shared(
        self, x: torch.Tensor, shared: list[torch.Tensor], *, upsample: int = 1
    ) -> torch.Tensor:
        """As ``forward(interpolate(x, upsample, nearest), seg)``, given ``relu(label_conv(seg))`` of every norm
        of :meth:`norms` (same order, at the output size).

        Same math, arranged for fewer passes and multiply-adds: ``x`` is instance-normalised once, before
        the nearest upsampling (an integer nearest upsampling keeps every channel's mean and variance);
        on the learned shortcut, ``conv_s`` (1x1, linear) is folded into ``norm_s``'s beta conv, so
        ``conv_s(n * (1 + gamma) + beta) = conv_s(n * (1 + gamma)) + (conv_s . mlp_beta)(shared)``.
        """
        normalised = instance_norm(x)
        if upsample != 1:
            normalised = F.interpolate(normalised, scale_factor=float(upsample), mode="nearest")
        it = iter(shared)
        if self.learned_shortcut:
            skip = self._shortcut(normalised, next(it))
        elif upsample != 1:
            skip = F.interpolate(x, scale_factor=float(upsample), mode="nearest")
        else:
            skip = x
        h = self.conv_0.forward_fast(self.norm_0.modulate(normalised, next(it), slope=0.2))
        h = self.conv_1.forward_fast(self.norm_1.modulate(instance_norm(h), next(it), slope=0.2))
        return h.add_(skip)

    def _shortcut(self, normalised: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        """``conv_s(norm_s(x, seg))`` from ``instance_norm(x)`` and norm_s's label features; without autograd
        strip by strip as the gamma / folded-beta conv produces them (see :meth:`SpadeNorm.modulate`)."""
        norm, conv_s = self.norm_s, self.conv_s.effective_weight()  # (out, in, 1, 1)
        w_s = conv_s[:, :, 0, 0]

        def folded() -> tuple[torch.Tensor, torch.Tensor]:
            beta_w = torch.einsum("oc,chyx->ohyx", w_s, norm.mlp_beta.weight)
            weight = torch.cat((norm.mlp_gamma.weight, beta_w))
            return weight, torch.cat((norm.mlp_gamma.bias + 1, w_s @ norm.mlp_beta.bias))

        widths = [w_s.shape[1], w_s.shape[0]]
        if torch.is_grad_enabled():
            scale, shift = F.conv2d(shared, *folded(), padding=1).split(widths, dim=1)
            return F.conv2d(normalised * scale, conv_s) + shift
        batch, _, height, width = normalised.shape
        skip = torch.empty(
            (batch, w_s.shape[0], height, width),
            dtype=normalised.dtype,
            device=normalised.device,
            memory_format=memory_format_of(normalised),
        )

        def write(index: winograd.Region, values: torch.Tensor) -> None:
            scale, shift = values.split(widths, dim=1)
            torch.add(F.conv2d(normalised[index] * scale, conv_s), shift, out=skip[index])

        conv3x3(self, "shortcut", shared, sum(widths), folded, epilogue=write)
        return skip


def _set_switch(module: nn.Module, name: str, enabled: bool) -> list[nn.Module]:
    """Set the class-declared switch ``name`` on every submodule that has one; returns those submodules."""
    subs = [sub for sub in module.modules() if name in type(sub).__dict__]
    for sub in subs:
        setattr(sub, name, enabled)
    return subs


def set_phase_form(module: nn.Module, enabled: bool) -> None:
    """Choose how every submodule of ``module`` convolves a nearest-upsampled map: the phase form
    (:func:`conv3x3_on_upsampled`, 4/9 of the multiply-adds: faster where convolutions are compute-bound,
    as on CPUs) or upsample-then-convolve (one large 3x3 convolution: faster on GPUs, measured in
    ``bench --sections arrangements``). Same values up to float rounding either way."""
    _set_switch(module, "phase_form", enabled)


def set_winograd(module: nn.Module, enabled: bool) -> None:
    """Run the SPADE decoder's wide 3x3 convolutions and the dense-motion hourglass's 3x3x3 ones (over height
    and width) by Winograd F(4x4, 3x3) (:mod:`.winograd`): on a CPU in float32 1.2-2.2x faster than the direct
    convolution, rounding about 1e-5 of the largest output. Derived weights (stacked or folded kernels) are
    built on first use and kept, the transformed kernels per call; ``False`` frees them."""
    for sub in _set_switch(module, "winograd", enabled):
        if not enabled:
            sub.__dict__.pop("_winograd_kernels", None)


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}
"""Channels-last memory format by tensor rank (2D and 3D maps)."""


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` / ``channels_last_3d`` when ``x`` is stored so (reduced precision runs channels-last),
    else ``contiguous_format``."""
    fmt = _CHANNELS_LAST.get(x.dim())
    if fmt is not None and not x.is_contiguous() and x.is_contiguous(memory_format=fmt):
        return fmt
    return torch.contiguous_format


def compute_layout(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in the dtype of the convolutions that read it; in a reduced precision (bfloat16, float16) also
    channels-last (``(B, C, H, W)`` or ``(B, C, D, H, W)``), the layout the CPU's bfloat16 matrix units
    (AVX-512-BF16, AMX) and GPU tensor cores convolve fastest (on a 2-core AMX Xeon 3-4x the NCHW rate)."""
    if x.dtype == dtype:
        return x
    if dtype in (torch.float32, torch.float64):
        return x.to(dtype)
    return x.to(dtype, memory_format=_CHANNELS_LAST[x.dim()])


def instance_norm(x: torch.Tensor) -> torch.Tensor:
    """``F.instance_norm(x, eps=1e-5)`` (no affine, no running stats). A channels-last map (reduced precision)
    goes through ``group_norm`` with one channel per group, the same statistic with float accumulation, which
    keeps the layout (instance_norm would return NCHW, ~16x slower on a channels-last bfloat16 map)."""
    if memory_format_of(x) == torch.contiguous_format:
        return F.instance_norm(x, eps=1e-5)
    return F.group_norm(x, x.shape[1], eps=1e-5)


def _phase_groups(factor: int) -> list[tuple[list[int], tuple[int, int, int]]]:
    """For a nearest x``factor`` upsampling followed by a 3x3 conv (padding 1), along one axis: output
    phases ``p`` (position mod factor) grouped by where the taps -1, 0, +1 land in the low-resolution
    input (offsets ``floor((p + tap) / factor)``, each in {-1, 0, 1})."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for p in range(factor):
        offsets = tuple((p + tap) // factor for tap in (-1, 0, 1))
        groups.setdefault(offsets, []).append(p)
    return [(phases, offs) for offs, phases in groups.items()]


def _tap_matrix(offsets: tuple[int, int, int], like: torch.Tensor) -> torch.Tensor:
    """``(span, 3)`` 0/1 matrix: row ``o - min(offsets)`` gathers the taps whose offset is ``o``."""
    lo = min(offsets)
    m = like.new_zeros(max(offsets) - lo + 1, 3)
    for tap, off in enumerate(offsets):
        m[off - lo, tap] = 1
    return m


def conv3x3_on_upsampled(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, factor: int, *, phase: bool = True
) -> torch.Tensor:
    """``conv(interpolate(x, nearest, x``factor`` on the last two axes), weight, bias, padding=1)`` without
    building the upsampled input.

    2D: ``x (B, Ci, h, w)``, ``weight (Co, Ci, 3, 3)`` -> ``(B, Co, h*factor, w*factor)``.
    3D: ``x (B, Ci, D, h, w)``, ``weight (Co, Ci, 3, 3, 3)`` (depth not upsampled, as the hourglass's
    ``(1, 2, 2)`` upsampling) -> ``(B, Co, D, h*factor, w*factor)``.

    On a nearest-upsampled map, a tap only sees which low-resolution pixel it lands in, so every output
    phase is a small conv (1 or 2 taps per upsampled axis, weights summed) at the low resolution; phases
    that land alike share one result. Same value as the direct form up to float rounding (weights are
    summed before multiplying), about ``(2 + factor) ** 2 / (factor * 3) ** 2`` of its multiply-adds
    (0.44 at x2, 0.17 at x4). ``phase=False``: upsample, then convolve (see :func:`set_phase_form`).
    """
    conv = {4: F.conv2d, 5: F.conv3d}[x.dim()]
    if factor == 1:
        return conv(x, weight, bias, padding=1)
    if not phase:
        scale = (1.0,) * (x.dim() - 4) + (float(factor),) * 2
        return conv(F.interpolate(x, scale_factor=scale, mode="nearest"), weight, bias, padding=1)
    lead = x.shape[2:-2]  # depth (3D) or nothing (2D): convolved with padding 1, not upsampled
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1) * (x.dim() - 2))
    out = torch.empty(
        x.shape[0],
        weight.shape[0],
        *lead,
        h * factor,
        w * factor,
        dtype=x.dtype,
        device=x.device,
        memory_format=memory_format_of(x),
    )
    groups = [(phases, offs, _tap_matrix(offs, weight)) for phases, offs in _phase_groups(factor)]
    for phases_y, offs_y, taps_y in groups:
        lo_y, hi_y = min(offs_y), max(offs_y)
        for phases_x, offs_x, taps_x in groups:
            lo_x, hi_x = min(offs_x), max(offs_x)
            # kernel[..., a, b] = sum of the taps (ty, tx) that land on low-res offset (lo_y + a, lo_x + b)
            kernel = torch.einsum("ay,bx,...yx->...ab", taps_y, taps_x, weight).contiguous()
            window = padded[..., 1 + lo_y : 1 + hi_y + h, 1 + lo_x : 1 + hi_x + w]
            result = conv(window, kernel, bias)
            for py in phases_y:
                for px in phases_x:
                    out[..., py::factor, px::factor] = result
    return out
