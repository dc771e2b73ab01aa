"""Unit behaviour of face preprocessing: input checks, no-face fallbacks, caching, video extraction,
streaming paste-back and the reconstruction net's layout. Synthetic pictures and landmarks only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sadtalker_ext.errors import CheckpointError, InputError
from sadtalker_ext.nets.recon_resnet import COEFF_LAYOUT, FaceReconNet, ReconNetConfig, split_coefficients
from sadtalker_ext.preprocess.align import (
    align_picture,
    fallback_landmarks,
    landmarks_for_alignment,
    load_standard_landmarks,
)
from sadtalker_ext.preprocess.crop import (
    CropInfo,
    check_landmarks,
    check_rgb,
    face_boxes,
    plan_crop,
)
from sadtalker_ext.preprocess.extract import (
    ExtractionCache,
    extract_source,
    extract_video,
    frame_coefficients,
    load_recon_net,
)
from sadtalker_ext.preprocess.paste import PasteBack, aspect_resize, paste_box, paste_frames
from tests import standin


def synthetic_landmarks(cx: float, cy: float, scale: float = 1.0) -> np.ndarray:
    """A plausible upright 68-point face centred at (cx, cy); eye distance about 40 * scale pixels."""
    rng = np.random.default_rng(3)
    lm = np.stack([cx + rng.uniform(-30, 30, 68) * scale, cy + rng.uniform(-30, 40, 68) * scale], axis=1)
    ring = np.array([[-6, 0], [-3, -3], [3, -3], [6, 0], [3, 3], [-3, 3]], dtype=np.float64) * scale
    lm[36:42] = np.array([cx - 20 * scale, cy - 10 * scale]) + ring
    lm[42:48] = np.array([cx + 20 * scale, cy - 10 * scale]) + ring
    lm[30] = [cx, cy + 8 * scale]
    lm[48] = [cx - 16 * scale, cy + 26 * scale]
    lm[54] = [cx + 16 * scale, cy + 26 * scale]
    return lm


def synthetic_picture(h: int = 240, w: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=-1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


class CountingLandmarks:
    """Returns ``full`` for pictures of the full size and ``crop`` (may be None) for anything else."""

    def __init__(self, full_shape, full, crop):
        self.full_shape, self.full, self.crop = tuple(full_shape), full, crop
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        if image.shape == self.full_shape:
            return None if self.full is None else self.full.copy()
        return None if self.crop is None else self.crop.copy()


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    cfg = ReconNetConfig(blocks_per_stage=(1, 1, 1, 1), stage_widths=(4, 4, 8, 8), stem_channels=4)
    return FaceReconNet(cfg).eval()


# ----------------------------------------------------------------------------------------------- inputs
@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10, 3), np.float32),
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((1, 10, 3), np.uint8),
        [[1, 2, 3]],
    ],
)
def test_check_rgb_rejects_bad_pictures(bad):
    with pytest.raises(InputError):
        check_rgb(bad)


def test_plan_crop_refuses_an_unknown_mode():
    with pytest.raises(InputError, match="unknown preprocess mode 'bogus'"):
        plan_crop(synthetic_picture(), "bogus", lambda im: None)


def test_check_landmarks_conventions():
    assert check_landmarks(None) is None
    assert check_landmarks(-np.ones((68, 2))) is None
    with pytest.raises(InputError):
        check_landmarks(np.zeros((5, 2)))
    bad = synthetic_landmarks(100, 100)
    bad[3, 0] = np.nan
    with pytest.raises(InputError):
        check_landmarks(bad)
    out = check_landmarks(synthetic_landmarks(100, 100).astype(np.float32))
    assert out.dtype == np.float64 and out.shape == (68, 2)


def test_extract_source_rejects_bad_size_and_missing_detector(tiny_net):
    pic = synthetic_picture()
    with pytest.raises(InputError):
        extract_source(pic, "crop", 0, lambda im: None, tiny_net, "cpu", use_cache=False)
    with pytest.raises(InputError):
        extract_source(pic, "crop", 256, None, tiny_net, "cpu", use_cache=False)


# ----------------------------------------------------------------------------------------------- geometry
def test_face_boxes_invariants():
    w, h = 200, 240
    boxes = face_boxes(synthetic_landmarks(100, 110), (w, h))
    clx, cly, crx, cry = boxes.crop_box
    assert 0 <= clx < crx <= w and 0 <= cly < cry <= h
    lx, ly, rx, ry = boxes.quad_box
    assert 0 <= lx < rx <= w and 0 <= ly < ry
    assert ry <= w  # the official bottom clamp uses the picture width
    info = boxes.crop_info()
    assert info.size_wh == (int(rx) - int(lx), int(ry) - int(ly))


def test_face_boxes_shrink_for_huge_faces():
    w, h = 6000, 6000
    boxes = face_boxes(synthetic_landmarks(3000, 3000, scale=40.0), (w, h))
    quad = np.asarray(boxes.quad)
    side = np.hypot(*(quad[3] - quad[0]))  # the square's side, after shrinking
    shrink = round(w / boxes.rsize[0])
    assert shrink > 1
    assert boxes.rsize == (round(w / shrink), round(h / shrink))
    assert side < 2 * 512 * 2  # shrunk below the threshold that triggered it
    assert boxes.crop_box[2] <= boxes.rsize[0] and boxes.crop_box[3] <= boxes.rsize[1]


def test_no_face_on_source_picture_is_an_input_error():
    with pytest.raises(InputError, match="no face"):
        plan_crop(synthetic_picture(), "crop", lambda im: None)
    with pytest.raises(InputError, match="no face"):
        plan_crop(synthetic_picture(), "full", lambda im: -np.ones((68, 2)))


def test_resize_mode_needs_no_landmarks():
    pic = synthetic_picture()
    plan = plan_crop(pic, "resize", None)
    assert plan.crop_info.as_tuple() == ((200, 240), None, None)
    assert plan.picture(pic, 64).shape == (64, 64, 3)


# ----------------------------------------------------------------------------------------------- alignment
def test_fallback_landmarks_follow_the_standard_points():
    std = load_standard_landmarks()
    lm, used = landmarks_for_alignment(None, std, 256, 256)
    assert used and lm.shape == (5, 2) and lm.dtype == np.float32
    np.testing.assert_allclose(lm, (std[:, :2] + 1) / 2 * 256, rtol=1e-6)
    flipped, used = landmarks_for_alignment(synthetic_landmarks(128, 128), std, 256, 256)
    assert not used
    np.testing.assert_allclose(flipped[:, 1], 255 - synthetic_landmarks(128, 128)[:, 1])


def test_alignment_of_the_standard_face_is_exact():
    """Points that are an exact affine image of the standard x, y fit with zero residual: the scale is
    102 / (pixels per unit) and the points land on ``102 * standard_xy + 112`` in the 224 image."""
    std = load_standard_landmarks()
    pts = fallback_landmarks(std, 256, 256).astype(np.float64)
    aligned = align_picture(synthetic_picture(256, 256), pts, std)
    assert aligned.image.shape == (224, 224, 3) and aligned.image.dtype == np.uint8
    w0, h0, s, tx, ty = aligned.trans_params
    assert (w0, h0) == (256, 256)
    np.testing.assert_allclose([s, tx, ty], [102 / 128, 128, 128], rtol=1e-5)
    # up to the int truncation of the resized size (half a pixel after halving)
    np.testing.assert_allclose(aligned.landmarks, 102 * std[:, :2].astype(np.float64) + 112, atol=0.501)


def test_standard_landmarks_file_errors(tmp_path):
    bad = tmp_path / "lm.json"
    bad.write_text(json.dumps({"points": [[0, 0, 0]]}))
    with pytest.raises(InputError):
        load_standard_landmarks(bad)
    with pytest.raises(InputError):
        load_standard_landmarks(tmp_path / "missing.json")


# ----------------------------------------------------------------------------------------------- extraction
def test_no_face_on_crop_uses_the_standard_fallback(tiny_net):
    pic = synthetic_picture()
    lm = synthetic_landmarks(100, 110)
    rec_none = extract_source(
        pic, "crop", 64, CountingLandmarks(pic.shape, lm, None), tiny_net, "cpu", use_cache=False
    )
    rec_neg = extract_source(
        pic, "crop", 64, CountingLandmarks(pic.shape, lm, -np.ones((68, 2))), tiny_net, "cpu", use_cache=False
    )
    assert rec_none.used_fallback and rec_neg.used_fallback
    assert rec_none.landmarks_crop is None
    np.testing.assert_array_equal(rec_none.coeff_3dmm, rec_neg.coeff_3dmm)
    std = load_standard_landmarks()
    direct = frame_coefficients(rec_none.crop_picture, None, tiny_net, "cpu", torch.float32, std)
    np.testing.assert_array_equal(direct.coeff_3dmm[None], rec_none.coeff_3dmm)
    rec_face = extract_source(
        pic,
        "crop",
        64,
        CountingLandmarks(pic.shape, lm, synthetic_landmarks(32, 30, 0.3)),
        tiny_net,
        "cpu",
        use_cache=False,
    )
    assert not rec_face.used_fallback
    assert not np.array_equal(rec_face.trans_params, rec_none.trans_params)


def test_source_record_layout(tiny_net):
    pic = synthetic_picture()
    det = CountingLandmarks(pic.shape, synthetic_landmarks(100, 110), synthetic_landmarks(32, 30, 0.3))
    for mode, channels in (("crop", 70), ("extfull", 73), ("resize", 70)):
        rec = extract_source(pic, mode, 64, det, tiny_net, "cpu", use_cache=False)
        assert rec.crop_picture.shape == (64, 64, 3)
        assert rec.coeff_3dmm.shape == (1, 73) and rec.full_3dmm.shape == (1, 257)
        assert rec.first_coeff.shape == (1, channels) and rec.exp_pose.shape == (1, 70)
        full = rec.full_3dmm[0]
        np.testing.assert_array_equal(rec.coeff_3dmm[0, :64], full[80:144])
        np.testing.assert_array_equal(rec.coeff_3dmm[0, 64:67], full[224:227])
        np.testing.assert_array_equal(rec.coeff_3dmm[0, 67:70], full[254:257])
        np.testing.assert_array_equal(rec.coeff_3dmm[0, 70:], rec.trans_params[2:].astype(np.float32))
        assert not rec.crop_picture.flags.writeable and not rec.coeff_3dmm.flags.writeable
        with pytest.raises(AttributeError):
            rec.mode = "full"


def test_extraction_cache(tiny_net):
    pic = synthetic_picture()
    det = CountingLandmarks(pic.shape, synthetic_landmarks(100, 110), synthetic_landmarks(32, 30, 0.3))
    cache = ExtractionCache(maxsize=2)
    first = extract_source(pic, "crop", 64, det, tiny_net, "cpu", cache=cache)
    calls = det.calls
    assert extract_source(pic.copy(), "crop", 64, det, tiny_net, "cpu", cache=cache) is first
    assert det.calls == calls
    other = extract_source(pic, "full", 64, det, tiny_net, "cpu", cache=cache)
    assert other is not first and det.calls > calls
    changed = pic.copy()
    changed[0, 0, 0] ^= 1
    extract_source(changed, "crop", 64, det, tiny_net, "cpu", cache=cache)
    assert len(cache) == 2  # LRU bound: the first entry was evicted
    again = extract_source(pic, "crop", 64, det, tiny_net, "cpu", cache=cache)
    assert again is not first
    np.testing.assert_array_equal(again.coeff_3dmm, first.coeff_3dmm)
    torch.manual_seed(1)
    net2 = FaceReconNet(tiny_net.cfg).eval()
    assert extract_source(pic, "crop", 64, det, net2, "cpu", cache=cache) is not again


def test_extract_video_reuses_previous_landmarks_and_streams(tiny_net):
    frames = [synthetic_picture(seed=i) for i in range(3)]
    lm_full = synthetic_landmarks(100, 110)
    crop_lms = [synthetic_landmarks(32, 30, 0.3), None, synthetic_landmarks(33, 31, 0.3)]
    seen = []

    def detector(image):
        if image.shape == frames[0].shape:
            seen.append("full")
            return lm_full
        seen.append("crop")
        return crop_lms[seen.count("crop") - 1]

    consumed = []

    def frame_iter():
        for i, f in enumerate(frames):
            consumed.append(i)
            yield f

    progress = []
    out = extract_video(
        frame_iter(),
        "crop",
        detector,
        tiny_net,
        "cpu",
        size=64,
        progress=lambda d, t: progress.append((d, t)),
        total=3,
    )
    assert seen == ["full", "crop", "crop", "crop"]  # the crop is fixed by the first frame only
    assert out.coeff_3dmm.shape == (3, 73) and out.full_3dmm.shape == (3, 257)
    assert out.fallback_frames == ()
    assert progress == [(1, 3), (2, 3), (3, 3)]
    plan = plan_crop(frames[1], "crop", lambda im: lm_full)
    expect = frame_coefficients(plan.picture(frames[1], 64), crop_lms[0], tiny_net, "cpu", torch.float32)
    np.testing.assert_array_equal(out.coeff_3dmm[1], expect.coeff_3dmm)

    def no_crop_face(image):
        return lm_full if image.shape == frames[0].shape else None

    out2 = extract_video(iter(frames), "extcrop", no_crop_face, tiny_net, "cpu", size=64)
    assert out2.fallback_frames == (0, 1, 2)
    with pytest.raises(InputError):
        extract_video(iter([]), "crop", detector, tiny_net, "cpu")


# ----------------------------------------------------------------------------------------------- paste
def _paste_setup():
    background = synthetic_picture(240, 200, seed=5)
    boxes = face_boxes(synthetic_landmarks(100, 110), (200, 240))
    return background, boxes.crop_info()


def test_paste_is_streaming_and_local():
    background, info = _paste_setup()
    rng = np.random.default_rng(1)
    consumed = []

    def rendered():
        for i in range(4):
            consumed.append(i)
            yield rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)

    stream = paste_frames(rendered(), background, info, "full", 64)
    assert consumed == []
    first = next(stream)
    assert consumed == [0]
    assert first.shape == background.shape and first.dtype == np.uint8
    x1, y1, x2, y2 = paste_box(info, extended=False)
    outside = np.ones(background.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(first[outside], background[outside])
    assert not np.array_equal(first[y1:y2, x1:x2], background[y1:y2, x1:x2])
    rest = list(stream)
    assert len(rest) == 3 and consumed == [0, 1, 2, 3]


def test_paste_call_equals_resize_then_paste_and_is_channel_symmetric():
    background, info = _paste_setup()
    frame = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for mode in ("full", "extfull"):
        paster = PasteBack(background, info, mode, 64)
        out = paster(frame)
        np.testing.assert_array_equal(out, paster.paste_resized(aspect_resize(frame, info, 64)))
        flipped = PasteBack(background[..., ::-1].copy(), info, mode, 64)(frame[..., ::-1].copy())
        np.testing.assert_array_equal(flipped[..., ::-1], out)
    assert paste_box(info, True) == info.crop_box


def test_aspect_resize_shape():
    info = CropInfo((436, 455), (0, 78, 478, 616), (0.0, 41.8, 436.8, 496.8))
    assert aspect_resize(np.zeros((256, 256, 3), np.uint8), info, 256).shape == (int(256 * 455 / 436), 256, 3)


def test_paste_rejects_bad_modes_and_boxes():
    background, info = _paste_setup()
    with pytest.raises(InputError):
        PasteBack(background, info, "crop", 64)
    with pytest.raises(InputError):
        PasteBack(background, CropInfo((200, 240), None, None), "full", 64)
    far = CropInfo(info.size_wh, (500, 500, 700, 700), info.quad_box)
    with pytest.raises(InputError):
        PasteBack(background, far, "extfull", 64)
    with pytest.raises(InputError):
        PasteBack(background, info, "full", 64)(np.zeros((64, 64), np.uint8))


# ----------------------------------------------------------------------------------------------- recon net
def test_recon_net_keys_match_the_official_file():
    manifest = standin.manifest(standin.FILES[0])
    official = {
        k.removeprefix("face_3drecon."): shape
        for k, (shape, _) in manifest.items()
        if k.startswith("face_3drecon.")
    }
    ours = {k: tuple(v.shape) for k, v in FaceReconNet().state_dict().items()}
    assert ours.keys() == official.keys()
    assert all(ours[k] == tuple(official[k]) for k in ours)


def test_recon_net_output_layout(tiny_net):
    with torch.inference_mode():
        out = tiny_net(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 257)
    parts = split_coefficients(out)
    assert sum(p.shape[1] for p in parts.values()) == 257
    assert [
        COEFF_LAYOUT[k][1] - COEFF_LAYOUT[k][0] for k in ("id", "exp", "tex", "angle", "gamma", "trans")
    ] == [
        80,
        64,
        80,
        3,
        27,
        3,
    ]


def test_load_recon_net_strict_and_cached(standins, tmp_path):
    folder = standins.folder(0, names=(standin.FILES[0],))
    path = folder / standin.FILES[0]
    net = load_recon_net(path, "cpu")
    assert load_recon_net(path, "cpu") is net
    assert not net.training
    from safetensors.numpy import save_file

    tensors = standin.standin_tensors(
        standin.FILES[0],
        0,
        keys={
            k
            for k in standin.manifest(standin.FILES[0])
            if k.startswith("face_3drecon.") and "final_layers.6" not in k
        },
    )
    broken = tmp_path / standin.FILES[0]
    save_file(tensors, str(broken))
    with pytest.raises(CheckpointError, match="missing"):
        load_recon_net(broken, "cpu")
