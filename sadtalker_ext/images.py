"""Robust loading of user pictures as ``(H, W, 3) uint8 RGB`` arrays.

What :func:`load_rgb` accepts and does:

- a path to a picture file (anything Pillow reads: PNG, JPEG, WebP, BMP, TIFF, GIF (first frame), ...),
  a path to a video file (its first frame, decoded by the ffmpeg binary bundled with ``imageio-ffmpeg``),
  a ``PIL.Image.Image`` or a numpy array;
- EXIF orientation is applied (a phone photo shot sideways comes out upright);
- transparency (RGBA, LA, palette with a transparent colour) is **composited on white** by default: the colour
  values under fully transparent pixels are arbitrary (often black), and a face detector sees a cut-out
  portrait on white much like a studio photo, whereas dropping alpha can reveal garbage (``alpha="drop"``
  keeps official SadTalker's behaviour, whose ``cv2.imread`` ignores alpha);
- grayscale and palette pictures are expanded to RGB; 16-bit pictures are scaled to 8 bit
  (``round(v / 257)``); CMYK is converted with Pillow's conversion (no ICC colour management);
- pictures smaller than :data:`MIN_SIDE` pixels on a side, empty or unreadable files raise
  :class:`~sadtalker_ext.errors.InputError` with what is wrong and what to do;
- pictures above ``max_pixels`` (default :data:`MAX_PIXELS`, 100 MP): JPEGs are decoded at a reduced scale
  (1/2, 1/4 or 1/8, in the decoder, so the full-size bitmap never exists), however large their header says
  they are (Pillow's own decompression-bomb refusal is replaced by these checks); other formats raise
  InputError naming the picture's size, the limit and what to do.

Arrays passed in are taken as RGB (or gray / RGBA) in ``uint8``, ``uint16`` (scaled to 8 bit) or float
in [0, 1]. :func:`save_png` writes an array as a lossless PNG (exact pixels round-trip).
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from . import ffmpeg
from .errors import InputError

log = logging.getLogger(__name__)

MIN_SIDE = 32
"""Smallest accepted width or height in pixels."""

MAX_PIXELS = 100_000_000
"""Default largest accepted picture, in pixels (width * height)."""

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}
)
"""File suffixes decoded with ffmpeg (first frame) instead of Pillow."""


def load_rgb(
    source: str | os.PathLike | Image.Image | np.ndarray,
    *,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
    alpha: Literal["white", "drop"] = "white",
) -> np.ndarray:
    """Load a picture (or a video's first frame) as a C-contiguous ``(H, W, 3) uint8`` RGB array.

    ``max_pixels``: largest accepted ``W * H`` (see the module docstring for JPEGs above it).
    ``min_side``: smallest accepted width and height in pixels.
    ``alpha``: ``"white"`` composites transparency on white (default); ``"drop"`` keeps the colour values and
    ignores alpha, as official SadTalker's ``cv2.imread`` does.
    Raises InputError for missing, empty, corrupt, tiny or oversized inputs.
    """
    if alpha not in ("white", "drop"):
        raise ValueError(f"alpha must be 'white' or 'drop', got {alpha!r}")
    if isinstance(source, np.ndarray):
        rgb = _array_to_rgb(source, alpha)
        name = "the picture array"
    elif isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, "the picture")
        rgb = _pil_to_rgb(ImageOps.exif_transpose(source), alpha)
        name = "the picture"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        rgb = _load_file(path, max_pixels, alpha)
        name = f"'{path.name}'"
    else:
        raise InputError(
            f"cannot read a picture from a {type(source).__name__}; pass a file path, a PIL image or an array"
        )
    h, w = rgb.shape[:2]
    if min(h, w) < min_side:
        raise InputError(
            f"{name} is only {w}x{h} pixels; at least {min_side}x{min_side} is needed to find a face. "
            "Use a larger picture (a face of 256 pixels or more works best)."
        )
    _check_pixels((w, h), max_pixels, name)
    return np.ascontiguousarray(rgb)


def save_png(rgb: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``(H, W, 3)`` or ``(H, W)`` uint8 pixels as a lossless PNG; returns the path. Pixels round-trip exactly."""
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"save_png expects (H, W[, 3|4]) uint8, got {arr.shape} {arr.dtype}")
    out = Path(path)
    Image.fromarray(np.ascontiguousarray(arr)).save(out, format="PNG", compress_level=4)
    return out


def is_video_path(path: str | os.PathLike) -> bool:
    """True when the file suffix is one of :data:`VIDEO_SUFFIXES`."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


# --------------------------------------------------------------------------------------------- files


def _load_file(path: Path, max_pixels: int, alpha: str) -> np.ndarray:
    if not path.exists():
        raise InputError(f"picture file not found: {path}. Check the path or upload the picture again.")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a picture file. Choose a picture file.")
    size = path.stat().st_size
    if size == 0:
        raise InputError(
            f"'{path.name}' is empty (0 bytes); the upload or copy probably failed. Choose the file again."
        )
    if is_video_path(path):
        return _first_video_frame(path, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(path)
            except Image.DecompressionBombError as exc:
                # Pillow refuses to even open pictures above twice its own limit; the size checks below (and
                # the reduced-scale decoding of JPEGs) are this module's, so open it without that refusal.
                img = _open_without_bomb_check(path)
                if img is None:
                    pixels = re.search(r"\((\d+) pixels\)", str(exc))
                    size = f"{int(pixels.group(1)) / 1e6:.0f} megapixels" if pixels else "too large"
                    raise InputError(
                        f"'{path.name}' is {size}, more than the limit of {max_pixels / 1e6:.0f} MP. "
                        f"{_DOWNSCALE_ADVICE}"
                    ) from None
            try:
                return _decode_pil_file(img, path, max_pixels, alpha)
            finally:
                img.close()
    except UnidentifiedImageError:
        pass  # maybe a video or animation with an unusual suffix: let ffmpeg try
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"'{path.name}' is damaged or truncated and cannot be decoded ({exc}). "
            "Open and re-save it in an image editor, or choose another picture."
        ) from exc
    try:
        return _first_video_frame(path, max_pixels)
    except InputError as exc:
        raise InputError(
            f"'{path.name}' is not a picture format that can be read (not an image, or damaged). "
            "Save it as PNG or JPEG and try again."
        ) from exc


def _open_without_bomb_check(path: Path) -> Image.Image | None:
    """Open ``path`` with the first Pillow plugin that accepts it, as ``Image.open`` does, but without its
    decompression-bomb refusal: only the header is read here. None when no plugin accepts the file."""
    Image.init()
    with path.open("rb") as fh:
        prefix = fh.read(16)
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        verdict = (not accept) or accept(prefix)
        if not verdict or isinstance(verdict, str | bytes):
            continue
        try:
            return factory(str(path))  # a path: the image opens (and later closes) its own file
        except (SyntaxError, IndexError, TypeError, ValueError, OSError, struct.error):
            continue
    return None


def _decode_pil_file(img: Image.Image, path: Path, max_pixels: int, alpha: str) -> np.ndarray:
    w, h = img.size
    if w * h > max_pixels:
        if isinstance(img, JpegImagePlugin.JpegImageFile):  # JPEG and MPO (camera JPEGs)
            scale = 2
            while scale < 8 and (w // scale) * (h // scale) > max_pixels:
                scale *= 2
            img.draft(img.mode, (max(1, w // scale), max(1, h // scale)))
            log.warning(
                "'%s' has %.0f MP; decoded at 1/%d scale (%dx%d)", path.name, w * h / 1e6, scale, *img.size
            )
        _check_pixels(img.size, max_pixels, f"'{path.name}'")
    img.load()
    return _pil_to_rgb(ImageOps.exif_transpose(img), alpha)


_DOWNSCALE_ADVICE = (
    "Downscale the picture (a face of a few hundred pixels is enough), or save it as JPEG: "
    "large JPEGs are decoded at reduced scale."
)


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    w, h = size
    if w * h > max_pixels:
        raise InputError(
            f"{name} is {w}x{h} = {w * h / 1e6:.1f} megapixels, more than the limit of {max_pixels / 1e6:.1f} MP. "
            + _DOWNSCALE_ADVICE
        )


def _first_video_frame(path: Path, max_pixels: int) -> np.ndarray:
    """Decode the first frame with the bundled ffmpeg (rotation metadata applied), as exact rgb24 pixels."""
    args = ["-v", "error", "-i", str(path), "-frames:v", "1", "-an", "-pix_fmt", "rgb24"]
    args += ["-f", "image2pipe", "-vcodec", "png", "-"]
    try:
        png = ffmpeg.run(args, kind="frame", what=f"reading the first frame of '{path.name}'").stdout
        problem = "" if png else "no frame"
    except ffmpeg.FFmpegError as exc:
        if exc.returncode is None:  # not found, could not start, timed out: the message says which
            raise InputError(str(exc)) from exc
        png, problem = b"", exc.last_line
    if problem:
        raise InputError(
            f"'{path.name}' could not be decoded as a video ({problem}). "
            "Check that the file is complete, or use a picture instead."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(png)) as frame:
            _check_pixels(frame.size, max_pixels, f"the first frame of '{path.name}'")
            frame.load()
            return _pil_to_rgb(frame)


# --------------------------------------------------------------------------------------------- modes


def _pil_to_rgb(img: Image.Image, alpha: str = "white") -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB (alpha composited on white or dropped, 16-bit scaled)."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        return _pil_to_rgb(img, alpha)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _array_to_rgb(np.asarray(img.convert("RGBA"), dtype=np.uint8), alpha)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(img), alpha)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _composite_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W, 3) uint8: ``rgb * a + 255 * (1 - a)``, rounded."""
    rgb = rgba[..., :3].astype(np.uint16)
    a = rgba[..., 3:4].astype(np.uint16)
    out = (rgb * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise InputError(
                f"picture values outside 0..65535 ({arr.dtype}); save it as an 8- or 16-bit picture."
            )
        if arr.dtype.itemsize == 1:
            return arr.astype(np.uint8)
        # wider integers are taken as 16-bit samples (Pillow modes I;16 and I)
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and not np.isfinite(arr).all():
            raise InputError("the picture contains NaN or infinite values.")
        scale = 255.0 if (arr.size == 0 or arr.max() <= 1.0) else 1.0
        return np.clip(np.rint(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    raise InputError(f"unsupported picture value type {arr.dtype}.")


def _array_to_rgb(arr: np.ndarray, alpha: str = "white") -> np.ndarray:
    """(H, W), (H, W, 1|3|4) array of uint8 / uint16 / float [0, 1] -> (H, W, 3) uint8 RGB."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or 0 in arr.shape:
        raise InputError(f"a picture array must be (H, W), (H, W, 3) or (H, W, 4); got shape {arr.shape}.")
    arr8 = _to_uint8(arr)
    if arr8.shape[2] == 1:
        return np.repeat(arr8, 3, axis=2)
    if arr8.shape[2] == 4:
        return _composite_white(arr8) if alpha == "white" else arr8[..., :3].copy()
    return arr8.copy()
