"""Face renderer driving loop: source picture + coefficient sequence -> frames, batch by batch.

What the official ``get_facerender_data`` + ``make_animation`` + ``AnimateFromCoeff.generate`` do
between the coefficients and the 256/512 frames, restructured so memory stays flat:

* the source keypoints, the source head motion and the generator's source features are computed
  once per generation (:meth:`Renderer.prepare_source`);
* frames come out in order, ``batch_size`` at a time, as ``(n, 3, S, S)`` float tensors
  (:meth:`Renderer.iter_frames`) or ``(n, S, S, 3)`` uint8 arrays (:meth:`Renderer.iter_uint8`);
* a progress callback ``(done, total)`` and a cancel check run between batches.

The network math is per sample (eval-mode batch norm, fixed spectral norm), so which frames share a
batch does not change a frame; ``order="official"`` nevertheless reproduces the official grouping
(row ``b`` of the batch holds frames ``b*steps ..``, padding with the last frame) for bit-level
comparisons, at the cost of buffering out-of-order frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import CancelledError, InputError
from ..nets.generator import EncodedSource
from ..options import GenerationOptions
from ..preprocess.mode import PreprocessMode
from . import motion

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
ORDERS = ("sequential", "official")


class _Nets(Protocol):
    kp_detector: torch.nn.Module
    generator: Any
    mapping: torch.nn.Module


@dataclass(frozen=True)
class RenderPlan:
    """Everything the driving loop needs besides the networks; built by :func:`plan_render`.

    ``sequence`` is ``(T, C)`` float32 (C = 70 crop/resize, 73 full modes); ``yaw``/``pitch``/``roll``
    are ``(T,)`` float32 degrees that replace the predicted angles, or ``None``.
    """

    source_row: np.ndarray
    sequence: np.ndarray
    batch_size: int
    yaw: np.ndarray | None = None
    pitch: np.ndarray | None = None
    roll: np.ndarray | None = None

    @property
    def frame_count(self) -> int:
        return int(self.sequence.shape[0])

    @property
    def channels(self) -> int:
        return int(self.sequence.shape[1])

    def batches(self, order: str = "sequential") -> list[np.ndarray]:
        """Frame positions per generator call (position ``p`` renders frame ``min(p, T-1)``).

        ``sequential``: consecutive chunks ``[0..B-1], [B..2B-1], ...`` (the last one may be shorter,
        no padding). ``official``: column ``s`` of the official layout (positions ``s, steps+s, ...``;
        positions ``>= T`` are the padding copies of the last frame, rendered and dropped).
        """
        t = self.frame_count
        if order == "sequential":
            return [np.arange(i, min(i + self.batch_size, t)) for i in range(0, t, self.batch_size)]
        if order == "official":
            layout = motion.batch_layout(t, self.batch_size)
            return [layout[:, s] for s in range(layout.shape[1])]
        raise InputError(f"order must be one of {ORDERS}; got {order!r}")


def plan_render(
    source_coeff: np.ndarray,
    target_coeff: np.ndarray,
    *,
    preprocess: str | PreprocessMode = PreprocessMode.CROP,
    still: bool = False,
    expression_scale: float = 1.0,
    batch_size: int = 2,
    yaw: Sequence[float] | None = None,
    pitch: Sequence[float] | None = None,
    roll: Sequence[float] | None = None,
) -> RenderPlan:
    """Assemble the renderer's coefficient rows and free-view angles (official data preparation).

    Args:
        source_coeff: ``(1, 70|73)`` first-frame coefficients (73 needed for full modes).
        target_coeff: ``(T, >=70)`` generated coefficients.
        yaw, pitch, roll: key angles in degrees (``None`` or empty: keep the predicted angle).
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    source_row, seq = motion.assemble_coefficients(
        source_coeff, target_coeff, preprocess=preprocess, still=still, expression_scale=expression_scale
    )
    t = seq.shape[0]

    def angles(keys: Sequence[float] | None) -> np.ndarray | None:
        if keys is None or len(keys) == 0:
            return None
        return motion.camera_pose_sequence(keys, t).astype(np.float32)

    return RenderPlan(source_row, seq, int(batch_size), angles(yaw), angles(pitch), angles(roll))


def plan_from_options(
    source_coeff: np.ndarray, target_coeff: np.ndarray, options: GenerationOptions
) -> RenderPlan:
    """:func:`plan_render` with the renderer fields of a :class:`GenerationOptions`."""
    return plan_render(
        source_coeff,
        target_coeff,
        preprocess=options.preprocess,
        still=options.still,
        expression_scale=options.expression_scale,
        batch_size=options.batch_size,
        yaw=options.input_yaw,
        pitch=options.input_pitch,
        roll=options.input_roll,
    )


@dataclass(frozen=True)
class SourceState:
    """Per-generation source quantities, batch 1 (computed once by :meth:`Renderer.prepare_source`)."""

    image: torch.Tensor
    """``(1, 3, S, S)`` float32 on the render device."""
    kp_canonical: torch.Tensor
    """``(1, K, 3)`` KPDetector output."""
    kp_motion: motion.KeypointMotion
    """Source head motion; ``kp_motion.value`` is the generator's ``kp_source`` ``(1, K, 3)``."""
    head: dict[str, torch.Tensor]
    """MappingNet output for the source window."""
    feature: Any
    """``generator.prepare_source(image)`` (an ``EncodedSource``: source volume + the dense-motion
    network's compressed copy), or ``generator.encode_source(image)`` for a generator without it."""


def _repeat_batch(obj: Any, n: int) -> Any:
    """Repeat the batch dimension (size 1) of a tensor or nested container of tensors ``n`` times."""
    if n == 1:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.expand(n, *obj.shape[1:])
    if isinstance(obj, dict):
        return {k: _repeat_batch(v, n) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(_repeat_batch(v, n) for v in obj)
    return obj


class Renderer:
    """Drives the renderer networks (``RendererNets``: ``kp_detector``, ``generator``, ``mapping``).

    The networks must already sit on ``device`` and be in eval mode. Inputs are converted to ``dtype``
    (float32; float64 with networks converted by ``.double()`` is the rounding-free reference the parity
    tests use); a reduced precision lives inside the networks (``load_renderer_nets``: the per-frame
    convolutions run in it).
    """

    def __init__(self, nets: _Nets, device: torch.device | str, dtype: torch.dtype = torch.float32):
        self.nets = nets
        self.device = torch.device(device)
        self.dtype = dtype

    # -- building blocks -------------------------------------------------------------------

    def _tensor(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(array).to(device=self.device, dtype=self.dtype)

    def _head(self, windows: np.ndarray) -> dict[str, torch.Tensor]:
        out = self.nets.mapping(self._tensor(windows))
        return {k: v.to(self.dtype) for k, v in out.items()}

    def _check_channels(self, channels: int) -> None:
        cfg = getattr(self.nets.mapping, "cfg", None)
        expected = getattr(cfg, "coeff_nc", None)
        if expected is not None and expected != channels:
            raise InputError(
                f"the mapping net expects {expected} coefficient channels but the plan has {channels} "
                "(full/extfull need mapping_00109 with 73 inputs; other modes mapping_00229 with 70)"
            )

    @torch.inference_mode()
    def prepare_source(self, source_image: torch.Tensor, source_row: np.ndarray) -> SourceState:
        """Source keypoints, head motion and generator features.

        ``source_image``: ``(1, 3, S, S)`` float RGB in ``[0, 1]``; ``source_row``: ``(1, C)``.
        """
        if source_image.ndim != 4 or source_image.shape[0] != 1 or source_image.shape[1] != 3:
            raise InputError(f"source image must be (1, 3, S, S); got {tuple(source_image.shape)}")
        row = np.asarray(source_row, dtype=np.float32).reshape(1, -1)
        self._check_channels(row.shape[1])
        image = self._tensor(source_image)
        kp_canonical = self.nets.kp_detector(image).to(self.dtype)
        head = self._head(motion.source_window(row))
        src_motion = motion.transform_keypoints(kp_canonical, head)
        generator = self.nets.generator
        prepare = getattr(generator, "prepare_source", None)
        feature = prepare(image) if prepare is not None else generator.encode_source(image)
        return SourceState(image, kp_canonical, src_motion, head, feature)

    @torch.inference_mode()
    def driving_motion(
        self, source: SourceState, plan: RenderPlan, positions: np.ndarray
    ) -> tuple[motion.KeypointMotion, dict[str, torch.Tensor]]:
        """Driving keypoints of frame positions (``>= T``: the last frame), ``(KeypointMotion (n, K, 3),
        mapping output)``."""
        frames = np.minimum(np.asarray(positions, dtype=np.int64), plan.frame_count - 1)
        head = self._head(motion.target_windows(plan.sequence, frames))
        n = len(frames)
        overrides = {}
        for name in ("yaw", "pitch", "roll"):
            seq = getattr(plan, name)
            if seq is not None:
                overrides[name] = self._tensor(seq[frames])
        kp = source.kp_canonical.expand(n, *source.kp_canonical.shape[1:])
        return motion.transform_keypoints(kp, head, **overrides), head

    @torch.inference_mode()
    def render_frames(self, source: SourceState, plan: RenderPlan, positions: np.ndarray) -> dict[str, Any]:
        """One generator call for the given frame positions (``>= T``: the last frame); returns the generator's output dict
        (``prediction`` ``(n, 3, S, S)`` in ``[0, 1]``, ...) plus ``kp_driving`` ``(n, K, 3)``."""
        drive, _ = self.driving_motion(source, plan, positions)
        kp_source = source.kp_motion.value
        kp_driving = drive.value
        feature = source.feature
        if not isinstance(feature, EncodedSource):  # any other generator gets batch-n inputs
            n = len(positions)
            feature, kp_source = _repeat_batch(feature, n), _repeat_batch(kp_source, n)
        # (an EncodedSource of batch 1 and the batch-1 kp_source are broadcast inside decode)
        out = dict(self.nets.generator.decode(feature, kp_source, kp_driving))
        out["kp_driving"] = drive.value
        return out

    # -- generation loop -------------------------------------------------------------------

    def iter_frames(
        self,
        source_image: torch.Tensor,
        plan: RenderPlan,
        *,
        order: str = "sequential",
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield the ``T`` frames in order as ``(n, 3, S, S)`` float32 tensors in ``[0, 1]`` (on the device).

        ``cancel()`` is checked before every generator call (raises :class:`CancelledError`);
        ``progress(done, total)`` is called when a chunk is ready, before it is yielded.
        """
        self._check_channels(plan.channels)
        if order not in ORDERS:
            raise InputError(f"order must be one of {ORDERS}; got {order!r}")
        total = plan.frame_count
        source = self.prepare_source(source_image, plan.source_row)
        pending: dict[int, torch.Tensor] = {}
        done = 0
        for positions in plan.batches(order):
            if cancel is not None and cancel():
                raise CancelledError(f"rendering cancelled after {done} of {total} frames")
            prediction = self.render_frames(source, plan, positions)["prediction"]
            if order == "sequential":
                chunk = prediction
            else:
                for slot, pos in enumerate(positions.tolist()):
                    if done <= pos < total:
                        pending[pos] = prediction[slot : slot + 1]
                ready = []
                while done + len(ready) in pending:
                    ready.append(pending.pop(done + len(ready)))
                if not ready:
                    continue
                chunk = torch.cat(ready)
            done += chunk.shape[0]
            if progress is not None:
                progress(done, total)
            yield chunk

    def iter_uint8(
        self,
        source_image: torch.Tensor,
        plan: RenderPlan,
        *,
        order: str = "sequential",
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> Iterator[np.ndarray]:
        """As :meth:`iter_frames`, converted with :func:`frames_to_uint8`: ``(n, S, S, 3)`` uint8 RGB."""
        for chunk in self.iter_frames(source_image, plan, order=order, progress=progress, cancel=cancel):
            yield frames_to_uint8(chunk)


def render_uint8(
    nets: _Nets,
    source_image: torch.Tensor,
    source_coeff: np.ndarray,
    target_coeff: np.ndarray,
    *,
    device: torch.device | str,
    preprocess: str | PreprocessMode = PreprocessMode.CROP,
    still: bool = False,
    expression_scale: float = 1.0,
    batch_size: int = 2,
    yaw: Sequence[float] | None = None,
    pitch: Sequence[float] | None = None,
    roll: Sequence[float] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Iterator[np.ndarray]:
    """One call from coefficients to frames: yields ``(n, S, S, 3)`` uint8 RGB chunks in frame order.

    ``source_image`` ``(1, 3, S, S)`` float in ``[0, 1]`` (see :func:`source_image_tensor`);
    ``source_coeff`` ``(1, 70|73)``; ``target_coeff`` ``(T, >=70)``; angles in degrees.
    """
    plan = plan_render(
        source_coeff,
        target_coeff,
        preprocess=preprocess,
        still=still,
        expression_scale=expression_scale,
        batch_size=batch_size,
        yaw=yaw,
        pitch=pitch,
        roll=roll,
    )
    yield from Renderer(nets, device).iter_uint8(source_image, plan, progress=progress, cancel=cancel)


def frames_to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(n, 3, H, W)`` float in ``[0, 1]`` -> ``(n, H, W, 3)`` uint8, as ``skimage.img_as_ubyte``.

    ``rint(float32(x) * 255)`` (float32 product, round half to even), clipped to ``[0, 255]``.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().to(device="cpu", dtype=torch.float32).numpy()
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"frames must be (n, 3, H, W); got {x.shape}")
    scaled = np.multiply(x.transpose(0, 2, 3, 1), 255, dtype=np.float32)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def source_image_tensor(rgb: np.ndarray, size: int) -> torch.Tensor:
    """The renderer's source tensor from an RGB uint8 ``(H, W, 3)`` crop, as the official loader does:
    ``skimage.transform.resize(img_as_float32(rgb), (size, size, 3))`` -> ``(1, 3, size, size)`` float32.
    (Not exactly ``rgb / 255`` even at the same size: the resize interpolates in float64.)"""
    from skimage import img_as_float32, transform

    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"source picture must be (H, W, 3) RGB; got {arr.shape}")
    resized = transform.resize(img_as_float32(arr), (size, size, 3))
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32))[None]
