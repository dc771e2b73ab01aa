"""Frame count, mel windows, blink schedule and AudioFeatures edge cases."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sadtalker_ext.audio.blink import BLINK_PROFILE, blink_ratio, blink_ratio_from_draws
from sadtalker_ext.audio.decode import write_wav16
from sadtalker_ext.audio.features import (
    AudioFeatures,
    MelParams,
    fit_to_frames,
    frame_count,
    idle_audio_features,
    mel_basis,
    mel_spectrogram,
    mel_window_rows,
    mel_windows,
    prepare_audio,
    window_starts,
)
from sadtalker_ext.errors import InputError

FRAME = 640  # 16 kHz samples per 25 fps video frame


def _speechlike(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(n)
    return x.astype(np.float32)


def _expected_start(i: int) -> int:
    # written from the rule in the parity notes: trunc(16 * (i - 2) / 5)
    q = 16 * (i - 2)
    return -((-q) // 5) if q < 0 else q // 5


def test_frame_count_rule():
    assert frame_count(0) == 0
    assert frame_count(639) == 0
    assert frame_count(640) == 1
    assert frame_count(640 * 33 + 639) == 33
    assert frame_count(44100, sample_rate=44100, fps=25) == 25


def test_fit_to_frames_cuts_and_pads():
    x = np.arange(1, 1001, dtype=np.float32)
    cut = fit_to_frames(x, 1)
    np.testing.assert_array_equal(cut, x[:640])
    padded = fit_to_frames(x, 2)
    assert padded.shape == (1280,)
    np.testing.assert_array_equal(padded[:1000], x)
    assert not padded[1000:].any()


def test_window_starts_follow_truncation_rule():
    starts = window_starts(200)
    assert list(starts[:8]) == [_expected_start(i) for i in range(8)]
    assert list(starts[:3]) == [-6, -3, 0]
    assert all(starts[i] == _expected_start(i) for i in range(200))


def test_window_rows_are_clamped():
    rows = mel_window_rows(33, 10)  # a spectrogram much shorter than the windows reach
    assert rows.shape == (33, 16)
    assert rows.min() == 0 and rows.max() == 9
    np.testing.assert_array_equal(rows[0], np.clip(np.arange(-6, 10), 0, 9))


@pytest.mark.parametrize("frames", [1, 12, 13, 20, 21, 32, 33])
def test_prepare_audio_frame_counts(frames):
    extra = 317  # a partial frame at the end is dropped
    wav = _speechlike(frames * FRAME + extra, seed=frames)
    feats = prepare_audio(wav, use_blink=True, rng=np.random.default_rng(frames))
    assert isinstance(feats, AudioFeatures)
    assert feats.num_frames == frames
    assert feats.indiv_mels.shape == (frames, 1, 80, 16) and feats.indiv_mels.dtype == np.float32
    assert feats.ratio.shape == (frames, 1) and feats.ratio.dtype == np.float32
    np.testing.assert_array_equal(feats.wav16k, wav[: frames * FRAME])
    mel = mel_spectrogram(wav[: frames * FRAME])
    assert mel.shape == (80, 1 + frames * FRAME // 200)
    for i in range(frames):
        cols = np.clip(np.arange(_expected_start(i), _expected_start(i) + 16), 0, mel.shape[1] - 1)
        np.testing.assert_array_equal(feats.indiv_mels[i, 0], mel[:, cols].astype(np.float32))
    assert feats.seconds == pytest.approx(frames / 25)
    assert feats.indiv_mels.flags.c_contiguous and feats.wav16k.flags.c_contiguous


def test_padding_only_when_needed():
    """Cut to whole frames, never padded for file input (n >= T * 640 by construction)."""
    wav = _speechlike(FRAME * 5 - 1)
    assert prepare_audio(wav, use_blink=False).num_frames == 4


@pytest.mark.parametrize("n", [0, 1, 639])
def test_shorter_than_one_frame(n):
    with pytest.raises(InputError, match="too short"):
        prepare_audio(np.zeros(n, np.float32), use_blink=False)


def test_short_file(tmp_path):
    path = write_wav16(tmp_path / "short.wav", _speechlike(600))
    with pytest.raises(InputError, match="too short"):
        prepare_audio(path, use_blink=False)


def test_silent_audio():
    feats = prepare_audio(np.zeros(FRAME * 13, np.float32), use_blink=False)
    assert feats.num_frames == 13
    np.testing.assert_array_equal(feats.indiv_mels, np.full((13, 1, 80, 16), -4.0, np.float32))
    assert not feats.ratio.any()


def test_mel_range_and_loudness():
    mel = mel_spectrogram(_speechlike(16000))
    assert mel.dtype == np.float64
    assert mel.min() >= -4.0 and mel.max() <= 4.0
    assert mel.max() > 0.0  # a loud tone is far above the floor
    quiet = mel_spectrogram(_speechlike(16000) * 0.01)
    assert quiet.mean() < mel.mean()


def test_over_the_limit_samples_and_file(tmp_path):
    wav = np.zeros(16000 * 3, np.float32)
    with pytest.raises(InputError, match="at most 2 s"):
        prepare_audio(wav, use_blink=False, max_seconds=2)
    path = write_wav16(tmp_path / "long.wav", wav)
    with pytest.raises(InputError, match="at most 2 s"):
        prepare_audio(path, use_blink=False, max_seconds=2)
    assert prepare_audio(path, use_blink=False, max_seconds=4).num_frames == 75


def test_file_and_samples_agree(tmp_path):
    wav = _speechlike(FRAME * 21 + 5)
    path = write_wav16(tmp_path / "a.wav", wav)
    from_file = prepare_audio(path, use_blink=False)
    pcm = np.clip(np.rint(wav.astype(np.float64) * 32768), -32768, 32767) / 32768
    from_samples = prepare_audio(pcm.astype(np.float32), use_blink=False)
    np.testing.assert_array_equal(from_file.indiv_mels, from_samples.indiv_mels)
    np.testing.assert_array_equal(from_file.wav16k, from_samples.wav16k)


def test_samples_at_other_rate_and_stereo():
    mono16 = _speechlike(FRAME * 10)
    stereo = np.stack([mono16, mono16], axis=1)
    feats = prepare_audio(stereo, use_blink=False)
    np.testing.assert_array_equal(feats.wav16k, mono16)
    up = np.repeat(mono16, 3)  # 48 kHz
    assert prepare_audio(up, use_blink=False, sample_rate=48000).num_frames == 10


def test_bad_samples():
    with pytest.raises(InputError):
        prepare_audio(np.full(FRAME * 2, np.nan, np.float32), use_blink=False)
    with pytest.raises(InputError):
        prepare_audio(np.zeros((2, 2, 2), np.float32), use_blink=False)
    with pytest.raises(InputError, match="float"):
        prepare_audio(np.zeros(FRAME * 2, np.int16), use_blink=False)


def test_audio_features_checks_shapes():
    ok = {
        "num_frames": 2,
        "indiv_mels": np.zeros((2, 1, 80, 16), np.float32),
        "ratio": np.zeros((2, 1), np.float32),
        "wav16k": np.zeros(2 * FRAME, np.float32),
    }
    assert AudioFeatures(**ok).seconds == pytest.approx(0.08)
    for key, bad in [
        ("indiv_mels", np.zeros((3, 1, 80, 16), np.float32)),
        ("indiv_mels", np.zeros((2, 80, 16), np.float32)),
        ("ratio", np.zeros((2,), np.float32)),
        ("wav16k", np.zeros(2 * FRAME + 1, np.float32)),
    ]:
        with pytest.raises(ValueError, match=f"^{key}: expected"):
            AudioFeatures(**{**ok, key: bad})


def test_long_audio_chunked_stft_unchanged():
    """The chunked STFT gives the same numbers as one block (chunk boundaries are invisible)."""
    from sadtalker_ext.audio.features import _stft_magnitude

    x = _speechlike(16000 * 3).astype(np.float64)
    whole = _stft_magnitude(x, MelParams(), chunk_rows=10**6)
    np.testing.assert_array_equal(_stft_magnitude(x, MelParams(), chunk_rows=7), whole)
    assert whole.shape == (401, 1 + x.shape[0] // 200)


def test_mel_windows_match_gather():
    mel = np.arange(80 * 30, dtype=np.float64).reshape(80, 30)
    win = mel_windows(mel, 9)
    rows = mel_window_rows(9, 30)
    for i in range(9):
        np.testing.assert_array_equal(win[i], mel[:, rows[i]])


def test_mel_params_are_official_defaults():
    p = MelParams()
    assert (p.n_fft, p.hop_size, p.win_size, p.num_mels) == (800, 200, 800, 80)
    assert p.mel_rows_per_second == 80.0


# ---- blink ----------------------------------------------------------------------------------------------


def _blinks(track: np.ndarray) -> list[int]:
    """Start frames of the blinks; asserts the track is made of whole, non-overlapping blink profiles."""
    r = track[:, 0]
    starts, i = [], 0
    profile = np.asarray(BLINK_PROFILE, np.float32)
    while i < r.shape[0]:
        if r[i] == 0:
            i += 1
            continue
        np.testing.assert_array_equal(r[i : i + 5], profile)
        starts.append(i)
        i += 5
    return starts


@pytest.mark.parametrize("frames", [0, 1, 12, 13, 20])
def test_short_clips_never_blink(frames):
    assert not blink_ratio(frames, np.random.default_rng(0)).any()
    assert blink_ratio(frames, np.random.default_rng(0)).shape == (frames, 1)


def test_21_frames_fixed():
    """The official code raises IndexError here (empty choice range); the fix gives T=22's schedule."""
    track = blink_ratio(21, np.random.default_rng(0))
    assert _blinks(track) == [10]
    np.testing.assert_array_equal(track[:21], blink_ratio(22, np.random.default_rng(5))[:21])


@pytest.mark.parametrize("frames", [22, 32, 33, 75, 140, 141, 1000])
def test_schedule_rules(frames):
    for seed in range(5):
        track = blink_ratio(frames, np.random.default_rng(seed))
        starts = _blinks(track)
        assert track.dtype == np.float32 and track.shape == (frames, 1)
        low, high = min(10, frames), min(frames // 2, 70)
        cursor = 0
        for s in starts:
            assert low <= s - cursor < high
            cursor = s + 5
        assert not starts or starts[-1] + 5 <= frames - 1
        assert starts  # T >= 22: the first gap is at most T/2 - 1 frames, so one blink always fits


def test_draw_ranges_unchanged_except_21():
    """Every T except 21 asks for the official range [min(10, T), min(int(T / 2), 70))."""
    for frames in [*range(22, 200), 500, 5000]:
        seen = []

        def draw(low, high, seen=seen):
            seen.append((low, high))
            return low

        blink_ratio_from_draws(frames, draw)
        assert seen and all(r == (min(10, frames), min(int(frames / 2), 70)) for r in seen)
    calls = []
    blink_ratio_from_draws(21, lambda lo, hi: calls.append((lo, hi)) or lo)
    assert calls == []


def test_python_random_drives_same_schedule():
    """With random.choice as the draw, each blink comes from one choice, as in the official loop."""
    r1, r2 = random.Random(3), random.Random(3)
    a = blink_ratio_from_draws(300, lambda lo, hi: r1.choice(range(lo, hi)))
    gaps = []
    cursor = 0
    for s in _blinks(a):
        gaps.append(s - cursor)
        cursor = s + 5
    assert gaps == [r2.choice(range(10, 70)) for _ in gaps]


def test_same_seed_same_schedule():
    a = blink_ratio(500, np.random.default_rng(42))
    b = blink_ratio(500, np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)
    others = [blink_ratio(500, np.random.default_rng(s)) for s in range(1, 6)]
    assert any(not np.array_equal(a, o) for o in others)


def test_prepare_audio_blink_switch():
    wav = _speechlike(FRAME * 100)
    off = prepare_audio(wav, use_blink=False, rng=np.random.default_rng(1))
    assert not off.ratio.any()
    on = prepare_audio(wav, use_blink=True, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(on.ratio, blink_ratio(100, np.random.default_rng(1)))
    assert on.ratio.any()
    with pytest.raises(ValueError, match="Generator"):
        prepare_audio(wav, use_blink=True)


# ---- idle -----------------------------------------------------------------------------------------------


def test_idle_features():
    feats = idle_audio_features(2.0, use_blink=True, rng=np.random.default_rng(7))
    assert feats.num_frames == 50
    assert feats.indiv_mels.shape == (50, 1, 80, 16) and not feats.indiv_mels.any()
    assert feats.wav16k.shape == (50 * FRAME,) and not feats.wav16k.any()
    np.testing.assert_array_equal(feats.ratio, blink_ratio(50, np.random.default_rng(7)))
    assert idle_audio_features(1.3, use_blink=False).num_frames == int(1.3 * 25)


@pytest.mark.parametrize("seconds", [0, 0.02, -1, float("nan")])
def test_idle_too_short_or_invalid(seconds):
    with pytest.raises(InputError):
        idle_audio_features(seconds, use_blink=False)


def test_idle_limit():
    with pytest.raises(InputError, match="limit"):
        idle_audio_features(700, use_blink=False, max_seconds=600)


def test_mel_basis_equals_librosa():
    librosa = pytest.importorskip("librosa")
    for p in (
        MelParams(),
        MelParams(sample_rate=22050, n_fft=1024, win_size=1024, num_mels=128, fmin=0.0, fmax=8000.0),
        MelParams(fmin=1200.0),
    ):
        ours = mel_basis(p)
        ref = librosa.filters.mel(
            sr=p.sample_rate, n_fft=p.n_fft, n_mels=p.num_mels, fmin=p.fmin, fmax=p.fmax
        )
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, ref)


def test_periodic_hann_equals_scipy():
    from scipy.signal import get_window

    from sadtalker_ext.audio.features import periodic_hann

    for n in (1, 2, 7, 800, 1024):
        np.testing.assert_array_equal(periodic_hann(n), get_window("hann", n, fftbins=True))
