"""``face_index`` on a picture with two faces: the chosen face is kept through every landmark pass
(full picture, then the crop picture) in every preprocess mode, with the dlib detector."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sadtalker_ext.errors import InputError
from sadtalker_ext.face import closest_face, detect_faces
from sadtalker_ext.images import load_rgb
from sadtalker_ext.nets.recon_resnet import FaceReconNet, ReconNetConfig
from sadtalker_ext.options import PREPROCESS_MODES
from sadtalker_ext.preprocess.crop import plan_crop
from sadtalker_ext.preprocess.extract import extract_source
from tests.standin import MEDIA_DIR

pytest.importorskip("dlib")

SIZE = 256


@pytest.fixture(scope="module")
def two_faces() -> np.ndarray:
    """people_0.png (the larger face, right) beside a smaller full3.png (left) on a white canvas."""
    big = load_rgb(MEDIA_DIR / "people_0.png")  # 474 x 474
    small = cv2.resize(load_rgb(MEDIA_DIR / "full3.png"), (256, 384), interpolation=cv2.INTER_AREA)
    canvas = np.full((474, 474 + 300, 3), 255, np.uint8)
    canvas[:, 300:] = big
    canvas[40 : 40 + 384, 20:276] = small
    return canvas


@pytest.fixture(scope="module")
def faces(two_faces):
    found = detect_faces(two_faces, "dlib")
    assert len(found) == 2
    assert found[0].box[0] >= 300 > found[1].box[2]  # index 0: the larger face on the right
    return found


@pytest.fixture(scope="module")
def landmarks_for(tmp_path_factory):
    """The pipeline's own landmark callable for a face index (dlib; no weights needed)."""
    from sadtalker_ext.pipeline import SadTalker

    folder = tmp_path_factory.mktemp("no_weights")
    talker = SadTalker(checkpoint_dir=folder, gfpgan_dir=folder, device="cpu")
    yield lambda index: talker._landmarks_fn("dlib", index)
    talker.unload()


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    cfg = ReconNetConfig(blocks_per_stage=(1, 1, 1, 1), stage_widths=(4, 4, 8, 8), stem_channels=4)
    return FaceReconNet(cfg).eval()


def _mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, float) - np.asarray(b, float), axis=1).mean())


@pytest.mark.parametrize("mode", PREPROCESS_MODES)
def test_each_face_index_is_kept_through_the_crop_pass(two_faces, faces, landmarks_for, tiny_net, mode):
    h, w = two_faces.shape[:2]
    records = {}
    for index in (0, 1):
        chosen, other = faces[index], faces[1 - index]
        rec = extract_source(two_faces, mode, SIZE, landmarks_for(index), tiny_net, "cpu", use_cache=False)
        records[index] = rec
        # the chosen face was found again on the crop picture (no standard-landmark fallback)
        assert rec.landmarks_crop is not None and not rec.used_fallback, (mode, index)
        # ... at the place the chosen face's landmarks map to on the crop picture
        plan = plan_crop(two_faces, mode, lambda _rgb, lm=chosen.lm68: lm)
        expected = plan.to_picture(chosen.lm68, (w, h), SIZE)
        elsewhere = plan.to_picture(other.lm68, (w, h), SIZE)
        near, far = (
            _mean_distance(rec.landmarks_crop, expected),
            _mean_distance(rec.landmarks_crop, elsewhere),
        )
        assert near < 0.05 * SIZE and near < far / 4, (mode, index, near, far)
        if mode == "resize":
            assert rec.crop_info.crop_box is None
            continue
        np.testing.assert_array_equal(rec.landmarks_source, chosen.lm68.astype(np.float64))
        # the crop box (in pixels of the original picture) lies around the chosen face, not the other one
        rw, rh = plan.boxes.rsize
        clx, cly, crx, cry = np.array(rec.crop_info.crop_box, float) * [w / rw, h / rh, w / rw, h / rh]
        lm = chosen.lm68
        assert (
            clx <= lm[:, 0].min()
            and lm[:, 0].max() <= crx
            and cly <= lm[:, 1].min()
            and lm[:, 1].max() <= cry
        )
        ox, oy = other.lm68.mean(axis=0)
        assert not (clx <= ox <= crx and cly <= oy <= cry), (mode, index)
    if mode == "resize":  # the same squashed picture, but each index's face drives the coefficients
        assert _mean_distance(records[0].landmarks_crop, records[1].landmarks_crop) > 0.1 * SIZE
        assert not np.array_equal(records[0].coeff_3dmm, records[1].coeff_3dmm)
    else:
        assert not np.array_equal(records[0].crop_picture, records[1].crop_picture)


@pytest.mark.parametrize("mode", PREPROCESS_MODES)
def test_face_index_out_of_range_is_a_clear_error(two_faces, faces, landmarks_for, tiny_net, mode):
    with pytest.raises(InputError, match=r"face index 2 was asked for, but only 2 face\(s\) were found"):
        extract_source(two_faces, mode, SIZE, landmarks_for(2), tiny_net, "cpu", use_cache=False)


def test_crop_pass_does_not_take_another_face(faces):
    """The crop pass takes the face at the expected landmarks, not merely the largest or the first."""
    assert closest_face(faces, faces[1].lm68) is faces[1]
    assert closest_face(faces, faces[0].lm68 + 3.0) is faces[0]
    assert closest_face(faces, faces[0].lm68 + 1000.0) is None  # the chosen face is not on this picture


def test_pipeline_animates_the_chosen_face(two_faces, faces, tmp_path):
    """Through ``SadTalker.prepare`` (stand-in weights, dlib): index 1 works and drives the crop."""
    from PIL import Image

    from sadtalker_ext.options import GenerationOptions
    from sadtalker_ext.pipeline import SadTalker
    from sadtalker_ext.video import VideoWriter
    from tests import standin

    picture = tmp_path / "two_faces.png"
    Image.fromarray(two_faces).save(picture)
    folder = standin.write_reduced_checkpoints(tmp_path / "ckpt", seed=0, motion=standin.motion_tensors(0))
    talker = SadTalker(checkpoint_dir=folder, gfpgan_dir=tmp_path / "gf", device="cpu")
    try:
        for index in (0, 1):
            options = GenerationOptions(
                source=str(picture), idle_seconds=0.2, face_detector="dlib", face_index=index, seed=1
            )
            prep = talker.prepare(options)
            np.testing.assert_array_equal(prep.source.landmarks_source, faces[index].lm68.astype(np.float64))
            assert prep.source.landmarks_crop is not None and not prep.source.used_fallback
        with pytest.raises(InputError, match=r"face index 2 was asked for, but only 2 face\(s\)"):
            talker.prepare(options.replace(face_index=2))
        # the index picks a face of the picture; a one-face reference video still drives the pose
        video = tmp_path / "one_face.mp4"
        one_face = load_rgb(MEDIA_DIR / "people_0.png")
        with VideoWriter(video, num_frames=3, sidecar=False) as writer:
            for i in range(3):
                writer.write(np.roll(one_face, 2 * i, axis=1))
            writer.finish()
        stages: list[tuple[str, int, int]] = []
        prep = talker.prepare(
            options.replace(face_index=1, ref_video=str(video), ref_mode="pose"),
            progress=lambda stage, done, total: stages.append((stage, done, total)),
        )
        assert ("reference", 3, 3) in stages
        np.testing.assert_array_equal(prep.source.landmarks_source, faces[1].lm68.astype(np.float64))
    finally:
        talker.unload()
