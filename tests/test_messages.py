"""Messages for bad files and values: what is wrong and what to do, never a library's raw text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sadtalker_ext import checkpoints
from sadtalker_ext.errors import CheckpointError, InputError
from tests import standin

ST256 = standin.FILES[0]


# ----------------------------------------------------------------------------------------------- audio


def test_empty_audio_file_is_called_empty(tmp_path):
    from sadtalker_ext.audio.decode import load_audio

    empty = tmp_path / "speech.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as info:
        load_audio(empty)
    msg = str(info.value)
    assert "'speech.wav' is empty (0 bytes)" in msg and "Choose the file again" in msg
    assert "Invalid data" not in msg


# ----------------------------------------------------------------------------------------------- keys


@pytest.fixture(scope="module")
def eighth(tmp_path_factory) -> Path:
    """Renderer stand-ins with every official key name (1/8 of the official widths)."""
    return standin.write_eighth_checkpoints(tmp_path_factory.mktemp("eighth"))


def test_missing_keys_are_reported_as_missing_not_as_unexpected(eighth, tmp_path):
    from safetensors.numpy import load_file, save_file

    from sadtalker_ext.render.loading import load_renderer_nets

    tensors = load_file(str(eighth / ST256))
    block = "generator.dense_motion_network.hourglass.encoder.down_blocks.1."
    gone = sorted(k for k in tensors if k.startswith(block) and k != block + "conv.bias")
    gone.remove(block + "norm.num_batches_tracked")
    assert len(gone) == 5
    folder = tmp_path / "ck"
    folder.mkdir()
    save_file({k: v for k, v in tensors.items() if k not in gone}, str(folder / ST256))
    (folder / standin.FILES[2]).symlink_to(eighth / standin.FILES[2])
    checkpoints.clear_cache()
    with pytest.raises(CheckpointError) as info:
        load_renderer_nets(folder, 256, "crop", torch.device("cpu"), torch.float32)
    msg = str(info.value)
    assert "5 missing key(s): " + ", ".join(k[len("generator.") :] for k in gone) in msg, msg
    assert "unexpected" not in msg and "mismatch" not in msg, msg


def test_extra_and_missing_keys_are_both_listed(eighth, tmp_path):
    from safetensors.numpy import load_file, save_file

    from sadtalker_ext.render.loading import load_renderer_nets

    tensors = load_file(str(eighth / ST256))
    gone = "kp_extractor.predictor.down_blocks.down1.conv.weight"
    added = "kp_extractor.predictor.extra_head.weight"
    tensors[added] = tensors.pop(gone)
    folder = tmp_path / "ck"
    folder.mkdir()
    save_file(tensors, str(folder / ST256))
    (folder / standin.FILES[2]).symlink_to(eighth / standin.FILES[2])
    checkpoints.clear_cache()
    with pytest.raises(CheckpointError) as info:
        load_renderer_nets(folder, 256, "crop", torch.device("cpu"), torch.float32)
    msg = str(info.value)
    assert "1 missing key(s): predictor.down_blocks.down1.conv.weight;" in msg, msg
    assert "1 unexpected key(s) (not in the network): predictor.extra_head.weight." in msg, msg


# ----------------------------------------------------------------------------------------------- pickles


class _Planted:
    """An object whose unpickling would create a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["mapping_00229-model.pth.tar", "GFPGANv1.4.pth"])
def test_refused_pickle_never_suggests_turning_the_safety_off(tmp_path, name):
    from sadtalker_ext.enhance import load_gfpgan

    marker = tmp_path / "ran"
    path = tmp_path / name
    torch.save({"mapping": {"w": torch.zeros(2)}, "params_ema": {}, "x": _Planted(marker)}, str(path))
    with pytest.raises(CheckpointError) as info:
        if name.startswith("mapping"):
            checkpoints.read_mapping_checkpoint(path)
        else:
            load_gfpgan(path, "cpu", torch.float32)
    msg = str(info.value)
    assert not marker.exists()
    assert f"{path} is not a plain weight file" in msg and "Python object 'getattr'" in msg, msg
    for advice in ("weights_only", "safe_globals", "trust", "\x1b"):
        assert advice not in msg, msg
    assert info.value.__cause__ is None and info.value.__suppress_context__
    if name.startswith("mapping"):
        assert msg.endswith(f"python -m sadtalker_ext.download --size 256 --checkpoint_dir {tmp_path}")
    else:
        assert msg.endswith(f"python -m sadtalker_ext.download --size 256 --enhancer --gfpgan_dir {tmp_path}")


# ----------------------------------------------------------------------------------------------- options


def test_options_from_python_coerce_numeric_strings():
    from sadtalker_ext.options import GenerationOptions

    opts = GenerationOptions(
        source="face.png", driven_audio="speech.wav", batch_size="2", size="512", pose_style="7",
        expression_scale="1.5", seed="11", still="yes", use_blink="false", input_yaw="0 20",
    )  # fmt: skip
    assert (opts.batch_size, opts.size, opts.pose_style, opts.seed) == (2, 512, 7, 11)
    assert opts.expression_scale == 1.5 and opts.still is True and opts.use_blink is False
    assert opts.input_yaw == (0.0, 20.0)
    assert opts == GenerationOptions.from_mapping(opts.to_dict())


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("batch_size", "two", "batch_size must be a whole number; got 'two'"),
        ("batch_size", 2.5, "batch_size must be a whole number; got 2.5"),
        ("batch_size", None, "batch_size must be a whole number; got None"),
        ("batch_size", "0", "batch_size must be from 1 to 64; got 0"),
        ("expression_scale", "big", "expression_scale must be a number; got 'big'"),
        ("size", [256], "size must be a whole number; got [256]"),
        ("still", "maybe", "still: invalid value 'maybe'"),
    ],
)
def test_options_from_python_refuse_with_the_field_name(field, value, needle):
    from sadtalker_ext.options import GenerationOptions

    with pytest.raises(InputError) as info:
        GenerationOptions(source="face.png", driven_audio="speech.wav", **{field: value})
    assert needle in str(info.value)


# ----------------------------------------------------------------------------------------------- pictures

BIG = 14_000  # 196 MP: above the picture limit (100 MP) and above what Pillow refuses to open (2 x 89.5 MP)


@pytest.fixture(scope="module")
def big_pictures(tmp_path_factory) -> dict[str, Path]:
    """A 14000x14000 gray JPEG and PNG (small files: one flat colour)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("big")
    out = {"jpg": folder / "huge.jpg", "png": folder / "huge.png"}
    with Image.new("L", (BIG, BIG), 128) as img:
        img.save(out["jpg"], quality=50)
        img.save(out["png"], compress_level=1)
    return out


def test_huge_jpeg_is_decoded_at_reduced_scale(big_pictures):
    from sadtalker_ext.images import MAX_PIXELS, load_rgb

    rgb = load_rgb(big_pictures["jpg"])
    h, w, c = rgb.shape
    assert c == 3 and h == w and BIG // h in (2, 4, 8) and BIG % h == 0 and h * w <= MAX_PIXELS
    assert abs(int(rgb[h // 2, w // 2, 0]) - 128) <= 2  # the picture, not a placeholder


def test_huge_png_gets_its_size_the_limit_and_what_to_do(big_pictures):
    from sadtalker_ext.images import load_rgb

    with pytest.raises(InputError) as info:
        load_rgb(big_pictures["png"])
    msg = str(info.value)
    assert f"'huge.png' is {BIG}x{BIG} = 196.0 megapixels, more than the limit of 100.0 MP" in msg, msg
    assert "Downscale the picture" in msg and "JPEG" in msg
    assert "bomb" not in msg and "DOS" not in msg


# ----------------------------------------------------------------------------------------------- stand-ins

DETECTOR_FILES = ("detection_Resnet50_Final.pth", "alignment_WFLW_4HG.pth")


def _standin_folders(root: Path) -> tuple[Path, Path]:
    """Reduced-width checkpoints and (never loaded here) detector files: every size differs from the official."""
    ck = standin.write_reduced_checkpoints(root / "ck")
    gf = root / "gf"
    gf.mkdir()
    for name in DETECTOR_FILES:
        (gf / name).write_bytes(b"stand-in" * 100)
    return ck, gf


def test_cli_says_standins_are_not_official_once_each(tmp_path):
    import subprocess
    import sys

    ck, gf = _standin_folders(tmp_path)
    empty = tmp_path / "speech.wav"
    empty.write_bytes(b"")  # the run stops at the audio, right after the weight check
    proc = subprocess.run(
        [sys.executable, "-m", "sadtalker_ext", "--source_image", str(standin.MEDIA_DIR / "full3.png"),
         "--driven_audio", str(empty), "--checkpoint_dir", str(ck), "--gfpgan_dir", str(gf),
         "--result_dir", str(tmp_path / "out")],
        cwd=standin.REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "'speech.wav' is empty" in proc.stderr, proc.stderr
    for name in (ST256, standin.FILES[2], *DETECTOR_FILES):
        lines = [ln for ln in proc.stderr.splitlines() if name in ln]
        assert len(lines) == 1, proc.stderr
        assert "not the official file (size differs" in lines[0], lines[0]
        assert lines[0].endswith("results will not match the paper's models"), lines[0]
    assert "corrupt" not in proc.stderr and "Traceback" not in proc.stderr


def test_standin_warning_is_logged_once_per_file_per_process(tmp_path, caplog):
    import logging

    from sadtalker_ext.options import GenerationOptions
    from sadtalker_ext.pipeline import SadTalker

    ck, gf = _standin_folders(tmp_path)
    opts = GenerationOptions(source="face.png", driven_audio="speech.wav")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # e.g. the WebUI builds a new pipeline when a setting changes
            talker = SadTalker(checkpoint_dir=ck, gfpgan_dir=gf)
            talker.check_weights(opts)
            talker.check_weights(opts)
    texts = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    for name in (ST256, standin.FILES[2], *DETECTOR_FILES):
        about = [t for t in texts if name in t]
        assert len(about) == 1 and "not the official file (size differs" in about[0], texts
