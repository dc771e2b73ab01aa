"""3x3 convolutions (stride 1, padding 1) by Winograd's minimal filtering F(4x4, 3x3).

Each 4x4 output tile comes from a 6x6 input tile: transform the input tile (``B^T d B``), multiply it
channel-wise with the transformed kernel (``G g G^T``, prepared once per weight), sum over input channels
(36 matrix products, one per point of the 6x6 tile), transform back (``A^T m A``). That is 36 multiplies
per tile and channel pair instead of 144: a quarter of the direct multiply-adds, plus the transforms, whose
cost is per channel, not per channel pair.

On a CPU in float32 this renders the SPADE decoder's large convolutions 1.4-2.2x faster than oneDNN's
direct convolution (``bench --sections conv``); the rounding error is larger, about 1e-5 of the largest
output instead of 3e-7, still far inside the parity tolerances (cuDNN's Winograd algorithms, which the
official implementation gets on a GPU, round the same way). The work is done in strips of tile rows
(:data:`STRIP_TILES`), one picture at a time, so the transformed tiles stay in cache.
Points: 0, 1, -1, 2, -2 and infinity (Lavin & Gray 2016).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch
from torch import nn

STRIP_TILES = 128
"""Output tiles worked on together (a strip of whole tile rows): on a 2-core AVX-512 CPU the decoder's
convolutions ran fastest with 128 to 256 tiles (32 decoder-shaped convs: 2.92 s with 64, 2.74 s with 128,
2.65 s with 256, 2.85 s with 512, within the run-to-run noise for 128 and 256); wider strips leave the cache,
narrower ones make thin matrix products."""

_KERNEL_MATRIX = (  # G (6x3)
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)


_INPUT_MATRIX = (  # B^T (6x6)
    (4.0, 0.0, -5.0, 0.0, 1.0, 0.0),
    (0.0, -4.0, -4.0, 1.0, 1.0, 0.0),
    (0.0, 4.0, -4.0, -1.0, 1.0, 0.0),
    (0.0, -2.0, -1.0, 2.0, 1.0, 0.0),
    (0.0, 2.0, -1.0, -2.0, 1.0, 0.0),
    (0.0, 4.0, 0.0, -5.0, 0.0, 1.0),
)

_OUTPUT_MATRIX = (  # A^T (4x6)
    (1.0, 1.0, 1.0, 1.0, 1.0, 0.0),
    (0.0, 1.0, -1.0, 2.0, -2.0, 0.0),
    (0.0, 1.0, 1.0, 4.0, 4.0, 0.0),
    (0.0, 1.0, -1.0, 8.0, -8.0, 1.0),
)


class _Scratch(threading.local):
    buffers: dict[tuple, torch.Tensor] | None = None


_scratch = _Scratch()


@contextlib.contextmanager
def scratch() -> Iterator[None]:
    """Within the block, this thread's Winograd convolutions take their strip buffers and transformed kernels from
    buffers kept until the (outermost) block ends, grown as needed, instead of allocating them per convolution:
    each large one is otherwise a fresh mapping whose pages the kernel zero-fills again, which costs most in a
    worker thread (a WebUI's generation: 3.0-3.2 -> 2.7-3.0 s per frame on a 2-core Xeon at 256). Held while
    the block runs: about 130 MB for the official decoder."""
    if _scratch.buffers is not None:
        yield
        return
    _scratch.buffers = {}
    try:
        yield
    finally:
        _scratch.buffers = None


def _buffer(slot: str, numel: int, like: torch.Tensor) -> torch.Tensor:
    """A flat buffer of ``numel`` elements in ``like``'s dtype and device: from :func:`scratch` (``slot``
    names what it holds, one use at a time) when a block is open in this thread, else a new one."""
    buffers = _scratch.buffers
    if buffers is None:
        return like.new_empty(numel)
    key = (slot, like.dtype, like.device)
    held = buffers.get(key)
    if held is None or held.numel() < numel:
        held = buffers[key] = like.new_empty(numel)
    return held[:numel]


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
    transforms cost per channel, the saved multiply-adds per channel pair, so the pair needs width (batch 2 on
    a 2-core AVX-512 CPU, 256x256 maps: 128 -> 128 1.6x, 256 -> 64 1.2x, 64 -> 64 0.96x)."""
    return in_channels * out_channels >= 128 * 128


def transform_kernel(weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``(Co, Ci, 3, 3)`` kernel -> ``(36, Co, Ci)``: ``G w G^T`` per point of the 6x6 tile (row-major).

    One matrix product ``(G kron G) (36, 9) @ w^T (9, Co * Ci)`` that writes the product layout directly:
    about 2 ms for a 512 -> 512 kernel on 2 cores, so kernels are built per call, not kept (4x the memory of
    the weights: 804 MiB for the official decoder). Relative rounding ~3e-8 in float32. ``out``: a contiguous
    buffer of ``36 * Co * Ci`` elements to write into.
    """
    g = torch.tensor(_KERNEL_MATRIX, dtype=weight.dtype, device=weight.device)
    co, ci = weight.shape[:2]
    target = None if out is None else out.view(36, co * ci)
    return torch.mm(torch.kron(g, g), weight.reshape(co * ci, 9).t(), out=target).view(36, co, ci)


def _tile_matrices(dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B^T kron B^T (36, 36), A^T kron A^T (16, 36))``: the input and output transforms of a whole tile as
    one matrix each, acting on the 36 (or 16) points of a tile in row-major order."""
    bt = torch.tensor(_INPUT_MATRIX, dtype=dtype, device=device)
    at = torch.tensor(_OUTPUT_MATRIX, dtype=dtype, device=device)
    return torch.kron(bt, bt), torch.kron(at, at)


Region = tuple[slice, slice, slice]
"""Index of a region of a ``(B, C, H, W)`` map: (pictures, channels, rows), all columns."""

Epilogue = Callable[[Region, torch.Tensor], None]
"""Takes a region of a convolution's output in place of the whole map: called with the region's index and its
values ``(b, Co, rows, W)`` (a buffer reused for the next region)."""


def conv3x3(
    x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None, epilogue: Epilogue | None = None
) -> torch.Tensor | None:
    """``F.conv2d(x, w, bias, padding=1)`` with ``kernel = transform_kernel(w)``.

    ``x (B, Ci, H, W)`` (see :func:`applies`), ``kernel (36, Co, Ci)`` and ``bias (Co,)`` in x's dtype
    -> ``(B, Co, H, W)`` contiguous. Same value up to float rounding (about 1e-5 of the largest output in
    float32). With an ``epilogue`` the output is handed to it strip by strip (one picture, a few rows, while
    they are in cache) and never stored whole; the call then returns None. How: :func:`_convolve`.
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
    out = _convolve(x.unsqueeze(2), kernel.unsqueeze(0), bias, epilogue)
    return None if out is None else out.view(batch, co, height, width)


def _convolve(
    x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor | None, epilogue: Epilogue | None
) -> torch.Tensor | None:
    """The strip loop of :func:`conv3x3` (one slice, one tap) and :func:`conv3x3x3` (three depth taps):
    ``x (B, Ci, D, H, W)``, ``taps (T, 36, Co, Ci)`` (T = 1 or 3; depth padding T // 2) -> ``(B, Co, D, H, W)``,
    or None when the ``epilogue`` (D = 1 only) took the output strip by strip.

    Per strip of tile rows (all slices), five large operations: the 6x6 input tiles gathered into
    ``(36, Ci, slices, tiles)`` (one strided copy of the zero-padded strip), the input transform as one matrix
    product ``(36, 36) @ (36, Ci * slices * tiles)``, the products (for each tap one batched product
    ``(Co, Ci) @ (Ci, D * tiles)`` over the transformed slices shifted by the tap, a strided view, accumulated
    in place), the output transform ``(16, 36) @ (36, Co * D * tiles)``, and one copy that puts the 4x4 output
    tiles in place. (Written as strided additions per tile row instead, the transforms took as long as the
    products.)"""
    batch, ci, depth, height, width = x.shape
    n_taps, _, co, _ = taps.shape
    pad = n_taps // 2
    slices = depth + 2 * pad  # zero slices before and after: the depth padding
    tiles_y, tiles_x = height // 4, width // 4
    rows = max(1, min(tiles_y, STRIP_TILES // (tiles_x * depth)))
    input_t, output_t = _tile_matrices(x.dtype, x.device)
    out = x.new_empty(batch, co, depth, tiles_y, 4, tiles_x, 4) if epilogue is None else None
    # Buffers for one strip, reused; the last strip may be shorter (their leading parts).
    source = x.new_zeros(ci, slices, 4 * rows + 2, width + 2)  # padded input rows; columns 0 and W + 1 stay 0
    gathered = _buffer("gathered", 36 * ci * slices * rows * tiles_x, x)
    transformed = _buffer("transformed", 36 * ci * slices * rows * tiles_x, x)
    products = _buffer("products", 36 * co * depth * rows * tiles_x, x)
    tiles_out = _buffer("tiles_out", 16 * co * depth * rows * tiles_x, x)
    region = None if epilogue is None else _buffer("region", 16 * co * rows * tiles_x, x)
    s_c, s_d, s_y, s_x = source.stride()
    for b in range(batch):
        for top in range(0, tiles_y, rows):
            n = min(rows, tiles_y - top)
            count = n * tiles_x  # tiles per slice
            low, high = 4 * top - 1, 4 * (top + n) + 1  # input rows [low, high), padding included
            first, last = max(low, 0), min(high, height)
            strip = source[:, :, : high - low]
            if first > low:
                strip[:, :, 0].zero_()
            if last < high:
                strip[:, :, -1].zero_()
            strip[:, pad : pad + depth, first - low : last - low, 1 : width + 1].copy_(x[b, :, :, first:last])
            # gathered[a, b', c, s, ty, tx] = strip[c, s, 4 ty + a, 4 tx + b']: the overlapping 6x6 tiles
            size = 36 * ci * slices * count
            tiles = gathered[:size].view(36, ci * slices * count)
            tiles.view(6, 6, ci, slices, n, tiles_x).copy_(
                source.as_strided((6, 6, ci, slices, n, tiles_x), (s_y, s_x, s_c, s_d, 4 * s_y, 4 * s_x))
            )
            v = torch.mm(input_t, tiles, out=transformed[:size].view(36, ci * slices * count))
            m = products[: 36 * co * depth * count].view(36, co, depth * count)
            for tap in range(n_taps):  # output slice d reads padded input slice d + tap
                shifted = v.as_strided(
                    (36, ci, depth * count),
                    (ci * slices * count, slices * count, 1),
                    v.storage_offset() + tap * count,
                )
                if tap == 0:
                    torch.bmm(taps[0], shifted, out=m)
                else:
                    m.baddbmm_(taps[tap], shifted)
            if bias is not None:
                m[7].add_(bias[:, None])  # A^T column 1 is all ones: adds the bias to every output
            y = torch.mm(output_t, m.view(36, -1), out=tiles_out[: 16 * co * depth * count].view(16, -1))
            placed = y.view(4, 4, co, depth, n, tiles_x).permute(
                2, 3, 4, 0, 5, 1
            )  # (Co, D, n, 4, tiles_x, 4)
            if out is not None:
                out[b, :, :, top : top + n].copy_(placed)
            else:
                values = region[: 16 * co * count].view(co, 1, n, 4, tiles_x, 4)
                values.copy_(placed)
                rows_at = slice(4 * top, 4 * (top + n))
                epilogue((slice(b, b + 1), slice(None), rows_at), values.view(1, co, 4 * n, width))
    return None if out is None else out.view(batch, co, depth, height, width)


def depth_taps(weight: torch.Tensor) -> torch.Tensor:
    """``(Co, Ci, 3, 3, 3)`` 3D kernel -> ``(Co, 3 * Ci, 3, 3)``: its three depth taps side by side along the
    input channels (index ``tap * Ci + c``), the 2D kernel whose :func:`transform_kernel` :func:`conv3x3x3`
    takes."""
    co, ci = weight.shape[:2]
    return weight.transpose(1, 2).reshape(co, 3 * ci, 3, 3)


def applies_3d(x: torch.Tensor) -> bool:
    """Whether :func:`conv3x3x3` takes ``x``: as :func:`applies`, for a ``(B, C, D, H, W)`` map."""
    return x.dim() == 5 and applies(x[:, :, 0])


def worthwhile_3d(in_channels: int, out_channels: int, height: int, width: int) -> bool:
    """Whether Winograd beats the direct 3D convolution (batch 2, 16 slices, 2-core AVX-512 CPU, the dense
    motion hourglass's convs): 112 -> 112 at 64x64 2.1x, 80 -> 64 at 64x64 1.5x, 64 -> 128 at 32x32 1.7x,
    128 -> 256 at 16x16 1.6x, but 256 -> 512 at 8x8 1.0x (4 tiles per slice) and 1024 -> 256 at 8x8 0.9x."""
    return min(height, width) >= 16 and in_channels * out_channels >= 64 * 64


def conv3x3x3(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv3d(x, w, bias, padding=1)`` with ``kernel = transform_kernel(depth_taps(w))``, Winograd over
    height and width.

    ``x (B, Ci, D, H, W)`` (see :func:`applies_3d`), ``kernel (36, Co, 3 * Ci)``, ``bias (Co,)`` ->
    ``(B, Co, D, H, W)`` contiguous. Every depth slice's tiles are transformed once; each depth tap is then one
    batched product over all output slices at once, reading the transformed slices shifted by the tap (a
    strided view, no copy), accumulated in place. Same value up to float rounding, as :func:`conv3x3`.
    """
    if not applies_3d(x):
        raise ValueError(
            f"Winograd 3D conv needs a CPU float32/float64 (B, C, D, H, W) map with H, W multiples of 4 and "
            f"autograd off, got {tuple(x.shape)} {x.dtype} (grad enabled: {torch.is_grad_enabled()})"
        )
    ci, co = x.shape[1], kernel.shape[1]
    if kernel.shape != (36, co, 3 * ci):
        raise ValueError(f"kernel {tuple(kernel.shape)} does not fit {ci} input channels and 3 depth taps")
    taps = kernel.view(36, co, 3, ci).permute(2, 0, 1, 3).contiguous()  # (3, 36, Co, Ci)
    return _convolve(x, taps, bias, None)


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
        epilogue: Epilogue | None = None,
    ) -> torch.Tensor | None:
        """:func:`conv3x3` of ``x`` with the ``(weight, bias)`` that ``make()`` derives from ``owner``; for a
        ``(B, C, D, H, W)`` map and a 3x3x3 weight, :func:`conv3x3x3` (no epilogue)."""
        stamp = tuple((t.data_ptr(), t._version) for t in (*owner.parameters(), *owner.buffers()))
        entry = self._entries.get(key)
        if entry is None or entry[0] != stamp:
            weight, bias = make()
            entry = (stamp, (depth_taps(weight) if weight.dim() == 5 else weight).contiguous(), bias)
            self._entries[key] = entry
        weight = entry[1]
        kernel = transform_kernel(weight, _buffer("kernel", 36 * weight.shape[0] * weight.shape[1], weight))
        if x.dim() == 5:
            if epilogue is not None:
                raise ValueError("the 3D Winograd conv takes no epilogue")
            return conv3x3x3(x, kernel, entry[2])
        return conv3x3(x, kernel, entry[2], epilogue)

    def nbytes(self) -> int:
        """Memory held by the derived weights and biases."""
        return sum(k.nbytes + (0 if b is None else b.nbytes) for _, k, b in self._entries.values())
