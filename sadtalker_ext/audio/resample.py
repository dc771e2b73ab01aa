"""Band-limited sinc resampling with resampy's ``kaiser_best`` filter, in plain numpy (no numba).

The official SadTalker loads audio with ``librosa.core.load(path, sr=16000)`` under librosa 0.9.2, which
resamples with resampy 0.4.2's ``kaiser_best`` filter. That method (J. O. Smith's band-limited
interpolation) computes every output sample ``y[t]`` at input time ``t * orig_sr / new_sr`` as a weighted
sum of the input samples on both sides, the weights read from a tabulated windowed-sinc half-window by
linear interpolation between table entries:

* table: ``rolloff * sinc(rolloff * u)`` for ``u`` in ``[0, 50]`` on a grid of 2**13 points per zero
  crossing, times the right half of a Kaiser window (beta 12.98458525) -- 409601 values;
* downsampling by ``ratio = new / orig < 1``: the table is scaled by ``ratio`` and read with
  ``u`` scaled by ``ratio`` (the cut-off follows the lower Nyquist frequency);
* left wing: distances ``frac + i`` (``frac`` the fractional input time), right wing ``(1 - frac) + k``;
  taps beyond the signal are left out (zero padding);
* output length ``int(n * new / orig)``, then librosa's ``fix_length`` to ``ceil(n * new / orig)``.

Here the sum is evaluated with the rate ratio's periodicity: with ``new / orig = p / q`` in lowest terms,
output ``m * p + r`` uses the same weights as output ``r`` applied ``m * q`` input samples later, so
there are only ``p`` distinct weight vectors ("phases"). Consecutive phases read overlapping stretches of
the input, so groups of them are evaluated together as one BLAS matrix product over a strided view of the
signal (rows ``q`` samples apart, no copy); when the filter is longer than the period (48 kHz -> 16 kHz)
each phase is one einsum over overlapping rows. The signal is processed in blocks.

Sums run in float64 and the result is cast to float32 (resampy adds each term into its float32 output;
the two differ by float32 rounding, measured below 1e-6 on the parity vectors). resampy derives each
output's input time from ``t * (1 / ratio)`` in floating point; the exact rational times used here differ
from those by rounding only, far below that.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

KAISER_BEST_ZEROS = 50
"""Zero crossings of the sinc kept on each side (resampy ``kaiser_best``)."""
KAISER_BEST_PRECISION = 13
"""log2 of the table entries per zero crossing."""
KAISER_BEST_ROLLOFF = 0.9173473712608761
"""Roll-off frequency as a fraction of the Nyquist frequency."""
KAISER_BEST_BETA = 12.98458525
"""Kaiser window shape parameter (reproduces resampy's stored table to about 2e-12)."""

_BLOCK_SAMPLES = 1 << 21
"""Input samples handled per block (bounds the float64 working memory to a few tens of MB)."""


@functools.lru_cache(maxsize=1)
def kaiser_best_table() -> np.ndarray:
    """The right half of the ``kaiser_best`` interpolation filter: (50 * 8192 + 1,) float64, read-only."""
    per_zero = 1 << KAISER_BEST_PRECISION
    n = KAISER_BEST_ZEROS * per_zero
    u = np.linspace(0.0, KAISER_BEST_ZEROS, num=n + 1, endpoint=True)
    sinc = KAISER_BEST_ROLLOFF * np.sinc(KAISER_BEST_ROLLOFF * u)
    taper = np.kaiser(2 * n + 1, KAISER_BEST_BETA)[n:]
    table = taper * sinc
    table.setflags(write=False)
    return table


def output_length(n_in: int, orig_sr: int, new_sr: int) -> int:
    """Samples librosa 0.9.2 returns for ``n_in`` input samples: ``ceil(n_in * new_sr / orig_sr)``."""
    return math.ceil(n_in * (float(new_sr) / orig_sr))


def _wing(frac: float, scale: float, step: int, table: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Weights of one wing for fractional distance ``frac`` (already scaled): tap i at ``frac + i * scale``."""
    per_zero = 1 << KAISER_BEST_PRECISION
    index_frac = frac * per_zero
    offset = int(index_frac)
    eta = index_frac - offset
    count = (table.shape[0] - offset) // step
    idx = offset + step * np.arange(count)
    return table[idx] + eta * delta[idx]


class _Plan(NamedTuple):
    """How to compute one rate pair: ``p`` outputs per ``q`` inputs, phase kernels and their grouping."""

    p: int
    q: int
    starts: np.ndarray
    """(p,) first input sample of phase r's taps, relative to ``m * q`` for output ``m * p + r``."""
    kernels: np.ndarray
    """(p, L) float64 tap weights in input order (zero-padded to a common length L)."""
    groups: tuple[tuple[int, int, int, np.ndarray], ...]
    """(r0, r1, offset, weights (W, r1 - r0)): phases r0..r1-1 read W inputs from ``m * q + offset``; empty
    when the filter is longer than the period (the phases are then computed one by one)."""


@functools.lru_cache(maxsize=8)
def _plan(orig_sr: int, new_sr: int) -> _Plan:
    """Phase kernels of the ``kaiser_best`` filter for ``orig_sr -> new_sr`` (cached per rate pair)."""
    g = math.gcd(orig_sr, new_sr)
    p, q = new_sr // g, orig_sr // g
    ratio = float(new_sr) / orig_sr
    scale = min(1.0, ratio)
    table = kaiser_best_table()
    if ratio < 1:
        table = ratio * table
    delta = np.diff(table, append=table[-1])
    step = int(scale * (1 << KAISER_BEST_PRECISION))

    lefts, rights, centres = [], [], []
    for r in range(p):
        n_r, rem = divmod(r * q, p)
        frac = scale * (rem / p)
        lefts.append(_wing(frac, scale, step, table, delta))  # taps at n_r, n_r - 1, ...
        rights.append(_wing(scale - frac, scale, step, table, delta))  # taps at n_r + 1, n_r + 2, ...
        centres.append(n_r)
    starts = np.array(
        [c - (left.shape[0] - 1) for c, left in zip(centres, lefts, strict=True)], dtype=np.int64
    )
    length = max(c + right.shape[0] - s + 1 for c, right, s in zip(centres, rights, starts, strict=True))
    kernels = np.zeros((p, length), dtype=np.float64)
    for r, (left, right) in enumerate(zip(lefts, rights, strict=True)):
        kernels[r, : left.shape[0]] = left[::-1]
        kernels[r, left.shape[0] : left.shape[0] + right.shape[0]] = right
    kernels.setflags(write=False)
    starts.setflags(write=False)

    groups = []
    if length <= q:
        # Consecutive phases read overlapping inputs: one matrix product per group of phases whose taps
        # span at most min(q, 2 L) inputs (a strided view that BLAS reads without a copy; little waste).
        limit = min(q, 2 * length)
        r0 = 0
        while r0 < p:
            r1 = r0 + 1
            while r1 < p and int(starts[r1]) + length - int(starts[r0 : r1 + 1].min()) <= limit:
                r1 += 1
            offset = int(starts[r0:r1].min())
            width = int((starts[r0:r1] + length).max()) - offset
            weights = np.zeros((width, r1 - r0), dtype=np.float64)
            for j, r in enumerate(range(r0, r1)):
                s0 = int(starts[r]) - offset
                weights[s0 : s0 + length, j] = kernels[r]
            weights.setflags(write=False)
            groups.append((r0, r1, offset, weights))
            r0 = r1
    return _Plan(p, q, starts, kernels, tuple(groups))


def resample_kaiser_best(samples: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """(N,) mono samples at ``orig_sr`` Hz -> ``ceil(N * new_sr / orig_sr)`` float32 samples at ``new_sr``.

    What ``librosa.resample(y, orig_sr=orig_sr, target_sr=new_sr, res_type='kaiser_best')`` returns under
    librosa 0.9.2 / resampy 0.4.2 (within float rounding, about 1e-6 for signals in [-1, 1]). Equal rates
    return the samples unchanged (as float32).
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"expected mono (N,) samples, got shape {x.shape}")
    orig_sr, new_sr = int(orig_sr), int(new_sr)
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} and {new_sr}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if orig_sr == new_sr:
        return x
    n_in = x.shape[0]
    n_core = int(n_in * float(new_sr) / float(orig_sr))  # resampy's own output length
    y = np.zeros(output_length(n_in, orig_sr, new_sr), dtype=np.float32)  # librosa's fix_length
    if n_core < 1:
        return y

    p, q, starts, kernels, groups = _plan(orig_sr, new_sr)
    length = kernels.shape[1]
    lo = int(starts.min())
    hi = int(starts.max()) + length  # window of one period, relative to m * q
    rows_total = -(-n_core // p)
    rows_per_block = max(1, _BLOCK_SAMPLES // q)
    view = np.lib.stride_tricks.sliding_window_view
    for m0 in range(0, rows_total, rows_per_block):
        m1 = min(rows_total, m0 + rows_per_block)
        rows = m1 - m0
        # Input samples [m0*q + lo, (m1-1)*q + hi) as float64, zero outside the signal.
        a, b = m0 * q + lo, (m1 - 1) * q + hi
        block = np.zeros(b - a, dtype=np.float64)
        src0, src1 = max(a, 0), min(b, n_in)
        if src1 > src0:
            block[src0 - a : src1 - a] = x[src0:src1]
        out = np.empty((rows, p), dtype=np.float64)
        if groups:
            for r0, r1, offset, weights in groups:
                # the rows of the strided view do not overlap (width <= q): BLAS reads it without a copy
                out[:, r0:r1] = view(block[offset - lo :], weights.shape[0])[::q][:rows] @ weights
        else:
            # filter longer than the period (e.g. 48 kHz -> 16 kHz): overlapping rows, read by einsum
            for r in range(p):
                rows_r = view(block[int(starts[r]) - lo :], length)[::q][:rows]
                out[:, r] = np.einsum("ij,j->i", rows_r, kernels[r])
        t0 = m0 * p
        t1 = min(n_core, m1 * p)
        y[t0:t1] = out.reshape(-1)[: t1 - t0]
    return y
