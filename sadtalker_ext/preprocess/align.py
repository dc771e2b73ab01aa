"""Alignment of a crop picture to the 224x224 input of the face-reconstruction network.

Deep3DFaceRecon convention, as SadTalker uses it: five image landmarks (eye centres, nose tip, mouth corners;
pixels, **y up**, i.e. ``y = H - 1 - row``) are fitted by least squares to five standard 3D face points with a
scaled orthographic projection. The fitted scale ``s`` and the image position ``(tx, ty)`` of the 3D origin
define a resize (PIL bicubic) by ``102 / s`` and a 224x224 cut centred on the face.

The five standard points ship as ``models/lm3d_std_5p.json`` (derived from SadTalker's
``similarity_Lm3D_all.mat``; float32 values).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..paths import DATA_DIR

STANDARD_LANDMARKS_FILE = DATA_DIR / "lm3d_std_5p.json"
TARGET_SIZE = 224
RESCALE_FACTOR = 102.0


def load_standard_landmarks(path: str | Path | None = None) -> np.ndarray:
    """The five standard 3D landmarks ``(5, 3)`` float32 (left eye, right eye, nose, left/right mouth corner)."""
    file = Path(path) if path is not None else STANDARD_LANDMARKS_FILE
    try:
        doc = json.loads(file.read_text())
        points = np.asarray(doc["points"], dtype=np.float32)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read the standard face landmarks {file}: {exc}") from exc
    if points.shape != (5, 3):
        raise InputError(f"{file}: expected 5 points of 3 values, got shape {points.shape}")
    return points


def five_points(lm: np.ndarray) -> np.ndarray:
    """``(5, 2)`` alignment points from 68 landmarks (or the 5 points themselves when given 5 rows).

    Order: mean of 36/39 (left eye), mean of 42/45 (right eye), 30 (nose tip), 48, 54 (mouth corners).
    """
    lm = np.asarray(lm)
    if lm.shape[0] == 5:
        return lm
    return np.stack(
        [
            np.mean(lm[[36, 39]], axis=0),
            np.mean(lm[[42, 45]], axis=0),
            lm[30],
            lm[48],
            lm[54],
        ]
    )


def fit_scale_translation(points_2d: np.ndarray, points_3d: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares scaled orthographic fit of ``points_3d (N, 3)`` to ``points_2d (N, 2)`` (N >= 4).

    Solves ``u = r1 . P + a``, ``v = r2 . P + b`` for the 8 unknowns and returns ``(t, s)``:
    ``t = (a, b)`` (2,) float64 pixels, ``s = (|r1| + |r2|) / 2`` pixels per 3D unit.
    """
    n = points_2d.shape[0]
    system = np.zeros((2 * n, 8))
    system[0::2, 0:3] = points_3d
    system[0::2, 3] = 1
    system[1::2, 4:7] = points_3d
    system[1::2, 7] = 1
    rhs = np.reshape(points_2d, (2 * n, 1))
    sol = np.linalg.lstsq(system, rhs, rcond=-1)[0][:, 0]
    scale = (np.linalg.norm(sol[0:3]) + np.linalg.norm(sol[4:7])) / 2
    return np.array([sol[3], sol[7]]), float(scale)


def fallback_landmarks(standard_5p: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(5, 2)`` float32 points used when no face is found on the crop: the standard x, y mapped to the picture."""
    unit = (standard_5p[:, :2] + 1) / 2.0
    return np.concatenate([unit[:, :1] * width, unit[:, 1:2] * height], 1)


def landmarks_for_alignment(
    lm68: np.ndarray | None, standard_5p: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, bool]:
    """Landmarks in the alignment convention and whether the fallback was used.

    ``lm68``: (68, 2) detector output (x, y-down pixels) or None. Returns (68, 2) float64 with
    ``y -> height - 1 - y``, or the (5, 2) fallback of :func:`fallback_landmarks` (not flipped).
    """
    if lm68 is None:
        return fallback_landmarks(standard_5p, width, height), True
    out = np.array(lm68, dtype=np.float64)
    out[:, -1] = height - 1 - out[:, -1]
    return out, False


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align_picture`.

    ``image``: (224, 224, 3) uint8 RGB network input. ``landmarks``: the input landmarks moved to it (y up).
    ``trans_params``: (5,) float64 ``(W, H, s, tx, ty)``: picture size, resize factor, fitted 3D origin.
    """

    image: np.ndarray
    landmarks: np.ndarray
    trans_params: np.ndarray


def align_picture(
    picture: np.ndarray,
    landmarks: np.ndarray,
    standard_5p: np.ndarray,
    target_size: int = TARGET_SIZE,
    rescale_factor: float = RESCALE_FACTOR,
) -> Alignment:
    """Resize (PIL bicubic) and cut an RGB uint8 picture to ``target_size`` around the fitted face.

    ``landmarks``: (68, 2) or (5, 2) pixels, y up (see :func:`landmarks_for_alignment`).
    """
    height0, width0 = picture.shape[:2]
    t, fit = fit_scale_translation(five_points(landmarks), standard_5p)
    if not np.isfinite(fit) or fit <= 0:
        raise InputError("face alignment failed: the landmarks are degenerate")
    scale = rescale_factor / fit
    new_w = int(np.int32(width0 * scale))
    new_h = int(np.int32(height0 * scale))
    if new_w < 1 or new_h < 1:
        raise InputError(f"face alignment failed: picture would be resized to {new_w}x{new_h}")
    half = target_size / 2
    left = int(np.int32(new_w / 2 - half + float((t[0] - width0 / 2) * scale)))
    top = int(np.int32(new_h / 2 - half + float((height0 / 2 - t[1]) * scale)))

    resized = Image.fromarray(picture).resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
    cut = np.asarray(resized.crop((left, top, left + target_size, top + target_size)))

    # float64 here, as numpy 2 promotes float32 landmarks against the float64 fit (numpy 1 would stay float32)
    lm = np.asarray(landmarks, dtype=np.float64)
    moved = np.stack([lm[:, 0] - t[0] + width0 / 2, lm[:, 1] - t[1] + height0 / 2], axis=1) * scale
    moved = moved - np.array([[new_w / 2 - half, new_h / 2 - half]])
    params = np.array([width0, height0, scale, t[0], t[1]], dtype=np.float64)
    return Alignment(cut, moved, params)


def network_input(image224: np.ndarray) -> np.ndarray:
    """``(1, 3, 224, 224)`` float32 in [0, 1] from a (224, 224, 3) uint8 RGB image (divided in float64)."""
    return (np.asarray(image224, dtype=np.float64) / 255.0).astype(np.float32).transpose(2, 0, 1)[None].copy()
