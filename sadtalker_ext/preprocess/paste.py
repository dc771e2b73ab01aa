"""Post-render resizing and paste-back of frames into the original picture (``full`` / ``extfull``).

For every mode the rendered ``(S, S, 3)`` frame is first resized (cv2 bilinear) to width ``S`` and height
``int(S * h / w)``, with ``(w, h) = crop_info.size_wh`` (the face-quad box, also in the ext modes).
In the full modes that frame is then resized to the paste box (the int quad box in picture coordinates;
``extfull``: the crop box) and Poisson-blended into the original picture with ``cv2.seamlessClone``
(NORMAL_CLONE, all-255 mask, centre = box centre, integer division).

Everything here works one frame at a time; nothing keeps a list of frames. Frames are RGB uint8;
the blend treats channels independently, so the channel order does not change the result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator

import cv2
import numpy as np

from ..errors import InputError
from .crop import CropInfo, check_rgb
from .mode import PreprocessMode


def aspect_height(crop_info: CropInfo, size: int) -> int:
    """Height of a resized frame: ``int(size * h / w)`` with ``(w, h) = crop_info.size_wh``."""
    w, h = crop_info.size_wh
    if w <= 0 or h <= 0:
        raise InputError(f"crop_info has an empty face box {crop_info.size_wh}")
    return int(size * h / w)


def aspect_resize(frame: np.ndarray, crop_info: CropInfo, size: int) -> np.ndarray:
    """Resize a rendered RGB uint8 frame to ``(int(size * h / w), size, 3)`` (cv2 bilinear)."""
    frame = check_rgb(frame, "rendered frame")
    return cv2.resize(frame, (int(size), aspect_height(crop_info, size)))


def paste_box(crop_info: CropInfo, extended: bool) -> tuple[int, int, int, int]:
    """``(ox1, oy1, ox2, oy2)`` pixels of the original picture that a frame is pasted onto."""
    if crop_info.crop_box is None or crop_info.quad_box is None:
        raise InputError("paste-back needs a crop box; the 'resize' preprocess mode has none")
    clx, cly, crx, cry = crop_info.crop_box
    if extended:
        return clx, cly, crx, cry
    lx, ly, rx, ry = crop_info.quad_box_int()
    return clx + lx, cly + ly, clx + rx, cly + ry


class PasteBack:
    """Blends frames into one original picture; build once per video, call once per frame.

    ``background``: (H, W, 3) uint8 RGB original picture. ``mode``: ``full`` or ``extfull``.
    ``size``: the render size (the width frames are resized to before pasting).
    """

    def __init__(self, background: np.ndarray, crop_info: CropInfo, mode: str | PreprocessMode, size: int):
        mode = PreprocessMode.parse(mode)
        if not mode.is_full:
            raise InputError(f"paste-back is only done for the full modes, not {mode.value!r}")
        self.background = check_rgb(background, "original picture")
        self.crop_info = crop_info
        self.size = int(size)
        x1, y1, x2, y2 = paste_box(crop_info, mode.is_extended)
        if x2 - x1 < 3 or y2 - y1 < 3:
            raise InputError(f"the paste box {(x1, y1, x2, y2)} is too small")
        height, width = self.background.shape[:2]
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise InputError(
                f"the paste box {(x1, y1, x2, y2)} lies outside the {width}x{height} picture; "
                "was the crop made from another picture?"
            )
        self.box = (x1, y1, x2, y2)
        self.centre = ((x1 + x2) // 2, (y1 + y2) // 2)
        self._mask = np.full((y2 - y1, x2 - x1, 3), 255, dtype=np.uint8)

    def paste_resized(self, resized: np.ndarray) -> np.ndarray:
        """Blend an already aspect-resized RGB uint8 frame; returns a new (H, W, 3) uint8 picture."""
        resized = check_rgb(resized, "resized frame")
        x1, y1, x2, y2 = self.box
        patch = cv2.resize(resized, (x2 - x1, y2 - y1))
        try:
            return cv2.seamlessClone(patch, self.background, self._mask, self.centre, cv2.NORMAL_CLONE)
        except cv2.error as exc:
            raise InputError(f"paste-back failed for box {self.box}: {exc}") from exc

    def __call__(self, rendered: np.ndarray) -> np.ndarray:
        """Aspect-resize a rendered (S, S, 3) RGB uint8 frame and blend it; returns (H, W, 3) uint8."""
        return self.paste_resized(aspect_resize(rendered, self.crop_info, self.size))


def frame_finisher(
    mode: str | PreprocessMode, crop_info: CropInfo, size: int, picture: np.ndarray, *, scale: int = 1
) -> Callable[[np.ndarray], np.ndarray]:
    """``finish(frame)``: what every rendered (and restored) RGB uint8 face frame goes through to become a
    final frame. Every mode: the aspect resize to width ``size * scale``; full modes: then the blend into
    ``picture``, which is the original picture enlarged ``scale`` times (the background enhancer), at the
    crop's paste box times ``scale`` (:meth:`CropInfo.scaled`). One call per frame, thread-safe."""
    mode = PreprocessMode.parse(mode)
    width = int(size) * scale
    if mode.is_full:
        return PasteBack(picture, crop_info.scaled(scale), mode, width)
    if scale != 1:
        raise InputError(
            f"frames are made at {scale}x only where they are pasted back (not in {mode.value!r})"
        )
    return functools.partial(aspect_resize, crop_info=crop_info, size=width)


def paste_frames(
    frames: Iterable[np.ndarray],
    background: np.ndarray,
    crop_info: CropInfo,
    mode: str | PreprocessMode,
    size: int,
) -> Iterator[np.ndarray]:
    """Stream rendered RGB frames to full-picture RGB frames, one in, one out."""
    paster = PasteBack(background, crop_info, mode, size)
    for frame in frames:
        yield paster(frame)
