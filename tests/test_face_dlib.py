"""dlib face backend: real portraits, and the official reference landmarks reproduced exactly."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from sadtalker_ext.errors import InputError
from sadtalker_ext.face import detect_faces, dlib_backend, landmarks68
from sadtalker_ext.images import load_rgb
from tests.conftest import vector_params
from tests.standin import MEDIA_DIR

pytest.importorskip("dlib")

PORTRAITS = ["people_0.png", "full3.png", "generated_portrait.jpg"]


@pytest.fixture(scope="module")
def pictures() -> dict[str, np.ndarray]:
    return {name: load_rgb(MEDIA_DIR / name) for name in PORTRAITS}


@pytest.mark.parametrize("name", PORTRAITS)
def test_portrait_face_found(pictures, name):
    rgb = pictures[name]
    h, w = rgb.shape[:2]
    faces = detect_faces(rgb, "dlib")
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face.box
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert 0.15 * min(w, h) < face.width < 0.9 * w and 0.15 * min(w, h) < face.height < 0.9 * h
    lm = face.lm68
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    # landmarks sit around the box: eyes above the nose tip, nose tip above the mouth, left eye left of right eye
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    assert eye_l[0] < eye_r[0]
    assert max(eye_l[1], eye_r[1]) < lm[33, 1] < lm[48:68, 1].mean()
    assert (lm[:, 0] > x1 - 0.3 * face.width).all() and (lm[:, 0] < x2 + 0.3 * face.width).all()
    np.testing.assert_array_equal(landmarks68(rgb, "dlib"), lm)


@pytest.mark.parametrize("path", vector_params("e2e_*.npz"))
def test_e2e_landmarks_reproduced(path):
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(landmarks68(z["input_image_rgb"], "dlib"), z["lm68_orig"])
        np.testing.assert_array_equal(landmarks68(z["pic256_rgb"], "dlib"), z["lm68_pic256"])


@pytest.mark.parametrize("path", vector_params("prep_golden_*.npz"))
def test_prep_landmarks_reproduced(path):
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(landmarks68(z["input_image_rgb"], "dlib"), z["lm68_orig"])
        modes = [k[: -len("_lm68_pic256")] for k in z.files if k.endswith("_lm68_pic256")]
        assert modes
        for mode in modes:
            expect = z[f"{mode}_lm68_pic256"]
            got = landmarks68(z[f"{mode}_pic256_rgb"], "dlib")
            if np.all(expect == -1):  # the official run found no face on this crop
                assert got is None, mode
            else:
                np.testing.assert_array_equal(got, expect, err_msg=mode)


def test_several_faces_sorted_and_indexed(pictures):
    big = pictures["people_0.png"]  # 474 x 474
    small = cv2.resize(pictures["full3.png"], (256, 384), interpolation=cv2.INTER_AREA)
    canvas = np.full((474, 474 + 300, 3), 255, np.uint8)
    canvas[:, 300:] = big
    canvas[40 : 40 + 384, 20:276] = small
    faces = detect_faces(canvas, "dlib")
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].box[0] >= 300 and faces[1].box[2] <= 300
    np.testing.assert_array_equal(landmarks68(canvas, "dlib", face_index=1), faces[1].lm68)
    with pytest.raises(InputError, match=r"face index 2 .* only 2 face"):
        landmarks68(canvas, "dlib", face_index=2)
    by_score = detect_faces(canvas, "dlib", order="score")
    assert by_score[0].score >= by_score[1].score


def test_no_face_returns_none():
    blank = np.full((200, 200, 3), 128, np.uint8)
    assert detect_faces(blank, "dlib") == []
    assert landmarks68(blank, "dlib") is None
    assert landmarks68(blank, "dlib", face_index=3) is None


def test_large_picture_detected_on_downscaled_copy(pictures):
    rgb = pictures["people_0.png"]
    ref = detect_faces(rgb, "dlib")[0]
    big = cv2.resize(rgb, (1896, 1896), interpolation=cv2.INTER_CUBIC)  # 4x
    face = detect_faces(big, "dlib", max_side=600)[0]
    assert np.allclose(np.array(face.box) / 4, ref.box, atol=12)
    assert np.abs(face.lm68 / 4 - ref.lm68).max() < 10  # landmarks fitted at full resolution


def test_missing_dlib_data(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(InputError, match="pip install face-recognition-models"):
        dlib_backend.predictor_path(tmp_path)
    (tmp_path / dlib_backend.PREDICTOR_FILE).write_bytes(b"x")
    assert dlib_backend.predictor_path(tmp_path) == tmp_path / dlib_backend.PREDICTOR_FILE


def test_bad_input():
    with pytest.raises(InputError, match="uint8 RGB"):
        detect_faces(np.zeros((50, 50), np.uint8), "dlib")
    with pytest.raises(InputError, match="unknown face backend"):
        detect_faces(np.zeros((50, 50, 3), np.uint8), "mtcnn")
