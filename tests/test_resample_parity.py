"""Audio at other rates against the official chain (resample_audio_*.npz + the resample_*.wav files beside it).

The official code loads audio with ``librosa.core.load(path, sr=16000)`` under librosa 0.9.2 (resampy
``kaiser_best``). Every case of every vector file goes through the project's real ``load_audio`` on the
stored WAV file; the .md's tolerance is abs 1e-5 on every sample (a float64 reimplementation of the filter
lands within about 1e-6; soxr, the former resampler, is 0.11-0.14 away).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sadtalker_ext.audio.decode import load_audio, resample_to_16k, to_mono
from sadtalker_ext.audio.features import prepare_audio
from sadtalker_ext.audio.resample import resample_kaiser_best
from tests.conftest import vector_params

ATOL = 1e-5


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _wav_of(path: Path, case: str) -> Path:
    """``resample_<case>_<tag>.wav`` beside ``resample_audio_<tag>.npz``."""
    tag = path.stem[len("resample_audio_") :]
    wav = path.parent / f"resample_{case}_{tag}.wav"
    assert wav.is_file(), f"{wav.name} is missing beside {path.name}"
    return wav


def _cases(path: Path) -> list[str]:
    names = [str(c) for c in _load(path)["case_names"]]
    assert names, f"{path.name} lists no cases"
    return names


@pytest.mark.parametrize("path", vector_params("resample_audio_*.npz"))
def test_load_audio_matches_official_resampling(path):
    """Every stored file through ``load_audio`` (the default resampler) equals ``wav16k`` within 1e-5."""
    d = _load(path)
    for case in _cases(path):
        wav = _wav_of(path, case)
        info = sf.info(str(wav))
        assert info.samplerate == int(d[f"fed_sr::{case}"])
        got = load_audio(wav)
        want = d[f"wav16k::{case}"]
        assert got.dtype == np.float32
        assert got.shape == want.shape, (case, got.shape, want.shape)
        err = float(np.abs(got.astype(np.float64) - want).max())
        assert err <= ATOL, f"{case}: max |diff| {err:.3g} > {ATOL}"


@pytest.mark.parametrize("path", vector_params("resample_audio_*.npz"))
def test_reader_and_mono_mix_match_official(path):
    """Steps 1-2 of the chain: the file's samples as stored and the float32 channel mean, bit for bit."""
    d = _load(path)
    for case in _cases(path):
        wav = _wav_of(path, case)
        fed = d[f"fed::{case}"]
        stored, rate = sf.read(str(wav), dtype=fed.dtype.name)
        assert rate == int(d[f"fed_sr::{case}"])
        np.testing.assert_array_equal(stored, fed)
        data, _ = sf.read(str(wav), dtype="float32", always_2d=True)
        np.testing.assert_array_equal(to_mono(data), d[f"mono_float::{case}"])


@pytest.mark.parametrize("path", vector_params("resample_audio_*.npz"))
def test_resampler_on_stored_mono_input(path):
    """The resampler alone on the stored resampler input, and the soxr option staying what it was."""
    d = _load(path)
    for case in _cases(path):
        x = d[f"mono_float::{case}"]
        rate = int(d[f"fed_sr::{case}"])
        want = d[f"wav16k::{case}"]
        got = resample_kaiser_best(x, rate, 16000)
        assert got.shape == want.shape
        assert float(np.abs(got.astype(np.float64) - want).max()) <= ATOL, case
        np.testing.assert_array_equal(resample_to_16k(x, rate), got)
        # soxr remains available as an option, with librosa >= 0.10's length rule.
        soxr_out = resample_to_16k(x, rate, "soxr")
        assert soxr_out.shape == want.shape


@pytest.mark.parametrize("path", vector_params("resample_audio_*.npz"))
def test_prepare_audio_resampler_option(path):
    """``prepare_audio`` (the pipeline's audio entry) uses the official resampler by default; ``soxr`` stays
    selectable and gives soxr's samples."""
    d = _load(path)
    case = next(c for c in _cases(path) if int(d[f"fed_sr::{c}"]) != 16000)
    wav = _wav_of(path, case)
    n = (d[f"wav16k::{case}"].shape[0] // 640) * 640
    default = prepare_audio(wav, use_blink=False)
    assert float(np.abs(default.wav16k - d[f"wav16k::{case}"][:n]).max()) <= ATOL
    soxr = prepare_audio(wav, use_blink=False, resampler="soxr")
    np.testing.assert_array_equal(soxr.wav16k, load_audio(wav, resampler="soxr")[:n])
    with pytest.raises(ValueError, match="resampler must be one of"):
        prepare_audio(wav, use_blink=False, resampler="fft")
