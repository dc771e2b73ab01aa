# ruff: noqa: F401, F811  (the e2e fixtures are imported and used by name)
"""The pipeline with the official enhancer arrangement: chosen by default when its weight files are present,
run on every final frame, and the video comes out twice as large.

Reuses the tiny-width renderer stand-ins of :mod:`tests.test_pipeline_e2e`. The gfpgan/weights folder holds a
reduced GFPGAN (64 px faces), a reduced ParseNet and a full-size RetinaFace stand-in whose class head scores
every anchor 0.5 (below the 0.97 threshold: no face), all in the official file layouts.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sadtalker_ext import enhance_paste as ep
from sadtalker_ext.enhance import GFPGAN_FILE, REALESRGAN_FILE, load_gfpgan, load_realesrgan
from sadtalker_ext.face.retinaface_backend import DETECTOR_FILE
from sadtalker_ext.nets.gfpgan import GFPGANv1Clean
from sadtalker_ext.nets.parsenet import ParseNet, ParseNetConfig
from sadtalker_ext.nets.retinaface import RetinaFaceR50
from sadtalker_ext.nets.rrdbnet import RRDBNet
from sadtalker_ext.pipeline import SadTalker
from sadtalker_ext.video import even_size
from sadtalker_ext.video.probe import probe
from tests.enhance_standins import SMALL_GFPGAN, SMALL_RRDB, held_pipeline, save_realesrgan
from tests.test_pipeline_e2e import _options, media, tiny_checkpoints, vector

SMALL_PARSE = ParseNetConfig(base_ch=4, min_ch=4, max_ch=8, down_steps=2, up_steps=2, res_depth=1)


@pytest.fixture(scope="module")
def face_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gfpgan_weights_official")
    torch.manual_seed(3)
    gfpgan = GFPGANv1Clean(SMALL_GFPGAN).eval()
    parse = ParseNet(SMALL_PARSE).eval()
    det = RetinaFaceR50().eval()
    with torch.no_grad():
        for p in gfpgan.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for p in parse.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for head in det.ClassHead:  # equal logits: every anchor scores 0.5 < 0.97
            for p in head.parameters():
                p.zero_()
    torch.save({"params_ema": gfpgan.state_dict()}, str(folder / GFPGAN_FILE))
    torch.save(parse.state_dict(), str(folder / ep.PARSENET_FILE))
    torch.save(det.state_dict(), str(folder / DETECTOR_FILE))
    save_realesrgan(RRDBNet(SMALL_RRDB).eval(), folder)
    return folder


@pytest.fixture(scope="module")
def talker(tiny_checkpoints, face_dir, tmp_path_factory):
    yield from held_pipeline(tiny_checkpoints, face_dir, tmp_path_factory.mktemp("results"))


def _run(talker, options) -> tuple[object, np.ndarray]:
    """Generate; returns the result and the final frames as they reached the encoder."""
    frames: list[np.ndarray] = []

    def grab(batch: np.ndarray) -> np.ndarray:
        frames.append(batch.copy())
        return batch

    result = talker.generate(options, frame_hook=grab)
    return result, np.concatenate(frames)


def _five_points(vector, height: int) -> np.ndarray:
    """The crop's dlib landmarks as facexlib's five points, in the coordinates of a (height, 256) frame."""
    with np.load(vector["path"], allow_pickle=False) as npz:
        lm = np.asarray(npz["lm68_pic256"], np.float64)
    pts = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
    return pts * (1.0, height / 256.0)


def test_official_arrangement_is_the_default_and_doubles_the_video(
    talker, face_dir, media, vector, tmp_path, monkeypatch
):
    plain, plain_frames = _run(talker, _options(media, tmp_path, "plain.mp4"))
    opts = _options(media, tmp_path, "auto.mp4", enhancer="gfpgan")
    assert opts.enhancer_mode == "auto" and talker.enhancer_mode(opts) == "official"
    auto, auto_frames = _run(talker, opts)
    n, h, w = plain_frames.shape[:3]
    assert (auto.width, auto.height) == (2 * w, 2 * h) == (2 * plain.width, 2 * plain.height)
    info = probe(auto.video_path)
    assert (info.width, info.height) == even_size(2 * w, 2 * h) and info.num_frames == n
    # no face in these frames for the stand-in detector: the official result is the LANCZOS4 x2 frame
    expected = [cv2.resize(f, (2 * w, 2 * h), interpolation=cv2.INTER_LANCZOS4) for f in plain_frames]
    np.testing.assert_array_equal(auto_frames, np.stack(expected))

    # a face (its landmarks given in place of RetinaFace): restored and pasted onto the x2 frame
    points = _five_points(vector, h)
    monkeypatch.setattr(ep, "face_landmarks5", lambda detector, frame, device="cpu": [points])
    _, faced = _run(talker, _options(media, tmp_path, "faced.mp4", enhancer="gfpgan"))
    gfpgan = load_gfpgan(face_dir / GFPGAN_FILE, "cpu", torch.float32)
    parse = ep.load_parsenet(face_dir / ep.PARSENET_FILE, "cpu")
    reference = ep.OfficialFaceEnhancer(
        gfpgan, parse, "cpu", torch.float32, landmarks_fn=lambda f: [points], batch_size=2
    )(plain_frames)
    np.testing.assert_array_equal(faced, reference)
    assert (faced != auto_frames).mean() > 0.05

    # the crop arrangement stays available: same size as without the enhancer
    crop, crop_frames = _run(
        talker, _options(media, tmp_path, "crop.mp4", enhancer="gfpgan", enhancer_mode="crop")
    )
    assert crop_frames.shape == plain_frames.shape and (crop.width, crop.height) == (
        plain.width,
        plain.height,
    )
    assert not np.array_equal(crop_frames, plain_frames)


def test_mode_choice_flag_and_missing_files(tmp_path, tiny_checkpoints, face_dir, media):
    """auto without ParseNet -> crop (GFPGAN alone suffices); official without it -> a message naming it;
    the CLI flag reaches the options."""
    from sadtalker_ext import cli
    from sadtalker_ext.errors import CheckpointError, InputError

    only_gfpgan = tmp_path / "weights"
    only_gfpgan.mkdir()
    (only_gfpgan / GFPGAN_FILE).write_bytes((face_dir / GFPGAN_FILE).read_bytes())
    t = SadTalker(checkpoint_dir=tiny_checkpoints, gfpgan_dir=only_gfpgan, device="cpu")
    auto = _options(media, tmp_path, enhancer="gfpgan")
    assert t.enhancer_mode(auto) == "crop"
    t.check_weights(auto)  # nothing missing for the crop arrangement
    official = auto.replace(enhancer_mode="official")
    with pytest.raises(CheckpointError, match=r"parsing_parsenet\.pth") as err:
        t.check_weights(official)
    assert "detection_Resnet50_Final.pth" in str(err.value) and "--enhancer" in str(err.value)
    assert t.enhancer_mode(auto.replace(enhancer="none")) is None
    with pytest.raises(InputError, match="enhancer_mode"):
        auto.replace(enhancer_mode="paste")

    args = cli.build_parser().parse_args(
        ["--source_image", media["picture"], "--driven_audio", media["cut"](2), "--enhancer", "gfpgan",
         "--enhancer-mode", "crop"]
    )  # fmt: skip
    (job,) = cli.collect_jobs(args)
    assert cli.options_for(job, args).enhancer_mode == "crop"
    default = cli.build_parser().parse_args(["--source_image", media["picture"], "--driven_audio", "x.wav"])
    assert default.enhancer_mode == "auto"


def test_official_arrangement_takes_real_esrgan_as_its_background(talker, face_dir, media, tmp_path):
    """With the background enhancer the official enhancer pastes onto the Real-ESRGAN x2 frame (no face here):
    the video is 2x, not 4x, and every frame is the upscaler's output for the plain frame."""
    from sadtalker_ext.enhance import BackgroundUpscaler

    _, plain = _run(talker, _options(media, tmp_path, "plain_bg.mp4"))
    opts = _options(media, tmp_path, "bg.mp4", enhancer="gfpgan", background_enhancer="realesrgan")
    result, frames = _run(talker, opts)
    n, h, w = plain.shape[:3]
    assert frames.shape == (n, 2 * h, 2 * w, 3) and (result.width, result.height) == (2 * w, 2 * h)
    net = load_realesrgan(face_dir / REALESRGAN_FILE, "cpu", torch.float32)
    expected = BackgroundUpscaler(net, "cpu", torch.float32, tile=400, tile_pad=10, batch_size=2)(plain)
    np.testing.assert_array_equal(frames, expected)
