"""Picture loading: orientation, colour modes, bad files, size limits, video first frame."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from PIL import Image

from sadtalker_ext.errors import InputError
from sadtalker_ext.images import load_rgb, save_png
from tests.conftest import vector_params
from tests.standin import MEDIA_DIR


def _pattern(h: int = 48, w: int = 64) -> np.ndarray:
    """(h, w, 3) uint8 with distinct values per position and channel (shows flips and channel swaps)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 3 % 256, y * 5 % 256, (x + 2 * y) % 256], axis=2).astype(np.uint8)


def test_plain_png_exact(tmp_path):
    rgb = _pattern()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = load_rgb(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize(
    ("orientation", "transform"),
    [
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),  # stored sideways: rotate 90 degrees clockwise to display
        (8, lambda a: np.rot90(a, 1)),
        (2, lambda a: a[:, ::-1]),
    ],
)
def test_exif_orientation(tmp_path, orientation, transform):
    rgb = _pattern()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(tmp_path / "o.png", exif=exif)
    out = load_rgb(tmp_path / "o.png")
    np.testing.assert_array_equal(out, transform(rgb))


def test_exif_orientation_on_pil_input():
    img = Image.fromarray(_pattern())
    exif = Image.Exif()
    exif[0x0112] = 6
    img.info["exif"] = exif.tobytes()
    img.getexif()[0x0112] = 6
    out = load_rgb(img)
    assert out.shape == (64, 48, 3)


def test_rgba_composited_on_white(tmp_path):
    rgb = _pattern()
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[:, 32:] = 255
    alpha[:, 16:32] = 128
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "t.png")
    out = load_rgb(tmp_path / "t.png").astype(int)
    assert (out[:, :16] == 255).all()
    np.testing.assert_array_equal(out[:, 32:], rgb[:, 32:])
    expect = np.rint((rgb[:, 16:32].astype(float) * 128 + 255 * 127) / 255)
    assert np.abs(out[:, 16:32] - expect).max() <= 1


def test_gray_and_palette(tmp_path):
    gray = _pattern()[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "g.png"), np.repeat(gray[..., None], 3, 2))
    rgb = _pattern()
    pal = Image.fromarray(rgb).quantize(colors=16)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    out = load_rgb(tmp_path / "pt.png")
    idx = np.asarray(pal) == 0
    assert idx.any() and (out[idx] == 255).all()


def test_16bit_gray_and_rgb(tmp_path):
    import cv2

    g16 = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    out = load_rgb(tmp_path / "g16.png")
    expect = np.rint(g16 / 257.0)
    assert np.abs(out[..., 0].astype(int) - expect).max() <= 1
    assert (out[..., 0] == out[..., 2]).all()
    c16 = np.dstack([g16, g16[::-1], g16[:, ::-1]])
    cv2.imwrite(str(tmp_path / "c16.png"), c16)  # BGR order on disk
    out = load_rgb(tmp_path / "c16.png").astype(int)
    assert np.abs(out - np.rint(c16[..., ::-1] / 257.0)).max() <= 1
    arr_out = load_rgb(c16[..., ::-1].copy()).astype(int)
    assert np.abs(arr_out - np.rint(c16[..., ::-1] / 257.0)).max() <= 1


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # pure red
    cmyk.save(tmp_path / "c.jpg", quality=95)
    out = load_rgb(tmp_path / "c.jpg").astype(int)
    assert out.shape == (48, 64, 3)
    assert out[..., 0].mean() > 240 and out[..., 1].mean() < 15 and out[..., 2].mean() < 15


def test_array_inputs():
    rgb = _pattern()
    np.testing.assert_array_equal(load_rgb(rgb), rgb)
    np.testing.assert_array_equal(load_rgb(rgb.astype(np.float32) / 255), rgb)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(load_rgb(rgba), rgb)
    with pytest.raises(InputError, match="shape"):
        load_rgb(np.zeros((40, 40, 2), np.uint8))


@pytest.mark.parametrize("size", [(31, 100), (100, 8)])
def test_tiny_picture(tmp_path, size):
    Image.new("RGB", size).save(tmp_path / "s.png")
    with pytest.raises(InputError, match=r"only .* pixels.*larger picture"):
        load_rgb(tmp_path / "s.png")


def test_empty_missing_corrupt(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_rgb(tmp_path / "e.png")
    with pytest.raises(InputError, match="not found"):
        load_rgb(tmp_path / "nothing.png")
    (tmp_path / "junk.jpg").write_bytes(b"this is not a picture at all" * 10)
    with pytest.raises(InputError, match="not a picture format"):
        load_rgb(tmp_path / "junk.jpg")
    Image.fromarray(_pattern(200, 200)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged or truncated"):
        load_rgb(tmp_path / "cut.png")
    with pytest.raises(InputError):
        load_rgb(12345)


def test_pixel_limit(tmp_path):
    Image.new("RGB", (400, 300), (10, 20, 30)).save(tmp_path / "big.png")
    with pytest.raises(InputError, match=r"megapixels, more than the limit"):
        load_rgb(tmp_path / "big.png", max_pixels=100_000)
    assert load_rgb(tmp_path / "big.png", max_pixels=120_000).shape == (300, 400, 3)


def test_huge_jpeg_decoded_reduced(tmp_path):
    rgb = np.zeros((800, 1200, 3), np.uint8)
    rgb[:, :600] = (200, 30, 40)
    Image.fromarray(rgb).save(tmp_path / "big.jpg", quality=90)
    out = load_rgb(tmp_path / "big.jpg", max_pixels=300_000)  # 0.96 MP -> 1/2 scale is 0.24 MP
    assert out.shape == (400, 600, 3)
    assert np.abs(out[:, :290].astype(int) - (200, 30, 40)).max() < 12


def test_crop_png_round_trip_exact(tmp_path):
    src = np.asarray(Image.open(MEDIA_DIR / "people_0.png").convert("RGB"))
    crop = load_rgb(MEDIA_DIR / "people_0.png")[37:301, 55:290]
    save_png(crop, tmp_path / "crop.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "crop.png"), src[37:301, 55:290])


def test_video_first_frame(tmp_path):
    import imageio_ffmpeg

    frames = [_pattern(64, 96), 255 - _pattern(64, 96)]
    raw = b"".join(f.tobytes() for f in frames)
    out_path = tmp_path / "v.mkv"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "96x64",
           "-r", "25", "-i", "-", "-c:v", "ffv1", "-pix_fmt", "bgr0", str(out_path)]  # fmt: skip
    subprocess.run(cmd, input=raw, check=True, capture_output=True)
    out = load_rgb(out_path)
    np.testing.assert_array_equal(out, frames[0])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 100)
    with pytest.raises(InputError, match="could not be decoded as a video"):
        load_rgb(broken)


def test_alpha_drop_keeps_colour_values(tmp_path):
    rgb = _pattern()
    rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "t.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "t.png", alpha="drop"), rgb)
    assert (load_rgb(tmp_path / "t.png") == 255).all()
    np.testing.assert_array_equal(load_rgb(rgba, alpha="drop"), rgb)


@pytest.mark.parametrize("path", vector_params("e2e_*.npz"))
def test_loads_like_official_cv2_imread(path):
    """The official run's picture (cv2.imread -> RGB) is one of the shared media files, loaded identically."""
    with np.load(path, allow_pickle=False) as z:
        ref = z["input_image_rgb"]
    same = [
        p.name
        for p in sorted(MEDIA_DIR.iterdir())
        if p.suffix.lower() in (".png", ".jpg", ".jpeg") and np.array_equal(load_rgb(p), ref)
    ]
    assert same, "no shared picture loads to the official input_image_rgb"
