"""dlib backend: HOG frontal face detector + 68-point shape predictor.

Needs the PyPI packages ``dlib-bin`` (a wheel of dlib; or ``dlib`` built from source) and
``face-recognition-models`` (ships ``models/shape_predictor_68_face_landmarks.dat``). That predictor was trained
on the iBUG 300-W data set, whose licence excludes commercial use: use this backend for tests, CI and
personal use, not as a shipped default.

This reproduces the landmarks of the project's official reference runs (the ``e2e_*`` / ``prep_*`` parity
vectors): ``detector(img, 1)`` (one upsampling, threshold 0) on the RGB picture, the detection rectangle
fed unchanged to the predictor, integer landmark coordinates.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..checkpoints import ModelCache, cached, file_identity
from ..errors import InputError
from . import RawDetection

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
UPSAMPLE = 1
"""Times the detector doubles the picture before searching (finds faces down to about 40 px)."""


def _dlib():
    try:
        import dlib
    except ImportError as exc:
        raise InputError(
            "the 'dlib' face backend needs dlib: pip install dlib-bin face-recognition-models "
            "(or choose the 'retinaface' backend)"
        ) from exc
    return dlib


def predictor_path(model_dir: Path | str | None = None) -> Path:
    """``model_dir/shape_predictor_68_face_landmarks.dat`` if present, else the file inside the installed
    ``face_recognition_models`` package (located without importing it). InputError when neither exists."""
    if model_dir is not None and (Path(model_dir) / PREDICTOR_FILE).is_file():
        return Path(model_dir) / PREDICTOR_FILE
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "models" / PREDICTOR_FILE
        if path.is_file():
            return path
    raise InputError(
        f"the 'dlib' face backend needs {PREDICTOR_FILE}: pip install face-recognition-models "
        "(non-commercial licence), or choose the 'retinaface' backend"
    )


def _detector(cache: ModelCache | None = None):
    dlib = _dlib()
    return cached(("dlib-hog-detector",), dlib.get_frontal_face_detector, cache)


def _predictor(model_dir: Path | str | None, cache: ModelCache | None = None):
    dlib = _dlib()
    path = predictor_path(model_dir)
    return cached(
        ("dlib-shape-predictor", *file_identity(path)), lambda: dlib.shape_predictor(str(path)), cache
    )


def find_boxes(
    rgb: np.ndarray,
    model_dir: Path | str | None = None,
    *,
    device: str = "cpu",
    upsample: int = UPSAMPLE,
    cache: ModelCache | None = None,
) -> list[RawDetection]:
    """HOG detections on an (H, W, 3) uint8 RGB picture, in dlib's order (highest score first).

    Boxes are dlib's integer rectangles (left, top, right, bottom) as floats.
    """
    del device  # CPU only
    rects, scores, _ = _detector(cache).run(rgb, upsample, 0.0)
    return [
        RawDetection((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())), float(s))
        for r, s in zip(rects, scores, strict=True)
    ]


def fit_landmarks(
    rgb: np.ndarray,
    box: tuple[float, float, float, float],
    model_dir: Path | str | None = None,
    *,
    device: str = "cpu",
    cache: ModelCache | None = None,
) -> np.ndarray:
    """(68, 2) float32 integer-valued (x, y) landmarks for one box (rounded to dlib's integer rectangle)."""
    del device
    dlib = _dlib()
    rect = dlib.rectangle(*(round(v) for v in box))
    shape = _predictor(model_dir, cache)(rgb, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
