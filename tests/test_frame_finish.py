"""What rendered face crops go through after the renderer, as moved out of the pipeline into the stages:
the crop geometry at the background upscaler's scale (:meth:`CropInfo.scaled`), the per-frame finish
(:func:`frame_finisher`: aspect resize, paste-back) and the crop enlargement before GFPGAN (:func:`enlarge`)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sadtalker_ext.enhance import enlarge
from sadtalker_ext.errors import InputError
from sadtalker_ext.preprocess.crop import CropInfo
from sadtalker_ext.preprocess.paste import PasteBack, aspect_resize, frame_finisher, paste_box
from tests.test_preprocess_units import synthetic_picture

INFO = CropInfo((57, 61), (10, 20, 150, 170), (5.7, 6.2, 62.9, 67.5))
"""A face box of 57 x 61 (the int quad box) inside a crop box of the 200 x 240 synthetic picture."""


def _rendered(side: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def test_scaled_multiplies_the_whole_pixel_boxes_and_keeps_the_aspect():
    doubled = INFO.scaled(2)
    assert doubled == CropInfo((57, 61), (20, 40, 300, 340), (10.0, 12.0, 124.0, 134.0))
    for extended in (False, True):
        assert paste_box(doubled, extended) == tuple(2 * v for v in paste_box(INFO, extended))
    assert INFO.scaled(3).quad_box_int() == (15, 18, 186, 201)
    assert INFO.scaled(1) is INFO


@pytest.mark.parametrize("scale", [0, -2, 1.5, True, "2"])
def test_scaled_refuses_a_scale_that_is_not_a_whole_number(scale):
    with pytest.raises(InputError, match="crop scale must be a whole number"):
        INFO.scaled(scale)


def test_scaled_refuses_resize_mode_geometry():
    with pytest.raises(InputError, match="resize mode"):
        CropInfo((200, 240), None, None).scaled(2)


@pytest.mark.parametrize("mode", ["crop", "resize", "extcrop"])
def test_finish_without_paste_back_is_the_aspect_resize(mode):
    picture = synthetic_picture()
    finish = frame_finisher(mode, INFO, 64, picture)
    frame = _rendered()
    out = finish(frame)
    assert out.shape == (int(64 * 61 / 57), 64, 3)
    np.testing.assert_array_equal(out, aspect_resize(frame, INFO, 64))


@pytest.mark.parametrize("mode", ["crop", "extcrop"])
def test_finish_at_a_scale_is_refused_where_nothing_is_pasted(mode):
    with pytest.raises(InputError, match="only where they are pasted back"):
        frame_finisher(mode, INFO, 64, synthetic_picture(), scale=2)


@pytest.mark.parametrize("mode", ["full", "extfull"])
def test_finish_pastes_into_the_picture(mode):
    picture = synthetic_picture()
    frame = _rendered()
    out = frame_finisher(mode, INFO, 64, picture)(frame)
    np.testing.assert_array_equal(out, PasteBack(picture, INFO, mode, 64)(frame))


@pytest.mark.parametrize("mode", ["full", "extfull"])
def test_finish_at_twice_the_size_pastes_into_the_doubled_box(mode):
    """The background enhancer's arrangement: the picture upscaled x2, the frame resized to width 2 * size and
    blended at the paste box of the original picture times two; nothing outside that box changes."""
    picture = cv2.resize(synthetic_picture(), (400, 480), interpolation=cv2.INTER_NEAREST)
    frame = _rendered(128)
    out = frame_finisher(mode, INFO, 64, picture, scale=2)(frame)
    assert out.shape == picture.shape
    by_hand = CropInfo((57, 61), (20, 40, 300, 340), (10.0, 12.0, 124.0, 134.0))
    np.testing.assert_array_equal(out, PasteBack(picture, by_hand, mode, 128)(frame))
    x1, y1, x2, y2 = (2 * v for v in paste_box(INFO, mode == "extfull"))
    outside = np.ones(picture.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(out[outside], picture[outside])
    assert np.abs(out[~outside].astype(int) - picture[~outside]).mean() > 10


def test_enlarge_doubles_crops_bilinearly():
    crops = np.stack([_rendered(16, seed) for seed in range(3)])
    assert enlarge(crops, 1) is crops
    big = enlarge(crops, 2)
    assert big.shape == (3, 32, 32, 3) and big.dtype == np.uint8
    flat = np.full((2, 8, 8, 3), 77, np.uint8)
    np.testing.assert_array_equal(enlarge(flat, 3), np.full((2, 24, 24, 3), 77, np.uint8))
    # bilinear: an enlarged smooth ramp averaged back down is the ramp again (within rounding)
    ramp = np.broadcast_to(np.arange(0, 256, 16, dtype=np.uint8)[None, :, None], (16, 16, 3))[None].copy()
    down = cv2.resize(enlarge(ramp, 2)[0], (16, 16), interpolation=cv2.INTER_AREA)
    assert np.abs(down.astype(int) - ramp[0]).max() <= 8


@pytest.mark.parametrize("scale", [0, 1.5, False])
def test_enlarge_refuses_a_bad_scale(scale):
    with pytest.raises(InputError, match="scale must be a whole number"):
        enlarge(np.zeros((1, 4, 4, 3), np.uint8), scale)
