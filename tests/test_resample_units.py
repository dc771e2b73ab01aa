"""The numpy kaiser_best resampler against a direct per-sample evaluation of the same band-limited
interpolation (the loop resampy runs), at rates the parity vectors do not cover, and its edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sadtalker_ext.audio.resample import KAISER_BEST_PRECISION, kaiser_best_table, resample_kaiser_best


def _direct(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """One output at a time: input time t / ratio (float), both wings read from the table with linear
    interpolation, taps outside the signal skipped; float64, then librosa's length rule."""
    per_zero = 1 << KAISER_BEST_PRECISION
    ratio = new_sr / orig_sr
    win = kaiser_best_table() * (ratio if ratio < 1 else 1.0)
    delta = np.append(np.diff(win), 0.0)
    scale = min(1.0, ratio)
    step = int(scale * per_zero)
    n_out = int(x.shape[0] * float(new_sr) / float(orig_sr))
    times = np.arange(n_out) * (1.0 / ratio)
    xd = x.astype(np.float64)
    y = np.zeros(math.ceil(x.shape[0] * ratio))
    for t in range(n_out):
        n = int(times[t])
        frac = scale * (times[t] - n)
        for side, dist in ((-1, frac), (1, scale - frac)):
            pos = dist * per_zero
            off = int(pos)
            eta = pos - off
            taps = (win.shape[0] - off) // step
            taps = min(taps, n + 1) if side < 0 else min(taps, x.shape[0] - n - 1)
            idx = off + step * np.arange(taps)
            weights = win[idx] + eta * delta[idx]
            samples = xd[n - np.arange(taps)] if side < 0 else xd[n + 1 + np.arange(taps)]
            y[t] += weights @ samples
    return y


@pytest.mark.parametrize("rate", [7999, 8000, 12000, 24000, 32000, 44101, 48000, 96000])
def test_matches_direct_evaluation(rate):
    rng = np.random.default_rng(rate)
    n = rate // 20  # 50 ms: 800 outputs
    t = np.arange(n) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * rng.standard_normal(n)).astype(np.float32)
    got = resample_kaiser_best(x, rate, 16000)
    want = _direct(x, rate, 16000)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-6


def test_lengths_and_short_inputs():
    x = np.ones(5, np.float32)
    assert resample_kaiser_best(x, 44100, 16000).shape == (math.ceil(5 * 16000 / 44100),)
    assert resample_kaiser_best(x[:1], 48000, 16000).shape == (1,)
    assert resample_kaiser_best(x[:0], 48000, 16000).shape == (0,)
    np.testing.assert_array_equal(resample_kaiser_best(x, 16000, 16000), x)
    with pytest.raises(ValueError, match="mono"):
        resample_kaiser_best(np.zeros((4, 2), np.float32), 44100, 16000)
    with pytest.raises(ValueError, match="positive"):
        resample_kaiser_best(x, 0, 16000)


def test_long_input_crosses_blocks_consistently(monkeypatch):
    """Block boundaries do not change the result (small blocks force many of them)."""
    from sadtalker_ext.audio import resample

    rng = np.random.default_rng(1)
    x = rng.standard_normal(44100).astype(np.float32) * 0.3
    whole = resample_kaiser_best(x, 44100, 16000)
    monkeypatch.setattr(resample, "_BLOCK_SAMPLES", 1000)
    np.testing.assert_allclose(resample_kaiser_best(x, 44100, 16000), whole, rtol=0, atol=1e-7)
