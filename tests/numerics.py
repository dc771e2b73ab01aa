"""Comparisons of two float32 computations that hold whichever CPU kernels torch picks.

Two float32 paths through the same math (split vs whole, batched vs one by one, another memory layout, the
AVX2 vs AVX-512 vs scalar kernels chosen by ``ATEN_CPU_CAPABILITY``) agree only up to float32 rounding, and
how much rounding a network accumulates depends on the kernels. So the tolerances here are not numbers seen
on one machine: they are measured in the test, from the same computation run in float64, or derived from
float32's epsilon and the compared values' magnitude.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

EPS32 = float(torch.finfo(torch.float32).eps)


def _f64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def float32_noise(value32, reference64) -> float:
    """The float32 rounding of a computation: max |float32 result - the same computation in float64|."""
    return float(np.abs(_f64(value32) - _f64(reference64)).max(initial=0.0))


def assert_within_float32_noise(actual, expected, reference64, factor: float = 4.0, what: str = "") -> None:
    """``actual`` (float32, another path) equals ``expected`` (float32) up to float32 rounding.

    The bound is ``factor * (noise + EPS32 * max|reference64|)`` with ``noise`` = max |expected -
    reference64|, the float64-vs-float32 gap of ``expected``'s own path measured now (on this machine's
    kernels); the EPS32 term is one rounding of the largest value, for outputs whose gap happens to be ~0.
    A real difference between the paths (a wrong broadcast, another input) is orders of magnitude larger.
    """
    a, e, r = _f64(actual), _f64(expected), _f64(reference64)
    assert a.shape == e.shape == r.shape, f"{what}: shapes {a.shape} {e.shape} {r.shape}"
    noise = float32_noise(e, r)
    bound = factor * (noise + EPS32 * float(np.abs(r).max(initial=0.0)))
    worst = float(np.abs(a - e).max(initial=0.0))
    assert worst <= bound, (
        f"{what}: max |diff| {worst:.3g} > {bound:.3g} ({factor} x (float32-vs-float64 gap {noise:.3g}"
        f" + eps32 * max|ref|))"
    )


def assert_uint8_equal_but_ties(got: np.ndarray, levels, noise_levels: float) -> None:
    """``got`` (uint8) equals ``round(levels)`` except where ``levels`` sits on a rounding boundary.

    ``levels`` are the expected path's float values in 0..255 units before rounding; ``noise_levels`` their
    float32 rounding (in levels). A value within ``noise_levels`` of a .5 boundary may round either way in
    another float path, so there (only there) ``got`` may differ by one level; everywhere else it must be
    equal. Such near-ties are a tiny share of the values (about ``2 * noise_levels`` of them).
    """
    lv = _f64(levels)
    assert got.shape == lv.shape, f"shapes {got.shape} {lv.shape}"
    expected = np.floor(lv + 0.5)
    diff = got.astype(np.int64) - expected.astype(np.int64)
    tie = np.abs(lv - np.floor(lv) - 0.5) <= noise_levels
    off = np.abs(diff) > 0
    assert np.abs(diff).max(initial=0) <= 1, f"a value differs by {np.abs(diff).max()} levels"
    assert not (off & ~tie).any(), (
        f"{int((off & ~tie).sum())} value(s) differ although not within {noise_levels:.3g} levels of a"
        f" rounding boundary (first at {np.argwhere(off & ~tie)[0].tolist()})"
    )


def assert_normal_draws_match(drawn, recorded, what: str = "") -> None:
    """Seeded ``torch`` normal draws against draws recorded on another machine with the same seed.

    The uniform draws are the same bits everywhere, but torch turns them into normals (Box-Muller) with its
    scalar, AVX2 or AVX-512 kernels, which round differently (up to ~2.3 eps32 * max|z| seen). Each value is
    radius * cos/sin(2 pi u): the angle rounds by ~pi eps32 and log/sqrt/cos add a few ulps, all scaled by the
    radius <= max|z|. Another seed or order moves values by O(1).
    """
    recorded = _f64(recorded)
    assert _f64(drawn).shape == recorded.shape, what
    bound = 8 * EPS32 * float(np.abs(recorded).max())
    worst = float(np.abs(_f64(drawn) - recorded).max())
    assert worst <= bound, f"{what}: max |diff| {worst:.3g} > {bound:.3g}"


class _DepthTapConv3d(torch.nn.Module):
    """A ``Conv3d`` (stride 1, zero padding, no groups or dilation) computed as one ``conv2d`` per depth tap.

    The same sums as the 3D convolution; it exists because float64 ``conv3d`` on the CPU unfolds its whole
    input first (about 40 GB for the renderer's 7x7x7 mask convolution at batch 2).
    """

    def __init__(self, conv: torch.nn.Conv3d):
        super().__init__()
        if conv.stride != (1, 1, 1) or conv.groups != 1 or conv.dilation != (1, 1, 1):
            raise ValueError(f"only plain stride-1 convolutions: {conv}")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"only explicit zero padding: {conv}")
        self.weight, self.bias, self.padding = conv.weight, conv.bias, conv.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pd, ph, pw = self.padding
        b, c, d, h, w = x.shape
        taps = self.weight.shape[2]
        x = F.pad(x, (0, 0, 0, 0, pd, pd))
        depth = d + 2 * pd - taps + 1
        out = None
        for k in range(taps):
            planes = x[:, :, k : k + depth].transpose(1, 2).reshape(b * depth, c, h, w)
            y = F.conv2d(planes, self.weight[:, :, k], None, padding=(ph, pw))
            out = y if out is None else out + y
        out = out.reshape(b, depth, *out.shape[1:]).transpose(1, 2).contiguous()
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1, 1)


def float64_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of ``module`` (the original is untouched) whose 3D convolutions run as 2D ones, for
    float64 reference runs of float32 networks on the CPU."""
    twin = copy.deepcopy(module).double()
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Conv3d):
                setattr(parent, name, _DepthTapConv3d(child))
    return twin
