"""Source extraction: crop picture, aligned face and first-frame 3DMM coefficients (SadTalker's CropAndExtract).

Per picture (or per frame of a reference video):

1. crop plan from the landmarks of the (first) full frame (:mod:`.crop`), cut, cv2-bilinear resize to
   ``size x size`` (the renderer's source picture);
2. landmarks on that crop picture (a second detector pass; a :class:`.crop.CropAwareLandmarks` detector
   is told where the face chosen on the full frame lies on the crop, so it picks that face again);
   no face -> the standard-landmark fallback; a reference-video frame without a face reuses the previous
   frame's landmarks;
3. alignment to 224x224 (:mod:`.align`) and the reconstruction ResNet -> 257 values;
4. ``coeff_3dmm`` (73 values) = expression 64 | angles 3 | translation 3 | (s, tx, ty) of the alignment.

Renderers use the first 70 values (``crop``, ``extcrop``, ``resize``) or all 73 (``full``, ``extfull``).
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import LockedDict, ModelCache, cached, file_identity, load_strict, read_safetensors_prefix
from ..errors import InputError
from ..nets.recon_resnet import COEFF_LAYOUT, FaceReconNet, ReconNetConfig
from .align import align_picture, landmarks_for_alignment, load_standard_landmarks, network_input
from .crop import (
    CropAwareLandmarks,
    CropInfo,
    CropPlan,
    LandmarksFn,
    check_landmarks,
    check_rgb,
    plan_crop,
)
from .mode import PreprocessMode

log = logging.getLogger(__name__)

RECON_PREFIX = "face_3drecon"
REFERENCE_VIDEO_SIZE = 256
"""Crop-picture size the official code uses for reference videos (pose / blink)."""
CACHE_SIZE = 4

ProgressFn = Callable[[int, "int | None"], None]


def load_recon_net(
    checkpoint: str | Path,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    *,
    cache: ModelCache | None = None,
) -> FaceReconNet:
    """The reconstruction net from a ``SadTalker_V0.0.2_*.safetensors`` file, strictly loaded, eval mode, cached."""
    path = Path(checkpoint)
    dev = torch.device(device)

    def build() -> FaceReconNet:
        state = read_safetensors_prefix(path, RECON_PREFIX, component="face reconstruction net")
        net = FaceReconNet(ReconNetConfig())
        load_strict(net, state, file=path, component="face reconstruction net")
        net.eval().requires_grad_(False)
        return net.to(device=dev, dtype=dtype)

    return cached((RECON_PREFIX, file_identity(path), str(dev), str(dtype)), build, cache)


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.array(array)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class FrameCoefficients:
    """Coefficients of one crop picture.

    ``coeff_3dmm``: (73,) float32 = exp 64 | angles 3 (radians) | trans 3 | s, tx, ty.
    ``full_3dmm``: (257,) float32 raw network output. ``trans_params``: (5,) float64 (W, H, s, tx, ty).
    ``aligned``: (224, 224, 3) uint8 network input image. ``used_fallback``: no face found on the crop.
    """

    coeff_3dmm: np.ndarray
    full_3dmm: np.ndarray
    trans_params: np.ndarray
    aligned: np.ndarray
    used_fallback: bool


@dataclass(frozen=True)
class SourceRecord:
    """Everything the later stages need from the source picture (arrays are read-only).

    ``crop_picture``: (size, size, 3) uint8 RGB renderer source. ``crop_info``: see :class:`CropInfo`.
    ``coeff_3dmm``: (1, 73) float32 first-frame coefficients as the official ``.mat`` stores them;
    ``full_3dmm``: (1, 257) float32 raw output. ``landmarks_source``: (68, 2) on the full picture (None for
    ``resize``); ``landmarks_crop``: (68, 2) on the crop picture (None when none was found).
    """

    mode: PreprocessMode
    size: int
    crop_picture: np.ndarray
    crop_info: CropInfo
    coeff_3dmm: np.ndarray
    full_3dmm: np.ndarray
    trans_params: np.ndarray
    aligned: np.ndarray
    landmarks_source: np.ndarray | None
    landmarks_crop: np.ndarray | None
    used_fallback: bool

    @property
    def coeff_channels(self) -> int:
        """70 for crop/extcrop/resize, 73 for full/extfull (crop parameters appended)."""
        return 73 if self.mode.uses_crop_params else 70

    @property
    def first_coeff(self) -> np.ndarray:
        """(1, 70) or (1, 73) float32: the source semantics row the renderer's mapping net receives."""
        return self.coeff_3dmm[:, : self.coeff_channels]

    @property
    def exp_pose(self) -> np.ndarray:
        """(1, 70) float32 ``[exp 64 | angles 3 | trans 3]``: what audio-to-coefficients takes as reference."""
        return self.coeff_3dmm[:, :70]


@dataclass(frozen=True)
class VideoCoefficients:
    """Per-frame extraction of a reference video: ``coeff_3dmm`` (N, 73) float32, ``full_3dmm`` (N, 257)."""

    mode: PreprocessMode
    crop_info: CropInfo
    coeff_3dmm: np.ndarray
    full_3dmm: np.ndarray
    fallback_frames: tuple[int, ...]


def frame_coefficients(
    picture: np.ndarray,
    landmarks: np.ndarray | None,
    recon_net: torch.nn.Module,
    device: torch.device | str,
    dtype: torch.dtype,
    standard_5p: np.ndarray | None = None,
) -> FrameCoefficients:
    """Align one ``(S, S, 3)`` uint8 crop picture and run the reconstruction net on it.

    ``landmarks``: (68, 2) detector output on ``picture`` (x, y-down pixels) or None for the fallback.
    """
    std = load_standard_landmarks() if standard_5p is None else standard_5p
    height, width = picture.shape[:2]
    lm, fallback = landmarks_for_alignment(landmarks, std, width, height)
    aligned = align_picture(picture, lm, std)
    batch = torch.from_numpy(network_input(aligned.image)).to(device=torch.device(device), dtype=dtype)
    with torch.inference_mode():
        raw = recon_net(batch)
    full = raw.float().cpu().numpy()[0]
    pieces = [full[slice(*COEFF_LAYOUT[name])] for name in ("exp", "angle", "trans")]
    coeff = np.concatenate([*pieces, aligned.trans_params[2:].astype(np.float32)]).astype(np.float32)
    return FrameCoefficients(coeff, full.astype(np.float32), aligned.trans_params, aligned.image, fallback)


class ExtractionCache(LockedDict):
    """Small thread-safe LRU of :class:`SourceRecord` keyed by picture content, mode, size, net and detector
    (``clear()``, ``len()`` from :class:`.checkpoints.LockedDict`)."""

    def __init__(self, maxsize: int = CACHE_SIZE):
        super().__init__(OrderedDict())
        self.maxsize = max(0, int(maxsize))

    def get(self, key: Hashable, net: torch.nn.Module) -> SourceRecord | None:
        """The record for ``key`` if it was made with this very ``net`` object."""
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0]() is not net:
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: Hashable, net: torch.nn.Module, record: SourceRecord) -> None:
        """Store a record, dropping the least recently used beyond ``maxsize``."""
        if self.maxsize == 0:
            return
        with self._lock:
            self._items[key] = (weakref.ref(net), record)
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)


def default_extraction_cache() -> ExtractionCache:
    """The process cache's extraction cache (library use; a pipeline keeps one of its own)."""
    return cached(("sadtalker_ext.preprocess.extraction_cache",), lambda: ExtractionCache(CACHE_SIZE))


def _callable_identity(fn: object) -> Hashable:
    """Identity of a landmark callable; bound methods of one object compare equal across attribute lookups."""
    owner = getattr(fn, "__self__", None)
    func = getattr(fn, "__func__", None)
    if owner is not None and func is not None:
        return ("method", id(owner), func)
    return ("callable", fn)


def picture_digest(image: np.ndarray) -> str:
    """SHA-256 of a picture's shape, dtype and pixels."""
    h = hashlib.sha256()
    h.update(repr((image.shape, str(image.dtype))).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def _crop_landmarks(
    landmarks_fn: LandmarksFn | None,
    picture: np.ndarray,
    near: np.ndarray | None,
    what: str,
) -> np.ndarray | None:
    """The second landmark pass on a crop picture: a :class:`CropAwareLandmarks` detector gets ``near``
    (where the chosen face should be on the crop; None: unknown), any other callable just the picture."""
    if landmarks_fn is None:
        return None
    if isinstance(landmarks_fn, CropAwareLandmarks):
        return check_landmarks(landmarks_fn.in_crop(picture, near), what)
    return check_landmarks(landmarks_fn(picture), what)


def _expected_on_picture(plan: CropPlan, image: np.ndarray, size: int) -> np.ndarray | None:
    """The first pass's landmarks mapped onto the crop picture (None in ``resize`` mode)."""
    if plan.landmarks is None:
        return None
    return plan.to_picture(plan.landmarks, (image.shape[1], image.shape[0]), size)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 32 <= int(size) <= 4096:
        raise InputError(f"crop picture size must be an integer between 32 and 4096, got {size!r}")
    return int(size)


def extract_source(
    rgb_image: np.ndarray,
    mode: str | PreprocessMode,
    size: int,
    landmarks_fn: LandmarksFn | None,
    recon_net: torch.nn.Module,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    *,
    cache: ExtractionCache | None = None,
    use_cache: bool = True,
) -> SourceRecord:
    """Crop, align and reconstruct the source picture ``rgb_image`` (H, W, 3) uint8 for ``mode`` at ``size``.

    ``landmarks_fn`` is called on the full picture (not in ``resize`` mode) and on the crop picture.
    Raises :class:`InputError` for bad inputs or when no face is found on the full picture.
    Results are cached (``cache``, default: :func:`default_extraction_cache`) unless ``use_cache`` is False.
    """
    mode = PreprocessMode.parse(mode)
    size = _check_size(size)
    image = check_rgb(rgb_image, "source picture")
    key = None
    store = None
    if use_cache:
        store = cache if cache is not None else default_extraction_cache()
        key = (
            picture_digest(image),
            mode,
            size,
            id(recon_net),
            _callable_identity(landmarks_fn),
            str(torch.device(device)),
            str(dtype),
        )
        hit = store.get(key, recon_net)
        if hit is not None:
            return hit

    plan = plan_crop(image, mode, landmarks_fn)
    picture = plan.picture(image, size)
    lm_crop = _crop_landmarks(
        landmarks_fn, picture, _expected_on_picture(plan, image, size), "landmarks of the crop picture"
    )
    if lm_crop is None:
        log.info("no face found on the %dx%d crop picture; aligning with the standard landmarks", size, size)
    frame = frame_coefficients(picture, lm_crop, recon_net, device, dtype)
    record = SourceRecord(
        mode=mode,
        size=size,
        crop_picture=_frozen(picture),
        crop_info=plan.crop_info,
        coeff_3dmm=_frozen(frame.coeff_3dmm[None]),
        full_3dmm=_frozen(frame.full_3dmm[None]),
        trans_params=_frozen(frame.trans_params),
        aligned=_frozen(frame.aligned),
        landmarks_source=None if plan.landmarks is None else _frozen(plan.landmarks),
        landmarks_crop=None if lm_crop is None else _frozen(lm_crop),
        used_fallback=frame.used_fallback,
    )
    if store is not None and key is not None:
        store.put(key, recon_net, record)
    return record


def extract_video(
    frames: Iterable[np.ndarray],
    mode: str | PreprocessMode,
    landmarks_fn: LandmarksFn | None,
    recon_net: torch.nn.Module,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    *,
    size: int = REFERENCE_VIDEO_SIZE,
    progress: ProgressFn | None = None,
    total: int | None = None,
) -> VideoCoefficients:
    """Per-frame coefficients of a reference video given as RGB uint8 frames (consumed one at a time).

    The crop is fixed by the first frame's landmarks; every frame is cut the same way, resized to
    ``size``, its landmarks detected (a frame without a face reuses the previous frame's landmarks;
    none at all -> standard fallback), aligned and reconstructed. ``progress(done, total)`` after each frame.
    """
    mode = PreprocessMode.parse(mode)
    size = _check_size(size)
    std = load_standard_landmarks()
    plan: CropPlan | None = None
    coeffs: list[np.ndarray] = []
    fulls: list[np.ndarray] = []
    fallback_frames: list[int] = []
    previous: np.ndarray | None = None
    for index, raw in enumerate(frames):
        frame = check_rgb(raw, f"reference video frame {index}")
        if plan is None:
            plan = plan_crop(frame, mode, landmarks_fn)
        picture = plan.picture(frame, size)
        near = previous if previous is not None else _expected_on_picture(plan, frame, size)
        lm = _crop_landmarks(landmarks_fn, picture, near, f"landmarks of frame {index}")
        if lm is None and index > 0:
            lm = previous
        previous = lm
        result = frame_coefficients(picture, lm, recon_net, device, dtype, std)
        coeffs.append(result.coeff_3dmm)
        fulls.append(result.full_3dmm)
        if result.used_fallback:
            fallback_frames.append(index)
        if progress is not None:
            progress(index + 1, total)
    if plan is None:
        raise InputError("the reference video has no frames")
    return VideoCoefficients(
        mode=mode,
        crop_info=plan.crop_info,
        coeff_3dmm=_frozen(np.stack(coeffs)),
        full_3dmm=_frozen(np.stack(fulls)),
        fallback_frames=tuple(fallback_frames),
    )
