# ruff: noqa: F401, F811  (the e2e fixtures are imported and used by name)
"""The pipeline with its optional enhancers: GFPGAN on the rendered face crops, Real-ESRGAN x2 background.

Reuses the tiny-width renderer stand-ins of :mod:`tests.test_pipeline_e2e` (picture, audio and geometry
from the e2e vector file) and writes reduced GFPGAN / RRDBNet networks in the official file layout
(``{'params_ema': state}``) under the official names into a temporary ``gfpgan/weights`` folder; the
loaders infer the reduced widths from the tensor shapes.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from sadtalker_ext import download as dl
from sadtalker_ext.download import cli as dl_cli
from sadtalker_ext.enhance import (
    GFPGAN_FILE,
    REALESRGAN_FILE,
    BackgroundUpscaler,
    FaceEnhancer,
    load_gfpgan,
    load_realesrgan,
)
from sadtalker_ext.errors import CheckpointError, InputError
from sadtalker_ext.nets.gfpgan import GFPGANv1Clean
from sadtalker_ext.nets.rrdbnet import RRDBNet
from sadtalker_ext.pipeline import SadTalker
from sadtalker_ext.preprocess.crop import CropInfo
from sadtalker_ext.preprocess.paste import PasteBack, aspect_resize
from sadtalker_ext.render.animate import Renderer, source_image_tensor
from sadtalker_ext.video import even_size, read_frames
from tests.enhance_standins import SMALL_GFPGAN, SMALL_RRDB, held_pipeline, save_realesrgan
from tests.test_pipeline_e2e import (
    FPS,
    FRAMES,
    _check_video,
    _expected_size,
    _options,
    media,
    tiny_checkpoints,
    vector,
)


@pytest.fixture(scope="module")
def face_dir(tmp_path_factory):
    """A gfpgan/weights folder with a reduced GFPGAN and a reduced RRDBNet under the official names."""
    folder = tmp_path_factory.mktemp("gfpgan_weights")
    torch.manual_seed(11)
    gfpgan = GFPGANv1Clean(SMALL_GFPGAN).eval()
    rrdb = RRDBNet(SMALL_RRDB).eval()
    with torch.no_grad():
        for p in gfpgan.parameters():  # every tensor matters, the zero-initialised noise strengths too
            p.add_(torch.randn_like(p) * 0.05)
    torch.save({"params_ema": gfpgan.state_dict()}, str(folder / GFPGAN_FILE))
    save_realesrgan(rrdb, folder)
    return folder


@pytest.fixture(scope="module")
def talker(tiny_checkpoints, face_dir, tmp_path_factory):
    yield from held_pipeline(tiny_checkpoints, face_dir, tmp_path_factory.mktemp("results"))


def _upscaler(face_dir) -> BackgroundUpscaler:
    """The upscaler the pipeline documents: tiles of 400 px with 10 px of context."""
    net = load_realesrgan(face_dir / REALESRGAN_FILE, "cpu", torch.float32)
    return BackgroundUpscaler(net, "cpu", torch.float32, tile=400, tile_pad=10)


def _frames(talker, prep, **changes) -> np.ndarray:
    """The final frames of a prepared generation (not encoded); ``changes`` replace fields of ``prep``
    (``face_net=None`` / ``upscaler=None``: the same generation without that enhancer)."""
    return np.concatenate(list(talker.iter_video_frames(dataclasses.replace(prep, **changes))))


def _write(talker, prep):
    """:meth:`SadTalker.write_video` plus the final frames it encoded (seen through ``frame_hook``)."""
    seen = []

    def keep(frames: np.ndarray) -> np.ndarray:
        seen.append(frames.copy())
        return frames

    result = talker.write_video(prep, frame_hook=keep)
    return result, np.concatenate(seen)


def _crops(talker, prep) -> np.ndarray:
    """The renderer's ``(T, S, S, 3)`` uint8 face crops of a prepared generation."""
    renderer = Renderer(prep.renderer_nets, talker.device)
    image = source_image_tensor(prep.source.crop_picture, prep.options.size)
    return np.concatenate(list(renderer.iter_uint8(image, prep.plan)))


def _paste_region(vector, preprocess: str, scale: int = 1) -> np.ndarray:
    """(H*scale, W*scale) bool mask of the paste box of the e2e picture."""
    h, w = vector["input_image_rgb"].shape[:2]
    clx, cly, crx, cry = (int(v) for v in vector["crop_info_crop"])
    lx, ly, rx, ry = (int(v) for v in vector["crop_info_quad"])
    x1, y1, x2, y2 = (
        (clx, cly, crx, cry) if preprocess == "extfull" else (clx + lx, cly + ly, clx + rx, cly + ry)
    )
    inside = np.zeros((h * scale, w * scale), bool)
    inside[y1 * scale : y2 * scale, x1 * scale : x2 * scale] = True
    return inside


# ----------------------------------------------------------------------------------------- face enhancer
def test_gfpgan_runs_on_the_crops_before_the_resize(talker, face_dir, media, vector, tmp_path):
    opts = _options(media, tmp_path, enhancer="gfpgan")
    prep = talker.prepare(opts)
    assert prep.face_net is not None and prep.upscaler is None
    result, got = _write(talker, prep)
    _check_video(result, opts, FRAMES, _expected_size(vector, "crop"), FRAMES / FPS)
    assert (result.width, result.height) == (256, vector["frames_resized_uint8"].shape[1])
    assert result.timings["enhance"] > 0

    # the same frames by hand: render the crops, enhance them at render size, then resize to the aspect
    crops = _crops(talker, prep)
    assert crops.shape == (FRAMES, 256, 256, 3)
    enhancer = FaceEnhancer(load_gfpgan(face_dir / GFPGAN_FILE, "cpu", torch.float32), "cpu", torch.float32)
    expected = np.stack([aspect_resize(f, prep.source.crop_info, 256) for f in enhancer(crops)])
    np.testing.assert_array_equal(got, expected)
    plain = _frames(talker, prep, face_net=None)
    assert plain.shape == got.shape and np.abs(plain.astype(int) - got.astype(int)).mean() > 2.0


def test_gfpgan_in_full_mode_keeps_the_picture_size(talker, media, vector, tmp_path):
    opts = _options(media, tmp_path, preprocess="full", enhancer="gfpgan")
    prep = talker.prepare(opts)
    result = talker.write_video(prep)
    _check_video(result, opts, FRAMES, _expected_size(vector, "full"), FRAMES / FPS)
    h, w = vector["input_image_rgb"].shape[:2]
    assert (result.width, result.height) == (w, h)
    decoded = read_frames(result.video_path)[:, :h, :w].astype(int)
    plain = _frames(talker, prep, face_net=None).astype(int)
    inside = _paste_region(vector, "full")
    diff = np.abs(decoded - plain).mean(axis=(0, 3))
    assert diff[~inside].mean() < 4.0  # the background is the untouched picture (codec loss only)
    assert diff[inside].mean() > 4.0  # the enhanced face differs from the plain one


def test_enhancer_models_are_kept_and_unloaded(tiny_checkpoints, face_dir, media, tmp_path):
    t = SadTalker(checkpoint_dir=tiny_checkpoints, gfpgan_dir=face_dir, result_dir=tmp_path / "res")
    opts = _options(media, tmp_path, driven_audio=media["cut"](1), enhancer="gfpgan")
    t.generate(opts.replace(output=str(tmp_path / "a.mp4"), background_enhancer="realesrgan"))
    held = {k: v for k, v in t._models.items() if k[0] in ("gfpgan", "realesrgan")}
    assert len(held) == 2
    second = t.generate(opts.replace(output=str(tmp_path / "b.mp4"), background_enhancer="realesrgan"))
    assert all(t._models[k] is v for k, v in held.items())
    assert second.timings["models"] < 1.0
    t.unload()
    assert t.loaded == []


# ----------------------------------------------------------------------------------------- background
def test_realesrgan_full_upscales_the_picture_once(talker, face_dir, media, vector, tmp_path):
    """Full mode, both enhancers: the picture is upscaled once; restored 2S faces go into the doubled box."""
    opts = _options(media, tmp_path, preprocess="full", enhancer="gfpgan", background_enhancer="realesrgan")
    prep = talker.prepare(opts)
    result, got = _write(talker, prep)
    h, w = vector["input_image_rgb"].shape[:2]
    _check_video(result, opts, FRAMES, even_size(2 * w, 2 * h), FRAMES / FPS)
    assert (result.width, result.height) == (2 * w, 2 * h)
    assert result.timings["background"] > 0 and result.timings["enhance"] > 0
    assert got.shape == (FRAMES, 2 * h, 2 * w, 3)
    decoded = read_frames(result.video_path)[:, : 2 * h, : 2 * w].astype(int)
    assert np.abs(decoded - got.astype(int)).mean() < 4.0  # what was made is what was encoded

    # by hand: crops enlarged to 2S and restored, resized to width 2 * size at the face-box aspect and
    # blended into the Real-ESRGAN picture at the paste box of the original picture times two
    background = _upscaler(face_dir)(vector["input_image_rgb"][None])[0]
    info = prep.source.crop_info
    lx, ly, rx, ry = info.quad_box_int()
    doubled = CropInfo(
        info.size_wh, tuple(2 * int(v) for v in info.crop_box), (2 * lx, 2 * ly, 2 * rx, 2 * ry)
    )
    paste = PasteBack(background, doubled, "full", 512)
    enhancer = FaceEnhancer(load_gfpgan(face_dir / GFPGAN_FILE, "cpu", torch.float32), "cpu", torch.float32)
    crops = _crops(talker, prep)
    faces = enhancer(np.stack([cv2.resize(f, (512, 512), interpolation=cv2.INTER_LINEAR) for f in crops]))
    expected = np.stack([paste.paste_resized(aspect_resize(f, info, 512)) for f in faces])
    np.testing.assert_array_equal(got, expected)
    inside = _paste_region(vector, "full", scale=2)
    np.testing.assert_array_equal(
        got[:, ~inside], np.broadcast_to(background[~inside], got[:, ~inside].shape)
    )
    assert np.abs(got.astype(int) - background.astype(int)).mean(axis=(0, 3))[inside].mean() > 10.0
    # background enhancer alone: the same upscaled picture around plain faces
    plain = _frames(talker, prep, face_net=None)
    assert plain.shape == got.shape
    np.testing.assert_array_equal(plain[:, ~inside], got[:, ~inside])
    assert np.abs(plain.astype(int) - got.astype(int)).mean(axis=(0, 3))[inside].mean() > 2.0


def test_realesrgan_crop_upscales_every_frame(talker, face_dir, media, vector, tmp_path):
    opts = _options(media, tmp_path, background_enhancer="realesrgan", enhancer="gfpgan")
    prep = talker.prepare(opts)
    result, got = _write(talker, prep)
    w0, h0 = 256, vector["frames_resized_uint8"].shape[1]
    _check_video(result, opts, FRAMES, even_size(2 * w0, 2 * h0), FRAMES / FPS)
    assert (result.width, result.height) == (2 * w0, 2 * h0)
    base = _frames(talker, prep, upscaler=None)  # face-enhanced, not upscaled
    assert base.shape == (FRAMES, h0, w0, 3)
    expected = _upscaler(face_dir)(base)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # batched vs single: rare flips
    decoded = read_frames(result.video_path)[:, : 2 * h0, : 2 * w0].astype(int)
    assert np.abs(decoded - got.astype(int)).mean() < 4.0


# ----------------------------------------------------------------------------------------- refusals
def test_missing_enhancer_weights_are_named(tiny_checkpoints, media, tmp_path):
    t = SadTalker(checkpoint_dir=tiny_checkpoints, gfpgan_dir=tmp_path / "empty")
    with pytest.raises(CheckpointError) as err:
        t.generate(_options(media, tmp_path, enhancer="gfpgan"))
    msg = str(err.value)
    assert GFPGAN_FILE in msg and str(tmp_path / "empty") in msg
    assert "python -m sadtalker_ext.download" in msg and "--enhancer" in msg
    assert REALESRGAN_FILE not in msg and "detection_Resnet50_Final.pth" not in msg
    with pytest.raises(CheckpointError) as err:
        t.generate(_options(media, tmp_path, background_enhancer="realesrgan"))
    msg = str(err.value)
    assert REALESRGAN_FILE in msg and "--background" in msg and GFPGAN_FILE not in msg
    assert not t.loaded
    assert list(tmp_path.iterdir()) == []


def test_restoreformer_is_refused_clearly(talker, media, tmp_path):
    with pytest.raises(InputError, match="not supported") as err:
        talker.generate(_options(media, tmp_path, enhancer="RestoreFormer"))
    assert "gfpgan" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_downloader_background_choice():
    args = dl_cli.build_parser().parse_args(["--background"])
    selection = dl_cli.selection_from_args(args)
    assert selection.background and not selection.enhancer
    assert "background" in selection.features
    assert not dl_cli.selection_from_args(dl_cli.build_parser().parse_args([])).background
