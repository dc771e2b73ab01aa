"""Audio for ``ref_mode='all'`` (:mod:`sadtalker_ext.audio.reference`): stand-in features as long as the
reference video, and the soundtrack: the video's own audio, else the driven audio, else silence."""

from __future__ import annotations

import numpy as np
import pytest

from sadtalker_ext.audio.decode import load_audio
from sadtalker_ext.audio.features import MEL_WINDOW, SAMPLES_PER_FRAME
from sadtalker_ext.audio.reference import reference_audio, reference_soundtrack, stand_in_features
from sadtalker_ext.errors import InputError
from tests.standin import SHARED

MEDIA = SHARED / "media"
SPEECH = MEDIA / "RD_Radio31_000.wav"
OTHER_SPEECH = MEDIA / "RD_Radio34_002.wav"
NO_AUDIO = MEDIA / "full3.png"
"""A file without an audio track (a reference video may be silent)."""


def test_stand_in_features_are_zeros_of_the_reference_length():
    f = stand_in_features(7)
    assert f.num_frames == 7
    assert f.indiv_mels.shape == (7, 1, 80, MEL_WINDOW) and f.ratio.shape == (7, 1)
    assert f.wav16k.shape == (7 * SAMPLES_PER_FRAME,)
    assert not (f.indiv_mels.any() or f.ratio.any() or f.wav16k.any())


def test_stand_in_features_refuse_no_frames():
    with pytest.raises(InputError, match="no motion frame"):
        stand_in_features(0)


def test_soundtrack_is_the_reference_videos_audio_first():
    track = reference_soundtrack(SPEECH, str(OTHER_SPEECH), 5, max_seconds=600)
    np.testing.assert_array_equal(track, load_audio(SPEECH))


def test_soundtrack_falls_back_to_the_driven_audio_then_silence():
    np.testing.assert_array_equal(
        reference_soundtrack(NO_AUDIO, str(OTHER_SPEECH), 5, max_seconds=600), load_audio(OTHER_SPEECH)
    )
    silent = reference_soundtrack(NO_AUDIO, None, 5, max_seconds=600)
    assert silent.dtype == np.float32 and silent.shape == (5 * SAMPLES_PER_FRAME,) and not silent.any()


def test_a_bad_driven_audio_is_reported():
    with pytest.raises(InputError):
        reference_soundtrack(NO_AUDIO, str(NO_AUDIO), 5, max_seconds=600)
    with pytest.raises(InputError, match="at most 1 s"):
        reference_soundtrack(NO_AUDIO, str(SPEECH), 5, max_seconds=1)


def test_reference_audio_pairs_both():
    features, track = reference_audio(NO_AUDIO, None, 3, max_seconds=600)
    assert features.num_frames == 3 and track.shape == (3 * SAMPLES_PER_FRAME,)
