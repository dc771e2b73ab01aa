"""Audio -> 3DMM motion coefficients (official ``Audio2Coeff.generate`` and the coefficient part of
``get_data`` / ``get_facerender_data``).

Coefficient layout per video frame (25 fps), 70 float32 values:
columns 0..63 expression, 64..66 rotation angles (pitch, yaw, roll; radians), 67..69 translation.

Steps, in the official order:

1. Reference rows (T, 70): the source's first-frame coefficients repeated; with a blink reference the
   expression columns come from the reference coefficients (tiled / truncated to T) and the blink ratio is 0.
2. ExpNet on chunks of 10 frames -> expression (T, 64).
3. PoseVAE: frame 0 is the reference pose; frames 1..T-1 are decoded in chunks of 32 with one
   ``randn(1, 64)`` noise draw per chunk (a last partial chunk re-uses the last 32 windows and keeps its tail).
   pose = reference pose + motion, row 0 exactly the reference.
4. Savitzky-Golay smoothing of the pose over time (window 13, order 2; shorter odd window for T < 13).
5. With a pose reference: pose += ref_pose[t] - ref_pose[0] (tiled / truncated to T).
   -> ``mat_coeffs`` (what the official code writes to ``{pic}##{audio}.mat``).

What the renderer makes of these rows (``get_facerender_data``: expression scale, still mode, the crop
parameters of full modes) is :func:`sadtalker_ext.render.motion.assemble_coefficients`, the one place.

Deviation: for T <= 2 the official smoothing raises (window 1 <= polynomial order 2); here the pose is then
left unsmoothed (a window of one frame is the identity).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.io import savemat
from scipy.signal import savgol_filter

from ..errors import InputError
from ..options import REF_MODES
from .loading import MotionNets

log = logging.getLogger(__name__)

EXP_DIM = 64
POSE_DIM = 6
COEFF_DIM = EXP_DIM + POSE_DIM
SAVGOL_WINDOW = 13
SAVGOL_ORDER = 2

ProgressFn = Callable[[int, int], None]
"""``progress(done, total)``: network calls made of ``total`` (ExpNet chunks, then PoseVAE chunks)."""
PROGRESS_REPORTS = 100
"""About how many times a run reports progress (each time a further 1 % of the network calls is done)."""


@dataclass(frozen=True)
class MotionResult:
    """Output of :func:`generate_coefficients`. All arrays are float32 numpy.

    mat_coeffs:  (T, 70) the official ``coeff_3dmm`` .mat content: the motion before expression scale /
                 still mode (those are the renderer's: :func:`sadtalker_ext.render.motion.assemble_coefficients`).
    exp_pred:    (T, 64) ExpNet output, or None in ``ref_mode='all'``.
    pose_motion: (T, 6) PoseVAE motion (row 0 zeros), or None in ``ref_mode='all'``.
    pose_raw:    (T, 6) reference pose + motion before smoothing, or None in ``ref_mode='all'``.
    noise:       (n, 1, 64) the PoseVAE noise draws used, in draw order (n = 0 in ``ref_mode='all'``).
    ref_rows:    (T, 70) reference rows fed to the networks (official ``batch['ref']``), or None.
    """

    mat_coeffs: np.ndarray
    exp_pred: np.ndarray | None
    pose_motion: np.ndarray | None
    pose_raw: np.ndarray | None
    noise: np.ndarray
    ref_rows: np.ndarray | None

    @property
    def num_frames(self) -> int:
        """T, the number of video frames (25 fps)."""
        return int(self.mat_coeffs.shape[0])


def validate_pose_style(pose_style: object, num_classes: int = 46) -> int:
    """The pose style as int; InputError unless it is an integer in [0, num_classes - 1]."""
    if isinstance(pose_style, bool) or not isinstance(pose_style, int | np.integer):
        raise InputError(f"pose_style must be an integer from 0 to {num_classes - 1}; got {pose_style!r}")
    value = int(pose_style)
    if not 0 <= value < num_classes:
        raise InputError(f"pose_style must be an integer from 0 to {num_classes - 1}; got {value}")
    return value


def pose_noise_draws(num_frames: int, seq_len: int = 32) -> int:
    """Number of ``randn(1, 64)`` draws the PoseVAE makes for ``num_frames`` frames."""
    n = max(int(num_frames) - 1, 0)
    return n // seq_len + (1 if n % seq_len else 0)


def draw_pose_noise(
    num_frames: int, generator: torch.Generator | None = None, latent_size: int = 64, seq_len: int = 32
) -> torch.Tensor:
    """The PoseVAE noise, (n, 1, latent_size) float32 on the CPU, drawn one ``randn(1, latent)`` at a time.

    With a CPU generator seeded with s this equals what the official code draws after ``torch.manual_seed(s)``;
    ``generator=None`` uses torch's global generator, as the official code does.
    """
    draws = [
        torch.randn((1, latent_size), generator=generator, dtype=torch.float32)
        for _ in range(pose_noise_draws(num_frames, seq_len))
    ]
    if not draws:
        return torch.zeros((0, 1, latent_size), dtype=torch.float32)
    return torch.stack(draws)


def tile_rows(rows: np.ndarray, num_frames: int) -> np.ndarray:
    """Repeat ``rows`` (N, C) as whole copies then its first ``T mod N`` rows, or truncate, to (T, C)."""
    n = rows.shape[0]
    if n < num_frames:
        copies, rest = divmod(num_frames, n)
        rows = np.concatenate([rows] * copies + [rows[:rest]], axis=0)
    return rows[:num_frames]


def _as_coeff_array(value: object, name: str, min_cols: int) -> np.ndarray:
    arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < min_cols:
        raise InputError(
            f"{name}: expected a (frames, >= {min_cols}) coefficient array, got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    return arr


def reference_rows(
    first_coeff: np.ndarray, num_frames: int, blink_ref: np.ndarray | None = None
) -> np.ndarray:
    """Official ``batch['ref']``: (T, 70) float32 = first-frame coefficients (1, >=70) repeated; with
    ``blink_ref`` (N, >=64) the expression columns are that reference tiled/truncated to T."""
    rows = np.repeat(np.asarray(first_coeff, dtype=np.float32)[:1, :COEFF_DIM], num_frames, axis=0)
    if blink_ref is not None:
        rows[:, :EXP_DIM] = tile_rows(np.asarray(blink_ref, dtype=np.float32)[:, :EXP_DIM], num_frames)
    return rows


@torch.no_grad()
def predict_expression(
    nets: MotionNets,
    windows: torch.Tensor,
    ref_exp: torch.Tensor,
    ratio: torch.Tensor,
    chunk: int | None = None,
    step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """ExpNet over a clip in chunks of ``chunk`` frames (default: the config's 10, as the official test()).

    windows (T, 1, 80, 16), ref_exp (T, 64), ratio (T, 1), on ``nets.device``/``nets.dtype``.
    Returns (T, 64) in ``nets.dtype``. ``step()`` after each chunk.
    """
    chunk = chunk or nets.expnet.config.chunk_frames
    outs = []
    for i in range(0, windows.shape[0], chunk):
        outs.append(nets.expnet(windows[i : i + chunk], ref_exp[i : i + chunk], ratio[i : i + chunk]))
        if step is not None:
            step()
    return torch.cat(outs, dim=0)


def expression_calls(num_frames: int, chunk: int) -> int:
    """Number of ExpNet calls :func:`predict_expression` makes for ``num_frames`` frames."""
    return -(-max(int(num_frames), 0) // chunk)


@torch.no_grad()
def predict_pose_motion(
    nets: MotionNets,
    windows: torch.Tensor,
    ref_pose: torch.Tensor,
    pose_style: int,
    noise: torch.Tensor,
    step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """PoseVAE motion (T, 6) float32 (row 0 zeros) for windows (T, 1, 80, 16) and ref_pose (6,).

    ``noise`` (n, 1, 64) with n = :func:`pose_noise_draws` (T); chunk k uses ``noise[k]``, the tail chunk the last.
    ``step()`` after each chunk (n chunks in all).
    """
    posenet = nets.posenet
    seq = posenet.config.seq_len
    total = windows.shape[0]
    driving = windows[1:].unsqueeze(0)  # frame 0 is the reference frame: (1, T-1, 1, 80, 16)
    n = total - 1 if total > 0 else 0
    full, rest = divmod(n, seq)
    style = torch.tensor([pose_style], dtype=torch.long, device=nets.device)
    ref = ref_pose.reshape(1, -1).to(device=nets.device, dtype=nets.dtype)
    z = noise.reshape(noise.shape[0], posenet.config.latent_size).to(device=nets.device, dtype=nets.dtype)
    pieces = [torch.zeros((1, POSE_DIM), dtype=torch.float32, device=nets.device)]
    for k in range(full):
        out = posenet.decode_chunk(driving[:, k * seq : (k + 1) * seq], z[k : k + 1], style, ref)
        pieces.append(out[0].float())
        if step is not None:
            step()
    if rest:
        out = posenet.decode_chunk(driving[:, -seq:], z[full : full + 1], style, ref)
        pieces.append(out[0, -rest:].float())
        if step is not None:
            step()
    return torch.cat(pieces, dim=0)


class _Steps:
    """Counts network calls and passes ``(done, total)`` on each time another 1/:data:`PROGRESS_REPORTS`
    of ``total`` is done (and at the end)."""

    def __init__(self, progress: ProgressFn, total: int) -> None:
        self.progress = progress
        self.total = max(int(total), 1)
        self.every = max(1, self.total // PROGRESS_REPORTS)
        self.done = 0

    def __call__(self) -> None:
        self.done += 1
        if self.done % self.every == 0 or self.done == self.total:
            self.progress(self.done, self.total)


def smooth_pose(pose: np.ndarray) -> np.ndarray:
    """Savitzky-Golay (order 2, 'interp' edges) over time of (T, 6) float32, computed in float64, returned float32.

    Window 13; for T < 13 the official ``int((T - 1) / 2) * 2 + 1`` (the largest odd number <= T).
    T <= 2 (window 1) is returned unchanged (the official code raises there).
    """
    t = pose.shape[0]
    window = SAVGOL_WINDOW if t >= SAVGOL_WINDOW else int((t - 1) / 2) * 2 + 1
    if window <= SAVGOL_ORDER:
        return pose.astype(np.float32, copy=True)
    return savgol_filter(pose.astype(np.float32), window, SAVGOL_ORDER, axis=0).astype(np.float32)


def apply_reference_pose(coeffs: np.ndarray, ref_coeffs: np.ndarray) -> np.ndarray:
    """Official ``using_refpose``: pose columns += ref_pose[t] - ref_pose[0], reference tiled/truncated to T."""
    out = coeffs.copy()
    ref_pose = tile_rows(ref_coeffs[:, EXP_DIM:COEFF_DIM], out.shape[0])
    out[:, EXP_DIM:COEFF_DIM] = out[:, EXP_DIM:COEFF_DIM] + (ref_pose - ref_pose[0:1])
    return out


def _windows_tensor(indiv_mels: object, nets: MotionNets) -> torch.Tensor:
    w = torch.as_tensor(np.asarray(indiv_mels) if not isinstance(indiv_mels, torch.Tensor) else indiv_mels)
    if w.ndim == 3:
        w = w.unsqueeze(1)
    if w.ndim != 4 or tuple(w.shape[1:]) != (1, 80, 16) or w.shape[0] < 1:
        raise ValueError(f"indiv_mels: expected (T, 1, 80, 16) mel windows, got {tuple(w.shape)}")
    return w.to(device=nets.device, dtype=nets.dtype)


def generate_coefficients(
    nets: MotionNets,
    indiv_mels: np.ndarray | torch.Tensor,
    ratio: np.ndarray | torch.Tensor,
    first_coeff: np.ndarray | torch.Tensor,
    pose_style: int = 0,
    *,
    generator: torch.Generator | None = None,
    noise: np.ndarray | torch.Tensor | None = None,
    ref_coeffs: np.ndarray | torch.Tensor | None = None,
    ref_mode: str | None = None,
    pose_ref_coeffs: np.ndarray | torch.Tensor | None = None,
    progress: ProgressFn | None = None,
) -> MotionResult:
    """Audio features -> (T, 70) motion coefficients, equal to the official audio-to-coefficient stage.

    indiv_mels:  (T, 1, 80, 16) (or (T, 80, 16)) per-frame log-mel windows in [-4, 4].
    ratio:       (T, 1) eye-blink ratio in [0, 1] (zeros when blinking is off).
    first_coeff: (1, >=70) the source picture's first-frame coefficients (extra columns such as the crop
                 parameters are ignored).
    pose_style:  0..45 (InputError otherwise).
    generator / noise: PoseVAE noise; ``noise`` (n, 1, 64) explicit draws (n = :func:`pose_noise_draws` (T)),
                 else drawn from ``generator`` (CPU; ``None`` = torch's global generator).
    ref_coeffs / ref_mode: reference-video coefficients (N, >=70) and one of 'pose', 'blink', 'pose+blink',
                 'all' ('all': the reference coefficients ARE the motion; the audio features are not used).
    pose_ref_coeffs: (M, >=70) a second reference video for the head pose (official ``--ref_pose`` given
                 another video than ``--ref_eyeblink``); only with ref_mode 'pose+blink': the blinks and
                 the PoseVAE's reference pose come from ``ref_coeffs``, the pose changes from this one.
    progress:    optional ``progress(done, total)``: ``(0, total)`` first, then as the network calls
                 (ExpNet chunks of 10 frames, then PoseVAE chunks of 32) proceed, about
                 :data:`PROGRESS_REPORTS` times, ending with ``(total, total)``. An exception it raises
                 (e.g. a cancellation) stops the stage.
    """
    pose_style = validate_pose_style(pose_style)
    if ref_mode is not None and ref_mode not in REF_MODES:
        raise InputError(f"ref_mode must be one of {', '.join(REF_MODES)}; got {ref_mode!r}")
    if ref_mode is not None and ref_coeffs is None:
        raise InputError(f"ref_mode {ref_mode!r} needs the reference video's coefficients")
    if ref_mode is None and ref_coeffs is not None:
        log.debug("ref_coeffs given without ref_mode: ignored")
    if pose_ref_coeffs is not None and ref_mode != "pose+blink":
        raise InputError("a separate head-pose reference needs ref_mode 'pose+blink'")
    first = _as_coeff_array(first_coeff, "first_coeff", COEFF_DIM)
    ref = _as_coeff_array(ref_coeffs, "ref_coeffs", COEFF_DIM) if ref_mode is not None else None
    pose_ref = (
        ref if pose_ref_coeffs is None else _as_coeff_array(pose_ref_coeffs, "pose_ref_coeffs", COEFF_DIM)
    )

    if ref_mode == "all":
        mat = np.ascontiguousarray(ref[:, :COEFF_DIM])
        return MotionResult(
            mat_coeffs=mat,
            exp_pred=None,
            pose_motion=None,
            pose_raw=None,
            noise=np.zeros((0, 1, nets.posenet.config.latent_size), dtype=np.float32),
            ref_rows=None,
        )

    windows = _windows_tensor(indiv_mels, nets)
    t = windows.shape[0]
    blink = ref if ref_mode in ("blink", "pose+blink") else None
    ratio_np = np.asarray(
        ratio.detach().cpu() if isinstance(ratio, torch.Tensor) else ratio, dtype=np.float32
    )
    ratio_np = ratio_np.reshape(-1, 1)
    if ratio_np.shape[0] != t:
        raise ValueError(f"ratio: expected {t} rows (one per frame), got {ratio_np.shape[0]}")
    if blink is not None:
        ratio_np = np.zeros_like(ratio_np)
    rows = reference_rows(first, t, blink)

    latent = nets.posenet.config.latent_size
    seq_len = nets.posenet.config.seq_len
    wanted = pose_noise_draws(t, seq_len)
    if noise is None:
        z = draw_pose_noise(t, generator, latent, seq_len)
    else:
        z = torch.as_tensor(
            np.asarray(noise, dtype=np.float32) if not isinstance(noise, torch.Tensor) else noise
        )
        z = z.float().cpu().reshape(-1, 1, latent)
        if z.shape[0] != wanted:
            raise ValueError(
                f"noise: {t} frames need {wanted} draws of shape (1, {latent}); got {z.shape[0]}"
            )

    steps = None
    if progress is not None:
        total = expression_calls(t, nets.expnet.config.chunk_frames) + wanted
        steps = _Steps(progress, total)
        progress(0, steps.total)
    dev = {"device": nets.device, "dtype": nets.dtype}
    exp = predict_expression(
        nets,
        windows,
        torch.from_numpy(rows[:, :EXP_DIM]).to(**dev),
        torch.from_numpy(ratio_np).to(**dev),
        step=steps,
    )
    exp_np = exp.float().cpu().numpy()
    ref_pose = torch.from_numpy(rows[0, EXP_DIM:COEFF_DIM].copy())
    motion = predict_pose_motion(nets, windows, ref_pose, pose_style, z, step=steps)
    pose_raw = (ref_pose.to(motion.device).reshape(1, -1) + motion).cpu().numpy()
    mat = np.concatenate([exp_np, smooth_pose(pose_raw)], axis=1).astype(np.float32)
    if ref_mode in ("pose", "pose+blink"):
        mat = apply_reference_pose(mat, pose_ref)
    if steps is not None and steps.done < steps.total:  # T = 1: no PoseVAE call
        progress(steps.total, steps.total)
    return MotionResult(
        mat_coeffs=mat,
        exp_pred=exp_np,
        pose_motion=motion.cpu().numpy(),
        pose_raw=pose_raw,
        noise=z.numpy(),
        ref_rows=rows,
    )


def save_coeff_mat(path: str | Path, coeffs: np.ndarray) -> Path:
    """Write the official coefficient .mat layout: one variable ``coeff_3dmm`` (T, 70) float32 (debug output)."""
    path = Path(path)
    arr = np.asarray(coeffs, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != COEFF_DIM:
        raise ValueError(f"coeffs: expected (T, {COEFF_DIM}), got {arr.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"coeff_3dmm": arr})
    return path
