"""One generation, end to end: picture + speech -> mp4 (the official run order, streamed).

Order (as the official ``inference.py`` / ``src/gradio_demo.py``):

1. inputs: the picture is loaded and the audio decoded BEFORE any model is loaded, so a bad input
   fails fast; missing weight files are listed (:class:`CheckpointError`) before loading either;
2. preprocess: face landmarks, crop, first-frame 3DMM coefficients (:mod:`.preprocess.extract`);
   a reference video is extracted frame by frame the same way;
3. audio features: ``T = int(samples / 640)`` frames at 25 fps (idle mode: ``int(seconds * 25)``;
   ``ref_mode='all'``: the reference video's frame count);
4. motion: ExpNet + PoseVAE -> ``(T, 70)`` coefficients (:mod:`.motion`);
5. render: MappingNet + face-vid2vid renderer, ``batch_size`` frames at a time (:mod:`.render`);
   with ``enhancer='gfpgan'`` each batch of rendered face crops is restored by GFPGAN v1.4 at its own
   resolution (:class:`.enhance.FaceEnhancer`); every frame is then resized to the crop's aspect ratio
   (width = size), and in ``full``/``extfull`` pasted back into the full picture (resize and paste-back
   in a thread pool, which with a GPU renderer works while the next frames render);
   ``background_enhancer='realesrgan'`` makes the video twice as large (see below);
6. video: frames stream into the encoder as they come (memory stays flat in the audio length);
   the audio is trimmed/padded to ``T`` frames (:mod:`.video.writer`). With ``fragmented`` the file is a
   fragmented MP4 (one fragment per second, audio interleaved) and ``stream`` receives its bytes, whole
   fragment by whole fragment, while the frames are still being rendered.

Enhancers (both optional, weights in the ``gfpgan/weights`` folder):

* ``enhancer='gfpgan'`` with ``enhancer_mode='official'`` (the default ``'auto'`` picks it when
  ``detection_Resnet50_Final.pth`` and ``parsing_parsenet.pth`` are present): as official SadTalker, every
  FINAL frame goes through ``GFPGANer.enhance(paste_back=True)`` (:class:`.enhance_paste.OfficialFaceEnhancer`:
  RetinaFace, alignment to the FFHQ template, GFPGAN, ParseNet paste mask) over a background upscaled x2
  (Real-ESRGAN per frame with ``background_enhancer='realesrgan'``, else LANCZOS4), so the video is twice
  the size; the crop arrangement below and the 2x background paste are not used then.
* ``enhancer='gfpgan'`` with ``enhancer_mode='crop'`` (``GFPGANv1.4.pth`` only): runs on the renderer's
  ``(n, S, S, 3)`` face crops
  BEFORE the aspect resize and paste-back, ``batch_size`` crops per network call; the crops keep their
  size, so the video size does not change. Unlike the official enhancer there is no face detection or
  parsing (the crops are already aligned faces). The noise maps are fixed (seed 0), so a generation
  repeats exactly. With ``dtype='float16'`` GFPGAN runs in float32 (it is unreliable in half precision).
  The official ``'RestoreFormer'`` is not supported: :class:`.options.GenerationOptions` refuses it.
* ``background_enhancer='realesrgan'`` (``RealESRGAN_x2plus.pth``): the output video is twice the size
  it would otherwise have (as the official, whose enhancer outputs 2x frames). ``full``/``extfull``: the
  background is static, so the ORIGINAL picture is upscaled once (Real-ESRGAN x2, tiles of 400 px) and
  every face frame is pasted into it at 2x scale (paste box doubled exactly). The face is not run
  through Real-ESRGAN: the aspect resize goes to width ``2 * size`` (cv2 bilinear), and with
  ``enhancer='gfpgan'`` the crops are first enlarged to ``2 * S`` (cv2 bilinear) and restored at that
  size, so GFPGAN's detail is kept instead of being shrunk to ``S`` and enlarged again.
  ``crop``/``resize``/``extcrop``: the frame is the face crop (no separate background), so each final
  (face-enhanced) frame is upscaled x2 by Real-ESRGAN (batched). :class:`Result` ``width``/``height``
  report the doubled size.

Models are built on first use and kept by the :class:`SadTalker` object (a second generation pays
no model load); :meth:`SadTalker.unload` drops them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

# Every stage is imported here, at the top: the front ends import this module only when they generate
# (cli, app, webui/jobs import it inside functions), so their start-up does not pay for it.
from . import __version__, precision
from .allocator import release_freed_memory
from .audio.features import AudioFeatures, idle_audio_features, prepare_audio
from .audio.reference import reference_audio
from .checkpoints import ModelCache, mapping_name, safetensors_name
from .enhance import BackgroundUpscaler, FaceEnhancer, enlarge, load_gfpgan, load_realesrgan
from .enhance_paste import OfficialFaceEnhancer, load_parsenet
from .errors import CancelledError, CheckpointError, InputError, SadTalkerError
from .face import FaceLandmarks
from .face.retinaface_backend import load_detector
from .images import load_rgb
from .motion import MotionNets, MotionResult, generate_coefficients, load_motion_nets
from .nets.gfpgan import GFPGANv1Clean
from .nets.parsenet import ParseNet
from .nets.recon_resnet import FaceReconNet
from .nets.retinaface import RetinaFaceR50
from .options import DTYPES as DTYPE_NAMES
from .options import GenerationOptions
from .paths import ModelDirs, resolve_model_dirs
from .preprocess.crop import LandmarksFn
from .preprocess.extract import (
    CACHE_SIZE,
    ExtractionCache,
    SourceRecord,
    extract_source,
    extract_video,
    load_recon_net,
)
from .preprocess.mode import PreprocessMode
from .preprocess.paste import frame_finisher
from .provenance import input_digests, settings_without_paths
from .render.animate import Renderer, RenderPlan, plan_from_options, source_image_tensor
from .render.loading import RendererNets, load_renderer_nets
from .video.probe import count_frames, iter_frames
from .video.writer import VideoWriter, check_folder, check_output_free, sidecar_path
from .weights import (
    DETECTOR_FILE,
    GFPGAN_FILE,
    MISSING,
    PARSENET_FILE,
    REALESRGAN_FILE,
    Selection,
    WeightStatus,
    download_command,
    load_manifest,
    model_status,
    required_files,
    warn_unofficial,
)

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages in order: inputs (picture + audio), models, preprocess,
reference (frames of a reference video), motion, render (frames), encode."""
CancelLike = Callable[[], bool] | threading.Event | None
FrameHook = Callable[[np.ndarray], np.ndarray]
"""``frames (n, H, W, 3) uint8 RGB -> frames`` of the same shape, applied before encoding."""
StreamSink = Callable[[bytes], None]
"""Receives the fragmented MP4 as it is written: the init segment, then one whole fragment per call
(see :mod:`.video.writer`); called from the writer's reader thread."""

FPS = 25
SAMPLE_RATE = 16000
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
"""The option table's dtype names -> torch dtypes."""
DEFAULT_RESULT_DIR = Path("results")
OfficialParts = tuple[ParseNet, RetinaFaceR50]
"""The official enhancer arrangement's face parser and frame detector."""
_Model = TypeVar("_Model")


@dataclass(frozen=True)
class Result:
    """What :meth:`SadTalker.generate` produced. ``timings``: seconds per stage plus ``total``;
    ``width``/``height``: frame size before the encoder's even-size padding (see :mod:`.video.writer`)."""

    video_path: Path
    sidecar: Path | None
    seed: int
    num_frames: int
    timings: dict[str, float] = field(default_factory=dict)
    width: int = 0
    height: int = 0


@dataclass
class Prepared:
    """Everything decided before the first frame is rendered (see :meth:`SadTalker.prepare`).

    ``source``: the preprocessed picture (crop, first-frame coefficients); ``motion``: (T, 70) rows;
    ``plan``: the renderer's (T, 70|73) rows and free-view angles; ``audio``: float32 16 kHz samples to mux
    (the writer fits them to T frames); ``picture``: (H, W, 3) uint8 RGB source picture.
    """

    options: GenerationOptions
    seed: int
    output: Path
    picture: np.ndarray
    source: SourceRecord
    motion: MotionResult
    plan: RenderPlan
    audio: np.ndarray
    renderer_nets: RendererNets
    timer: _Timer
    report: ProgressFn
    stopped: Callable[[], bool]
    face_net: GFPGANv1Clean | None = None
    """GFPGAN network (``enhancer='gfpgan'``) or None."""
    upscaler: BackgroundUpscaler | None = None
    """Real-ESRGAN x2 (``background_enhancer='realesrgan'``) or None."""
    official: OfficialParts | None = None
    """``(ParseNet, RetinaFace)`` when the official enhancer arrangement runs (``enhancer_mode``), else None."""
    on_exists: str = "unique"
    """What the writer does when ``output`` is taken (:data:`.video.writer.ON_EXISTS`)."""
    recorded_as: GenerationOptions | None = None
    """Options recorded in the metadata instead of ``options`` (see :meth:`SadTalker.generate`)."""

    @property
    def num_frames(self) -> int:
        return int(self.plan.frame_count)


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float32`` or one of ``float32``, ``float16``, ``bfloat16``."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype}")
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[name]


def as_device(device: torch.device | str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r} (use cpu, cuda, cuda:N or mps)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for but CUDA is not available; use --device cpu")
    return dev


def cancel_checker(cancel: CancelLike) -> Callable[[], bool]:
    """A no-argument callable from ``None``, a ``threading.Event`` or a callable returning bool."""
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError(f"cancel must be a callable or a threading.Event, got {type(cancel).__name__}")


def default_output(options: GenerationOptions, result_dir: Path) -> Path:
    """``<result_dir>/<picture>__<audio>_<YYYYmmdd-HHMMSS>.mp4``, made unique with ``-2``, ``-3``...
    (a first guess: the writer claims the name that is really free, see :func:`.video.writer.reserve_output`)."""
    picture = Path(options.source).stem or "picture"
    if options.driven_audio:
        audio = Path(options.driven_audio).stem
    elif options.idle_seconds is not None:
        audio = f"idle{options.idle_seconds:g}s"
    else:
        audio = Path(options.ref_video or "reference").stem
    stem = f"{picture}__{audio}_{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    candidate = result_dir / f"{stem}.mp4"
    n = 1
    while candidate.exists():
        n += 1
        candidate = result_dir / f"{stem}-{n}.mp4"
    return candidate


class _Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0

    def total(self) -> dict[str, float]:
        out = {k: round(v, 3) for k, v in self.times.items()}
        out["total"] = round(time.perf_counter() - self.start, 3)
        return out


class _Run:
    """The timer, progress reports and cancel checks of one generation."""

    def __init__(self, progress: ProgressFn | None, cancel: CancelLike) -> None:
        self.timer = _Timer()
        self.stopped = cancel_checker(cancel)
        self._progress = progress

    def report(self, stage: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(stage, done, total)

    def check_cancel(self, where: str) -> None:
        """Raise :class:`CancelledError` (``cancelled <where>``) once cancel was asked for."""
        if self.stopped():
            raise CancelledError(f"cancelled {where}")


@dataclass(frozen=True)
class _Inputs:
    """Step 1's results: everything read from the user's files before any model loads."""

    output: Path
    on_exists: str
    picture: np.ndarray
    """(H, W, 3) uint8 RGB."""
    references: dict[Path, int]
    """Reference videos (``ref_video`` first, then ``ref_pose_video`` if another file) -> frame counts."""
    features: AudioFeatures | None
    """From the speech or the idle length; None for ``ref_mode='all'`` (T comes from the reference video)."""


@dataclass(frozen=True)
class _Models:
    """The networks one generation uses (built once, kept by the :class:`SadTalker` object)."""

    landmarks: LandmarksFn
    recon: FaceReconNet
    motion: MotionNets
    renderer: RendererNets
    face_net: GFPGANv1Clean | None
    official: OfficialParts | None
    upscaler: BackgroundUpscaler | None


@dataclass(frozen=True)
class _FrameSteps:
    """What rendered face crops go through to become final frames, decided once per video.

    ``restore``: the crop arrangement's GFPGAN on each rendered chunk (None without it); ``finish``: per
    frame, in the thread pool: aspect resize and, in full modes, paste-back; then per finished chunk
    ``upscale`` (Real-ESRGAN on whole frames: the modes without a separate background) and ``official``
    (the official enhancer arrangement)."""

    restore: Callable[[np.ndarray], np.ndarray] | None
    finish: Callable[[np.ndarray], np.ndarray]
    upscale: BackgroundUpscaler | None
    official: OfficialFaceEnhancer | None

    def complete(self, futures: list[Future], timer: _Timer) -> np.ndarray:
        """The finished chunk ``(n, H, W, 3)``; the wait (what the main thread loses to resize+paste) is timed."""
        with timer.stage("resize+paste"):
            batch = np.stack([f.result() for f in futures])
        if self.upscale is not None:
            with timer.stage("background"):
                batch = self.upscale(batch)
        if self.official is not None:
            with timer.stage("enhance"):
                batch = self.official(batch)
        return batch


def _reference_frames(path: Path) -> int:
    """Frame count of a reference video; InputError when it is missing, unreadable or empty."""
    if not path.is_file():
        raise InputError(f"reference video not found: {path}")
    total = count_frames(path)  # also proves the file decodes
    if total < 1:
        raise InputError(f"the reference video {path.name} has no frames")
    return total


def _all_mode(options: GenerationOptions) -> bool:
    """``ref_mode='all'`` with a reference video: motion and frame count come from the video, not the audio."""
    return options.ref_video is not None and options.ref_mode == "all"


def _speech_features(options: GenerationOptions, seed: int) -> AudioFeatures:
    """The motion stage's audio features from the driven audio, else the idle length (blinks drawn from
    ``seed``)."""
    rng = np.random.default_rng(seed)
    if options.driven_audio:
        return prepare_audio(
            options.driven_audio, use_blink=options.use_blink, rng=rng, max_seconds=options.max_audio_seconds
        )
    if options.idle_seconds is not None:
        return idle_audio_features(
            options.idle_seconds, use_blink=options.use_blink, rng=rng, max_seconds=options.max_audio_seconds
        )
    # GenerationOptions refuses this before: only ref_mode 'all' runs without audio or idle length
    raise InputError("driven_audio: give a speech recording, or idle_seconds for idle mode")


def _post_overlaps_render(device: torch.device) -> bool:
    """Whether frames are pasted while the next ones render: only when the renderer is not on the CPU."""
    return device.type != "cpu"


class SadTalker:
    """The generation pipeline, built once; models load lazily and stay loaded.

    Args:
        checkpoint_dir / gfpgan_dir: weight folders (``None``: :func:`resolve_model_dirs` order), or
            ``model_dirs`` already resolved.
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps``. dtype: ``float32`` (default), ``float16`` (GPU only),
            ``bfloat16``: the precision of the renderer's per-frame convolutions (dense-motion hourglass,
            mask and occlusion convs, SPADE decoder; on a GPU also of the enhancers); audio, motion,
            preprocessing, keypoints, Gaussians, warps and the source encoding always run in float32.
            Speed and error: :mod:`.precision`.
        result_dir: folder for videos whose options give no ``output``.
        keep_partial: on cancel keep ``<name>.partial.mp4`` with the frames made so far.
        post_threads: threads that resize and paste frames back (``None``: the CPU count, at most 8);
            the paste-back's Poisson blend (``cv2.seamlessClone``) is the slowest per-frame step after
            the renderer, and with a GPU renderer it would otherwise take most of the time (there it
            also overlaps with rendering).
        winograd: on a CPU in float32, the renderer decoder's wide 3x3 convolutions by Winograd F(4x4, 3x3)
            (fewer multiplies; transformed kernels built per call). ``False``
            keeps the direct convolutions (less memory).
    """

    def __init__(
        self,
        checkpoint_dir: str | Path | None = None,
        gfpgan_dir: str | Path | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str = torch.float32,
        result_dir: str | Path = DEFAULT_RESULT_DIR,
        keep_partial: bool = False,
        model_dirs: ModelDirs | None = None,
        post_threads: int | None = None,
        winograd: bool = True,
    ) -> None:
        self.dirs = model_dirs or resolve_model_dirs(checkpoint_dir, gfpgan_dir)
        self.device = as_device(device)
        self.dtype = as_dtype(dtype)
        if self.device.type == "cpu" and self.dtype == torch.float16:
            raise InputError(
                "dtype float16 needs a GPU; on the CPU use float32, or bfloat16 (on CPUs with AMX "
                f"{precision.BFLOAT16_SPEED}; slower elsewhere)"
            )
        self.precision_advice = precision.cpu_advice(self.device, self.dtype)
        """A line for CPU users about bfloat16 (:func:`.precision.cpu_advice`) that front ends show, or None."""
        if post_threads is not None and post_threads < 1:
            raise InputError(f"post_threads must be at least 1, got {post_threads}")
        self.post_threads = post_threads or min(8, os.cpu_count() or 1)
        self.winograd = winograd
        self.result_dir = Path(result_dir)
        self.keep_partial = keep_partial
        self.models = ModelCache()
        """Every model this pipeline built (passed to the loaders): never shared with another pipeline."""
        self._named: dict[tuple, None] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ models
    def _model(self, key: tuple, factory: Callable[[], _Model]) -> _Model:
        with self._lock:
            value = self.models.get(("pipeline", *key), factory)
            self._named[key] = None
            return value

    @property
    def _models(self) -> dict[tuple, object]:
        """Snapshot of the models this pipeline asked for by name (its own keys; loader entries aside)."""
        with self._lock:
            held = dict(self.models.items())
            return {k: held[("pipeline", *k)] for k in self._named if ("pipeline", *k) in held}

    @property
    def loaded(self) -> list[str]:
        """Names of the models currently held (for status displays)."""
        return ["/".join(str(p) for p in k) for k in self._models]

    def unload(self) -> None:
        """Drop every model this object holds (other pipelines keep theirs); next use loads again."""
        with self._lock:
            self.models.clear()
            self._named.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _motion_nets(self, size: int) -> MotionNets:
        return self._model(
            ("motion", size),
            lambda: load_motion_nets(
                self.dirs.checkpoints, size, self.device, torch.float32, cache=self.models
            ),
        )

    def _renderer_nets(self, size: int, preprocess: str | PreprocessMode) -> RendererNets:
        return self._model(
            ("renderer", size, mapping_name(preprocess)),
            lambda: load_renderer_nets(
                self.dirs.checkpoints,
                size,
                preprocess,
                self.device,
                self.dtype,
                winograd=self.winograd,
                cache=self.models,
            ),
        )

    def _recon_net(self, size: int) -> FaceReconNet:
        return self._model(
            ("recon", size),
            lambda: load_recon_net(
                self.dirs.checkpoints / safetensors_name(size), self.device, torch.float32, cache=self.models
            ),
        )

    def _landmarks_fn(self, detector: str, face_index: int) -> LandmarksFn:
        """``rgb (H, W, 3) uint8 -> (68, 2) landmarks or None`` for the chosen backend and face (a
        :class:`.face.FaceLandmarks`: the passes on the crop picture keep that face; the backends cache
        their networks in this pipeline's cache)."""
        landmarks = FaceLandmarks(detector, self.dirs.gfpgan, face_index, str(self.device), cache=self.models)
        return self._model(("landmarks", detector, face_index), lambda: landmarks)

    def _enhancer_dtype(self, *, float16_ok: bool = False) -> torch.dtype:
        """The enhancers' precision: float32 on the CPU (not checked in bfloat16 there) and, unless
        ``float16_ok``, for float16 (GFPGAN is unreliable in it); otherwise the dtype asked."""
        if self.device.type == "cpu" or (self.dtype == torch.float16 and not float16_ok):
            return torch.float32
        return self.dtype

    def _face_net(self) -> GFPGANv1Clean:
        """The GFPGAN v1.4 network of ``<gfpgan>/GFPGANv1.4.pth`` (kept like the other models)."""
        dtype = self._enhancer_dtype()
        return self._model(
            ("gfpgan", GFPGAN_FILE, str(dtype).removeprefix("torch.")),
            lambda: load_gfpgan(self.dirs.gfpgan / GFPGAN_FILE, self.device, dtype, cache=self.models),
        )

    def enhancer_mode(self, options: GenerationOptions) -> str | None:
        """The arrangement ``enhancer='gfpgan'`` gets: 'official' or 'crop' (None without the enhancer);
        ``'auto'`` is 'official' when ``detection_Resnet50_Final.pth`` and ``parsing_parsenet.pth`` are in
        the gfpgan/weights folder."""
        if options.enhancer != "gfpgan":
            return None
        if options.enhancer_mode != "auto":
            return options.enhancer_mode
        if all((self.dirs.gfpgan / name).is_file() for name in (DETECTOR_FILE, PARSENET_FILE)):
            return "official"
        return "crop"

    def _official_parts(self) -> OfficialParts:
        """``(ParseNet, RetinaFace)`` of the gfpgan/weights folder (kept like the other models)."""
        parse = self._model(
            ("parsenet", PARSENET_FILE),
            lambda: load_parsenet(self.dirs.gfpgan / PARSENET_FILE, self.device, cache=self.models),
        )
        detector = self._model(
            ("retinaface-frames",),
            lambda: load_detector(self.dirs.gfpgan, str(self.device), cache=self.models),
        )
        return parse, detector

    def _background_upscaler(self, batch_size: int) -> BackgroundUpscaler:
        """A :class:`.enhance.BackgroundUpscaler` around the kept ``RealESRGAN_x2plus.pth`` network."""
        dtype = self._enhancer_dtype(float16_ok=True)
        net = self._model(
            ("realesrgan", REALESRGAN_FILE, str(dtype).removeprefix("torch.")),
            lambda: load_realesrgan(
                self.dirs.gfpgan / REALESRGAN_FILE, self.device, dtype, cache=self.models
            ),
        )
        return BackgroundUpscaler(net, self.device, dtype, tile=400, tile_pad=10, batch_size=batch_size)

    # ------------------------------------------------------------------ checks
    def required_weights(self, options: GenerationOptions) -> Selection:
        """The :class:`weights.Selection` this generation needs."""
        return required_files(
            options.size,
            options.preprocess,
            enhancer=options.enhancer == "gfpgan",
            detector=options.face_detector == "retinaface",
            background=options.background_enhancer == "realesrgan",
        )

    def check_weights(self, options: GenerationOptions) -> None:
        """Raise :class:`CheckpointError` naming every missing weight file, its folder and the downloader.

        Only presence is checked here (cheap); the loaders check each file's tensors when they read it.
        """
        selection = self.required_weights(options)
        names = selection.names(load_manifest())
        if options.enhancer == "gfpgan" and self.enhancer_mode(options) != "official":
            # the crop arrangement needs GFPGAN only (the downloader's --enhancer also fetches these two)
            unneeded = {PARSENET_FILE} | ({DETECTOR_FILE} if options.face_detector != "retinaface" else set())
            names = [n for n in names if n not in unneeded]
        rows = model_status(self.dirs, names=names, check_structure=False)
        missing = [r for r in rows if r.state == MISSING]
        warn_unofficial(rows)  # once per file per process: the loaders check the tensors anyway
        if missing:
            lines = [f"missing weight file{'s' if len(missing) > 1 else ''}:"]
            lines += [f"  {r.name} -> put it in {r.path.parent}" for r in missing]
            lines.append(f"download with: {download_command(selection, self.dirs)}")
            raise CheckpointError("\n".join(lines))

    def model_status(self) -> list[WeightStatus]:
        """Rows of :func:`weights.model_status` for every weight file (present / missing / corrupt)."""
        return model_status(self.dirs, check_structure=False)

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        options: GenerationOptions,
        progress: ProgressFn | None = None,
        cancel: CancelLike = None,
        frame_hook: FrameHook | None = None,
        on_exists: str | None = None,
        recorded_as: GenerationOptions | None = None,
        *,
        fragmented: bool = False,
        stream: StreamSink | None = None,
        on_output: Callable[[Path], None] | None = None,
    ) -> Result:
        """Make one video. Raises InputError / CheckpointError / CancelledError (nothing left at the
        output path on any failure; on cancel a ``.partial.mp4`` when ``keep_partial``).

        ``frame_hook(frames)``: called on every chunk of final frames ``(n, H, W, 3)`` uint8 RGB just
        before encoding; returns frames of the same shape and dtype (face restoration, live preview).

        ``on_exists``: when the output name is taken, ``"error"`` (refused before any model loads),
        ``"unique"`` (``<name>-2.mp4``...) or ``"overwrite"``; ``None``: ``"error"`` for an explicit
        ``options.output``, ``"unique"`` for a name made in ``result_dir``. Two generations never write
        the same file; ``Result.video_path`` is the file written.

        ``recorded_as``: the options written into the metadata and sidecar instead of ``options``: the same
        settings, with the paths as the user named them, where the inputs were copied elsewhere to be read
        (a cluster worker); its ``output`` is the name recorded. Settings that differ are refused.

        ``fragmented``: write the file as a fragmented MP4 (one fragment per second of video, each from a
        keyframe; plays everywhere a normal mp4 plays). ``stream(data)`` (implies ``fragmented``): gets the
        init segment and then each whole fragment as soon as the encoder has written it, while frames are
        still rendered (from another thread; hand the bytes on quickly). The file is still written and
        renamed to its final name only when complete; a cancelled or failed run leaves no final file,
        whatever was streamed. ``on_output(path)``: called with the claimed output path before rendering.
        """
        if recorded_as is not None:
            same = settings_without_paths(recorded_as.to_dict()) == settings_without_paths(options.to_dict())
            if not same:
                raise InputError("recorded_as must hold the same settings as the options (paths aside)")
        try:
            prep = self.prepare(options, progress, cancel, on_exists=on_exists)
            prep.recorded_as = recorded_as
            return self.write_video(
                prep, frame_hook=frame_hook, fragmented=fragmented, stream=stream, on_output=on_output
            )
        finally:
            release_freed_memory()  # the job's working set, no longer in use, back to the system

    def prepare(
        self,
        options: GenerationOptions,
        progress: ProgressFn | None = None,
        cancel: CancelLike = None,
        on_exists: str | None = None,
    ) -> Prepared:
        """Steps 1-4: check inputs, the output folder and weights, load models, preprocess, audio
        features, motion, render plan. Nothing is written (the output folder may be created)."""
        run = _Run(progress, cancel)
        seed = options.seed if options.seed is not None else secrets.randbelow(2**32)
        inputs = self._read_inputs(options, seed, on_exists, run)
        self.check_weights(options)
        run.check_cancel("before loading the models")
        models = self._load_models(options, run)
        run.check_cancel("after loading the models")
        source = self._extract_source(options, inputs.picture, models, run)
        references = self._reference_coefficients(options, inputs.references, models, run)
        features, audio = self._motion_audio(options, inputs.features, references)
        run.check_cancel("before the motion")
        motion = self._motion(options, features, source, references, models.motion, seed, run)
        run.check_cancel("before rendering")
        # render plan (steps 5 and 6 run in write_video / iter_video_frames)
        return Prepared(
            options=options,
            seed=seed,
            output=inputs.output,
            picture=inputs.picture,
            source=source,
            motion=motion,
            plan=plan_from_options(source.first_coeff, motion.mat_coeffs, options),
            audio=audio,
            renderer_nets=models.renderer,
            timer=run.timer,
            report=run.report,
            stopped=run.stopped,
            face_net=models.face_net,
            upscaler=models.upscaler,
            official=models.official,
            on_exists=inputs.on_exists,
        )

    def _read_inputs(
        self, options: GenerationOptions, seed: int, on_exists: str | None, run: _Run
    ) -> _Inputs:
        """Step 1, before any model: the output name, the picture, the reference videos' frame counts and
        the audio features, so that a bad input fails fast."""
        run.report("inputs", 0, 1)
        with run.timer.stage("inputs"):
            output = Path(options.output) if options.output else default_output(options, self.result_dir)
            if output.suffix.lower() != ".mp4":  # GenerationOptions leaves output paths to the front ends
                raise InputError(f"output must be an .mp4 file, got {output}")
            if on_exists is None:
                on_exists = "error" if options.output else "unique"
            check_folder(output.parent)  # a file in the way is reported now, not after the motion
            check_output_free(output, on_exists)
            picture = load_rgb(options.source)
            videos = (options.ref_video, options.ref_pose_video)
            references = {Path(v): _reference_frames(Path(v)) for v in videos if v is not None}
            features = None if _all_mode(options) else _speech_features(options, seed)
        run.report("inputs", 1, 1)
        return _Inputs(output, on_exists, picture, references, features)

    def _load_models(self, options: GenerationOptions, run: _Run) -> _Models:
        """Step 2: the networks this generation needs (kept for the next one)."""
        run.report("models", 0, 1)
        with run.timer.stage("models"):
            models = _Models(
                landmarks=self._landmarks_fn(options.face_detector, options.face_index),
                recon=self._recon_net(options.size),
                motion=self._motion_nets(options.size),
                renderer=self._renderer_nets(options.size, options.preprocess),
                face_net=self._face_net() if options.enhancer == "gfpgan" else None,
                official=self._official_parts() if self.enhancer_mode(options) == "official" else None,
                upscaler=(
                    self._background_upscaler(options.batch_size)
                    if options.background_enhancer == "realesrgan"
                    else None
                ),
            )
        run.report("models", 1, 1)
        return models

    def _extract_source(
        self, options: GenerationOptions, picture: np.ndarray, models: _Models, run: _Run
    ) -> SourceRecord:
        """Step 3: crop, landmarks and first-frame coefficients of the source picture (cached per pipeline)."""
        run.report("preprocess", 0, 1)
        with run.timer.stage("preprocess"):
            source = extract_source(
                picture,
                options.preprocess,
                options.size,
                models.landmarks,
                models.recon,
                self.device,
                torch.float32,
                cache=self.models.get(("extractions",), lambda: ExtractionCache(CACHE_SIZE)),
            )
        run.report("preprocess", 1, 1)
        return source

    def _reference_coefficients(
        self, options: GenerationOptions, videos: dict[Path, int], models: _Models, run: _Run
    ) -> list[np.ndarray]:
        """Step 3b: ``(N, 73)`` coefficients of each reference video, frame by frame (empty without one)."""
        if not videos:
            return []
        run.check_cancel("before the reference video")
        # face_index picks a face of the source picture; a reference video's face is its largest
        landmarks = self._landmarks_fn(options.face_detector, 0)
        total = sum(videos.values())
        coeffs: list[np.ndarray] = []
        with run.timer.stage("reference"):
            done_before = 0
            for path, frames in videos.items():

                def progress(done: int, _total: int | None, before: int = done_before) -> None:
                    run.report("reference", before + done, total)
                    run.check_cancel("while reading the reference video")

                ref = extract_video(
                    iter_frames(path),
                    options.preprocess,
                    landmarks,
                    models.recon,
                    self.device,
                    torch.float32,
                    progress=progress,
                    total=frames,
                )
                coeffs.append(ref.coeff_3dmm)
                done_before += frames
        return coeffs

    @staticmethod
    def _motion_audio(
        options: GenerationOptions, features: AudioFeatures | None, references: list[np.ndarray]
    ) -> tuple[AudioFeatures, np.ndarray]:
        """The motion stage's features and the track to mux: the speech's (or idle silence), or for
        ``ref_mode='all'`` stand-ins as long as the reference video and its soundtrack."""
        if features is not None:
            return features, features.wav16k
        assert options.ref_video is not None  # features are None only for ref_mode 'all' with a video
        return reference_audio(
            Path(options.ref_video),
            options.driven_audio,
            references[0].shape[0],
            max_seconds=options.max_audio_seconds,
        )

    def _motion(
        self,
        options: GenerationOptions,
        features: AudioFeatures,
        source: SourceRecord,
        references: list[np.ndarray],
        nets: MotionNets,
        seed: int,
        run: _Run,
    ) -> MotionResult:
        """Step 4: ExpNet + PoseVAE -> (T, 70) coefficients (pose noise drawn from ``seed``)."""
        run.report("motion", 0, 1)
        motion_total = [1]

        def progress(done: int, total: int) -> None:
            motion_total[0] = total
            run.report("motion", done, total)
            if done < total:
                run.check_cancel("while generating the motion")

        with run.timer.stage("motion"):
            motion = generate_coefficients(
                nets,
                features.indiv_mels,
                features.ratio,
                source.exp_pose,
                options.pose_style,
                generator=torch.Generator(device="cpu").manual_seed(seed),
                ref_coeffs=references[0] if references else None,
                ref_mode=options.ref_mode if references else None,
                pose_ref_coeffs=references[1] if len(references) > 1 else None,
                progress=progress,
            )
        run.report("motion", motion_total[0], motion_total[0])
        return motion

    def iter_video_frames(self, prep: Prepared) -> Iterator[np.ndarray]:
        """Step 5: the video's frames in order, ``(n, H, W, 3)`` uint8 RGB chunks of up to ``batch_size``:
        rendered, face-enhanced (``enhancer='gfpgan'``), resized to the crop's aspect ratio (width = size)
        and, in full modes, pasted back; ``background_enhancer='realesrgan'`` doubles ``H`` and ``W``
        (module docstring). Checks ``cancel`` before every batch (raises CancelledError); reports
        ``render`` progress."""
        steps = self._frame_steps(prep)
        renderer = Renderer(prep.renderer_nets, self.device)
        image = source_image_tensor(prep.source.crop_picture, prep.options.size)

        def render_progress(done: int, total: int) -> None:
            prep.report("render", done, total)

        prep.report("render", 0, prep.num_frames)
        chunks = renderer.iter_uint8(image, prep.plan, progress=render_progress, cancel=prep.stopped)
        yield from self._finish_chunks(chunks, steps, prep.timer)

    def _frame_steps(self, prep: Prepared) -> _FrameSteps:
        """The enhancer arrangement of this video (module docstring); with the background enhancer in the
        full modes the picture is upscaled here, once, and faces are made at its scale."""
        mode = PreprocessMode.parse(prep.options.preprocess)
        official = self._official_enhancer(prep)
        upscaler = prep.upscaler if official is None else None  # official: it upscales its own background
        face_scale = 1
        picture = prep.picture
        if upscaler is not None and mode.is_full:
            face_scale = upscaler.scale
            with prep.timer.stage("background"):
                picture = upscaler(prep.picture[None])[0]
        return _FrameSteps(
            restore=self._crop_restorer(prep, face_scale) if official is None else None,
            finish=frame_finisher(mode, prep.source.crop_info, prep.options.size, picture, scale=face_scale),
            upscale=None if mode.is_full else upscaler,
            official=official,
        )

    def _official_enhancer(self, prep: Prepared) -> OfficialFaceEnhancer | None:
        """GFPGANer.enhance on every final frame (``enhancer_mode`` 'official'), else None."""
        if prep.official is None:
            return None
        parser, detector = prep.official
        return OfficialFaceEnhancer(
            prep.face_net,
            parser,
            self.device,
            self._enhancer_dtype(),
            detector=detector,
            background=prep.upscaler,
            batch_size=prep.options.batch_size,
            noise_seed=0,
        )

    def _crop_restorer(self, prep: Prepared, scale: int) -> Callable[[np.ndarray], np.ndarray] | None:
        """GFPGAN on each chunk of rendered crops, enlarged ``scale`` times first (``enhancer_mode`` 'crop');
        None without the face enhancer."""
        if prep.face_net is None:
            return None
        enhancer = FaceEnhancer(
            prep.face_net,
            self.device,
            self._enhancer_dtype(),
            batch_size=prep.options.batch_size,
            noise_seed=0,
        )

        def restore(chunk: np.ndarray) -> np.ndarray:
            with prep.timer.stage("enhance"):
                return enhancer(np.ascontiguousarray(enlarge(chunk, scale)))

        return restore

    def _finish_chunks(
        self, chunks: Iterator[np.ndarray], steps: _FrameSteps, timer: _Timer
    ) -> Iterator[np.ndarray]:
        """Rendered chunks -> final chunks, in order, through ``steps``.

        Frames are resized and pasted by a thread pool; chunks leave in order. With a GPU renderer the
        pool works while the next chunks render (at most two frames per thread wait: memory stays flat);
        with a CPU renderer each chunk is finished before the next is rendered, since pasting beside
        torch's own threads slowed the whole run down (2-core CPU: 14.1 s instead of 12.1 s)."""
        max_waiting = 2 * self.post_threads if _post_overlaps_render(self.device) else 0
        waiting: deque[list[Future]] = deque()
        pool = ThreadPoolExecutor(max_workers=self.post_threads, thread_name_prefix="sadtalker-paste")
        try:
            while True:
                try:
                    with timer.stage("render"):
                        chunk = next(chunks)
                except StopIteration:
                    break
                except CancelledError:  # the frames made so far still reach the writer (keep_partial)
                    while waiting:
                        yield steps.complete(waiting.popleft(), timer)
                    raise
                if steps.restore is not None:
                    chunk = steps.restore(chunk)
                waiting.append([pool.submit(steps.finish, frame) for frame in chunk])
                while sum(len(c) for c in waiting) > max_waiting:
                    yield steps.complete(waiting.popleft(), timer)
            while waiting:
                yield steps.complete(waiting.popleft(), timer)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def write_video(
        self,
        prep: Prepared,
        frame_hook: FrameHook | None = None,
        *,
        fragmented: bool = False,
        stream: StreamSink | None = None,
        on_output: Callable[[Path], None] | None = None,
    ) -> Result:
        """Step 6: stream :meth:`iter_video_frames` (through ``frame_hook``, if given) into the mp4
        (audio, metadata, sidecar). ``fragmented`` / ``stream``: see :meth:`generate`; ``on_output(path)``
        is called once the output name is claimed, before the first frame is rendered."""
        options, timer = prep.options, prep.timer
        digests = input_digests(options)  # of the files actually read
        frame_w = frame_h = 0
        writer = VideoWriter(  # claims the output name (another run may have taken prep.output)
            prep.output,
            num_frames=prep.num_frames,
            audio=prep.audio,
            sample_rate=SAMPLE_RATE,
            fps=FPS,
            keep_partial=self.keep_partial,
            on_exists=prep.on_exists,
            fragmented=fragmented,
            sink=stream,
        )
        output = writer.path
        writer.metadata = {
            "generator": "sadtalker_ext",
            "version": __version__,
            "seed": prep.seed,
            "options": (prep.recorded_as or options.replace(output=str(output)))
            .replace(seed=prep.seed)
            .to_dict(),
            "inputs_sha256": digests,
            "fps": FPS,
            "num_frames": prep.num_frames,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        try:
            if on_output is not None:
                on_output(output)
            with writer:
                for batch in self.iter_video_frames(prep):
                    if frame_hook is not None:
                        with timer.stage("frame_hook"):
                            hooked = np.asarray(frame_hook(batch))
                        if hooked.shape != batch.shape or hooked.dtype != np.uint8:
                            raise SadTalkerError(
                                f"frame_hook returned {hooked.dtype} {hooked.shape}; "
                                f"expected uint8 {batch.shape}"
                            )
                        batch = hooked
                    frame_h, frame_w = batch.shape[1:3]
                    with timer.stage("encode"):
                        writer.write(batch)
                prep.report("encode", 0, 1)
                with timer.stage("mux"):
                    writer.finish()
                prep.report("encode", 1, 1)
        finally:
            writer.abort()  # no-op after finish(); frees the encoder on any other way out
        side = sidecar_path(output)
        return Result(
            video_path=output,
            sidecar=side if side.exists() else None,
            seed=prep.seed,
            num_frames=prep.num_frames,
            timings=timer.total(),
            width=frame_w,
            height=frame_h,
        )


__all__ = ["CancelledError", "Result", "SadTalker", "SadTalkerError", "as_dtype", "cancel_checker"]
