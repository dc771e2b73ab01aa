"""Optional face enhancement of the rendered face crops with GFPGAN v1.4 (no basicsr / gfpgan / facexlib),
and the optional Real-ESRGAN x2 background upscaler (:class:`BackgroundUpscaler`, end of this file).

Weights: ``GFPGANv1.4.pth`` in the ``gfpgan/weights`` folder, a pickle holding ``{'params_ema': state}``
(``params`` is accepted as a fallback). It is read with ``torch.load(weights_only=True)``, so a file that
needs anything beyond tensors and plain containers is refused, and loaded strictly into
:class:`~sadtalker_ext.nets.gfpgan.GFPGANv1Clean` (widths inferred from the stored shapes).

How this differs from the official SadTalker enhancer (``src/utils/face_enhancer.py`` -> ``GFPGANer``):

* The official path runs on the final, pasted frame: it upsamples the whole frame x2 (optionally with
  Real-ESRGAN), detects faces with facexlib's RetinaFace, warps each to the 512 FFHQ template, restores it
  and pastes it back with a parsing mask, so its video comes out at twice the resolution.
  That arrangement is :mod:`.enhance_paste` (``enhancer_mode='official'``, the pipeline's default when its
  weight files are present); this module's :class:`FaceEnhancer` is the ``'crop'`` arrangement below.
* Here the inputs ARE the face crops the renderer produced (256 or 512, before paste-back). Each crop is
  resized to the network side (512) with ``cv2.INTER_LINEAR`` (what ``GFPGANer`` does for already aligned
  faces, ``has_aligned=True``), restored, and resized back to its own size (``cv2.INTER_AREA`` when
  shrinking, an anti-aliased average; ``INTER_LINEAR`` when enlarging). No detection, no alignment to the
  FFHQ template, no change of output resolution; the caller pastes the crops back as usual.
* Pixel math equals ``GFPGANer.enhance``: RGB / 255, ``(x - 0.5) / 0.5``; the network output is clamped to
  [-1, 1] and mapped back as ``round((y + 1) / 2 * 255)``. Its ``weight=0.5`` argument is swallowed by
  ``GFPGANv1Clean.forward(**kwargs)`` and has no effect, so there is nothing to reproduce.
* Noise: ``GFPGANer`` keeps ``randomize_noise=True``, i.e. fresh noise on every call (not repeatable).
  Here the noise maps are drawn once from ``torch.Generator().manual_seed(noise_seed)`` and the same maps
  are used for every frame and every batch: results are repeatable, independent of the batch size, and
  the per-pixel noise does not flicker from frame to frame. ``noise_seed=None`` uses the fixed maps stored
  in the checkpoint instead (the official ``randomize_noise=False`` behaviour).
* dtype: spandrel marks GFPGAN as not supporting float16 (``supports_half=False``); float32 or bfloat16 are
  the safe choices. The dtype is the caller's; a float16 request only logs a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoints
from .errors import CheckpointError, InputError
from .nets.gfpgan import GFPGANConfig, GFPGANv1Clean, sample_noise
from .nets.rrdbnet import RRDBNet, RRDBNetConfig
from .weights import GFPGAN_FILE, REALESRGAN_FILE, download_url, downloader

log = logging.getLogger(__name__)

COMPONENT = "face enhancer (GFPGAN)"


def _missing(path: Path, component: str = COMPONENT, how: str | None = None) -> CheckpointError:
    how = how or f"run `{downloader('--enhancer')}` to fetch it"
    return CheckpointError(
        f"{component}: weight file not found: {path}. Put '{path.name}' into the gfpgan/weights folder "
        f"('{path.parent}'), or {how}."
    )


def read_params_checkpoint(path: str | Path, component: str = COMPONENT) -> dict[str, torch.Tensor]:
    """Read the state dict of a BasicSR-style ``.pth`` file (GFPGAN, Real-ESRGAN) without running pickled code.

    Accepts ``{'params_ema': state}`` (official), ``{'params': state}`` or the bare state dict. Tensors come
    back on the CPU as stored. Raises :class:`CheckpointError` for a missing, refused or malformed file.
    """
    path = Path(path)
    if not path.is_file():
        raise _missing(path, component)
    obj = checkpoints.read_torch_pickle(path, component)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{component}: {path} holds a {type(obj).__name__}, not a state dict.")
    state = obj
    for key in ("params_ema", "params"):
        if isinstance(obj.get(key), Mapping):
            state = obj[key]
            break
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{component}: {path} has no 'params_ema'/'params' state dict of tensors "
            f"(non-tensor entries: {bad[:5]})."
        )
    return dict(state)


def read_gfpgan_state(path: str | Path) -> dict[str, torch.Tensor]:
    """:func:`read_params_checkpoint` for the GFPGAN file (component name in messages)."""
    return read_params_checkpoint(path, COMPONENT)


def _build(path: Path, device: torch.device, dtype: torch.dtype) -> GFPGANv1Clean:
    hint = f"Only GFPGAN v1.3/v1.4 ('clean' architecture) files are supported; download {GFPGAN_FILE} again."
    return checkpoints.build_from_state(
        GFPGANConfig, GFPGANv1Clean, read_gfpgan_state(path), path, COMPONENT, device, dtype, hint
    )


def load_gfpgan(
    path: str | Path,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    cache: checkpoints.ModelCache | None = None,
) -> GFPGANv1Clean:
    """Load (or reuse from ``cache``, default: the process cache) the GFPGAN network of ``path`` on ``device``/``dtype``.

    Eval mode, no gradients. Cached by file identity (path, size, mtime), device and dtype.
    Raises :class:`CheckpointError` (missing file, refused pickle, wrong tensors).
    """
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    dev = torch.device(device)
    if dtype == torch.float16:
        log.warning(
            "%s: float16 is known to be unreliable for GFPGAN; float32 or bfloat16 is safer", COMPONENT
        )
    return checkpoints.cached(
        ("gfpgan", checkpoints.file_identity(path), str(dev), str(dtype)),
        lambda: _build(path, dev, dtype),
        cache,
    )


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2 resize of an ``(H, W, 3)`` uint8 image: INTER_AREA when shrinking, INTER_LINEAR otherwise."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrink = width < image.shape[1] or height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def enlarge(frames: np.ndarray, scale: int) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 -> ``(N, H * scale, W * scale, 3)``, cv2 bilinear (``scale=1``: ``frames`` itself).

    With the x2 background enhancer in the full modes, rendered face crops are enlarged so before GFPGAN
    restores them, and keep its detail at the size they are pasted at (:mod:`sadtalker_ext.pipeline`)."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise InputError(f"enlarge: scale must be a whole number >= 1, got {scale!r}")
    if scale == 1:
        return frames
    return np.stack(
        [
            cv2.resize(f, (f.shape[1] * scale, f.shape[0] * scale), interpolation=cv2.INTER_LINEAR)
            for f in frames
        ]
    )


class FaceEnhancer:
    """Restore face crops with GFPGAN: ``enhancer(frames)``, frames ``(N, H, W, 3)`` uint8 RGB -> same shape.

    ``net``: from :func:`load_gfpgan` (already on ``device``/``dtype``). ``batch_size``: crops per network
    call. ``noise_seed``: seed of the noise maps shared by all frames (``None``: the checkpoint's stored
    maps). The same input always gives the same output, whatever the batch size or call split.
    """

    def __init__(
        self,
        net: GFPGANv1Clean,
        device: torch.device | str,
        dtype: torch.dtype,
        *,
        batch_size: int = 4,
        noise_seed: int | None = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.net = net
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.noise_seed = noise_seed
        if noise_seed is None:
            self._noise = None
        else:
            gen = torch.Generator(device="cpu").manual_seed(int(noise_seed))
            self._noise = sample_noise(net.cfg, gen, device=self.device, dtype=dtype)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        device: torch.device | str,
        dtype: torch.dtype,
        *,
        batch_size: int = 4,
        noise_seed: int | None = 0,
    ) -> FaceEnhancer:
        """:func:`load_gfpgan` then the constructor. Raises :class:`CheckpointError`."""
        net = load_gfpgan(path, device, dtype)
        return cls(net, device, dtype, batch_size=batch_size, noise_seed=noise_seed)

    @property
    def side(self) -> int:
        """Network input/output side in pixels (512 for GFPGANv1.4)."""
        return self.net.cfg.out_size

    @torch.inference_mode()
    def _restore(self, crops: np.ndarray) -> np.ndarray:
        """``(B, side, side, 3)`` uint8 RGB -> restored ``(B, side, side, 3)`` uint8 RGB."""
        x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float().contiguous()
        x = (x / 255.0 - 0.5) / 0.5
        y = self.net(x.to(self.dtype), self._noise)
        y = y.float().clamp(-1.0, 1.0)
        y = ((y + 1.0) / 2.0 * 255.0).round().to(torch.uint8)
        return y.permute(0, 2, 3, 1).cpu().numpy()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Enhance ``frames`` ``(N, H, W, 3)`` uint8 RGB face crops; returns a new ``(N, H, W, 3)`` uint8 array.

        Any ``H, W`` works (a non-square crop is stretched to the square network input and back); ``N = 0``
        returns an empty array. Raises :class:`InputError` for a wrong dtype or shape.
        """
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
            raise InputError("face enhancer: frames must be a uint8 numpy array")
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise InputError(f"face enhancer: frames must have shape (N, H, W, 3), got {frames.shape}")
        count, height, width = frames.shape[:3]
        out = np.empty_like(frames)
        side = self.side
        for start in range(0, count, self.batch_size):
            chunk = frames[start : start + self.batch_size]
            crops = np.stack([_resize(f, side, side) for f in chunk])
            restored = self._restore(np.ascontiguousarray(crops))
            for i, face in enumerate(restored):
                out[start + i] = _resize(face, width, height)
        log.debug("%s: enhanced %d frame(s) of %dx%d", COMPONENT, count, width, height)
        return out


def load_face_enhancer(
    gfpgan_dir: str | Path,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    batch_size: int = 4,
    noise_seed: int | None = 0,
) -> FaceEnhancer:
    """:class:`FaceEnhancer` for ``<gfpgan_dir>/GFPGANv1.4.pth``. Raises :class:`CheckpointError`."""
    return FaceEnhancer.from_file(
        Path(gfpgan_dir) / GFPGAN_FILE, device, dtype, batch_size=batch_size, noise_seed=noise_seed
    )


# --------------------------------------------------------------------------- background (Real-ESRGAN x2)

BG_COMPONENT = "background enhancer (Real-ESRGAN)"


def _build_rrdb(path: Path, device: torch.device, dtype: torch.dtype) -> RRDBNet:
    state = read_params_checkpoint(path, BG_COMPONENT)
    hint = f"Use the official {REALESRGAN_FILE}."
    return checkpoints.build_from_state(
        RRDBNetConfig, RRDBNet, state, path, BG_COMPONENT, device, dtype, hint
    )


def load_realesrgan(
    path: str | Path,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    cache: checkpoints.ModelCache | None = None,
) -> RRDBNet:
    """Load (or reuse from ``cache``, default: the process cache) the Real-ESRGAN RRDBNet of ``path``; like :func:`load_gfpgan`."""
    path = Path(path)
    if not path.is_file():
        how = f"run `{downloader('--background')}` to fetch it (from {download_url(REALESRGAN_FILE)})"
        raise _missing(path, BG_COMPONENT, how)
    dev = torch.device(device)
    return checkpoints.cached(
        ("realesrgan", checkpoints.file_identity(path), str(dev), str(dtype)),
        lambda: _build_rrdb(path, dev, dtype),
        cache,
    )


class BackgroundUpscaler:
    """Upscale whole frames with Real-ESRGAN: ``(N, H, W, 3)`` uint8 RGB -> ``(N, H*s, W*s, 3)`` uint8 RGB.

    Pixel math equals ``RealESRGANer.enhance`` as SadTalker configures it (``tile=400, tile_pad=10,
    pre_pad=0``): RGB / 255 (no other normalisation); reflect padding of ``pre_pad`` on the right and
    bottom, then up to a multiple of the unshuffle factor; the network runs tile by tile (``tile`` pixels,
    each seen with ``tile_pad`` pixels of context that are cut off again; ``tile=0``: whole frame); the
    padding is cropped, the output clamped to [0, 1] and mapped as ``round(y * 255)``. Frames of one call
    share a size, so ``batch_size`` frames go through each tile together. No randomness.

    Official SadTalker uses it (GPU only) to upsample the full frame x2 under the restored faces; there
    the output stays at twice the input size, as here.
    """

    def __init__(
        self,
        net: RRDBNet,
        device: torch.device | str,
        dtype: torch.dtype,
        *,
        tile: int = 400,
        tile_pad: int = 10,
        pre_pad: int = 0,
        batch_size: int = 1,
    ):
        if tile < 0 or tile_pad < 0 or pre_pad < 0 or batch_size < 1:
            raise ValueError("tile, tile_pad and pre_pad must be >= 0 and batch_size >= 1")
        mod = net.cfg.unshuffle
        if tile % mod or tile_pad % mod:
            # every tile must stay divisible by the pixel-unshuffle factor (the official helper asserts)
            raise ValueError(f"tile and tile_pad must be multiples of {mod} for a x{net.cfg.scale} network")
        self.net = net
        self.device = torch.device(device)
        self.dtype = dtype
        self.tile = int(tile)
        self.tile_pad = int(tile_pad)
        self.pre_pad = int(pre_pad)
        self.batch_size = int(batch_size)

    @property
    def scale(self) -> int:
        """Output / input size ratio (2 for RealESRGAN_x2plus)."""
        return self.net.cfg.scale

    def _run_tiles(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` padded input -> ``(B, 3, H*s, W*s)``, tile by tile (``tile=0``: at once)."""
        if self.tile == 0:
            return self.net(x)
        s, t, pad = self.scale, self.tile, self.tile_pad
        height, width = x.shape[2:]
        out = x.new_zeros(x.shape[0], self.net.cfg.num_out_ch, height * s, width * s)
        for y0 in range(0, height, t):
            for x0 in range(0, width, t):
                y1, x1 = min(y0 + t, height), min(x0 + t, width)
                # the tile plus up to ``pad`` pixels of context on every side that has any
                cy0, cx0 = max(y0 - pad, 0), max(x0 - pad, 0)
                cy1, cx1 = min(y1 + pad, height), min(x1 + pad, width)
                result = self.net(x[:, :, cy0:cy1, cx0:cx1])
                oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
                out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = result[
                    :, :, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s
                ]
        return out

    @torch.inference_mode()
    def _upscale(self, frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float().contiguous() / 255.0
        x = x.to(self.dtype)
        height, width = x.shape[2:]
        if self.pre_pad:
            x = F.pad(x, (0, self.pre_pad, 0, self.pre_pad), mode="reflect")
        mod = self.net.cfg.unshuffle
        extra_h, extra_w = (-x.shape[2]) % mod, (-x.shape[3]) % mod
        if extra_h or extra_w:
            x = F.pad(x, (0, extra_w, 0, extra_h), mode="reflect")
        y = self._run_tiles(x)[:, :, : height * self.scale, : width * self.scale]
        y = (y.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        return y.permute(0, 2, 3, 1).cpu().numpy()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Upscale ``frames`` ``(N, H, W, 3)`` uint8 RGB; returns a new ``(N, H*s, W*s, 3)`` uint8 array."""
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
            raise InputError("background enhancer: frames must be a uint8 numpy array")
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise InputError(f"background enhancer: frames must have shape (N, H, W, 3), got {frames.shape}")
        count, height, width = frames.shape[:3]
        s = self.scale
        out = np.empty((count, height * s, width * s, 3), np.uint8)
        for start in range(0, count, self.batch_size):
            chunk = np.ascontiguousarray(frames[start : start + self.batch_size])
            out[start : start + len(chunk)] = self._upscale(chunk)
        return out
