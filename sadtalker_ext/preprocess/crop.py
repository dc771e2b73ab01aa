"""Face crop boxes and crop pictures for the five preprocess modes (:class:`.mode.PreprocessMode`).

Modes:

* ``crop`` / ``full``: cut the picture to the face crop box, then to the oriented face quad's bounding box;
  ``full`` differs only later (paste-back into the original picture).
* ``extcrop`` / ``extfull``: keep the whole (larger) crop box, no second cut.
* ``resize``: no cut; the whole picture is squashed to ``size x size``.

Geometry follows the FFHQ-style alignment rectangle of SadTalker's ``Preprocesser.align_face``:
an oriented square centred slightly below the eyes, sized from the eye distance and the eye-to-mouth
distance, then a padded, clamped, axis-aligned crop box around it. All coordinates are pixels,
x to the right, y down, in the (possibly shrunk, see :attr:`FaceBoxes.rsize`) picture.

Landmarks come from a callable ``landmarks_fn(rgb uint8 (H, W, 3)) -> (68, 2) float array or None``.
One that also has ``in_crop(rgb, near)`` (:class:`CropAwareLandmarks`) is asked for the later passes on
crop pictures with the landmarks the chosen face is expected to have there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from ..errors import InputError
from .mode import PreprocessMode

ALIGN_OUTPUT_SIZE = 512
"""``xsize`` the official crop passes to the face alignment; decides when a huge face is shrunk first."""

LandmarksFn = Callable[[np.ndarray], "np.ndarray | None"]


@runtime_checkable
class CropAwareLandmarks(Protocol):
    """A landmark callable that can also find the chosen face again on a crop of the picture."""

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None: ...

    def in_crop(self, rgb: np.ndarray, near: np.ndarray | None) -> np.ndarray | None:
        """Landmarks of the face at ``near`` ((68, 2) expected landmarks on ``rgb``, or None: unknown)."""
        ...


def check_rgb(image: np.ndarray, what: str = "picture") -> np.ndarray:
    """Validate an RGB uint8 ``(H, W, 3)`` array (at least 2x2) and return it C-contiguous."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"the {what} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"the {what} must be RGB uint8 of shape (H, W, 3), got {image.dtype} {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InputError(f"the {what} is too small: {image.shape[1]}x{image.shape[0]} pixels")
    return np.ascontiguousarray(image)


def check_landmarks(points: object, what: str = "landmarks") -> np.ndarray | None:
    """``(68, 2)`` float64 copy of detector output, or None when no face was found.

    ``None`` and the detector convention "every value is -1" both mean no face.
    """
    if points is None:
        return None
    arr = np.array(points, dtype=np.float64)
    if arr.shape != (68, 2):
        raise InputError(f"{what} must have shape (68, 2), got {arr.shape}")
    if np.mean(arr) == -1:
        return None
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what} contain non-finite values")
    return arr


@dataclass(frozen=True)
class CropInfo:
    """Where the crop picture came from, in the official ``crop_info`` layout.

    ``size_wh``: (w, h) of the face-quad box (``resize`` mode: the whole picture). Rendered frames are
    resized to this aspect ratio, also in the ext modes.
    ``crop_box``: (clx, cly, crx, cry) int pixels, or None in ``resize`` mode.
    ``quad_box``: (lx, ly, rx, ry) float pixels relative to ``crop_box``, or None; the cuts use ``int()``.
    """

    size_wh: tuple[int, int]
    crop_box: tuple[int, int, int, int] | None
    quad_box: tuple[float, float, float, float] | None

    def as_tuple(self) -> tuple:
        """``((w, h), crop_box, quad_box)`` exactly as the official code passes it around."""
        return (self.size_wh, self.crop_box, self.quad_box)

    def quad_box_int(self) -> tuple[int, int, int, int]:
        """The quad box truncated with ``int()``, as every cut and paste uses it."""
        if self.quad_box is None:
            raise InputError("this crop_info has no quad box (resize mode)")
        lx, ly, rx, ry = self.quad_box
        return int(lx), int(ly), int(rx), int(ry)

    def scaled(self, scale: int) -> CropInfo:
        """The same crop on the picture enlarged ``scale`` times (e.g. by the x2 background upscaler): the
        crop box and the int-truncated quad box multiplied exactly (whole pixels of the original stay whole
        pixels); ``size_wh``, the aspect rendered frames are resized to, is kept. ``scale=1``: ``self``."""
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise InputError(f"crop scale must be a whole number >= 1, got {scale!r}")
        if scale == 1:
            return self
        if self.crop_box is None:
            raise InputError("this crop_info has no crop box to scale (resize mode)")
        lx, ly, rx, ry = self.quad_box_int()
        return CropInfo(
            self.size_wh,
            tuple(int(v) * scale for v in self.crop_box),
            (float(lx * scale), float(ly * scale), float(rx * scale), float(ry * scale)),
        )


@dataclass(frozen=True)
class FaceBoxes:
    """Output of :func:`face_boxes`.

    ``rsize``: (w, h) the picture is resized to before cutting (the original size unless the face is huge).
    ``crop_box``: (clx, cly, crx, cry) in the resized picture. ``quad_box``: (lx, ly, rx, ry), relative to the
    crop box when the crop box is smaller than the picture, else absolute.
    ``quad``: (4, 2) corners of the oriented face square (same frame as ``quad_box``, without the +0.5).
    """

    rsize: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    quad_box: tuple[float, float, float, float]
    quad: np.ndarray

    def crop_info(self) -> CropInfo:
        """The official ``crop_info``: size of the int-truncated quad box, crop box, quad box."""
        lx, ly, rx, ry = (int(v) for v in self.quad_box)
        return CropInfo((rx - lx, ry - ly), self.crop_box, self.quad_box)


def face_boxes(
    lm68: np.ndarray, image_wh: tuple[int, int], output_size: int = ALIGN_OUTPUT_SIZE
) -> FaceBoxes:
    """Crop box and face-quad box from 68 landmarks ``(68, 2)`` (x, y pixels) on a ``(W, H)`` picture."""
    lm = np.asarray(lm68, dtype=np.float64)
    width, height = int(image_wh[0]), int(image_wh[1])

    left_eye = np.mean(lm[36:42], axis=0)
    right_eye = np.mean(lm[42:48], axis=0)
    eyes_mid = (left_eye + right_eye) * 0.5
    eye_span = right_eye - left_eye
    mouth_mid = (lm[48] + lm[54]) * 0.5
    eyes_to_mouth = mouth_mid - eyes_mid

    # Half-side vector of the square: eye direction tilted by the eye->mouth direction turned 90 degrees.
    half_x = np.array([eye_span[0] + eyes_to_mouth[1], eye_span[1] - eyes_to_mouth[0]])
    half_x /= np.hypot(half_x[0], half_x[1])
    half_x *= max(
        np.hypot(eye_span[0], eye_span[1]) * 2.0, np.hypot(eyes_to_mouth[0], eyes_to_mouth[1]) * 1.8
    )
    half_y = np.array([-half_x[1], half_x[0]])
    centre = eyes_mid + eyes_to_mouth * 0.1
    quad = np.stack(
        [
            centre - half_x - half_y,
            centre - half_x + half_y,
            centre + half_x + half_y,
            centre + half_x - half_y,
        ]
    )
    side = np.hypot(half_x[0], half_x[1]) * 2

    shrink = int(np.floor(side / output_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(width) / shrink)), int(np.rint(float(height) / shrink)))
        quad /= shrink
        side /= shrink
    else:
        rsize = (int(np.rint(float(width))), int(np.rint(float(height))))
    rw, rh = rsize

    border = max(int(np.rint(side * 0.1)), 3)
    tight = (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )
    crop_box = (
        max(tight[0] - border, 0),
        max(tight[1] - border, 0),
        min(tight[2] + border, rw),
        min(tight[3] + border, rh),
    )
    if crop_box[2] - crop_box[0] < rw or crop_box[3] - crop_box[1] < rh:
        quad -= crop_box[0:2]

    flat = (quad + 0.5).flatten()
    lx = max(min(flat[0], flat[2]), 0)
    ly = max(min(flat[1], flat[7]), 0)
    rx = min(max(flat[4], flat[6]), rw)
    # The bottom edge is clamped by the picture WIDTH in the official code; kept for identical boxes.
    ry = min(max(flat[3], flat[5]), rw)
    quad_box = (float(lx), float(ly), float(rx), float(ry))
    return FaceBoxes(rsize, crop_box, quad_box, quad)


def cut_face(image: np.ndarray, boxes: FaceBoxes, extended: bool) -> np.ndarray:
    """Cut one RGB frame ``(H, W, 3)`` to the crop box (and, unless ``extended``, to the int quad box)."""
    resized = cv2.resize(image, (boxes.rsize[0], boxes.rsize[1]))
    clx, cly, crx, cry = boxes.crop_box
    region = resized[cly:cry, clx:crx]
    if not extended:
        lx, ly, rx, ry = (int(v) for v in boxes.quad_box)
        region = region[ly:ry, lx:rx]
    if region.shape[0] < 1 or region.shape[1] < 1:
        raise InputError(
            f"the face crop is empty (crop box {boxes.crop_box}, quad box {boxes.quad_box}); "
            "the detected face is degenerate or outside the picture"
        )
    return region


@dataclass(frozen=True)
class CropPlan:
    """How every frame of one input is cut: the mode, the boxes (None for ``resize``) and ``crop_info``."""

    mode: PreprocessMode
    boxes: FaceBoxes | None
    crop_info: CropInfo
    landmarks: np.ndarray | None
    """(68, 2) float64 landmarks on the first full frame that defined the boxes (None for ``resize``)."""

    def region(self, image: np.ndarray) -> np.ndarray:
        """The cut of one RGB frame before resizing (the whole frame in ``resize`` mode)."""
        if self.boxes is None:
            return image
        return cut_face(image, self.boxes, self.mode.is_extended)

    def picture(self, image: np.ndarray, size: int) -> np.ndarray:
        """The ``(size, size, 3)`` uint8 crop picture of one RGB frame (cv2 bilinear resize of :meth:`region`)."""
        return cv2.resize(self.region(image), (int(size), int(size)))

    def to_picture(self, points: np.ndarray, image_wh: tuple[int, int], size: int) -> np.ndarray:
        """(N, 2) (x, y) pixels of a ``(W, H)`` frame -> where they lie on its :meth:`picture` of ``size``."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        width, height = float(image_wh[0]), float(image_wh[1])
        if self.boxes is None:
            return pts * np.array([size / width, size / height])
        rw, rh = self.boxes.rsize
        pts = (pts + 0.5) * np.array([rw / width, rh / height]) - 0.5  # cv2.resize maps pixel centres
        clx, cly, crx, cry = self.boxes.crop_box
        region_w, region_h = crx - clx, cry - cly
        pts = pts - np.array([clx, cly])
        if not self.mode.is_extended:
            lx, ly, rx, ry = (int(v) for v in self.boxes.quad_box)
            pts = pts - np.array([lx, ly])
            region_w, region_h = rx - lx, ry - ly
        return (pts + 0.5) * np.array([size / max(region_w, 1), size / max(region_h, 1)]) - 0.5


def plan_crop(image: np.ndarray, mode: str | PreprocessMode, landmarks_fn: LandmarksFn | None) -> CropPlan:
    """Detect the face on the first frame ``image`` (RGB uint8) and fix the cut for ``mode``.

    ``resize`` needs no landmarks. Other modes raise :class:`InputError` when no face is found.
    """
    mode = PreprocessMode.parse(mode)
    image = check_rgb(image)
    height, width = image.shape[:2]
    if not mode.crops_face:
        return CropPlan(mode, None, CropInfo((width, height), None, None), None)
    if landmarks_fn is None:
        raise InputError(f"preprocess mode {mode.value!r} needs a face landmark detector")
    lm = check_landmarks(landmarks_fn(image), "landmarks of the source picture")
    if lm is None:
        raise InputError(
            "no face was detected in the source picture; use a picture with a clearly visible face"
        )
    boxes = face_boxes(lm, (width, height))
    return CropPlan(mode, boxes, boxes.crop_info(), lm)
