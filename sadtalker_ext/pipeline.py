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
from typing import Any

import numpy as np
import torch

from . import __version__
from .checkpoints import ModelCache
from .errors import CancelledError, CheckpointError, InputError, SadTalkerError
from .options import GenerationOptions
from .paths import ModelDirs, resolve_model_dirs

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
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_RESULT_DIR = Path("results")


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

    ``source``: the preprocess ``SourceRecord``; ``motion``: the ``MotionResult`` ((T, 70) rows);
    ``plan``: the renderer's ``RenderPlan`` ((T, 70|73) rows, free-view angles); ``audio``: (T * 640,)
    float32 16 kHz samples to mux; ``picture``: (H, W, 3) uint8 RGB source picture.
    """

    options: GenerationOptions
    seed: int
    output: Path
    picture: np.ndarray
    source: Any
    motion: Any
    plan: Any
    audio: np.ndarray
    renderer_nets: Any
    timer: _Timer
    report: Callable[[str, int, int], None]
    stopped: Callable[[], bool]
    face_net: Any = None
    """GFPGAN network (``enhancer='gfpgan'``) or None."""
    upscaler: Any = None
    """:class:`.enhance.BackgroundUpscaler` (``background_enhancer='realesrgan'``) or None."""
    official: Any = None
    """``(ParseNet, RetinaFace)`` when the official enhancer arrangement runs (``enhancer_mode``), else None."""
    on_exists: str = "unique"
    """What the writer does when ``output`` is taken (:data:`.video.writer.ON_EXISTS`)."""

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


def _reference_frames(path: Path) -> int:
    """Frame count of a reference video; InputError when it is missing, unreadable or empty."""
    from .video.probe import count_frames

    if not path.is_file():
        raise InputError(f"reference video not found: {path}")
    total = count_frames(path)  # also proves the file decodes
    if total < 1:
        raise InputError(f"the reference video {path.name} has no frames")
    return total


def _post_overlaps_render(device: torch.device) -> bool:
    """Whether frames are pasted while the next ones render: only when the renderer is not on the CPU."""
    return device.type != "cpu"


class SadTalker:
    """The generation pipeline, built once; models load lazily and stay loaded.

    Args:
        checkpoint_dir / gfpgan_dir: weight folders (``None``: :func:`resolve_model_dirs` order), or
            ``model_dirs`` already resolved.
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps``. dtype: ``float32`` (default), ``float16`` (GPU only),
            ``bfloat16``: the precision of the renderer's SPADE decoder (and, on a GPU, of the enhancers);
            audio, motion, preprocessing, keypoints and dense motion always run in float32.
        result_dir: folder for videos whose options give no ``output``.
        keep_partial: on cancel keep ``<name>.partial.mp4`` with the frames made so far.
        post_threads: threads that resize and paste frames back (``None``: the CPU count, at most 8);
            the paste-back's Poisson blend (``cv2.seamlessClone``) is the slowest per-frame step after
            the renderer, and with a GPU renderer it would otherwise take most of the time (there it
            also overlaps with rendering).
        winograd: on a CPU in float32, the renderer decoder's wide 3x3 convolutions by Winograd F(4x4, 3x3)
            (about 1.7x faster rendering; ~0.8 GB of transformed kernels kept with the models). ``False``
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
                "dtype float16 needs a GPU; on the CPU use float32, or bfloat16 (somewhat faster rendering "
                "on CPUs with AVX-512 BF16 or AMX, slower elsewhere)"
            )
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
    def _model(self, key: tuple, factory: Callable[[], Any]) -> Any:
        with self._lock:
            value = self.models.get(("pipeline", *key), factory)
            self._named[key] = None
            return value

    @property
    def _models(self) -> dict[tuple, Any]:
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

    def _motion_nets(self, size: int):
        from .motion import load_motion_nets

        return self._model(
            ("motion", size),
            lambda: load_motion_nets(
                self.dirs.checkpoints, size, self.device, torch.float32, cache=self.models
            ),
        )

    def _renderer_nets(self, size: int, preprocess: str):
        from .checkpoints import mapping_name
        from .render.loading import load_renderer_nets

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

    def _recon_net(self, size: int):
        from .checkpoints import safetensors_name
        from .preprocess.extract import load_recon_net

        return self._model(
            ("recon", size),
            lambda: load_recon_net(
                self.dirs.checkpoints / safetensors_name(size), self.device, torch.float32, cache=self.models
            ),
        )

    def _landmarks_fn(self, detector: str, face_index: int) -> Callable[[np.ndarray], np.ndarray | None]:
        """``rgb (H, W, 3) uint8 -> (68, 2) landmarks or None`` for the chosen backend and face (a
        :class:`.face.FaceLandmarks`: the passes on the crop picture keep that face; the backends cache
        their networks in this pipeline's cache)."""
        from .face import FaceLandmarks

        landmarks = FaceLandmarks(detector, self.dirs.gfpgan, face_index, str(self.device), cache=self.models)
        return self._model(("landmarks", detector, face_index), lambda: landmarks)

    def _enhancer_dtype(self, *, float16_ok: bool = False) -> torch.dtype:
        """The enhancers' precision: float32 on the CPU (not checked in bfloat16 there) and, unless
        ``float16_ok``, for float16 (GFPGAN is unreliable in it); otherwise the dtype asked."""
        if self.device.type == "cpu" or (self.dtype == torch.float16 and not float16_ok):
            return torch.float32
        return self.dtype

    def _face_net(self):
        """The GFPGAN v1.4 network of ``<gfpgan>/GFPGANv1.4.pth`` (kept like the other models)."""
        from .enhance import load_gfpgan
        from .weights import GFPGAN_FILE

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
        from .weights import DETECTOR_FILE, PARSENET_FILE

        if all((self.dirs.gfpgan / name).is_file() for name in (DETECTOR_FILE, PARSENET_FILE)):
            return "official"
        return "crop"

    def _official_parts(self):
        """``(ParseNet, RetinaFace)`` of the gfpgan/weights folder (kept like the other models)."""
        from .enhance_paste import load_parsenet
        from .face.retinaface_backend import load_detector
        from .weights import PARSENET_FILE

        parse = self._model(
            ("parsenet", PARSENET_FILE),
            lambda: load_parsenet(self.dirs.gfpgan / PARSENET_FILE, self.device, cache=self.models),
        )
        detector = self._model(
            ("retinaface-frames",),
            lambda: load_detector(self.dirs.gfpgan, str(self.device), cache=self.models),
        )
        return parse, detector

    def _background_upscaler(self, batch_size: int):
        """A :class:`.enhance.BackgroundUpscaler` around the kept ``RealESRGAN_x2plus.pth`` network."""
        from .enhance import BackgroundUpscaler, load_realesrgan
        from .weights import REALESRGAN_FILE

        dtype = self._enhancer_dtype(float16_ok=True)
        net = self._model(
            ("realesrgan", REALESRGAN_FILE, str(dtype).removeprefix("torch.")),
            lambda: load_realesrgan(
                self.dirs.gfpgan / REALESRGAN_FILE, self.device, dtype, cache=self.models
            ),
        )
        return BackgroundUpscaler(net, self.device, dtype, tile=400, tile_pad=10, batch_size=batch_size)

    # ------------------------------------------------------------------ checks
    def required_weights(self, options: GenerationOptions):
        """The :class:`weights.Selection` this generation needs."""
        from .weights import required_files

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
        from .weights import MISSING, download_command, model_status

        selection = self.required_weights(options)
        names = self._selection_names(selection)
        if options.enhancer == "gfpgan" and self.enhancer_mode(options) != "official":
            # the crop arrangement needs GFPGAN only (the downloader's --enhancer also fetches these two)
            from .enhance_paste import PARSENET_FILE
            from .face.retinaface_backend import DETECTOR_FILE

            unneeded = {PARSENET_FILE} | ({DETECTOR_FILE} if options.face_detector != "retinaface" else set())
            names = [n for n in names if n not in unneeded]
        rows = model_status(self.dirs, names=names, check_structure=False)
        missing = [r for r in rows if r.state == MISSING]
        from .weights import warn_unofficial

        warn_unofficial(rows)  # once per file per process: the loaders check the tensors anyway
        if missing:
            lines = [f"missing weight file{'s' if len(missing) > 1 else ''}:"]
            lines += [f"  {r.name} -> put it in {r.path.parent}" for r in missing]
            lines.append(f"download with: {download_command(selection, self.dirs)}")
            raise CheckpointError("\n".join(lines))

    @staticmethod
    def _selection_names(selection) -> list[str]:
        from .weights import load_manifest

        return selection.names(load_manifest())

    def model_status(self):
        """Rows of :func:`weights.model_status` for every weight file (present / missing / corrupt)."""
        from .weights import model_status

        return model_status(self.dirs, check_structure=False)

    def _check_options(self, options: GenerationOptions) -> None:
        if options.enhancer not in ("none", "gfpgan"):
            raise InputError(
                f"enhancer {options.enhancer!r} is not implemented in this extension; "
                "use enhancer 'gfpgan' (GFPGAN v1.4) or 'none'."
            )
        if options.background_enhancer not in ("none", "realesrgan"):
            raise InputError(
                f"background_enhancer {options.background_enhancer!r} is not implemented in this extension; "
                "use 'realesrgan' or 'none'."
            )

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        options: GenerationOptions,
        progress: ProgressFn | None = None,
        cancel: CancelLike = None,
        frame_hook: FrameHook | None = None,
        on_exists: str | None = None,
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

        ``fragmented``: write the file as a fragmented MP4 (one fragment per second of video, each from a
        keyframe; plays everywhere a normal mp4 plays). ``stream(data)`` (implies ``fragmented``): gets the
        init segment and then each whole fragment as soon as the encoder has written it, while frames are
        still rendered (from another thread; hand the bytes on quickly). The file is still written and
        renamed to its final name only when complete; a cancelled or failed run leaves no final file,
        whatever was streamed. ``on_output(path)``: called with the claimed output path before rendering.
        """
        prep = self.prepare(options, progress, cancel, on_exists=on_exists)
        return self.write_video(
            prep, frame_hook=frame_hook, fragmented=fragmented, stream=stream, on_output=on_output
        )

    def prepare(
        self,
        options: GenerationOptions,
        progress: ProgressFn | None = None,
        cancel: CancelLike = None,
        on_exists: str | None = None,
    ) -> Prepared:
        """Steps 1-4: check inputs, the output folder and weights, load models, preprocess, audio
        features, motion, render plan. Nothing is written (the output folder may be created)."""
        from .audio.features import idle_audio_features, prepare_audio
        from .images import load_rgb
        from .video.writer import check_output_free, ensure_folder

        timer = _Timer()
        stopped = cancel_checker(cancel)

        def report(stage: str, done: int, total: int) -> None:
            if progress is not None:
                progress(stage, done, total)

        def check_cancel(where: str) -> None:
            if stopped():
                raise CancelledError(f"cancelled {where}")

        self._check_options(options)
        seed = options.seed if options.seed is not None else secrets.randbelow(2**32)
        rng = np.random.default_rng(seed)
        torch_gen = torch.Generator(device="cpu").manual_seed(seed)

        # 1. inputs, before any model
        report("inputs", 0, 1)
        with timer.stage("inputs"):
            output = Path(options.output) if options.output else default_output(options, self.result_dir)
            if output.suffix.lower() != ".mp4":
                raise InputError(f"output must be an .mp4 file, got {output}")
            if on_exists is None:
                on_exists = "error" if options.output else "unique"
            ensure_folder(output.parent)  # a file in the way is reported now, not after the motion
            check_output_free(output, on_exists)
            picture = load_rgb(options.source)
            ref_path = Path(options.ref_video) if options.ref_video else None
            pose_path = Path(options.ref_pose_video) if options.ref_pose_video else None
            ref_totals = {path: _reference_frames(path) for path in (ref_path, pose_path) if path is not None}
            ref_total = sum(ref_totals.values())
            all_mode = ref_path is not None and options.ref_mode == "all"
            if options.driven_audio and not all_mode:
                features = prepare_audio(
                    options.driven_audio,
                    use_blink=options.use_blink,
                    rng=rng,
                    max_seconds=options.max_audio_seconds,
                )
            elif options.idle_seconds is not None and not all_mode:
                features = idle_audio_features(
                    options.idle_seconds,
                    use_blink=options.use_blink,
                    rng=rng,
                    max_seconds=options.max_audio_seconds,
                )
            else:
                features = None  # ref_mode 'all': motion and frame count from the reference video
        report("inputs", 1, 1)
        self.check_weights(options)
        check_cancel("before loading the models")

        # 2. models (kept for the next generation)
        report("models", 0, 1)
        with timer.stage("models"):
            landmarks = self._landmarks_fn(options.face_detector, options.face_index)
            recon = self._recon_net(options.size)
            motion_nets = self._motion_nets(options.size)
            renderer_nets = self._renderer_nets(options.size, options.preprocess)
            face_net = self._face_net() if options.enhancer == "gfpgan" else None
            official = self._official_parts() if self.enhancer_mode(options) == "official" else None
            upscaler = (
                self._background_upscaler(options.batch_size)
                if options.background_enhancer == "realesrgan"
                else None
            )
        report("models", 1, 1)
        check_cancel("after loading the models")

        # 3. source picture
        from .preprocess.extract import CACHE_SIZE, ExtractionCache, extract_source, extract_video

        report("preprocess", 0, 1)
        with timer.stage("preprocess"):
            source = extract_source(
                picture,
                options.preprocess,
                options.size,
                landmarks,
                recon,
                self.device,
                torch.float32,
                cache=self.models.get(("extractions",), lambda: ExtractionCache(CACHE_SIZE)),
            )
        report("preprocess", 1, 1)

        ref_coeffs = pose_ref_coeffs = None
        soundtrack: np.ndarray | None = None
        if ref_path is not None:
            from .video.probe import iter_frames

            check_cancel("before the reference video")
            # face_index picks a face of the source picture; a reference video's face is its largest
            ref_landmarks = self._landmarks_fn(options.face_detector, 0)
            with timer.stage("reference"):
                coeffs, done_before = [], 0
                for path, total in ref_totals.items():

                    def ref_progress(done: int, _total: int | None, before: int = done_before) -> None:
                        report("reference", before + done, ref_total)
                        check_cancel("while reading the reference video")

                    ref = extract_video(
                        iter_frames(path),
                        options.preprocess,
                        ref_landmarks,
                        recon,
                        self.device,
                        torch.float32,
                        progress=ref_progress,
                        total=total,
                    )
                    coeffs.append(ref.coeff_3dmm)
                    done_before += total
                ref_coeffs = coeffs[0]
                pose_ref_coeffs = coeffs[1] if len(coeffs) > 1 else None
            if all_mode:
                features, soundtrack = self._all_mode_audio(options, ref_path, ref_coeffs.shape[0])
        check_cancel("before the motion")

        # 4. motion coefficients
        from .motion import generate_coefficients

        assert features is not None
        report("motion", 0, 1)
        motion_total = [1]

        def motion_progress(done: int, total: int) -> None:
            motion_total[0] = total
            report("motion", done, total)
            if done < total:
                check_cancel("while generating the motion")

        with timer.stage("motion"):
            motion = generate_coefficients(
                motion_nets,
                features.indiv_mels,
                features.ratio,
                source.exp_pose,
                options.pose_style,
                generator=torch_gen,
                ref_coeffs=ref_coeffs,
                ref_mode=options.ref_mode if ref_coeffs is not None else None,
                pose_ref_coeffs=pose_ref_coeffs,
                progress=motion_progress,
            )
        report("motion", motion_total[0], motion_total[0])
        audio_track = soundtrack if soundtrack is not None else features.wav16k
        check_cancel("before rendering")

        # render plan (steps 5 and 6 run in write_video / iter_video_frames)
        from .render.animate import plan_from_options

        plan = plan_from_options(source.first_coeff, motion.mat_coeffs, options)
        return Prepared(
            options=options,
            seed=seed,
            output=output,
            picture=picture,
            source=source,
            motion=motion,
            plan=plan,
            audio=audio_track,
            renderer_nets=renderer_nets,
            timer=timer,
            report=report,
            stopped=stopped,
            face_net=face_net,
            upscaler=upscaler,
            official=official,
            on_exists=on_exists,
        )

    def iter_video_frames(self, prep: Prepared) -> Iterator[np.ndarray]:
        """Step 5: the video's frames in order, ``(n, H, W, 3)`` uint8 RGB chunks of up to ``batch_size``:
        rendered, face-enhanced (``enhancer='gfpgan'``), resized to the crop's aspect ratio (width = size)
        and, in full modes, pasted back; ``background_enhancer='realesrgan'`` doubles ``H`` and ``W``
        (module docstring). Checks ``cancel`` before every batch (raises CancelledError); reports
        ``render`` progress."""
        import cv2

        from .render.animate import Renderer, resize_to_crop_aspect, source_image_tensor

        options, timer = prep.options, prep.timer
        renderer = Renderer(prep.renderer_nets, self.device)
        image = source_image_tensor(prep.source.crop_picture, options.size)
        enhance = official_enhance = None
        if prep.official is not None:
            from .enhance_paste import OfficialFaceEnhancer

            official_enhance = OfficialFaceEnhancer(
                prep.face_net,
                prep.official[0],
                self.device,
                self._enhancer_dtype(),
                detector=prep.official[1],
                background=prep.upscaler,
                batch_size=options.batch_size,
                noise_seed=0,
            )
        elif prep.face_net is not None:
            from .enhance import FaceEnhancer

            enhance = FaceEnhancer(
                prep.face_net,
                self.device,
                self._enhancer_dtype(),
                batch_size=options.batch_size,
                noise_seed=0,
            )
        full = "full" in options.preprocess
        upscaler = prep.upscaler if official_enhance is None else None  # official: its background
        upscale_frames = upscaler if upscaler is not None and not full else None
        face_scale = 1  # full modes with the background enhancer: faces made and pasted at 2x
        if full and upscaler is not None:
            face_scale = upscaler.scale
            with timer.stage("background"):
                background = upscaler(prep.picture[None])[0]
            paste = self._paster(options, background, prep.source, scale=face_scale)
        else:
            paste = self._paster(options, prep.picture, prep.source)
        size_wh = prep.source.crop_info.size_wh
        width = options.size * face_scale

        def render_progress(done: int, total: int) -> None:
            prep.report("render", done, total)

        def finish(frame: np.ndarray) -> np.ndarray:
            resized = resize_to_crop_aspect(frame, size_wh, width)
            return resized if paste is None else paste(resized)

        def collect(futures: list[Future]) -> np.ndarray:
            """The finished chunk; the wait (what the main thread loses to resize+paste) is timed."""
            with timer.stage("resize+paste"):
                batch = np.stack([f.result() for f in futures])
            if upscale_frames is not None:
                with timer.stage("background"):
                    batch = upscale_frames(batch)
            if official_enhance is not None:
                with timer.stage("enhance"):
                    batch = official_enhance(batch)
            return batch

        # Frames are resized and pasted by a thread pool; chunks leave in order. With a GPU renderer the
        # pool works while the next chunks render (at most two frames per thread wait: memory stays flat);
        # with a CPU renderer each chunk is finished before the next is rendered, since pasting beside
        # torch's own threads slowed the whole run down (2-core CPU: 14.1 s instead of 12.1 s).
        max_waiting = 2 * self.post_threads if _post_overlaps_render(self.device) else 0
        waiting: deque[list[Future]] = deque()
        pool = ThreadPoolExecutor(max_workers=self.post_threads, thread_name_prefix="sadtalker-paste")
        try:
            prep.report("render", 0, prep.num_frames)
            chunks = renderer.iter_uint8(image, prep.plan, progress=render_progress, cancel=prep.stopped)
            while True:
                try:
                    with timer.stage("render"):
                        chunk = next(chunks)
                except StopIteration:
                    break
                except CancelledError:  # the frames made so far still reach the writer (keep_partial)
                    while waiting:
                        yield collect(waiting.popleft())
                    raise
                if enhance is not None:
                    with timer.stage("enhance"):
                        if face_scale != 1:
                            side = chunk.shape[1] * face_scale
                            chunk = np.stack(
                                [cv2.resize(f, (side, side), interpolation=cv2.INTER_LINEAR) for f in chunk]
                            )
                        chunk = enhance(np.ascontiguousarray(chunk))
                waiting.append([pool.submit(finish, frame) for frame in chunk])
                while sum(len(c) for c in waiting) > max_waiting:
                    yield collect(waiting.popleft())
            while waiting:
                yield collect(waiting.popleft())
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
        from .video.writer import VideoWriter, sidecar_path

        options, timer = prep.options, prep.timer
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
            "options": options.replace(seed=prep.seed, output=str(output)).to_dict(),
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

    # ------------------------------------------------------------------ helpers
    def _paster(
        self, options: GenerationOptions, picture: np.ndarray, source, scale: int = 1
    ) -> Callable[[np.ndarray], np.ndarray] | None:
        """Full modes: a function blending one aspect-resized RGB frame into the full picture; else None.

        ``scale > 1``: ``picture`` is the original upscaled ``scale`` times; the paste box (whole pixels
        of the original) is multiplied by ``scale`` exactly."""
        if "full" not in options.preprocess:
            return None
        from .preprocess.crop import CropInfo
        from .preprocess.paste import PasteBack

        info = source.crop_info
        if scale != 1:
            lx, ly, rx, ry = info.quad_box_int()
            info = CropInfo(
                info.size_wh,
                tuple(int(v) * scale for v in info.crop_box),
                (float(lx * scale), float(ly * scale), float(rx * scale), float(ry * scale)),
            )
        return PasteBack(picture, info, options.preprocess, options.size).paste_resized

    def _all_mode_audio(self, options: GenerationOptions, ref_path: Path, num_frames: int):
        """``ref_mode='all'``: motion comes from the reference video (T = its frame count); the soundtrack
        is the reference video's own audio (official behaviour), else the driven audio, else silence."""
        from .audio.decode import load_audio
        from .audio.features import AudioFeatures

        soundtrack = None
        with contextlib.suppress(InputError):
            soundtrack = load_audio(ref_path, max_seconds=options.max_audio_seconds)
        if soundtrack is None and options.driven_audio:
            soundtrack = load_audio(options.driven_audio, max_seconds=options.max_audio_seconds)
        if soundtrack is None:
            soundtrack = np.zeros(num_frames * SAMPLE_RATE // FPS, np.float32)
        dummy = AudioFeatures(
            num_frames=num_frames,
            indiv_mels=np.zeros((num_frames, 1, 80, 16), np.float32),
            ratio=np.zeros((num_frames, 1), np.float32),
            wav16k=np.zeros(num_frames * SAMPLE_RATE // FPS, np.float32),
        )
        return dummy, soundtrack


__all__ = ["CancelledError", "Result", "SadTalker", "SadTalkerError", "as_dtype", "cancel_checker"]
