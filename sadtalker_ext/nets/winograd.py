"""3x3 convolutions (stride 1, padding 1) by Winograd's minimal filtering F(4x4, 3x3).

Each 4x4 output tile comes from a 6x6 input tile: transform the input tile (``B^T d B``), multiply it
channel-wise with the transformed kernel (``G g G^T``, prepared once per weight), sum over input channels
(36 matrix products, one per point of the 6x6 tile), transform back (``A^T m A``). That is 36 multiplies
per tile and channel pair instead of 144: a quarter of the direct multiply-adds, plus the transforms,
which cost additions only (scaled by 2, 4, 5 or 8).

On a CPU in float32 this renders the SPADE decoder's large convolutions 1.3-2.2x faster than oneDNN's
direct convolution (``bench --sections conv``); the rounding error is larger, about 1e-5 of the largest
output instead of 3e-7, still far inside the parity tolerances (cuDNN's Winograd algorithms, which the
official implementation gets on a GPU, round the same way). The work is done in strips of tile rows
(about :data:`STRIP_BYTES`), one picture at a time, so the transformed tiles stay in cache.
Points: 0, 1, -1, 2, -2 and infinity (Lavin & Gray 2016).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

STRIP_BYTES = 32 * 2**20
"""Transformed tiles (input and output channels) worked on together, in bytes: strips of about this size
ran fastest on a 2-core AVX-512 CPU for 64x64 to 256x256 maps (64 to 1024 tiles per strip)."""

_KERNEL_MATRIX = (  # G (6x3)
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)


def applies(x: torch.Tensor) -> bool:
    """Whether :func:`conv3x3` takes ``x``: a CPU ``(B, C, H, W)`` float32/float64 map, H and W multiples of 4,
    with autograd off (inference: the transforms write into preallocated buffers)."""
    return (
        not torch.is_grad_enabled()
        and x.dim() == 4
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.shape[2] % 4 == 0
        and x.shape[3] % 4 == 0
    )


def worthwhile(in_channels: int, out_channels: int) -> bool:
    """Whether Winograd beats the direct convolution for these widths (``bench --sections conv``): the
    transforms cost per channel, the saved multiply-adds per channel pair, so both sides need width
    (batch 2 on a 2-core AVX-512 CPU: 128 -> 128 at 256x256 1.2-1.3x, 256 -> 64 1.0x, 64 -> 64 0.8x)."""
    return min(in_channels, out_channels) >= 128


def transform_kernel(weight: torch.Tensor) -> torch.Tensor:
    """``(Co, Ci, 3, 3)`` kernel -> ``(36, Co, Ci)``: ``G w G^T`` per point of the 6x6 tile (row-major).

    One matrix product ``(G kron G) (36, 9) @ w^T (9, Co * Ci)`` that writes the product layout directly:
    about 2 ms for a 512 -> 512 kernel on 2 cores, so kernels are built per call, not kept (4x the memory of
    the weights: 804 MiB for the official decoder). Relative rounding ~3e-8 in float32.
    """
    g = torch.tensor(_KERNEL_MATRIX, dtype=weight.dtype, device=weight.device)
    co, ci = weight.shape[:2]
    return torch.mm(torch.kron(g, g), weight.reshape(co * ci, 9).t()).view(36, co, ci)


def _input_1d(d: list[torch.Tensor], out) -> None:
    """``B^T d`` along one axis: the six 6-point input rows ``d`` -> ``out[0..5]`` (``out`` indexable)."""
    d0, d1, d2, d3, d4, d5 = d
    torch.add(d4, d0, alpha=4, out=out[0]).add_(d2, alpha=-5)
    torch.add(d5, d1, alpha=4, out=out[5]).add_(d3, alpha=-5)
    a, b = d1 + d2, d3 + d4
    torch.add(b, a, alpha=-4, out=out[1])
    torch.sub(d1, d2, out=a)
    torch.sub(d4, d3, out=b)
    torch.add(b, a, alpha=4, out=out[2])
    torch.sub(d3, d1, out=a)
    torch.sub(d4, d2, out=b)
    torch.add(b, a, alpha=2, out=out[3])
    torch.add(b, a, alpha=-2, out=out[4])


def _output_1d(m: list[torch.Tensor], out, scratch: torch.Tensor) -> None:
    """``A^T m`` along one axis: six transformed rows ``m`` -> four output rows ``out[0..3]``;
    ``scratch`` has a leading axis of 4 and ``m[0]``'s shape after it."""
    m0, m1, m2, m3, m4, m5 = m
    s12 = torch.add(m1, m2, out=scratch[0])
    d12 = torch.sub(m1, m2, out=scratch[1])
    s34 = torch.add(m3, m4, out=scratch[2])
    d34 = torch.sub(m3, m4, out=scratch[3])
    torch.add(m0, s12, out=out[0]).add_(s34)
    torch.add(d12, d34, alpha=2, out=out[1])
    torch.add(s12, s34, alpha=4, out=out[2])
    torch.add(d12, d34, alpha=8, out=out[3]).add_(m5)


def conv3x3(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, w, bias, padding=1)`` with ``kernel = transform_kernel(w)``.

    ``x (B, Ci, H, W)`` (see :func:`applies`), ``kernel (36, Co, Ci)`` and ``bias (Co,)`` in x's dtype
    -> ``(B, Co, H, W)`` contiguous. Same value up to float rounding (about 1e-5 of the largest output in
    float32).

    The input strip is copied in channels-last (``(rows, W + 2, Ci)``), so the input transforms read and write
    whole runs of channels (they vectorise) while the tile positions are strided; the products put the output
    channels first again, as the output is stored.
    """
    if not applies(x):
        raise ValueError(
            f"Winograd conv needs a CPU float32/float64 (B, C, H, W) map with H, W multiples of 4 and "
            f"autograd off, got {tuple(x.shape)} {x.dtype} (grad enabled: {torch.is_grad_enabled()})"
        )
    batch, ci, height, width = x.shape
    co = kernel.shape[1]
    if kernel.shape != (36, co, ci):
        raise ValueError(f"kernel {tuple(kernel.shape)} does not fit {ci} input channels")
    tiles_y, tiles_x = height // 4, width // 4
    per_tile = 36 * (ci + co) * x.element_size()
    rows = max(1, min(tiles_y, STRIP_BYTES // (per_tile * tiles_x)))
    out = x.new_empty(batch, co, tiles_y, 4, tiles_x, 4)
    # Buffers for one strip, reused; the last strip may be shorter (views of the first rows).
    source = x.new_zeros(4 * rows + 2, width + 2, ci)  # padded input rows; columns 0 and W + 1 stay 0
    cols = x.new_empty(6, 4 * rows + 2, tiles_x, ci)
    tiles = x.new_empty(36, rows, tiles_x, ci)
    half = x.new_empty(4, 6, co, rows, tiles_x)
    scratch = x.new_empty(4, co, rows, tiles_x)
    for b in range(batch):
        for top in range(0, tiles_y, rows):
            n = min(rows, tiles_y - top)
            low, high = 4 * top - 1, 4 * (top + n) + 1  # input rows [low, high), padding included
            first, last = max(low, 0), min(high, height)
            strip = source[: high - low]
            if first > low:
                strip[0].zero_()
            if last < high:
                strip[-1].zero_()
            strip[first - low : last - low, 1 : width + 1].copy_(x[b, :, first:last].permute(1, 2, 0))
            c = cols[:, : 4 * n + 2]
            _input_1d([strip[:, j : j + 4 * tiles_x - 3 : 4] for j in range(6)], c)
            t = tiles[:, :n].view(6, 6, n, tiles_x, ci)
            for bx in range(6):
                _input_1d([c[bx][j : j + 4 * n - 3 : 4] for j in range(6)], [t[a, bx] for a in range(6)])
            m = torch.bmm(kernel, tiles[:, :n].view(36, n * tiles_x, ci).transpose(1, 2))
            if bias is not None:
                m[7].add_(bias[:, None])  # A^T column 1 is all ones: adds the bias to every output
            m = m.view(6, 6, co, n, tiles_x)
            h = half[:, :, :, :n]
            s = scratch[:, :, :n]
            for bx in range(6):
                _output_1d([m[a, bx] for a in range(6)], [h[i, bx] for i in range(4)], s)
            target = out[b, :, top : top + n].permute(2, 4, 0, 1, 3)  # (4 rows, 4 cols, Co, n, tiles_x)
            for i in range(4):
                _output_1d([h[i, bx] for bx in range(6)], [target[i, j] for j in range(4)], s)
    return out.view(batch, co, height, width)


class KernelCache:
    """Weights of one module's Winograd convolutions as :func:`conv3x3` needs them (derived weights such as
    stacked or phase-summed kernels, and biases), built on first use and rebuilt when any parameter or buffer
    of the module changes (a new state dict, ``.to()``): the stamp is every tensor's storage address and
    version counter. The transformed kernels themselves are built per call (:func:`transform_kernel`)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple, torch.Tensor, torch.Tensor | None]] = {}

    def conv3x3(
        self,
        key: str,
        x: torch.Tensor,
        owner: nn.Module,
        make: Callable[[], tuple[torch.Tensor, torch.Tensor | None]],
    ) -> torch.Tensor:
        """:func:`conv3x3` of ``x`` with the ``(weight, bias)`` that ``make()`` derives from ``owner``."""
        stamp = tuple((t.data_ptr(), t._version) for t in (*owner.parameters(), *owner.buffers()))
        entry = self._entries.get(key)
        if entry is None or entry[0] != stamp:
            weight, bias = make()
            entry = (stamp, weight.contiguous(), bias)
            self._entries[key] = entry
        return conv3x3(x, transform_kernel(entry[1]), entry[2])

    def nbytes(self) -> int:
        """Memory held by the derived weights and biases."""
        return sum(k.nbytes + (0 if b is None else b.nbytes) for _, k, b in self._entries.values())
