"""Audio front end against the official vectors (audio_*.npz, and the audio part of e2e_*.npz).

Tolerances from the vectors' .md files: frame counts, cut waveform and mel row indices exact; mel within
1e-4 (audio_*) / 1e-5 (e2e_*) absolute; windows the exact gather of our mel. The blink ratio is random in
the official code: it is checked for its structure and replayed with Python's ``random`` seeded with the
vector's seed (how the .md says it was drawn).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sadtalker_ext.audio.blink import BLINK_PROFILE, blink_ratio_from_draws
from sadtalker_ext.audio.decode import load_audio
from sadtalker_ext.audio.features import (
    fit_to_frames,
    frame_count,
    mel_basis,
    mel_spectrogram,
    mel_window_rows,
    mel_windows,
    prepare_audio,
)
from tests import standin
from tests.conftest import seed_of, stored_fed_audio, vector_params

MEL_ATOL = 1e-4
E2E_ATOL = 1e-5


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _seed(path: Path) -> int:
    with np.load(path, allow_pickle=False) as npz:
        return seed_of(npz, path)


@pytest.mark.parametrize("path", vector_params("audio_*.npz"))
def test_audio_vector_mel_and_windows(path):
    d = _load(path)
    wav = d["wav16k"]
    num_frames = frame_count(wav.shape[0])
    assert num_frames == int(d["num_frames"])
    cropped = fit_to_frames(wav, num_frames)
    np.testing.assert_array_equal(cropped, d["wav_cropped"])

    if "mel_basis" in d:
        np.testing.assert_allclose(mel_basis(), d["mel_basis"], rtol=1e-6, atol=1e-9)
    mel = mel_spectrogram(cropped)
    assert mel.shape == d["mel"].shape
    np.testing.assert_allclose(mel, d["mel"], rtol=0, atol=MEL_ATOL)

    rows = mel_window_rows(num_frames, mel.shape[1])
    if "mel_row_index" in d:
        np.testing.assert_array_equal(rows, d["mel_row_index"])
    windows = mel_windows(mel, num_frames)
    np.testing.assert_array_equal(windows, mel.astype(np.float32)[:, rows].transpose(1, 0, 2))
    np.testing.assert_allclose(windows, d["indiv_mels"], rtol=0, atol=MEL_ATOL)


@pytest.mark.parametrize("path", vector_params("audio_*.npz"))
def test_audio_vector_prepare_audio(path):
    """The public entry point on the stored excerpt (blink off) gives the same numbers."""
    d = _load(path)
    feats = prepare_audio(d["wav16k"], use_blink=False)
    assert feats.num_frames == int(d["num_frames"])
    np.testing.assert_array_equal(feats.wav16k, d["wav_cropped"])
    assert feats.indiv_mels.shape == (feats.num_frames, 1, *d["indiv_mels"].shape[1:])
    np.testing.assert_allclose(feats.indiv_mels[:, 0], d["indiv_mels"], rtol=0, atol=MEL_ATOL)
    assert not feats.ratio.any()


def _check_blink_structure(ratio: np.ndarray) -> None:
    r = ratio[:, 0]
    n = r.shape[0]
    profile = np.asarray(BLINK_PROFILE, np.float32)
    cursor, i = 0, 0
    while i < n:
        if r[i] == 0:
            i += 1
            continue
        np.testing.assert_array_equal(r[i : i + 5], profile)
        assert min(10, n) <= i - cursor < min(int(n / 2), 70)
        assert i + 5 <= n - 1
        cursor = i = i + 5


@pytest.mark.parametrize("path", vector_params("audio_*.npz"))
def test_audio_vector_blink(path):
    d = _load(path)
    ratio = d["ratio"].astype(np.float32)
    assert ratio.shape == (int(d["num_frames"]), 1)
    _check_blink_structure(ratio)
    py = random.Random(_seed(path))
    replay = blink_ratio_from_draws(ratio.shape[0], lambda low, high: py.choice(range(low, high)))
    np.testing.assert_array_equal(replay, ratio)


def _media_with_length(n: int) -> list[Path]:
    """16 kHz wavs of ``n`` samples in the media folder beside the vector set, or the shared one."""
    folders = dict.fromkeys([standin.parity_dir().parent.parent / "media", standin.SHARED / "media"])
    found = []
    for p in sorted(q for folder in folders for q in folder.glob("*.wav")):
        info = sf.info(str(p))
        if info.samplerate == 16000 and info.frames == n:
            found.append(p)
    return found


@pytest.mark.parametrize("path", vector_params("audio_*.npz"))
def test_audio_vector_waveform_excerpt(path):
    """The stored excerpt is exactly what our loader reads from the source file at the stored offset."""
    d = _load(path)
    full_len = int(d["wav_full_len"])
    offset = int(d["excerpt_offset"])
    wav = d["wav16k"]
    candidates = _media_with_length(full_len)
    if not candidates:
        pytest.skip(f"no 16 kHz source wav of {full_len} samples in a media folder")
    matches = [p for p in candidates if np.array_equal(load_audio(p)[offset : offset + wav.shape[0]], wav)]
    assert matches, f"no candidate {[p.name for p in candidates]} reproduces the excerpt bit for bit"


@pytest.mark.parametrize("path", vector_params("e2e_*.npz"))
def test_e2e_audio_from_wav_file(path):
    """Load the exact WAV stored beside the e2e vector and reproduce its audio arrays.

    The file is the one whose rate and samples are ``wav_fed_sr`` / ``wav_fed`` (any rate, PCM or float);
    its 16 kHz load must equal ``wav16k`` (bit for bit when no resampling is involved).
    """
    d = _load(path)
    seed = _seed(path)
    wav_path = stored_fed_audio(path, d["wav_fed"], int(d["wav_fed_sr"]))
    assert wav_path is not None, "no e2e_audio_*.wav beside the vector holds wav_fed at wav_fed_sr"
    loaded = load_audio(wav_path)
    assert loaded.shape == d["wav16k"].shape
    np.testing.assert_allclose(loaded, d["wav16k"], rtol=0, atol=E2E_ATOL)
    if int(d["wav_fed_sr"]) == 16000 and d["wav_fed"].ndim == 1:
        np.testing.assert_array_equal(loaded, d["wav16k"])

    use_blink = bool(d["use_blink"]) if "use_blink" in d else False
    feats = prepare_audio(wav_path, use_blink=use_blink, rng=np.random.default_rng(seed))
    assert feats.num_frames == int(d["num_frames"])
    np.testing.assert_allclose(feats.wav16k, d["wav_cropped"], rtol=0, atol=E2E_ATOL)
    mel = mel_spectrogram(feats.wav16k)
    assert mel.shape == d["mel"].shape
    np.testing.assert_allclose(mel, d["mel"], rtol=0, atol=E2E_ATOL)
    np.testing.assert_allclose(feats.indiv_mels[:, 0], d["indiv_mels"], rtol=0, atol=E2E_ATOL)
    if use_blink:
        _check_blink_structure(d["ratio"].astype(np.float32))
    else:
        assert not d["ratio"].any() and not feats.ratio.any()
