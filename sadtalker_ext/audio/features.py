"""SadTalker's audio features: log-mel spectrogram, frame count, per-frame mel windows, ``AudioFeatures``.

Matches the official ``src/utils/audio.py`` / ``src/utils/hparams.py`` and the audio half of
``src/generate_batch.py:get_data``:

1. 25 video frames per second, 640 samples per frame at 16 kHz: ``T = int(n / 640)``; the waveform is cut
   (or zero-padded) to ``T * 640`` samples.
2. Mel spectrogram (float64): pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]``; STFT (periodic Hann 800, hop 200,
   centred with 400 zeros each side, ``1 + n // 200`` frames); magnitude; Slaney mel filterbank (80 bands,
   55..7600 Hz); ``20 log10(max(1e-5, M)) - 20`` dB; ``clip(8 (S + 100) / 100 - 4, -4, 4)``.
3. Video frame ``i`` sees the 16 mel rows starting at ``int(80 * (i - 2) / 25)``, each clamped into
   ``[0, T_mel - 1]``, as an (80, 16) window.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from sadtalker_ext.audio.blink import blink_ratio
from sadtalker_ext.audio.decode import DEFAULT_MAX_SECONDS, SAMPLE_RATE, load_audio, resample_to_16k, to_mono
from sadtalker_ext.errors import InputError
from sadtalker_ext.options import RAISE_LIMIT_HINT

FPS = 25
"""Video frames per second of SadTalker's output."""

SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
"""16 kHz samples per video frame (640)."""

MEL_WINDOW = 16
"""Mel rows per video-frame window (official ``syncnet_mel_step_size``)."""


@dataclass(frozen=True)
class MelParams:
    """Mel front-end hyperparameters; defaults are the official ``hparams.py`` values."""

    sample_rate: int = 16000
    n_fft: int = 800
    win_size: int = 800
    hop_size: int = 200  # samples (12.5 ms): 80 mel rows per second
    num_mels: int = 80
    fmin: float = 55.0  # Hz
    fmax: float = 7600.0  # Hz
    preemphasis: float = 0.97
    ref_level_db: float = 20.0
    min_level_db: float = -100.0
    max_abs_value: float = 4.0

    @property
    def mel_rows_per_second(self) -> float:
        return self.sample_rate / self.hop_size


def frame_count(num_samples: int, *, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> int:
    """Number of whole video frames in ``num_samples`` samples: ``int(num_samples / (sample_rate / fps))``."""
    return int(int(num_samples) / (sample_rate / fps))


def fit_to_frames(
    wav: np.ndarray, num_frames: int, *, sample_rate: int = SAMPLE_RATE, fps: int = FPS
) -> np.ndarray:
    """(N,) samples cut or zero-padded to exactly ``int(num_frames * sample_rate / fps)`` samples."""
    length = int(num_frames * (sample_rate / fps))
    x = np.asarray(wav)
    if x.shape[0] >= length:
        return x[:length]
    return np.pad(x, (0, length - x.shape[0]))


# Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (6.4x per 27 mels).
_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_slaney_mel(hz: float) -> np.float64:
    f = np.float64(hz)
    if f < _SLANEY_BREAK_HZ:
        return f / _SLANEY_HZ_PER_MEL
    return _SLANEY_BREAK_MEL + np.log(f / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP


def _slaney_mel_to_hz(mels: np.ndarray) -> np.ndarray:
    hz = _SLANEY_HZ_PER_MEL * mels
    upper = mels >= _SLANEY_BREAK_MEL
    hz[upper] = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (mels[upper] - _SLANEY_BREAK_MEL))
    return hz


def mel_basis(params: MelParams = MelParams()) -> np.ndarray:
    """(num_mels, n_fft // 2 + 1) float32 Slaney-normalised triangular mel filterbank.

    Same numbers as ``librosa.filters.mel(sr=, n_fft=, n_mels=, fmin=, fmax=)`` (htk off, norm 'slaney'),
    which the official code uses; written with numpy so the audio path does not import librosa.
    Band ``m`` rises linearly from edge ``m`` to edge ``m + 1`` and falls to edge ``m + 2`` (``num_mels + 2``
    edges equally spaced in mel between fmin and fmax), scaled by ``2 / (edge[m + 2] - edge[m])`` in Hz.
    """
    if params.fmax > params.sample_rate // 2:
        raise ValueError("fmax must not exceed the Nyquist frequency")
    n_bins = params.n_fft // 2 + 1
    bin_hz = np.fft.rfftfreq(n=params.n_fft, d=1.0 / params.sample_rate)  # (bins,)
    edges_mel = np.linspace(
        _hz_to_slaney_mel(params.fmin), _hz_to_slaney_mel(params.fmax), params.num_mels + 2
    )
    edges = _slaney_mel_to_hz(edges_mel)  # (num_mels + 2,) Hz
    widths = np.diff(edges)
    offsets = edges[:, None] - bin_hz[None, :]  # (num_mels + 2, bins): edge minus bin frequency
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    basis = np.zeros((params.num_mels, n_bins), dtype=np.float32)
    basis[:] = np.maximum(0, np.minimum(rising, falling))  # rounded to float32 here ...
    basis *= 2.0 / (edges[2:] - edges[:-2])[:, None]  # ... and again after the area normalisation
    return basis


def periodic_hann(n: int) -> np.ndarray:
    """(n,) float64 periodic ("DFT-even") Hann window, 0.5 + 0.5 cos over n of n + 1 points in [-pi, pi].

    Equals ``scipy.signal.get_window('hann', n, fftbins=True)``, the window librosa's STFT uses.
    """
    if n <= 1:
        return np.ones(max(n, 0), dtype=np.float64)
    angle = np.linspace(-np.pi, np.pi, n + 1)[:n]
    return 0.5 + 0.5 * np.cos(angle)


def _stft_magnitude(y: np.ndarray, params: MelParams, chunk_rows: int = 2048) -> np.ndarray:
    """(n_fft // 2 + 1, 1 + len(y) // hop) float64 |STFT| of float64 ``y`` (librosa's centred, zero-padded STFT).

    Computed ``chunk_rows`` spectrogram rows at a time to bound memory on long audio (same values).
    """
    if params.win_size != params.n_fft:
        raise ValueError("only win_size == n_fft is supported")
    half = params.n_fft // 2
    padded = np.pad(y, (half, half), mode="constant")
    n_rows = 1 + (padded.shape[0] - params.n_fft) // params.hop_size
    frames = np.lib.stride_tricks.sliding_window_view(padded, params.n_fft)[:: params.hop_size][:n_rows]
    window = periodic_hann(params.win_size)
    out = np.empty((n_rows, half + 1), dtype=np.float64)
    for lo in range(0, n_rows, chunk_rows):
        hi = min(lo + chunk_rows, n_rows)
        out[lo:hi] = np.abs(np.fft.rfft(frames[lo:hi] * window, axis=-1))
    return out.T


def mel_spectrogram(wav: np.ndarray, params: MelParams = MelParams()) -> np.ndarray:
    """(N,) 16 kHz samples -> (num_mels, 1 + N // hop) float64 normalised log-mel in [-4, 4].

    Needs at least one sample. Computed in float64 like the official ``audio.melspectrogram``.
    """
    x = np.asarray(wav, dtype=np.float64)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"expected non-empty (N,) samples, got shape {x.shape}")
    emphasised = np.empty_like(x)
    emphasised[0] = x[0]
    emphasised[1:] = x[1:] - params.preemphasis * x[:-1]
    magnitude = _stft_magnitude(emphasised, params)
    mel = np.dot(mel_basis(params), magnitude)
    floor = np.exp(params.min_level_db / 20 * np.log(10))  # the official 1e-5 amplitude floor, same rounding
    db = 20 * np.log10(np.maximum(floor, mel)) - params.ref_level_db
    top = params.max_abs_value
    return np.clip((2 * top) * ((db - params.min_level_db) / (-params.min_level_db)) - top, -top, top)


def window_starts(num_frames: int, *, fps: int = FPS, params: MelParams = MelParams()) -> np.ndarray:
    """(T,) int64 first mel row of each video frame's window: ``int(rows_per_s * (i - 2) / fps)``.

    Python's ``int`` truncates toward zero, so frames 0 and 1 start at negative rows (-6, -3 at 80 rows/s).
    """
    rows_per_s = params.mel_rows_per_second
    return np.array(
        [int(rows_per_s * ((i - 2) / float(fps))) for i in range(int(num_frames))], dtype=np.int64
    )


def mel_window_rows(
    num_frames: int, num_mel_rows: int, *, fps: int = FPS, params: MelParams = MelParams()
) -> np.ndarray:
    """(T, 16) int64 mel rows gathered for each video frame, clamped into ``[0, num_mel_rows - 1]``."""
    if num_mel_rows < 1:
        raise ValueError("the spectrogram has no rows")
    starts = window_starts(num_frames, fps=fps, params=params)
    rows = starts[:, None] + np.arange(MEL_WINDOW, dtype=np.int64)[None, :]
    return np.clip(rows, 0, num_mel_rows - 1)


def mel_windows(
    mel: np.ndarray, num_frames: int, *, fps: int = FPS, params: MelParams = MelParams()
) -> np.ndarray:
    """(num_mels, T_mel) spectrogram -> (T, num_mels, 16) float32 per-video-frame windows."""
    rows = mel_window_rows(num_frames, mel.shape[1], fps=fps, params=params)
    mel32 = np.asarray(mel, dtype=np.float32)  # cast first: same values, half the memory of the gather
    return np.ascontiguousarray(mel32[:, rows].transpose(1, 0, 2))


@dataclass(frozen=True)
class AudioFeatures:
    """What the motion stage needs from the audio (official ``get_data`` audio outputs, batch axis dropped).

    num_frames: T, number of 25 fps video frames.
    indiv_mels: (T, 1, 80, 16) float32 per-frame mel windows (all zeros in idle mode).
    ratio: (T, 1) float32 eye-blink ratio in [0, 1] (zeros when blinking is off).
    wav16k: (T * 640,) float32 16 kHz mono waveform the windows were computed from (cut/padded to whole
        frames; zeros in idle mode) -- the audio track to mux with the T frames.

    The arrays are contiguous and must be treated as read-only (they are not locked, so that
    ``torch.as_tensor`` takes them without a warning).
    """

    num_frames: int
    indiv_mels: np.ndarray
    ratio: np.ndarray
    wav16k: np.ndarray

    def __post_init__(self) -> None:
        t = self.num_frames
        if t < 1:
            raise ValueError(f"num_frames must be >= 1, got {t}")
        if self.indiv_mels.shape[0] != t or self.indiv_mels.shape[1:3] != (1, self.indiv_mels.shape[2]):
            raise ValueError(f"indiv_mels: expected (T={t}, 1, mels, 16), got {self.indiv_mels.shape}")
        if self.indiv_mels.shape[3] != MEL_WINDOW:
            raise ValueError(
                f"indiv_mels: expected windows of {MEL_WINDOW} rows, got {self.indiv_mels.shape}"
            )
        if self.ratio.shape != (t, 1):
            raise ValueError(f"ratio: expected ({t}, 1), got {self.ratio.shape}")
        if self.wav16k.shape != (t * SAMPLES_PER_FRAME,):
            raise ValueError(f"wav16k: expected ({t * SAMPLES_PER_FRAME},), got {self.wav16k.shape}")

    @property
    def seconds(self) -> float:
        """Duration of the clip in seconds (T / 25)."""
        return self.num_frames / FPS


def _blink_track(num_frames: int, use_blink: bool, rng: np.random.Generator | None) -> np.ndarray:
    if not use_blink:
        return np.zeros((num_frames, 1), dtype=np.float32)
    if rng is None:
        raise ValueError("use_blink=True needs a seeded numpy Generator (rng=np.random.default_rng(seed))")
    return blink_ratio(num_frames, rng)


def _contiguous(a: np.ndarray) -> np.ndarray:
    # Left writable on purpose: torch.as_tensor warns on read-only arrays. Callers treat them as read-only.
    return np.ascontiguousarray(a)


def prepare_audio(
    path_or_samples: str | os.PathLike[str] | np.ndarray,
    *,
    use_blink: bool,
    rng: np.random.Generator | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    sample_rate: int = SAMPLE_RATE,
    params: MelParams = MelParams(),
    resampler: str = "kaiser_best",
) -> AudioFeatures:
    """Audio file (any format ``load_audio`` reads) or samples -> ``AudioFeatures``.

    Samples: (N,) mono or (N, C) float in [-1, 1] at ``sample_rate`` Hz (mixed down and resampled to 16 kHz
    like a file). ``rng`` drives the blink schedule and is required when ``use_blink`` is True.
    ``resampler``: how audio that is not 16 kHz is resampled (``sadtalker_ext.audio.decode.RESAMPLERS``;
    default the official ``kaiser_best``).
    Raises ``InputError`` for unreadable audio, audio over ``max_seconds``, or audio shorter than one
    video frame (40 ms).
    """
    if isinstance(path_or_samples, (str, os.PathLike)):
        wav = load_audio(path_or_samples, max_seconds=max_seconds, resampler=resampler)
    else:
        samples = np.asarray(path_or_samples)
        if samples.ndim not in (1, 2) or not np.issubdtype(samples.dtype, np.floating):
            raise InputError(
                "Audio samples must be a (N,) or (N, C) float array in [-1, 1], "
                f"got {samples.dtype} of shape {samples.shape}."
            )
        if samples.size and not np.all(np.isfinite(samples)):
            raise InputError("Audio samples contain NaN or infinity.")
        if max_seconds is not None and samples.shape[0] / sample_rate > max_seconds:
            raise InputError(
                f"Audio is {samples.shape[0] / sample_rate:.1f} s long: at most {max_seconds:g} s of audio is "
                f"accepted. Cut the audio, or {RAISE_LIMIT_HINT}."
            )
        wav = (
            resample_to_16k(to_mono(samples), sample_rate, resampler)
            if samples.shape[0]
            else np.zeros(0, np.float32)
        )
    num_frames = frame_count(wav.shape[0])
    if num_frames < 1:
        raise InputError(
            f"Audio is too short: {wav.shape[0] / SAMPLE_RATE * 1000:.0f} ms gives no video frame "
            f"(at least {1000 // FPS} ms are needed)."
        )
    wav = np.ascontiguousarray(fit_to_frames(wav, num_frames), dtype=np.float32)
    mel = mel_spectrogram(wav, params)
    windows = mel_windows(mel, num_frames, params=params)[:, None]
    return AudioFeatures(
        num_frames=num_frames,
        indiv_mels=_contiguous(windows),
        ratio=_contiguous(_blink_track(num_frames, use_blink, rng)),
        wav16k=_contiguous(wav),
    )


def idle_audio_features(
    seconds: float,
    *,
    use_blink: bool,
    rng: np.random.Generator | None = None,
    max_seconds: float | None = None,
) -> AudioFeatures:
    """Features for ``seconds`` of idle animation (official ``get_data(idlemode=True)``).

    ``T = int(seconds * 25)``; as in the official code the mel windows are all ZEROS (not the mel of
    silence, which would be -4), and the waveform is ``T * 640`` zero samples (a silent track to mux).
    """
    seconds = float(seconds)
    if not np.isfinite(seconds) or seconds < 0:
        raise InputError(f"Idle length must be a non-negative number of seconds, got {seconds}.")
    if max_seconds is not None and seconds > max_seconds:
        raise InputError(
            f"Idle length {seconds:g} s is over the limit of {max_seconds:g} s: {RAISE_LIMIT_HINT}."
        )
    num_frames = int(seconds * FPS)
    if num_frames < 1:
        raise InputError(
            f"Idle length {seconds:g} s gives no video frame (at least {1 / FPS:g} s is needed)."
        )
    return AudioFeatures(
        num_frames=num_frames,
        indiv_mels=_contiguous(np.zeros((num_frames, 1, 80, MEL_WINDOW), dtype=np.float32)),
        ratio=_contiguous(_blink_track(num_frames, use_blink, rng)),
        wav16k=_contiguous(np.zeros(num_frames * SAMPLES_PER_FRAME, dtype=np.float32)),
    )
