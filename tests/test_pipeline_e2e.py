"""End to end: picture + audio -> real mp4 through every stage (stand-in weights, dlib landmarks).

Picture, audio samples, stand-in overrides and expected frame geometry come from the e2e vector file
(``e2e_crop_seed*.npz``: ``input_image_rgb``, ``wav_fed``, ``frames_resized_uint8``), so the tests run
unchanged on other vector sets. Most tests use a renderer of tiny widths (same key names, widths inferred
from the files) to keep a frame at a few seconds on this CPU; one test renders at the official width.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

from sadtalker_ext.errors import CancelledError, CheckpointError, InputError, SadTalkerError
from sadtalker_ext.options import GenerationOptions
from sadtalker_ext.pipeline import SadTalker
from sadtalker_ext.video import (
    VideoWriter,
    even_size,
    partial_path,
    probe,
    read_audio,
    read_frames,
    sidecar_path,
)
from tests import standin
from tests.conftest import (
    E2E_MIN_IDENTICAL,
    fed_audio_file,
    parity_device,
    seed_of,
    vector_files,
    vector_params,
    write_fed_audio,
)

ST256, _ST512, MAP_CROP, MAP_FULL = standin.FILES
SR, FPS = 16000, 25
FRAMES = 2  # frames per tiny-width test video (one generator call at batch_size 2)


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def vector():
    files = vector_files("e2e_crop_seed*.npz")
    if not files:
        pytest.skip("no e2e_crop vector file")
    path = files[0]
    with np.load(path, allow_pickle=False) as npz:
        names = (
            "input_image_rgb",
            "wav_fed",
            "wav_fed_sr",
            "frames_resized_uint8",
            "crop_info_crop",
            "crop_info_quad",
        )
        data = {k: npz[k] for k in names}
        data["seed"] = seed_of(npz, path)
        data["overrides"] = standin.overrides_of(npz)
    data["path"] = path
    return data


@pytest.fixture(scope="module")
def media(vector, tmp_path_factory):
    """The vector's picture as PNG and cuts of its fed audio, written at the fed rate and sample type."""
    root = tmp_path_factory.mktemp("media")
    picture = root / "face.png"
    Image.fromarray(vector["input_image_rgb"]).save(picture)
    wav = np.asarray(vector["wav_fed"])
    sr = int(vector["wav_fed_sr"])

    def cut(frames: int, extra: int = 100) -> str:
        """``frames`` video frames of audio plus ``extra`` 16 kHz samples' worth, in the fed file's format."""
        p = root / f"cut{frames}.wav"
        if not p.exists():
            write_fed_audio(p, wav[: (frames * SR // FPS + extra) * sr // SR], sr)
        return str(p)

    return {"picture": str(picture), "cut": cut, "root": root}


@pytest.fixture(scope="module")
def tiny_checkpoints(vector, tmp_path_factory):
    """Official-width motion + reconstruction tensors (vector seed and overrides), tiny renderer tensors."""
    seed = vector["seed"]
    return standin.write_reduced_checkpoints(
        tmp_path_factory.mktemp("tiny_ckpt"),
        seed=seed,
        motion=standin.motion_tensors(seed, vector["overrides"]),
    )


@pytest.fixture(scope="module")
def talker(tiny_checkpoints, tmp_path_factory):
    t = SadTalker(
        checkpoint_dir=tiny_checkpoints,
        gfpgan_dir=tmp_path_factory.mktemp("no_face_models"),
        device="cpu",
        result_dir=tmp_path_factory.mktemp("results"),
    )
    yield t
    t.unload()


def _options(media, tmp_path, name: str = "out.mp4", **kw) -> GenerationOptions:
    values = {
        "source": media["picture"],
        "driven_audio": media["cut"](FRAMES),
        "face_detector": "dlib",
        "seed": 7,
        "batch_size": 2,
        "output": str(tmp_path / name),
    }
    values.update(kw)
    return GenerationOptions(**values)


def _expected_size(vector, preprocess: str) -> tuple[int, int]:
    """Encoded (w, h): full modes keep the picture size; the others are 256 wide at the face-box aspect."""
    h, w = vector["input_image_rgb"].shape[:2]
    if "full" in preprocess:
        return even_size(w, h)
    if preprocess == "resize":
        return even_size(256, int(256 * h / w))
    return even_size(256, vector["frames_resized_uint8"].shape[1])


def _check_video(result, options: GenerationOptions, frames: int, size: tuple[int, int], audio_s: float):
    info = probe(result.video_path)
    assert result.num_frames == frames and info.num_frames == frames
    assert (info.width, info.height) == size
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p" and info.fps == pytest.approx(FPS)
    assert info.has_audio and info.audio_sample_rate == SR
    assert info.audio_duration == pytest.approx(audio_s, abs=1 / FPS)
    settings = info.settings
    assert settings["seed"] == result.seed and settings["num_frames"] == frames
    assert settings["version"] and settings["options"]["source"] == options.source
    assert (
        settings["options"]["preprocess"] == options.preprocess and settings["options"]["seed"] == result.seed
    )
    assert json.loads(result.sidecar.read_text()) == settings
    assert result.sidecar == sidecar_path(result.video_path)
    return info


# ----------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("preprocess", ["crop", "resize", "extcrop", "full", "extfull"])
def test_each_preprocess_mode_makes_a_video(talker, media, vector, tmp_path, preprocess):
    opts = _options(media, tmp_path, preprocess=preprocess)
    stages = []
    result = talker.generate(opts, progress=lambda s, d, t: stages.append((s, d, t)))
    _check_video(result, opts, FRAMES, _expected_size(vector, preprocess), FRAMES / FPS)
    renders = [(d, t) for s, d, t in stages if s == "render"]
    assert renders[0] == (0, FRAMES) and renders[-1] == (FRAMES, FRAMES)
    assert [s for s, _, _ in stages].index("preprocess") < [s for s, _, _ in stages].index("render")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.mp4"]
    assert {"inputs", "models", "preprocess", "motion", "render", "total"} <= set(result.timings)
    if "full" in preprocess:  # pasted back: the picture is unchanged outside the paste box, changed inside
        picture = vector["input_image_rgb"].astype(int)
        h, w = picture.shape[:2]
        clx, cly, crx, cry = (int(v) for v in vector["crop_info_crop"])
        lx, ly, rx, ry = (int(v) for v in vector["crop_info_quad"])
        x1, y1, x2, y2 = (
            (clx, cly, crx, cry) if preprocess == "extfull" else (clx + lx, cly + ly, clx + rx, cly + ry)
        )
        inside = np.zeros((h, w), bool)
        inside[y1:y2, x1:x2] = True
        diff = np.abs(read_frames(result.video_path)[0][:h, :w].astype(int) - picture).mean(axis=2)
        assert diff[~inside].mean() < 4.0  # H.264 + 4:2:0 chroma loss only (about 2.3 levels here)
        assert diff[inside].mean() > 10.0


def test_size_512(talker, media, vector, tmp_path):
    opts = _options(media, tmp_path, size=512, driven_audio=media["cut"](1))
    result = talker.generate(opts)
    lx, ly, rx, ry = (int(v) for v in vector["crop_info_quad"])
    _check_video(result, opts, 1, even_size(512, int(512 * (ry - ly) / (rx - lx))), 1 / FPS)


def test_second_generation_reuses_models_and_seed_repeats(talker, media, tmp_path):
    first = talker.generate(_options(media, tmp_path, "a.mp4"))
    held = dict(talker._models)
    assert held, "models should stay loaded after a generation"
    second = talker.generate(_options(media, tmp_path, "b.mp4"))
    assert all(talker._models[k] is v for k, v in held.items())
    assert second.timings["models"] < 1.0
    np.testing.assert_array_equal(read_frames(first.video_path), read_frames(second.video_path))


def test_threaded_paste_back_keeps_frames_and_order(tiny_checkpoints, media, tmp_path, monkeypatch):
    """Frames are resized and pasted by a thread pool (here also while later chunks render, as with a GPU
    renderer): same frames, same order as with one thread and no overlap; chunks of batch_size."""
    import sadtalker_ext.pipeline as pipeline_module

    runs = {}
    for threads in (1, 3):
        monkeypatch.setattr(pipeline_module, "_post_overlaps_render", lambda device, t=threads: t > 1)
        t = SadTalker(tiny_checkpoints, tmp_path / "gf", post_threads=threads, result_dir=tmp_path)
        seen: list[np.ndarray] = []

        def keep(frames: np.ndarray, seen=seen) -> np.ndarray:
            seen.append(frames.copy())
            return frames

        opts = _options(media, tmp_path, f"t{threads}.mp4", preprocess="full", driven_audio=media["cut"](7))
        t.generate(opts, frame_hook=keep)
        t.unload()
        runs[threads] = seen
    assert [len(c) for c in runs[3]] == [2, 2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(runs[1]), np.concatenate(runs[3]))
    with pytest.raises(InputError, match="post_threads"):
        SadTalker(tiny_checkpoints, tmp_path / "gf", post_threads=0)


def test_frame_hook_sees_and_changes_final_frames(talker, media, vector, tmp_path):
    seen = []

    def flat(frames: np.ndarray) -> np.ndarray:
        seen.append(frames.copy())
        return np.full_like(frames, 200)

    hooked = talker.generate(_options(media, tmp_path, "hooked.mp4"), frame_hook=flat)
    got = np.concatenate(seen)
    assert got.shape == (FRAMES, vector["frames_resized_uint8"].shape[1], 256, 3) and got.std() > 5
    decoded = read_frames(hooked.video_path).astype(float)
    assert abs(decoded.mean() - 200) < 1.5 and decoded.std() < 1.5  # the hook's frames were encoded
    with pytest.raises(SadTalkerError, match="frame_hook"):
        talker.generate(_options(media, tmp_path, "bad.mp4"), frame_hook=lambda f: f[:, ::2])
    assert not (tmp_path / "bad.mp4").exists()


def test_still_mode(talker, media, vector, tmp_path):
    moving = talker.generate(_options(media, tmp_path, "moving.mp4", pose_style=5))
    opts = _options(media, tmp_path, "still.mp4", still=True, pose_style=5)
    still = talker.generate(opts)
    info = _check_video(still, opts, FRAMES, _expected_size(vector, "crop"), FRAMES / FPS)
    assert info.settings["options"]["still"] is True
    assert not np.array_equal(read_frames(moving.video_path), read_frames(still.video_path))


def test_free_view_angles_change_the_frames(talker, media, vector, tmp_path):
    base = talker.generate(_options(media, tmp_path, "base.mp4", still=True))
    opts = _options(
        media, tmp_path, "view.mp4", still=True, input_yaw=(-20, 20), input_pitch=(10,), input_roll=(5,)
    )
    turned = talker.generate(opts)
    info = _check_video(turned, opts, FRAMES, _expected_size(vector, "crop"), FRAMES / FPS)
    assert info.settings["options"]["input_yaw"] == [-20.0, 20.0]
    a, b = read_frames(base.video_path).astype(int), read_frames(turned.video_path).astype(int)
    assert np.abs(a - b).mean() > 0.5


def test_idle_mode_has_a_silent_track(talker, media, vector, tmp_path):
    opts = _options(media, tmp_path, driven_audio=None, idle_seconds=0.08, seed=None)
    result = talker.generate(opts)
    frames = int(0.08 * FPS)
    assert result.seed is not None  # a random seed was picked and recorded (checked in _check_video)
    _check_video(result, opts, frames, _expected_size(vector, "crop"), frames / FPS)
    assert np.abs(read_audio(result.video_path)).max() < 1e-3


@pytest.fixture(scope="module")
def reference_video(vector, media):
    """A 4-frame silent video of the picture drifting sideways (the face stays detectable)."""
    path = media["root"] / "reference.mp4"
    pic = vector["input_image_rgb"]
    with VideoWriter(path, num_frames=4, sidecar=False) as vw:
        for i in range(4):
            vw.write(np.roll(pic, 3 * i, axis=1))
        vw.finish()
    return str(path)


@pytest.mark.parametrize("ref_mode", ["pose+blink", "all"])
def test_reference_video_modes(talker, media, vector, tmp_path, reference_video, ref_mode):
    opts = _options(media, tmp_path, ref_video=reference_video, ref_mode=ref_mode)
    stages = []
    result = talker.generate(opts, progress=lambda s, d, t: stages.append((s, d, t)))
    assert ("reference", 4, 4) in stages
    frames = 4 if ref_mode == "all" else FRAMES  # 'all': the reference video's frames drive everything
    info = _check_video(result, opts, frames, _expected_size(vector, "crop"), frames / FPS)
    assert info.settings["options"]["ref_mode"] == ref_mode


def test_separate_blink_and_pose_videos(talker, media, vector, tmp_path, reference_video):
    """Official --ref_eyeblink A --ref_pose B: both videos are read (progress over both), and the head
    pose comes from B: another B than A changes the frames."""
    pose_video = media["root"] / "pose_reference.mp4"
    pic = vector["input_image_rgb"]
    with VideoWriter(pose_video, num_frames=3, sidecar=False) as vw:
        for i in range(3):
            vw.write(np.roll(pic, -8 * i, axis=0))
        vw.finish()
    common = {"ref_video": reference_video, "ref_mode": "pose+blink", "seed": 3}
    opts = _options(media, tmp_path, "two.mp4", ref_pose_video=str(pose_video), **common)
    stages = []
    two = talker.generate(opts, progress=lambda s, d, t: stages.append((s, d, t)))
    assert ("reference", 4, 7) in stages and ("reference", 7, 7) in stages
    info = _check_video(two, opts, FRAMES, _expected_size(vector, "crop"), FRAMES / FPS)
    assert info.settings["options"]["ref_pose_video"] == str(pose_video)
    one = talker.generate(_options(media, tmp_path, "one.mp4", **common))
    assert np.abs(read_frames(two.video_path).astype(int) - read_frames(one.video_path)).mean() > 0.5


@pytest.mark.parametrize("overlap", [False, True])
def test_cancel_leaves_no_final_file(talker, media, tmp_path, monkeypatch, overlap):
    """Also with frames still in the paste-back pool (``overlap``): they reach the partial file."""
    import sadtalker_ext.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "_post_overlaps_render", lambda device: overlap)
    stop = threading.Event()

    def progress(stage, done, total):
        if stage == "render" and done >= 1:
            stop.set()

    opts = _options(media, tmp_path, "cancel.mp4", batch_size=1)
    with pytest.raises(CancelledError):
        talker.generate(opts, progress=progress, cancel=stop)
    assert list(tmp_path.iterdir()) == []

    talker.keep_partial = True
    try:
        stop.clear()
        with pytest.raises(CancelledError):
            talker.generate(opts, progress=progress, cancel=lambda: stop.is_set())
    finally:
        talker.keep_partial = False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cancel.partial.mp4"]
    part = probe(partial_path(tmp_path / "cancel.mp4"))
    assert part.num_frames == 1 and part.settings["partial"] is True


def test_inputs_checked_before_weights(media, tmp_path):
    empty = SadTalker(checkpoint_dir=tmp_path / "none", gfpgan_dir=tmp_path / "none2")
    bad_audio = tmp_path / "broken.wav"
    bad_audio.write_bytes(b"not audio at all")
    with pytest.raises(InputError):
        empty.generate(_options(media, tmp_path, driven_audio=str(bad_audio)))
    with pytest.raises(InputError):
        empty.generate(_options(media, tmp_path, source=str(tmp_path / "missing.png")))
    with pytest.raises(InputError, match=r"\.mp4"):
        empty.generate(_options(media, tmp_path, "clip.avi"))
    with pytest.raises(InputError):  # an undecodable reference video
        empty.generate(_options(media, tmp_path, ref_video=str(bad_audio), ref_mode="pose"))
    with pytest.raises(CheckpointError) as err:
        empty.generate(_options(media, tmp_path, preprocess="full", face_detector="retinaface"))
    msg = str(err.value)
    for name in (ST256, MAP_FULL, "detection_Resnet50_Final.pth", "alignment_WFLW_4HG.pth"):
        assert name in msg
    assert str(tmp_path / "none") in msg and "python -m sadtalker_ext.download" in msg
    assert not empty.loaded
    assert [p.name for p in tmp_path.iterdir()] == ["broken.wav"]


def test_enhancer_is_refused_clearly(talker, media, tmp_path):
    with pytest.raises(InputError, match="RestoreFormer"):
        talker.generate(_options(media, tmp_path, enhancer="RestoreFormer"))
    # this talker's face-model folder is empty: the enhancers' weight files are named
    with pytest.raises(CheckpointError, match=r"GFPGANv1\.4\.pth"):
        talker.generate(_options(media, tmp_path, enhancer="gfpgan"))
    with pytest.raises(CheckpointError, match=r"RealESRGAN_x2plus\.pth"):
        talker.generate(_options(media, tmp_path, background_enhancer="realesrgan"))


def test_unload_frees_models(tiny_checkpoints, media, tmp_path):
    t = SadTalker(checkpoint_dir=tiny_checkpoints, gfpgan_dir=tmp_path / "gf", result_dir=tmp_path / "res")
    result = t.generate(_options(media, tmp_path, driven_audio=media["cut"](1)))
    assert result.num_frames == 1 and t.loaded
    t.unload()
    assert t.loaded == []


@pytest.mark.slow
def test_official_width_renderer(standins, vector, media, tmp_path):
    """One frame through the official-width renderer (the e2e vector's stand-in weights)."""
    folder = standins.for_vector(vector["path"], names=(ST256, MAP_CROP))
    t = SadTalker(checkpoint_dir=folder, gfpgan_dir=tmp_path / "gf")
    opts = _options(media, tmp_path, driven_audio=media["cut"](1), still=True, use_blink=False, batch_size=1)
    try:
        result = t.generate(opts)
    finally:
        t.unload()
    _check_video(result, opts, 1, _expected_size(vector, "crop"), 1 / FPS)
    frame = read_frames(result.video_path)[0].astype(float)
    assert 20 < frame.mean() < 235 and frame.std() > 5  # a picture, not a flat or saturated field


@pytest.mark.slow
@pytest.mark.parametrize("path", vector_params("e2e_*_seed*.npz"))
def test_matches_the_official_run(standins, path, tmp_path, monkeypatch):
    """The composed pipeline against an official end-to-end run (official-width stand-in weights).

    The vector's landmarks are fed in (the detector has its own tests), so the crop, the first-frame
    coefficients, the renderer rows and the first output frame (resized, or pasted in full modes) are
    compared with the official values at the tolerances of the vector's .md file.
    """
    from sadtalker_ext.checkpoints import mapping_name, safetensors_name

    with np.load(path, allow_pickle=False) as npz:
        v = {k: npz[k] for k in npz.files if not k.startswith("override")}
    preprocess, size = str(v["preprocess"]), int(v["size"])
    still, use_blink = bool(v["still_mode"]), bool(v["use_blink"])
    picture = v["input_image_rgb"]
    Image.fromarray(picture).save(tmp_path / "picture.png")
    # The file the official run was fed (any rate and sample type); its 16 kHz load is checked against
    # wav16k by tests/test_audio_parity.py.
    audio = fed_audio_file(path, v["wav_fed"], int(v["wav_fed_sr"]), tmp_path)

    folder = standins.for_vector(path, names=(safetensors_name(size), mapping_name(preprocess)))
    talker = SadTalker(checkpoint_dir=folder, gfpgan_dir=tmp_path / "gf", device=parity_device())

    def landmarks(rgb: np.ndarray) -> np.ndarray:
        return v["lm68_orig"] if rgb.shape[:2] == picture.shape[:2] else v["lm68_pic256"]

    monkeypatch.setattr(talker, "_landmarks_fn", lambda detector, face_index: landmarks)
    options = GenerationOptions(
        source=str(tmp_path / "picture.png"),
        driven_audio=str(audio),
        preprocess=preprocess,
        still=still,
        use_blink=use_blink,
        pose_style=int(v["pose_style"]),
        size=size,
        batch_size=1,
        seed=int(v["seed"]),
        face_detector="dlib",
        output=str(tmp_path / "out.mp4"),
    )
    try:
        prep = talker.prepare(options)
        assert prep.num_frames == int(v["num_frames"]) == int(v["frame_num"])
        np.testing.assert_array_equal(prep.source.crop_picture, v["pic256_rgb"])
        first = prep.source.coeff_3dmm
        np.testing.assert_allclose(first[:, :70], v["first_coeff_3dmm_73"][:, :70], atol=1e-4)
        np.testing.assert_allclose(first[:, 70:], v["first_coeff_3dmm_73"][:, 70:], rtol=1e-6)
        np.testing.assert_allclose(prep.audio, v["wav_cropped"], atol=1e-5)
        np.testing.assert_allclose(prep.plan.source_row[0], v["render_source_semantics"][:, 0], atol=1e-4)
        if use_blink:
            return  # the official blink schedule comes from python's random module: not comparable
        np.testing.assert_allclose(prep.motion.exp_pred, v["exp_pred"], atol=1e-4)
        seq = v["render_coeff_sequence"]
        cols = slice(None) if still else slice(0, 64)  # pose columns depend on the PoseVAE noise
        np.testing.assert_allclose(prep.plan.sequence[:, cols], seq[:, cols], atol=1e-4)
        if not still:
            return
        frames = talker.iter_video_frames(prep)
        got = next(frames)[0]
        frames.close()
    finally:
        talker.unload()
    if "full" in preprocess:
        where = list(np.asarray(v["paste_out_index"]).reshape(-1)).index(0)
        expected = v["paste_out_bgr"][where][..., ::-1]
    else:
        expected = v["frames_resized_uint8"][0]
    assert got.shape == expected.shape
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 2, diff.max()
    assert (diff == 0).mean() >= E2E_MIN_IDENTICAL, (diff == 0).mean()
    assert not (tmp_path / "out.mp4").exists()
