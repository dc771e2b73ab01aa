"""Renderer driving math: coefficient rows -> mapping windows -> head pose -> 3D keypoints.

Pure functions (numpy for the coefficient bookkeeping, torch for the keypoint math), equal to the
official SadTalker renderer path, including its quirks:

* the mapping input of frame ``i`` is a window of 27 coefficient rows ``i-13 .. i+13`` with the
  indices clamped to ``[0, T-1]``, laid out channels-first ``(C, 27)``; the source window is the
  first-frame row repeated 27 times;
* head-pose logits (66 bins of 3 degrees) become degrees as ``3 * E[bin] - 99`` (softmax expectation),
  degrees become radians with ``3.14`` (not pi), and ``R = R_pitch(x) @ R_yaw(y) @ R_roll(z)``;
* only the y component of the predicted translation moves the keypoints (x and z are zeroed);
* frames are rendered in ``batch_size`` rows: the frame list is padded with copies of the last frame
  to a multiple of ``batch_size`` and split row-major, so row ``b`` holds frames
  ``b*steps .. b*steps+steps-1`` (``steps = ceil(T / batch_size)``);
* free-view yaw/pitch/roll lists are turned into per-frame degrees like the official
  ``gen_camera_pose`` (constant angular speed over the whole clip, the last key value itself is
  never reached, padded with the last value) and replace the predicted angles.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..preprocess.mode import PreprocessMode

SEMANTIC_RADIUS = 13
"""Half width of the mapping window (frames)."""
WINDOW = 2 * SEMANTIC_RADIUS + 1
"""Mapping window length: 27 frames."""
POSE_BINS = 66
"""Head-pose classifier bins (3 degrees each, bin 0 centred at -99 degrees)."""
EXP_COLUMNS = 64
"""Expression coefficients at the start of a coefficient row."""
MOTION_COLUMNS = 70
"""Expression (64) + rotation (3) + translation (3): what the audio-to-coefficient stage produces."""
FULL_COLUMNS = 73
"""Plus the crop parameters (s, tx, ty) of the source picture, used by the full-picture mapping net."""
PI_OFFICIAL = 3.14
"""The official degree-to-radian conversion uses 3.14, not math.pi."""


# ----------------------------------------------------------------------------------------------
# coefficient bookkeeping (numpy)


def assemble_coefficients(
    source_coeff: np.ndarray,
    target_coeff: np.ndarray,
    *,
    preprocess: str | PreprocessMode = PreprocessMode.CROP,
    still: bool = False,
    expression_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The rows the renderer sees, as the official facerender data preparation builds them.

    Args:
        source_coeff: ``(1, >=70)`` first-frame coefficients ``[exp 64 | angles 3 | trans 3 | s, tx, ty]``
            (73 values needed for full modes).
        target_coeff: ``(T, >=70)`` generated coefficients; only the first 70 columns are used.
        preprocess: crop mode (:class:`PreprocessMode` or its name); modes that feed the crop parameters to
            the mapping net (``full``/``extfull``) keep them (C = 73), others C = 70.
        still: replace columns ``64:`` (pose, translation and crop params) of every frame by the source's.
        expression_scale: factor on the 64 expression columns (float32 arithmetic, as numpy does).

    Returns:
        ``(source_row (1, C), sequence (T, C))``, float32.
    """
    src = np.asarray(source_coeff, dtype=np.float32)
    tgt = np.asarray(target_coeff, dtype=np.float32)
    if src.ndim == 1:
        src = src[None]
    if tgt.ndim != 2 or tgt.shape[0] < 1 or tgt.shape[1] < MOTION_COLUMNS:
        raise InputError(f"target coefficients must be (frames >= 1, >= 70); got shape {tgt.shape}")
    mode = PreprocessMode.parse(preprocess)
    channels = FULL_COLUMNS if mode.uses_crop_params else MOTION_COLUMNS
    if src.ndim != 2 or src.shape[1] < channels:
        raise InputError(
            f"source coefficients must have at least {channels} values for preprocess {mode.value!r}; "
            f"got shape {src.shape}"
        )
    source_row = src[:1, :channels].copy()
    seq = tgt[:, :MOTION_COLUMNS].copy()
    seq[:, :EXP_COLUMNS] = seq[:, :EXP_COLUMNS] * np.float32(expression_scale)
    if channels == FULL_COLUMNS:
        crop = np.repeat(source_row[:, MOTION_COLUMNS:], seq.shape[0], axis=0)
        seq = np.concatenate([seq, crop], axis=1)
    if still:
        seq[:, EXP_COLUMNS:] = source_row[:, EXP_COLUMNS:]
    return source_row, seq


def window_indices(frame_count: int, frame_index: int, radius: int = SEMANTIC_RADIUS) -> np.ndarray:
    """Row indices of the mapping window of one frame: ``clip(i-radius .. i+radius, 0, T-1)``, ``(2r+1,)`` int64."""
    if frame_count < 1:
        raise InputError("the coefficient sequence is empty")
    offsets = np.arange(-radius, radius + 1, dtype=np.int64)
    return np.clip(frame_index + offsets, 0, frame_count - 1)


def target_windows(sequence: np.ndarray, frame_indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Mapping inputs of the given frames: ``(n, C, 27)`` float32 from a ``(T, C)`` sequence."""
    seq = np.asarray(sequence, dtype=np.float32)
    rows = np.stack([window_indices(seq.shape[0], int(i)) for i in frame_indices])  # (n, 27)
    return np.ascontiguousarray(seq[rows].transpose(0, 2, 1))


def source_window(source_row: np.ndarray) -> np.ndarray:
    """Mapping input of the source: the ``(1, C)`` row repeated 27 times, ``(1, C, 27)`` float32."""
    row = np.asarray(source_row, dtype=np.float32).reshape(1, -1)
    return np.ascontiguousarray(np.repeat(row[:, :, None], WINDOW, axis=2))


def batch_steps(frame_count: int, batch_size: int) -> int:
    """Generator calls per batch row: ``ceil(T / batch_size)``."""
    if frame_count < 1:
        raise InputError("nothing to render: the coefficient sequence is empty")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    return -(-frame_count // batch_size)


def batch_layout(frame_count: int, batch_size: int) -> np.ndarray:
    """Official batch layout: ``(batch_size, steps)`` int64 positions in the padded frame list.

    Position ``p`` renders frame ``min(p, T-1)`` (the list is padded with copies of the last frame);
    positions ``>= T`` are dropped after rendering. Step ``s`` of the official loop renders column ``s``.
    """
    steps = batch_steps(frame_count, batch_size)
    return np.arange(steps * batch_size, dtype=np.int64).reshape(batch_size, steps)


def padded_windows(sequence: np.ndarray, batch_size: int) -> np.ndarray:
    """The official ``target_semantics_list``: ``(batch_size, steps, C, 27)`` float32."""
    seq = np.asarray(sequence, dtype=np.float32)
    layout = batch_layout(seq.shape[0], batch_size)
    frames = np.minimum(layout.reshape(-1), seq.shape[0] - 1)
    return target_windows(seq, frames).reshape(*layout.shape, seq.shape[1], WINDOW)


def camera_pose_sequence(key_degrees: Sequence[float], frame_count: int) -> np.ndarray:
    """Per-frame degrees for a free-view yaw/pitch/roll list, like the official ``gen_camera_pose``.

    One value: held for every frame. Several values: every segment ``a -> b`` is walked with
    ``np.arange(a, b, step)`` (``b`` excluded) at one common angular speed
    ``sum |b - a| / (T - 1)`` degrees per frame; the concatenation is cut to ``T`` frames or padded
    with its last value.

    Where the official code fails (division by zero) this function is defined instead: a segment
    with ``a == b`` contributes no frame, a list whose values are all equal holds that value, and
    ``T == 1`` gives the first value.

    Returns ``(T,)`` float64 degrees (the renderer uses them as float32).
    """
    keys = [float(v) for v in key_degrees]
    if not keys:
        raise InputError("a yaw/pitch/roll list needs at least one value")
    if not all(math.isfinite(v) for v in keys):
        raise InputError(f"yaw/pitch/roll values must be finite, got {keys}")
    if frame_count < 1:
        raise InputError("nothing to render: the coefficient sequence is empty")
    if len(keys) == 1 or frame_count == 1:
        return np.full(frame_count, keys[0], dtype=np.float64)
    total = 0.0
    for prev, cur in itertools.pairwise(keys):
        total += abs(cur - prev)
    per_frame = total / (frame_count - 1)
    values: list[float] = []
    for prev, cur in itertools.pairwise(keys):
        change = cur - prev
        if change == 0:
            continue
        step = per_frame * abs(change) / change
        values.extend(np.arange(prev, cur, step).tolist())
    if not values:
        values = [keys[0]]
    values = values[:frame_count]
    values.extend([values[-1]] * (frame_count - len(values)))
    return np.asarray(values, dtype=np.float64)


def camera_pose_layout(key_degrees: Sequence[float], frame_count: int, batch_size: int) -> np.ndarray:
    """The official ``*_c_seq`` array: ``(batch_size, steps)`` float32 degrees, padded with the last value."""
    seq = camera_pose_sequence(key_degrees, frame_count)
    layout = batch_layout(frame_count, batch_size)
    return seq[np.minimum(layout, frame_count - 1)].astype(np.float32)


# ----------------------------------------------------------------------------------------------
# head pose and keypoints (torch)


def headpose_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Head-pose angle from the 66-bin classifier: ``3 * sum(softmax(logits) * bin) - 99``.

    ``logits (B, 66)`` -> degrees ``(B,)``, same dtype.
    """
    prob = torch.softmax(logits, dim=1)
    bins = torch.arange(POSE_BINS, dtype=logits.dtype, device=logits.device)
    return torch.sum(prob * bins, dim=1) * 3 - 99


def rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Head rotation from degrees ``(B,)`` each: ``R = R_x(pitch) @ R_y(yaw) @ R_z(roll)``, ``(B, 3, 3)``.

    Radians are ``deg / 180 * 3.14`` (the official constant).
    """

    def rad(deg: torch.Tensor) -> torch.Tensor:
        return deg / 180 * PI_OFFICIAL

    p, y, r = rad(pitch), rad(yaw), rad(roll)
    one, zero = torch.ones_like(p), torch.zeros_like(p)

    def mat(*entries: torch.Tensor) -> torch.Tensor:
        return torch.stack(entries, dim=1).reshape(-1, 3, 3)

    rx = mat(one, zero, zero, zero, torch.cos(p), -torch.sin(p), zero, torch.sin(p), torch.cos(p))
    ry = mat(torch.cos(y), zero, torch.sin(y), zero, one, zero, -torch.sin(y), zero, torch.cos(y))
    rz = mat(torch.cos(r), -torch.sin(r), zero, torch.sin(r), torch.cos(r), zero, zero, zero, one)
    return torch.matmul(torch.matmul(rx, ry), rz)


@dataclass(frozen=True)
class KeypointMotion:
    """Result of :func:`transform_keypoints`; batch ``B``, ``K`` keypoints."""

    value: torch.Tensor
    """``(B, K, 3)`` transformed keypoints (generator ``kp_source`` / ``kp_driving``)."""
    yaw: torch.Tensor
    """``(B,)`` degrees actually used (predicted or overridden); same for ``pitch``, ``roll``."""
    pitch: torch.Tensor
    roll: torch.Tensor
    rotation: torch.Tensor
    """``(B, 3, 3)``."""
    translation: torch.Tensor
    """``(B, 3)`` translation actually added: the predicted ``t`` with x and z multiplied by 0
    (``-0.0`` for negative values, like the official in-place zeroing)."""


def transform_keypoints(
    kp_canonical: torch.Tensor,
    head: Mapping[str, torch.Tensor],
    *,
    yaw: torch.Tensor | None = None,
    pitch: torch.Tensor | None = None,
    roll: torch.Tensor | None = None,
) -> KeypointMotion:
    """Official ``keypoint_transformation``: ``kp @ R^T + [0, t_y, 0] + exp``.

    Args:
        kp_canonical: ``(B, K, 3)`` canonical keypoints (KPDetector output).
        head: MappingNet output: ``yaw``/``pitch``/``roll`` logits ``(B, 66)``, ``t`` ``(B, 3)``,
            ``exp`` ``(B, 3K)``. Not modified (the official code zeroes ``t[:, 0]`` and ``t[:, 2]`` in
            place; that copy is returned as ``translation``).
        yaw, pitch, roll: optional ``(B,)`` degrees replacing the predicted angles (free-view mode).
    """
    angles = {}
    for name, override in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
        predicted = headpose_to_degrees(head[name])
        angles[name] = predicted if override is None else override.to(predicted)
    rot = rotation_matrix(angles["yaw"], angles["pitch"], angles["roll"])
    keep_y = torch.tensor([0.0, 1.0, 0.0], dtype=head["t"].dtype, device=head["t"].device)
    t = head["t"] * keep_y
    rotated = torch.matmul(kp_canonical, rot.transpose(1, 2))
    value = rotated + t[:, None, :]
    value = value + head["exp"].reshape(head["exp"].shape[0], -1, 3)
    return KeypointMotion(value, angles["yaw"], angles["pitch"], angles["roll"], rot, t)
