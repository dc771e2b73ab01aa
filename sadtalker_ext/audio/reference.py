"""Audio for ``ref_mode='all'``: the reference video drives all motion, so speech is only a soundtrack.

The motion stage still takes :class:`.features.AudioFeatures`; with ``ref_mode='all'`` it ignores them, and
``T`` is the reference video's frame count. :func:`reference_audio` gives all-zero stand-in features of that
length and the track to mux: the reference video's own audio (as the official code), else the driven audio,
else silence.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from ..errors import InputError
from .decode import load_audio
from .features import MEL_WINDOW, SAMPLES_PER_FRAME, AudioFeatures, MelParams


def stand_in_features(num_frames: int) -> AudioFeatures:
    """All-zero features for ``num_frames`` frames: ``(T, 1, 80, 16)`` mels, ``(T, 1)`` ratio, ``(T * 640,)``
    samples. Raises :class:`InputError` when ``num_frames < 1``."""
    if num_frames < 1:
        raise InputError(f"the reference video gives no motion frame ({num_frames})")
    return AudioFeatures(
        num_frames=num_frames,
        indiv_mels=np.zeros((num_frames, 1, MelParams().num_mels, MEL_WINDOW), np.float32),
        ratio=np.zeros((num_frames, 1), np.float32),
        wav16k=np.zeros(num_frames * SAMPLES_PER_FRAME, np.float32),
    )


def reference_soundtrack(
    ref_video: str | os.PathLike[str],
    driven_audio: str | os.PathLike[str] | None,
    num_frames: int,
    *,
    max_seconds: float | None,
) -> np.ndarray:
    """16 kHz float32 mono track for a ``ref_mode='all'`` video: the reference video's audio when it has
    readable audio, else ``driven_audio`` (its errors are raised), else ``num_frames * 640`` zeros.
    The writer trims or pads it to the video's length."""
    with contextlib.suppress(InputError):  # a reference video without (readable) audio is fine
        return load_audio(ref_video, max_seconds=max_seconds)
    if driven_audio:
        return load_audio(driven_audio, max_seconds=max_seconds)
    return np.zeros(num_frames * SAMPLES_PER_FRAME, np.float32)


def reference_audio(
    ref_video: str | os.PathLike[str],
    driven_audio: str | os.PathLike[str] | None,
    num_frames: int,
    *,
    max_seconds: float | None,
) -> tuple[AudioFeatures, np.ndarray]:
    """``(stand-in features, soundtrack)`` for ``ref_mode='all'`` with ``num_frames`` reference frames."""
    features = stand_in_features(num_frames)
    return features, reference_soundtrack(ref_video, driven_audio, num_frames, max_seconds=max_seconds)
