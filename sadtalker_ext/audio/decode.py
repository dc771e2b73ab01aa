"""Decode any audio (or the audio track of a video) to 16 kHz mono float32, and write 16-bit WAV files.

Two readers, two resamplers:

* Files that libsndfile (``soundfile``) opens -- WAV of any bit depth incl. float, FLAC, OGG/Vorbis, MP3,
  AIFF, ... -- are read with ``soundfile`` exactly as ``librosa.load`` reads them (float32, channels
  averaged to mono). A file that is already 16 kHz therefore yields bit for bit the samples the official
  SadTalker (``librosa.core.load(path, sr=16000)``) works on: for 16-bit PCM that is ``mean(int16) / 32768``.
* Everything else that the bundled ffmpeg of ``imageio-ffmpeg`` decodes (m4a/aac, opus, video containers,
  ...) is decoded by ffmpeg (first audio stream, native rate and channels) to a temporary float32 WAV and
  then treated the same way.

Resampler (other rates), followed by trimming/zero-padding to ``ceil(n * 16000 / rate)`` samples:

* ``"kaiser_best"`` (default): resampy's ``kaiser_best`` band-limited sinc filter
  (:mod:`sadtalker_ext.audio.resample`), what the official code's librosa 0.9.2 uses, so the 16 kHz
  samples match the official ones (within about 1e-6);
* ``"soxr"``: soxr in its "HQ" quality, what ``librosa.load(path, sr=16000)`` does from librosa 0.10 on
  (``res_type='soxr_hq'``); faster, but up to about 0.1 away from the official samples.

16 kHz input is never resampled, so it is exact either way.
"""

from __future__ import annotations

import logging
import math
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from sadtalker_ext import ffmpeg
from sadtalker_ext.errors import InputError
from sadtalker_ext.ffmpeg import ffmpeg_exe as ffmpeg_exe  # re-exported: where callers found it before
from sadtalker_ext.options import RAISE_LIMIT_HINT

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""Sample rate (Hz) of every waveform this package works on."""

DEFAULT_MAX_SECONDS = 600.0
"""Longest audio accepted by default (10 minutes)."""


def _check_max_seconds(max_seconds: float | None) -> None:
    if max_seconds is not None and not (max_seconds > 0):
        raise ValueError(f"max_seconds must be positive or None, got {max_seconds!r}")


def _too_long(
    seconds: float, max_seconds: float | None, name: str, *, truncated: bool = False
) -> InputError | None:
    if max_seconds is not None and seconds > max_seconds:
        length = "longer than the limit" if truncated else f"{seconds:.1f} s long"
        return InputError(
            f"Audio '{name}' is {length}: at most {max_seconds:g} s of audio is accepted. "
            f"Cut the audio, or {RAISE_LIMIT_HINT}."
        )
    return None


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) float samples -> (N,) float32, the mean over channels (as ``librosa.to_mono``)."""
    x = np.asarray(samples)
    if x.ndim == 1:
        return np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected (N,) or (N, C) samples, got shape {x.shape}")
    if x.shape[1] == 1:
        return np.ascontiguousarray(x[:, 0], dtype=np.float32)
    # librosa averages the float32 samples over the channel axis in float32.
    return np.ascontiguousarray(np.mean(x.astype(np.float32, copy=False), axis=1), dtype=np.float32)


RESAMPLERS = ("kaiser_best", "soxr")
"""Resamplers :func:`resample_to_16k` and :func:`load_audio` accept; the first is the default."""


def resample_to_16k(samples: np.ndarray, sample_rate: int, resampler: str = "kaiser_best") -> np.ndarray:
    """(N,) mono samples at ``sample_rate`` Hz -> (ceil(N * 16000 / sample_rate),) float32 at 16 kHz.

    ``resampler="kaiser_best"`` (default): the official chain, ``librosa.resample(y, orig_sr=sample_rate,
    target_sr=16000)`` under librosa 0.9.2 (resampy ``kaiser_best``). ``"soxr"``: soxr "HQ" + length fix,
    identical to librosa >= 0.10's default ``res_type='soxr_hq'``. 16 kHz input is returned unchanged
    (as float32).
    """
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono (N,) samples, got shape {x.shape}")
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {', '.join(RESAMPLERS)}; got {resampler!r}")
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    if sample_rate == SAMPLE_RATE:
        return x
    if resampler == "kaiser_best":
        from sadtalker_ext.audio.resample import resample_kaiser_best

        return resample_kaiser_best(x, sample_rate, SAMPLE_RATE)
    import soxr

    target_len = math.ceil(x.shape[0] * (float(SAMPLE_RATE) / sample_rate))
    y = np.asarray(soxr.resample(x, sample_rate, SAMPLE_RATE, quality="soxr_hq"), dtype=np.float32)
    if y.shape[0] > target_len:
        y = y[:target_len]
    elif y.shape[0] < target_len:
        y = np.pad(y, (0, target_len - y.shape[0]))
    return np.ascontiguousarray(y, dtype=np.float32)


def _read_soundfile(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int] | None:
    """(samples (N, C) float32, rate) via libsndfile, or None when libsndfile cannot open the file."""
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            rate = int(f.samplerate)
            if f.frames > 0 and rate > 0:
                err = _too_long(f.frames / rate, max_seconds, path.name)
                if err is not None:
                    raise err
            data = f.read(dtype="float32", always_2d=True)
    except InputError:
        raise
    except (RuntimeError, sf.SoundFileError, OSError, ValueError) as exc:
        log.debug("soundfile cannot read %s (%s); using ffmpeg", path, exc)
        return None
    return data, rate


def _read_ffmpeg(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """(samples (N, C) float32, rate) of the first audio stream, decoded by the bundled ffmpeg."""
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="sadtalker_audio_") as tmp:
        out = Path(tmp) / "decoded.wav"
        # "file:" + absolute path: a name such as "http:x" or "concat:a|b" is never taken for a protocol;
        # the whitelist keeps playlists/concat lists inside the file from reaching anything but local files.
        source = "file:" + str(path.resolve())
        args = ["-loglevel", "error", "-protocol_whitelist", "file", "-i", source]
        args += ["-map", "0:a:0", "-vn", "-sn", "-dn"]
        if max_seconds is not None:
            # Decode a little past the limit only: enough to tell "too long" without decoding hours.
            args += ["-t", f"{max_seconds + 1.0:.3f}"]
        args += ["-c:a", "pcm_f32le", "-rf64", "auto", "-f", "wav", "-y", str(out)]
        try:
            ffmpeg.run(args, kind="audio", what=f"decoding audio '{path.name}'", stdout=subprocess.DEVNULL)
        except ffmpeg.FFmpegError as exc:
            if exc.returncode is None:  # not found, could not start, timed out: the message says which
                raise InputError(str(exc)) from exc
            if "matches no streams" in exc.stderr or "does not contain any stream" in exc.stderr:
                raise InputError(f"'{path.name}' has no audio track.") from exc
            raise InputError(
                f"Cannot read audio from '{path.name}' (not a supported audio/video file): {exc.last_line}"
            ) from exc
        if not out.is_file():
            raise InputError(f"Cannot read audio from '{path.name}': ffmpeg wrote no audio.")
        try:
            data, rate = sf.read(str(out), dtype="float32", always_2d=True)
        except (RuntimeError, sf.SoundFileError) as exc:
            raise InputError(f"Cannot read the audio decoded from '{path.name}': {exc}") from exc
    return data, int(rate)


def load_audio(
    path: str | Path,
    *,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    resampler: str = "kaiser_best",
) -> np.ndarray:
    """Decode ``path`` to (N,) float32 mono samples at 16 kHz (see the module docstring for the rules).

    ``resampler``: one of :data:`RESAMPLERS` (used only when the file is not 16 kHz). Raises ``InputError``
    when the file is missing or unreadable, has no audio track or no samples, or is longer than
    ``max_seconds`` seconds (``None``: no limit).
    """
    _check_max_seconds(max_seconds)
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {', '.join(RESAMPLERS)}; got {resampler!r}")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"Audio file not found: '{p}'.")
    if p.stat().st_size == 0:
        raise InputError(
            f"Audio '{p.name}' is empty (0 bytes); the upload or copy probably failed. Choose the file again."
        )
    got = _read_soundfile(p, max_seconds)
    via_ffmpeg = got is None
    if got is None:
        got = _read_ffmpeg(p, max_seconds)
    data, rate = got
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise InputError(f"Audio '{p.name}' contains no samples.")
    # ffmpeg stops decoding just past the limit, so its length is a lower bound there.
    err = _too_long(data.shape[0] / rate, max_seconds, p.name, truncated=via_ffmpeg)
    if err is not None:
        raise err
    return resample_to_16k(to_mono(data), rate, resampler)


def write_wav16(path: str | Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write (N,) or (N, C) float samples in [-1, 1] as a 16-bit PCM WAV; returns the path.

    Conversion: ``round(x * 32768)`` clipped to [-32768, 32767], the inverse of the ``int16 / 32768``
    reading rule, so samples that came from a 16-bit file are written back unchanged.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"expected (N,) or (N, C) samples, got shape {np.shape(samples)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("samples contain NaN or infinity")
    pcm = np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2")
    p = Path(path)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(int(x.shape[1]))
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(np.ascontiguousarray(pcm).tobytes())
    return p
