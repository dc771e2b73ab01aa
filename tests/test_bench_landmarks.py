"""``bench --landmarks``: recorded landmarks replace the detector on machines without it."""

from __future__ import annotations

import numpy as np

from bench.bench import recorded_landmarks
from sadtalker_ext import face


def test_landmarks_are_recorded_then_replayed_per_picture(tmp_path, monkeypatch):
    calls = []

    def detector(rgb, *args, **kwargs):
        calls.append(rgb.shape)
        return np.full((68, 2), float(rgb.mean()), np.float32)

    monkeypatch.setattr(face, "landmarks68", detector)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    b = 255 - a  # same shape, another picture
    path = tmp_path / "lm.npz"
    with recorded_landmarks(path):
        first = [face.landmarks68(a), face.landmarks68(b)]
    assert len(calls) == 2 and path.is_file()
    assert first[0][0, 0] != first[1][0, 0]

    def no_detector(rgb, *args, **kwargs):
        raise AssertionError("the detector ran although the picture was recorded")

    monkeypatch.setattr(face, "landmarks68", no_detector)
    nudged = np.clip(a.astype(int) + rng.integers(-1, 2, a.shape), 0, 255).astype(np.uint8)  # resize rounding
    with recorded_landmarks(path):
        np.testing.assert_array_equal(face.landmarks68(b), first[1])
        np.testing.assert_array_equal(face.landmarks68(nudged), first[0])
    assert face.landmarks68 is no_detector  # restored

    monkeypatch.setattr(face, "landmarks68", detector)
    with recorded_landmarks(path):
        face.landmarks68(np.zeros((64, 48, 3), np.uint8))  # not recorded: detected and added
    assert len(calls) == 3 and len([k for k in np.load(path).files if k.startswith("lm_")]) == 3
