"""Decoding: every supported format made on the fly with the bundled ffmpeg, compared with the source wav."""

from __future__ import annotations

import math
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.audio import decode
from sadtalker_ext.audio.decode import load_audio, resample_to_16k, write_wav16
from sadtalker_ext.audio.features import mel_spectrogram
from sadtalker_ext.errors import InputError
from tests import standin

MEDIA = standin.SHARED / "media"
CLIP_SECONDS = 2
SOURCES = sorted(MEDIA.glob("*.wav"))


def _source_ids():
    return [p.stem for p in SOURCES] or ["none"]


@pytest.fixture(scope="module", params=SOURCES or [None], ids=_source_ids())
def source(request, tmp_path_factory):
    """(first CLIP_SECONDS of a media wav written as 16-bit 16 kHz WAV, its mono reference samples)."""
    if request.param is None:
        pytest.skip("no wav in shared/media")
    src = request.param
    out = tmp_path_factory.mktemp("src") / f"{src.stem}_clip.wav"
    _ffmpeg("-i", str(src), "-t", str(CLIP_SECONDS), "-ar", "16000", "-c:a", "pcm_s16le", str(out))
    with wave.open(str(out)) as w:
        channels, rate = w.getnchannels(), w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, channels)
    assert rate == 16000
    # librosa's rule written out independently: channel mean of int16 / 32768.
    reference = (pcm.astype(np.float64).mean(axis=1) / 32768.0).astype(np.float32)
    return out, reference, channels


def _ffmpeg(*args: str) -> None:
    cmd = [decode.ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


def _convert(src: Path, dest: Path, *args: str) -> Path:
    _ffmpeg("-i", str(src), *args, str(dest))
    return dest


def _lowpass(x: np.ndarray, hz: float) -> np.ndarray:
    spec = np.fft.rfft(x.astype(np.float64))
    spec[np.fft.rfftfreq(x.shape[0], 1 / 16000) > hz] = 0
    return np.fft.irfft(spec, x.shape[0])


def _snr_db(got: np.ndarray, ref: np.ndarray, band_hz: float = 3500.0) -> float:
    """SNR (dB) of ``got`` against ``ref`` below ``band_hz`` (codecs and resamplers cut the top band)."""
    n = min(got.shape[0], ref.shape[0])
    a, b = _lowpass(got[:n], band_hz), _lowpass(ref[:n], band_hz)
    return float(10 * np.log10(np.sum(b**2) / max(np.sum((a - b) ** 2), 1e-30)))


# Lossless containers/bit depths at 16 kHz: the samples come back exactly.
EXACT = {
    "s16_stereo.wav": ["-c:a", "pcm_s16le"],
    "s24.wav": ["-c:a", "pcm_s24le"],
    "s32.wav": ["-c:a", "pcm_s32le"],
    "f32.wav": ["-c:a", "pcm_f32le"],
    "lossless.flac": ["-c:a", "flac"],
}

# (arguments, minimum SNR in dB below 3.5 kHz, maximum mean |mel difference|); measured on the shared
# media: u8 26, mono 100, 44.1k 57-85, 8k 54, mp3 21-26, m4a/mp4 24-35, ogg 20, opus 24 dB.
LOSSY = {
    "u8.wav": (["-c:a", "pcm_u8"], 18.0, 1.0),
    "mono_s16.wav": (["-ac", "1", "-c:a", "pcm_s16le"], 80.0, 0.01),
    "r44100.wav": (["-ar", "44100", "-c:a", "pcm_s16le"], 45.0, 0.01),
    "r48000_f32.wav": (["-ar", "48000", "-c:a", "pcm_f32le"], 45.0, 0.01),
    "r8000.wav": (["-ar", "8000", "-c:a", "pcm_s16le"], 40.0, 0.8),
    "a.mp3": (["-c:a", "libmp3lame", "-b:a", "128k"], 14.0, 0.25),
    "a44100.mp3": (["-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k"], 14.0, 0.25),
    "a.m4a": (["-c:a", "aac", "-b:a", "128k"], 20.0, 0.15),
    "a44100.m4a": (["-ar", "44100", "-c:a", "aac", "-b:a", "128k"], 20.0, 0.15),
    "a.ogg": (["-c:a", "libvorbis"], 14.0, 0.25),
    "a.opus": (["-c:a", "libopus", "-b:a", "64k"], 16.0, 0.2),
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_lossless_16k_is_exact(source, tmp_path, name):
    src, reference, _ = source
    path = _convert(src, tmp_path / name, *EXACT[name])
    got = load_audio(path)
    assert got.dtype == np.float32 and got.ndim == 1
    np.testing.assert_array_equal(got, reference)


def test_16k_wav_equals_librosa(source):
    librosa = pytest.importorskip("librosa")
    src, _, _ = source
    np.testing.assert_array_equal(load_audio(src), librosa.load(src, sr=16000)[0])


def test_original_media_equals_librosa():
    librosa = pytest.importorskip("librosa")
    for path in SOURCES:
        np.testing.assert_array_equal(load_audio(path), librosa.load(path, sr=16000)[0])


@pytest.mark.parametrize("name", sorted(LOSSY))
def test_lossy_and_resampled_formats(source, tmp_path, name):
    src, reference, _ = source
    args, min_snr, max_mel_diff = LOSSY[name]
    got = load_audio(_convert(src, tmp_path / name, *args))
    assert got.dtype == np.float32 and got.ndim == 1
    # 16 kHz output: the length (hence the duration) matches the source within 1 ms (+ codec padding <= 50 ms).
    assert abs(got.shape[0] - reference.shape[0]) <= 16 + 800, got.shape
    assert np.all(np.isfinite(got))
    assert _snr_db(got, reference) >= min_snr
    n = min(got.shape[0], reference.shape[0])
    mel_diff = np.abs(mel_spectrogram(got[:n]) - mel_spectrogram(reference[:n])).mean()
    assert mel_diff <= max_mel_diff


def test_resampled_wav_equals_librosa_soxr_hq(source, tmp_path):
    """The soxr option: what librosa >= 0.10's load(path, sr=16000) does with res_type soxr_hq."""
    librosa = pytest.importorskip("librosa")
    src, reference, _ = source
    path = _convert(src, tmp_path / "r22050.wav", "-ar", "22050", "-c:a", "pcm_s16le")
    got = load_audio(path, resampler="soxr")
    assert got.shape[0] == math.ceil(sf_frames(path) * 16000 / 22050)
    np.testing.assert_array_equal(got, librosa.load(path, sr=16000)[0])
    assert _snr_db(got, reference) >= 45.0


def sf_frames(path: Path) -> int:
    with wave.open(str(path)) as w:
        return w.getnframes()


def test_video_audio_track(source, tmp_path):
    src, reference, _ = source
    video = tmp_path / "clip.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", "color=c=gray:s=64x64:r=25", "-i", str(src), "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-c:a", "aac", "-shortest", str(video),
    )  # fmt: skip
    got = load_audio(video)
    assert abs(got.shape[0] - reference.shape[0]) <= 16000 // 25 * 2  # -shortest ends on a video frame
    assert _snr_db(got, reference) >= 25.0


def test_resample_to_16k_length_and_identity():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(44100).astype(np.float32) * 0.1
    assert resample_to_16k(x, 44100).shape == (16000,)
    assert resample_to_16k(x[:1001], 22050).shape == (math.ceil(1001 * 16000 / 22050),)
    same = resample_to_16k(x, 16000)
    np.testing.assert_array_equal(same, x)
    for resampler in ("kaiser_best", "soxr"):
        assert resample_to_16k(x[:1001], 22050, resampler).shape == (math.ceil(1001 * 16000 / 22050),)
        np.testing.assert_array_equal(resample_to_16k(x, 16000, resampler), x)
    with pytest.raises(ValueError, match="resampler must be one of"):
        resample_to_16k(x, 44100, "fft")


# ---- errors ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_garbage_file(tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"this is not audio at all" * 50)
    with pytest.raises(InputError, match="Cannot read audio"):
        load_audio(bad)


def test_video_without_audio(tmp_path):
    video = tmp_path / "silent_video.mp4"
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x64:r=25", "-t", "1", "-c:v", "libx264", str(video))
    with pytest.raises(InputError, match="no audio track"):
        load_audio(video)


def test_empty_wav(tmp_path):
    path = write_wav16(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(InputError, match="no samples"):
        load_audio(path)


def test_too_long_soundfile_path(source):
    src, reference, _ = source
    limit = reference.shape[0] / 16000 - 0.5
    with pytest.raises(InputError, match="at most"):
        load_audio(src, max_seconds=limit)
    assert load_audio(src, max_seconds=limit + 1.0).shape == reference.shape


def test_too_long_ffmpeg_path(source, tmp_path):
    src, reference, _ = source
    path = _convert(src, tmp_path / "long.m4a", "-c:a", "aac")
    limit = reference.shape[0] / 16000 - 0.5
    with pytest.raises(InputError, match="longer than the limit"):
        load_audio(path, max_seconds=limit)
    assert load_audio(path, max_seconds=None).shape[0] >= reference.shape[0] - 800


def test_default_limit_is_ten_minutes():
    assert decode.DEFAULT_MAX_SECONDS == 600.0


def test_bad_max_seconds(source):
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        load_audio(source[0], max_seconds=0)


# ---- writing --------------------------------------------------------------------------------------------


def test_write_wav16_round_trip(source, tmp_path):
    _, reference, _ = source
    path = write_wav16(tmp_path / "out.wav", reference)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.getnframes() == reference.shape[0]
    # mean of two int16 / 32768 is a multiple of 1/65536: rounding to 1/32768 moves it by <= half a step
    back = load_audio(path)
    assert np.abs(back - reference).max() <= 0.5 / 32768 + 1e-9
    again = load_audio(write_wav16(tmp_path / "again.wav", back))
    np.testing.assert_array_equal(again, back)


def test_write_wav16_clips_and_stereo(tmp_path):
    x = np.array([[2.0, -2.0], [0.5, -0.5], [0.0, 1.0]], dtype=np.float32)
    path = write_wav16(tmp_path / "st.wav", x, sample_rate=22050)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 22050)
        pcm = np.frombuffer(w.readframes(3), dtype="<i2").reshape(3, 2)
    np.testing.assert_array_equal(pcm, [[32767, -32768], [16384, -16384], [0, 32767]])
    with pytest.raises(ValueError, match="NaN or infinity"):
        write_wav16(tmp_path / "nan.wav", np.array([np.nan], np.float32))


@pytest.mark.parametrize("name", ["http:clip.m4a", "-dash name.m4a", "ünï cödé.m4a"])
def test_odd_file_names_via_ffmpeg(source, tmp_path, name):
    src, reference, _ = source
    plain = _convert(src, tmp_path / "plain.m4a", "-c:a", "aac")
    odd = tmp_path / name
    odd.write_bytes(plain.read_bytes())
    got = load_audio(odd)
    np.testing.assert_array_equal(got, load_audio(plain))
    assert _snr_db(got, reference) >= 20.0


def test_over_ten_minutes_default_limit(tmp_path):
    """Default limit: a 610 s file is refused, by header (wav) and by decoding just past the limit (m4a)."""
    wav = write_wav16(tmp_path / "long.wav", np.zeros(16000 * 610, np.float32))
    with pytest.raises(InputError, match=r"610\.0 s long"):
        load_audio(wav)
    m4a = tmp_path / "long.m4a"
    _ffmpeg(
        "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "610", "-c:a", "aac", "-b:a", "16k", str(m4a)
    )
    with pytest.raises(InputError, match="at most 600 s"):
        load_audio(m4a)
    assert load_audio(m4a, max_seconds=None).shape[0] >= 16000 * 609
