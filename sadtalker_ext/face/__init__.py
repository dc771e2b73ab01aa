"""Face detection and 68-point landmarks (iBUG 300-W order) with two interchangeable backends.

- ``"retinaface"`` (default): RetinaFace-ResNet50 boxes + AWing FAN 98-point landmarks mapped to 68, with
  facexlib's weight files (``detection_Resnet50_Final.pth``, ``alignment_WFLW_4HG.pth``) from the
  ``gfpgan/weights`` folder — what official SadTalker uses.
- ``"dlib"``: dlib's HOG frontal face detector + its 68-point shape predictor (from the PyPI packages
  ``dlib-bin`` and ``face-recognition-models``; the predictor's training data forbids commercial use).

Both run in two steps: boxes on a copy of the picture no larger than ``max_side`` pixels (mapped back to the
full picture), then landmarks per box on the full-resolution picture. Coordinates are pixels (x, y) of the
picture passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ..checkpoints import ModelCache
from ..errors import InputError

log = logging.getLogger(__name__)

BACKENDS = ("retinaface", "dlib")
DEFAULT_BACKEND = "retinaface"
DETECT_MAX_SIDE = 2048
"""Pictures with a longer side are searched for faces on a downscaled copy (INTER_AREA)."""


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in picture pixels.

    ``box``: (x1, y1, x2, y2) float, clipped to the picture; ``score``: detector confidence (RetinaFace:
    probability in [0, 1]; dlib: HOG margin, larger is surer); ``lm68``: (68, 2) float32 (x, y) landmarks
    (may lie slightly outside the picture).
    """

    box: tuple[float, float, float, float]
    score: float
    lm68: np.ndarray

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


@dataclass(frozen=True)
class RawDetection:
    """A backend's detection before landmarks: ``box`` (x1, y1, x2, y2) unclipped pixels, ``score``."""

    box: tuple[float, float, float, float]
    score: float


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(f"face detection needs an (H, W, 3) uint8 RGB picture, got {arr.shape} {arr.dtype}")
    return np.ascontiguousarray(arr)


def _backend(name: str):
    if name == "dlib":
        from . import dlib_backend

        return dlib_backend
    if name == "retinaface":
        from . import retinaface_backend

        return retinaface_backend
    raise InputError(f"unknown face backend {name!r}; choose one of {', '.join(BACKENDS)}")


def detect_faces(
    rgb: np.ndarray,
    backend: str = DEFAULT_BACKEND,
    model_dir: Path | str | None = None,
    *,
    face_index: int = 0,
    order: Literal["area", "score"] = "area",
    max_side: int | None = DETECT_MAX_SIDE,
    device: str = "cpu",
    cache: ModelCache | None = None,
    **backend_options,
) -> list[Face]:
    """All faces of an (H, W, 3) uint8 RGB picture, each with 68 landmarks.

    ``order="area"``: largest box first (ties keep the detector's order); ``"score"``: detector order (highest
    confidence first, what official SadTalker takes as ``dets[0]``). ``max_side``: boxes are searched on a copy
    downscaled to at most this many pixels (default :data:`DETECT_MAX_SIDE`); ``None`` searches the picture at
    its own size, as facexlib does. ``order="score", max_side=None`` (with the retinaface backend's
    ``detector_input="rgb"``, ``conf_threshold=0.97``) reproduces official SadTalker's detection on the full
    picture; boxes are still clipped to the picture here. ``face_index`` is validated: when faces are
    found but fewer than ``face_index + 1``, InputError. No face at all -> empty list.
    ``model_dir``: the ``gfpgan/weights`` folder (RetinaFace / AWing files; for dlib an optional folder holding
    ``shape_predictor_68_face_landmarks.dat``). ``backend_options`` go to the backend (retinaface:
    ``detector_input``, ``conf_threshold``; dlib: ``upsample``). ``cache``: where the backend keeps its
    networks (default: the process cache, see :func:`.checkpoints.cached`).
    """
    img = _check_rgb(rgb)
    if order not in ("area", "score"):
        raise ValueError(f"order must be 'area' or 'score', got {order!r}")
    mod = _backend(backend)
    h, w = img.shape[:2]
    scale = 1.0
    small = img
    if max_side is not None and max(h, w) > max_side:
        scale = max_side / max(h, w)
        small = cv2.resize(
            img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
        log.info("face detection on a %dx%d copy of the %dx%d picture", small.shape[1], small.shape[0], w, h)
    found: Sequence[RawDetection] = mod.find_boxes(
        small, model_dir, device=device, cache=cache, **backend_options
    )
    if scale != 1.0:
        found = [RawDetection(tuple(v / scale for v in d.box), d.score) for d in found]
    faces = []
    for det in found:
        lm = np.asarray(
            mod.fit_landmarks(img, det.box, model_dir, device=device, cache=cache), dtype=np.float32
        )
        x1, y1, x2, y2 = det.box
        box = (
            float(min(max(x1, 0.0), w)),
            float(min(max(y1, 0.0), h)),
            float(min(max(x2, 0.0), w)),
            float(min(max(y2, 0.0), h)),
        )
        faces.append(Face(box, float(det.score), lm))
    if order == "area":
        faces.sort(key=lambda f: -f.area)
    _validate_index(face_index, len(faces))
    return faces


def _validate_index(face_index: int, count: int) -> None:
    if face_index < 0:
        raise InputError(f"face index must be 0 or more, got {face_index}")
    if count and face_index >= count:
        raise InputError(
            f"face index {face_index} was asked for, but only {count} face(s) were found "
            f"(indices 0..{count - 1}, largest first). Choose a smaller face index."
        )


def landmarks68(
    rgb: np.ndarray,
    backend: str = DEFAULT_BACKEND,
    model_dir: Path | str | None = None,
    face_index: int = 0,
    **options,
) -> np.ndarray | None:
    """(68, 2) float32 (x, y) landmarks of face ``face_index`` (see :func:`detect_faces` for ordering and
    options), or None when no face is found."""
    faces = detect_faces(rgb, backend, model_dir, face_index=face_index, **options)
    if not faces:
        return None
    return faces[face_index].lm68


def closest_face(faces: Sequence[Face], near: np.ndarray) -> Face | None:
    """The face of ``faces`` that is the one whose expected (68, 2) landmarks are ``near``: the smallest
    mean landmark distance among the faces whose landmark centre lies inside the box around ``near``;
    None when no face lies there (the face seen before is not among ``faces``)."""
    expected = np.asarray(near, dtype=np.float64).reshape(68, 2)
    (x1, y1), (x2, y2) = expected.min(axis=0), expected.max(axis=0)
    best: Face | None = None
    best_distance = np.inf
    for face in faces:
        points = np.asarray(face.lm68, dtype=np.float64)
        cx, cy = points.mean(axis=0)
        if not (x1 <= cx <= x2 and y1 <= cy <= y2):
            continue
        distance = float(np.linalg.norm(points - expected, axis=1).mean())
        if distance < best_distance:
            best, best_distance = face, distance
    return best


@dataclass(frozen=True)
class FaceLandmarks:
    """The landmark callable of one generation: ``(rgb) -> (68, 2) float32 or None``.

    Called on the full picture it gives face ``face_index`` (:func:`landmarks68`). :meth:`in_crop` is the
    later pass on a crop of that picture: there the chosen face is the one at the landmarks expected from
    the first pass, whatever its index among the faces the crop holds.
    """

    backend: str = DEFAULT_BACKEND
    model_dir: Path | str | None = None
    face_index: int = 0
    device: str = "cpu"
    cache: ModelCache | None = field(default=None, compare=False)
    """Where the backend keeps its networks (a pipeline's own; default: the process cache)."""

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        return landmarks68(
            rgb, self.backend, self.model_dir, self.face_index, device=self.device, cache=self.cache
        )

    def in_crop(self, rgb: np.ndarray, near: np.ndarray | None) -> np.ndarray | None:
        """Landmarks of the chosen face on a crop picture; ``near``: its (68, 2) landmarks expected there
        (mapped from the full picture), or None when unknown (``resize`` mode: the crop is the whole
        picture, so ``face_index`` applies). None when the chosen face is not found on the crop."""
        if near is None:
            return self(rgb)
        faces = detect_faces(rgb, self.backend, self.model_dir, device=self.device, cache=self.cache)
        face = closest_face(faces, near)
        return None if face is None else face.lm68


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DETECT_MAX_SIDE",
    "Face",
    "FaceLandmarks",
    "RawDetection",
    "closest_face",
    "detect_faces",
    "landmarks68",
]
