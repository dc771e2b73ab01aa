"""The official enhancer arrangement: GFPGAN on faces found in the FINAL frame, pasted back at twice the size.

Official SadTalker (``src/utils/face_enhancer.py``) enhances every final frame with
``GFPGANer(upscale=2).enhance(frame, has_aligned=False, only_center_face=False, paste_back=True)``
(gfpgan 1.3.8 with facexlib 0.3.0's ``FaceRestoreHelper``). Per frame:

1. faces: RetinaFace-ResNet50 on the frame (BGR, confidence > 0.97, NMS 0.4), the five landmarks of every
   detection whose eye distance is at least 5 pixels, in detection order;
2. per face: ``cv2.estimateAffinePartial2D(landmarks, FACE_TEMPLATE_512, method=cv2.LMEDS)`` and a 512x512
   bilinear warp of the frame with the constant border (135, 133, 132) (BGR; (132, 133, 135) in RGB);
3. GFPGAN v1.4 on each crop: ``crop / 255`` (float64, then float32), ``(x - 0.5) / 0.5``, output clamped to
   [-1, 1] and mapped as ``round((y + 1) / 2 * 255)``;
4. the background: the frame upscaled x2 by Real-ESRGAN when a background enhancer is used, else
   ``cv2.resize(frame, (2W, 2H), INTER_LANCZOS4)``;
5. per face, in order, onto the same image: the restored face warped back with
   ``2 * invertAffineTransform(affine)`` plus 1.0 on the translation (bilinear, border 0); a soft mask from
   ParseNet's parsing of the restored face (classes 1-13 and 15 are face: 255, the others 0; Gaussian blur
   101x101 sigma 11 twice in float64; a 10-pixel border zeroed; / 255; warped back with ``flags=3``, which
   cv2's warps treat as bilinear); ``result = mask * face + (1 - mask) * result`` in float64;
6. the result truncated to uint8 (``astype``, not rounded): ``(2H, 2W, 3)``.

Here every step is the same math: the same cv2 calls for the similarity, the blur and the resizes; the three
affine warps by :func:`warp_bilinear` (exact bilinear weights, as the official run's OpenCV 5 computes them;
the OpenCV 4 this project pins quantises positions to 1/32 pixel, which moved 4 % of the crop's values by up
to 3 levels). Documented differences: frames are RGB (the colour-specific constants are swapped
accordingly), and GFPGAN's noise maps are drawn once from a seed and shared by every face and frame (the
official helper draws fresh noise per call, so its output is not repeatable); :func:`enhance_frame` also
accepts explicit per-face noise maps. A GFPGAN file with another face size (reduced stand-ins) gets crops of
that size and the template scaled to it, as facexlib's helper does for its ``face_size``.

Weights, all in the ``gfpgan/weights`` folder: ``GFPGANv1.4.pth``, ``detection_Resnet50_Final.pth``
(RetinaFace), ``parsing_parsenet.pth`` (a plain state dict, read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from . import checkpoints
from .errors import CheckpointError, InputError
from .nets.gfpgan import GFPGANv1Clean, sample_noise
from .nets.parsenet import ParseNet, ParseNetConfig
from .weights import PARSENET_FILE, download_url, downloader

log = logging.getLogger(__name__)

PARSE_COMPONENT = "face parser (ParseNet)"

FACE_SIZE = 512
UPSCALE = 2
FACE_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)
"""facexlib's FFHQ 512 five-point template: left eye, right eye, nose tip, left and right mouth corner
(image left first), pixels (x, y)."""
BORDER_RGB = (132, 133, 135)
"""The crop's constant border: facexlib's grey (135, 133, 132) in BGR, here in RGB order."""
FACE_CLASSES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15)
"""ParseNet classes that count as face in the paste mask (0 background, 14 neck, 16 cloth, 17 hair and
18 hat do not)."""
MASK_BLUR = (101, 11)
"""Gaussian kernel side and sigma of the mask blur (applied twice)."""
MASK_BORDER = 10
"""Pixels zeroed at each edge of the blurred mask."""
EYE_DIST_MIN = 5.0
"""Detections whose eye landmarks are closer than this (pixels) are skipped (side faces, tiny faces)."""
DET_CONF = 0.97
DET_NMS = 0.4


# ----------------------------------------------------------------------------------------- weights


def _missing(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{PARSE_COMPONENT}: weight file not found: {path}. Put '{path.name}' into the gfpgan/weights folder "
        f"('{path.parent}'), or run `{downloader('--enhancer')}` to fetch it "
        f"(from {download_url(PARSENET_FILE)})."
    )


def read_parsenet_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of ``parsing_parsenet.pth`` (plain, ``{'params': ..}``/``{'state_dict': ..}`` also
    accepted; a ``module.`` prefix is removed), read without running pickled code. Raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    obj = checkpoints.read_torch_pickle(path, PARSE_COMPONENT)
    if isinstance(obj, Mapping):
        for key in ("params_ema", "params", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{PARSE_COMPONENT}: {path} does not hold a state dict of tensors; download it again."
        )
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def _build_parsenet(path: Path, device: torch.device) -> ParseNet:
    state = read_parsenet_state(path)
    hint = f"Use the official {PARSENET_FILE}."
    return checkpoints.build_from_state(
        ParseNetConfig, ParseNet, state, path, PARSE_COMPONENT, device, torch.float32, hint
    )


def load_parsenet(
    path: str | Path, device: torch.device | str, *, cache: checkpoints.ModelCache | None = None
) -> ParseNet:
    """ParseNet of ``path`` (strict, float32, eval mode), cached by file identity and device.
    Raises CheckpointError (missing file, refused pickle, wrong tensors)."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    dev = torch.device(device)
    return checkpoints.cached(
        ("parsenet", checkpoints.file_identity(path), str(dev)), lambda: _build_parsenet(path, dev), cache
    )


# ----------------------------------------------------------------------------------------- stages


def face_landmarks5(
    detector: torch.nn.Module, frame_rgb: np.ndarray, device: str = "cpu"
) -> list[np.ndarray]:
    """Five landmarks ``(5, 2)`` float32 of every face RetinaFace finds in an RGB frame (the net sees BGR),
    detection order; faces with an eye distance below :data:`EYE_DIST_MIN` are skipped."""
    from .face.retinaface_backend import run_detector

    bgr = np.ascontiguousarray(frame_rgb[..., ::-1])
    _, points = run_detector(detector, bgr, conf_threshold=DET_CONF, nms_threshold=DET_NMS, device=device)
    out = []
    for row in np.asarray(points, dtype=np.float32):
        lm = row.reshape(5, 2)
        if float(np.linalg.norm(lm[0] - lm[1])) < EYE_DIST_MIN:
            continue
        out.append(lm)
    return out


def align_affine(landmarks5: np.ndarray, side: int = FACE_SIZE) -> np.ndarray:
    """``(2, 3)`` float64 similarity from the frame to the template of a ``side`` crop (LMEDS, as facexlib;
    the 512 template scaled by ``side / 512``)."""
    template = FACE_TEMPLATE_512 * (side / 512.0)
    affine = cv2.estimateAffinePartial2D(np.asarray(landmarks5), template, method=cv2.LMEDS)[0]
    if affine is None:
        raise InputError("face enhancer: the five face landmarks do not define a similarity transform")
    return affine


@dataclass(frozen=True)
class _WarpGrid:
    """Where each destination pixel of a box reads its source (see :func:`warp_bilinear`)."""

    size: tuple[int, int]
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the destination
    ix: np.ndarray  # source column + 2 (padded), int64
    iy: np.ndarray
    fx: np.ndarray  # (h, w, 1) float64 weights
    fy: np.ndarray


def _warp_grid(affine: np.ndarray, src_hw: tuple[int, int], size: tuple[int, int]) -> _WarpGrid:
    h, w = src_hw
    out_w, out_h = int(size[0]), int(size[1])
    fwd = np.asarray(affine, dtype=np.float64)
    inv = cv2.invertAffineTransform(fwd)
    # destination box of the source rectangle with its one-pixel bilinear fringe
    corners = np.array([[-1.0, -1.0, 1.0], [w, -1.0, 1.0], [-1.0, h, 1.0], [w, h, 1.0]]) @ fwd.T
    x0 = max(int(np.floor(corners[:, 0].min())) - 1, 0)
    x1 = min(int(np.ceil(corners[:, 0].max())) + 2, out_w)
    y0 = max(int(np.floor(corners[:, 1].min())) - 1, 0)
    y1 = min(int(np.ceil(corners[:, 1].max())) + 2, out_h)
    x1, y1 = max(x1, x0), max(y1, y0)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    fx, fy = np.floor(sx), np.floor(sy)
    ix = np.clip(fx, -2, w + 1).astype(np.int64) + 2
    iy = np.clip(fy, -2, h + 1).astype(np.int64) + 2
    return _WarpGrid((out_w, out_h), (x0, y0, x1, y1), ix, iy, (sx - fx)[:, :, None], (sy - fy)[:, :, None])


def _sample_box(image: np.ndarray, grid: _WarpGrid, border: float | Sequence[float]) -> np.ndarray:
    """The float64 ``(y1 - y0, x1 - x0, C)`` values of the grid's destination box."""
    src = np.asarray(image)
    if src.ndim == 2:
        src = src[:, :, None]
    h, w, c = src.shape
    fill = np.broadcast_to(np.asarray(border, dtype=np.float64).reshape(-1)[:c], (c,))
    padded = np.empty((h + 5, w + 5, c), np.float64)
    padded[:] = fill
    padded[2 : h + 2, 2 : w + 2] = src
    ix, iy, fx, fy = grid.ix, grid.iy, grid.fx, grid.fy
    return (
        padded[iy, ix] * (1 - fx) * (1 - fy)
        + padded[iy, ix + 1] * fx * (1 - fy)
        + padded[iy + 1, ix] * (1 - fx) * fy
        + padded[iy + 1, ix + 1] * fx * fy
    )


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """cv2's saturating cast of warped values: round half to even, clip to [0, 255]."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _sample(image: np.ndarray, grid: _WarpGrid, border: float | Sequence[float]) -> np.ndarray:
    src = np.asarray(image)
    squeeze = src.ndim == 2
    c = 1 if squeeze else src.shape[2]
    fill = np.broadcast_to(np.asarray(border, dtype=np.float64).reshape(-1)[:c], (c,))
    out_w, out_h = grid.size
    out = np.empty((out_h, out_w, c), np.float64)
    out[:] = fill
    x0, y0, x1, y1 = grid.box
    if x0 < x1 and y0 < y1:
        out[y0:y1, x0:x1] = _sample_box(src, grid, border)
    if src.dtype == np.uint8:
        out = _to_uint8(out)
    return out[:, :, 0] if squeeze else out


def warp_bilinear(
    image: np.ndarray, affine: np.ndarray, size: tuple[int, int], border: float | Sequence[float] = 0.0
) -> np.ndarray:
    """``cv2.warpAffine(image, affine, size, borderMode=BORDER_CONSTANT, borderValue=border)`` with exact
    bilinear weights (float64), as the official run's OpenCV (5.1) computes it.

    OpenCV 4.x (the project's pin) quantises the source positions to 1/32 pixel, which moved 4 % of the
    official crop's values by up to 3 levels; exact weights agree with it to 1 level at a few pixels.
    ``image``: ``(H, W)`` or ``(H, W, C)``; uint8 in -> uint8 out (rounded half to even, as cv2's saturating
    cast), float in -> float64 out. ``size``: (width, height). Pixels whose 2x2 neighbourhood lies outside
    the image read ``border``; only the destination box that can see the image is computed.
    """
    return _sample(image, _warp_grid(affine, np.shape(image)[:2], size), border)


def warp_face(frame_rgb: np.ndarray, affine: np.ndarray, side: int = FACE_SIZE) -> np.ndarray:
    """The ``(side, side, 3)`` uint8 face crop (bilinear, constant grey border)."""
    return warp_bilinear(frame_rgb, affine, (side, side), BORDER_RGB)


def inverse_affine(affine: np.ndarray, upscale: int = UPSCALE) -> np.ndarray:
    """The matrix that warps a restored 512 face onto the x``upscale`` frame: the inverse times ``upscale``,
    plus ``0.5 * upscale`` on the translation when ``upscale > 1``."""
    inv = cv2.invertAffineTransform(affine) * upscale
    if upscale > 1:
        inv[:, 2] += 0.5 * upscale
    return inv


def gfpgan_input(crops: np.ndarray) -> torch.Tensor:
    """``(B, 512, 512, 3)`` uint8 RGB -> ``(B, 3, 512, 512)`` float32 in [-1, 1] (``/ 255`` in float64 first)."""
    x = (np.asarray(crops) / 255.0).astype(np.float32)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def gfpgan_to_uint8(output: torch.Tensor) -> np.ndarray:
    """``(B, 3, S, S)`` network output -> ``(B, S, S, 3)`` uint8: clamp to [-1, 1], ``round((y+1)/2*255)``."""
    y = output.detach().float().cpu().clamp(-1.0, 1.0)
    y = ((y + 1.0) / 2.0).numpy().transpose(0, 2, 3, 1)
    return (y * np.float32(255.0)).round().astype(np.uint8)


def parse_input(restored: np.ndarray) -> torch.Tensor:
    """``(B, 512, 512, 3)`` uint8 RGB restored faces -> ParseNet input ``(B, 3, 512, 512)`` float32 [-1, 1]."""
    faces = [
        f if f.shape[:2] == (FACE_SIZE, FACE_SIZE) else cv2.resize(f, (FACE_SIZE, FACE_SIZE))
        for f in np.asarray(restored)
    ]
    x = np.stack(faces).astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


_FACE_LUT = np.zeros(256, np.float64)
_FACE_LUT[list(FACE_CLASSES)] = 255.0


def face_mask(argmax: np.ndarray, side: int = FACE_SIZE) -> np.ndarray:
    """``(512, 512)`` parsing classes -> ``(side, side)`` float64 soft mask in [0, 1] (the official blur and
    border margins)."""
    mask = _FACE_LUT[np.asarray(argmax, dtype=np.int64)]
    k, sigma = MASK_BLUR
    mask = cv2.GaussianBlur(mask, (k, k), sigma)
    mask = cv2.GaussianBlur(mask, (k, k), sigma)
    b = MASK_BORDER
    mask[:b, :] = 0
    mask[-b:, :] = 0
    mask[:, :b] = 0
    mask[:, -b:] = 0
    mask = mask / 255.0
    return cv2.resize(mask, (side, side))


def upscale_background(frame_rgb: np.ndarray, upscale: int = UPSCALE) -> np.ndarray:
    """The background without a background enhancer: ``cv2.resize`` x``upscale``, INTER_LANCZOS4."""
    h, w = frame_rgb.shape[:2]
    return cv2.resize(frame_rgb, (w * upscale, h * upscale), interpolation=cv2.INTER_LANCZOS4)


def paste_face(result: np.ndarray, restored: np.ndarray, inverse: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One face onto ``result`` (uint8 or float64 ``(H2, W2, 3)``); returns the float64 result (``result``
    itself when it is float64, updated in place).

    ``mask * warped face + (1 - mask) * result`` with the face (uint8, border 0) and the mask (float64)
    warped by ``inverse``; only the box the face can reach is computed (outside it the mask is 0 and the
    official formula leaves the value unchanged).
    """
    out = result if result.dtype == np.float64 else result.astype(np.float64)
    grid = _warp_grid(inverse, restored.shape[:2], (out.shape[1], out.shape[0]))
    x0, y0, x1, y1 = grid.box
    if x0 >= x1 or y0 >= y1:
        return out
    face = _to_uint8(_sample_box(restored, grid, 0.0))
    # the official mask warp passes flags=3 (INTER_AREA), which cv2's affine warps run as bilinear
    inv_mask = _sample_box(mask, grid, 0.0)
    region = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = inv_mask * face + (1 - inv_mask) * region
    return out


# ----------------------------------------------------------------------------------------- one frame


@dataclass
class FrameTrace:
    """Intermediates of :func:`enhance_frame` (lists: one entry per face, in paste order)."""

    background: np.ndarray
    result: np.ndarray
    affines: list[np.ndarray] = field(default_factory=list)
    inverses: list[np.ndarray] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    gfpgan_inputs: list[torch.Tensor] = field(default_factory=list)
    gfpgan_outputs: list[torch.Tensor] = field(default_factory=list)
    restored: list[np.ndarray] = field(default_factory=list)
    parse_logits: list[torch.Tensor] = field(default_factory=list)
    parse_argmax: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)


@torch.inference_mode()
def run_gfpgan(
    net: GFPGANv1Clean,
    crops: np.ndarray,
    noise: Sequence[torch.Tensor] | None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``(B, 512, 512, 3)`` uint8 RGB crops -> (input, raw output (float32, CPU), restored uint8 RGB)."""
    x = gfpgan_input(crops)
    if noise is not None:
        noise = [n.to(device=device, dtype=dtype) for n in noise]
    y = net(x.to(device=device, dtype=dtype), noise).float().cpu()
    return x, y, gfpgan_to_uint8(y)


@torch.inference_mode()
def run_parsenet(net: ParseNet, restored: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """Parsing logits ``(B, 19, 512, 512)`` float32 (CPU) of restored uint8 RGB faces."""
    param = next(net.parameters())
    return net(parse_input(restored).to(device=device, dtype=param.dtype))[0].float().cpu()


def enhance_frame(
    frame_rgb: np.ndarray,
    landmarks: Sequence[np.ndarray],
    gfpgan: GFPGANv1Clean,
    parsenet: ParseNet,
    *,
    noise: Sequence[Sequence[torch.Tensor] | None] | Sequence[torch.Tensor] | None = None,
    background: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    upscale: int = UPSCALE,
) -> FrameTrace:
    """The official arrangement on one ``(H, W, 3)`` uint8 RGB frame whose faces' five landmarks are given,
    with every intermediate (``trace.result`` is the ``(upscale*H, upscale*W, 3)`` uint8 frame).

    ``noise``: GFPGAN noise maps, either one list shared by all faces or one list per face (``None``: the
    maps stored in the checkpoint). ``background``: the already upscaled background (Real-ESRGAN), else
    the LANCZOS4 resize.
    """
    frame = np.ascontiguousarray(frame_rgb)
    bg = upscale_background(frame, upscale) if background is None else np.asarray(background)
    h, w = frame.shape[:2]
    if bg.shape[:2] != (h * upscale, w * upscale):  # the official helper resizes whatever it is given
        bg = cv2.resize(bg, (w * upscale, h * upscale), interpolation=cv2.INTER_LANCZOS4)
    trace = FrameTrace(background=bg, result=bg)
    per_face = noise is not None and len(noise) > 0 and not isinstance(noise[0], torch.Tensor)
    side = gfpgan.cfg.out_size
    for i, lm in enumerate(landmarks):
        affine = align_affine(lm, side)
        crop = warp_face(frame, affine, side)
        maps = noise[i] if per_face else noise  # type: ignore[index]
        x, y, restored = run_gfpgan(gfpgan, crop[None], maps, device, dtype)  # type: ignore[arg-type]
        trace.affines.append(affine)
        trace.crops.append(crop)
        trace.gfpgan_inputs.append(x)
        trace.gfpgan_outputs.append(y)
        trace.restored.append(restored[0])
    result: np.ndarray = bg
    for i, restored in enumerate(trace.restored):
        inv = inverse_affine(trace.affines[i], upscale)
        logits = run_parsenet(parsenet, restored[None], device)
        argmax = logits.argmax(dim=1)[0].numpy()
        mask = face_mask(argmax, restored.shape[0])
        result = paste_face(result, restored, inv, mask)
        trace.inverses.append(inv)
        trace.parse_logits.append(logits)
        trace.parse_argmax.append(argmax)
        trace.masks.append(mask)
    trace.result = np.asarray(result).astype(np.uint8)
    return trace


# ----------------------------------------------------------------------------------------- frames


class OfficialFaceEnhancer:
    """``enhancer(frames)``: ``(N, H, W, 3)`` uint8 RGB final frames -> ``(N, 2H, 2W, 3)`` uint8 RGB, the
    official ``GFPGANer.enhance(.., paste_back=True)`` arrangement (module docstring).

    ``landmarks_fn(frame_rgb) -> list of (5, 2)``: the faces of a frame (default: RetinaFace of
    ``detector``). ``background``: a :class:`~sadtalker_ext.enhance.BackgroundUpscaler` (x2) or None
    (LANCZOS4 resize). GFPGAN runs ``batch_size`` faces per call with the noise maps drawn from
    ``noise_seed`` (``None``: the checkpoint's stored maps); ParseNet runs in float32.
    """

    def __init__(
        self,
        gfpgan: GFPGANv1Clean,
        parsenet: ParseNet,
        device: torch.device | str,
        dtype: torch.dtype,
        *,
        detector: torch.nn.Module | None = None,
        landmarks_fn: Callable[[np.ndarray], Sequence[np.ndarray]] | None = None,
        background: Callable[[np.ndarray], np.ndarray] | None = None,
        batch_size: int = 4,
        noise_seed: int | None = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if landmarks_fn is None and detector is None:
            raise ValueError("give a RetinaFace detector or a landmarks_fn")
        self.gfpgan = gfpgan
        self.parsenet = parsenet
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.background = background
        if landmarks_fn is None:
            dev = str(self.device)
            self.landmarks_fn: Callable[[np.ndarray], Sequence[np.ndarray]] = lambda f: face_landmarks5(
                detector, f, dev
            )
        else:
            self.landmarks_fn = landmarks_fn
        if noise_seed is None:
            self._noise = None
        else:
            gen = torch.Generator(device="cpu").manual_seed(int(noise_seed))
            self._noise = sample_noise(gfpgan.cfg, gen, device=self.device, dtype=dtype)

    @property
    def scale(self) -> int:
        """Output / input size ratio (2, as official SadTalker's ``GFPGANer(upscale=2)``)."""
        return UPSCALE

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Enhance ``frames`` ``(N, H, W, 3)`` uint8 RGB; returns a new ``(N, 2H, 2W, 3)`` uint8 array."""
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
            raise InputError("face enhancer: frames must be a uint8 numpy array")
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise InputError(f"face enhancer: frames must have shape (N, H, W, 3), got {frames.shape}")
        count, h, w = frames.shape[:3]
        s = self.scale
        if self.background is not None:
            backgrounds = self.background(np.ascontiguousarray(frames))
            if backgrounds.shape[1:3] != (
                h * s,
                w * s,
            ):  # the official helper resizes it to 2x whatever it is
                backgrounds = [
                    cv2.resize(b, (w * s, h * s), interpolation=cv2.INTER_LANCZOS4) for b in backgrounds
                ]
        else:
            backgrounds = [upscale_background(np.ascontiguousarray(f), s) for f in frames]
        # every face of the chunk: (frame index, affine, crop)
        faces: list[tuple[int, np.ndarray, np.ndarray]] = []
        side = self.gfpgan.cfg.out_size
        for n, frame in enumerate(frames):
            frame = np.ascontiguousarray(frame)
            for lm in self.landmarks_fn(frame):
                affine = align_affine(lm, side)
                faces.append((n, affine, warp_face(frame, affine, side)))
        restored: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        for start in range(0, len(faces), self.batch_size):
            crops = np.stack([c for _, _, c in faces[start : start + self.batch_size]])
            _, _, faces_u8 = run_gfpgan(self.gfpgan, crops, self._noise, self.device, self.dtype)
            logits = run_parsenet(self.parsenet, faces_u8, self.device)
            argmax = logits.argmax(dim=1).numpy()
            restored.extend(faces_u8)
            masks.extend(face_mask(a, side) for a in argmax)
        out = np.empty((count, h * s, w * s, 3), np.uint8)
        results: list[np.ndarray] = [np.asarray(b) for b in backgrounds]
        for (n, affine, _), face, mask in zip(faces, restored, masks, strict=True):
            results[n] = paste_face(results[n], face, inverse_affine(affine, s), mask)
        for n in range(count):
            out[n] = results[n].astype(np.uint8)
        log.debug("official face enhancer: %d frame(s), %d face(s)", count, len(faces))
        return out
