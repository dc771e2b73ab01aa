"""Generation inside the WebUI: model session, host progress bar, interrupt, frame hook, infotext.

No gradio import here: the tab (``ui.py``) and the API (``api.py``) call these functions, and tests call
them with a stand-in host and a fake pipeline.
"""

from __future__ import annotations

import html
import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .. import __version__, form
from ..errors import CancelledError, CheckpointError, InputError, SadTalkerError
from ..form import file_value, options_from_values
from ..live_streams import LiveStream, LiveStreams
from ..options import GenerationOptions
from ..paths import ModelDirs, resolve_model_dirs
from .host import Host, RestoreFn
from .settings import NO_RESTORER, WebUISettings, result_root

if TYPE_CHECKING:
    from ..pipeline import Result

log = logging.getLogger(__name__)

STAGES = ("inputs", "models", "preprocess", "reference", "motion", "render", "encode")
"""The stages ``SadTalker.generate`` reports, in run order (``reference`` only with a reference video);
each is one host "job" of the progress bar."""
STAGE_LABELS = {
    "inputs": "reading inputs", "models": "loading models", "preprocess": "finding the face",
    "reference": "reading the reference video", "motion": "generating motion",
    "render": "rendering frames", "encode": "writing the video",
}  # fmt: skip
PREVIEW_INTERVAL_S = 0.5

FORM_FIELDS = (*form.FORM_FIELDS, "restorer")
"""Order of the tab's option components as passed to the handlers (after the task id)."""


# ----------------------------------------------------------------------------------------------- form


def options_from_form(
    values: Mapping[str, Any], *, front_end: str = "webui"
) -> tuple[GenerationOptions, str]:
    """Tab values (keys of :data:`FORM_FIELDS`) -> (validated options, host face restorer name or "None").

    Seed empty or < 0: random. Idle mode ignores the recording. Without a reference video its mode is moot.
    """
    v = dict(values)
    restorer = str(v.pop("restorer", None) or NO_RESTORER)
    options = options_from_values(v, {"front_end": front_end, "face_restoration": restorer})
    return options, restorer


# ----------------------------------------------------------------------------------------------- progress


class HostProgress:
    """Pipeline ``progress(stage, done, total)`` -> ``shared.state`` (job_no/job_count per stage,
    sampling_step/sampling_steps within it, textinfo), for ``item`` of ``count`` videos."""

    def __init__(self, state: Any, item: int = 0, count: int = 1, label: str = "") -> None:
        self.state = state
        self.item = item
        self.count = max(1, count)
        self.label = label
        self.stage = STAGES[0]

    @staticmethod
    def start(state: Any, count: int) -> None:
        """Size the progress bar for ``count`` videos (after the wrapper's ``state.begin``)."""
        state.job_count = max(1, count) * len(STAGES)
        state.job_no = 0
        state.sampling_step = 0
        state.sampling_steps = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage in STAGES:
            self.stage = stage
        state = self.state
        state.job_no = self.item * len(STAGES) + STAGES.index(self.stage)
        total = max(int(total), 1)
        state.sampling_steps = total
        state.sampling_step = max(0, min(int(done), total))
        head = ["SadTalker"]
        if self.count > 1:
            head.append(f"[{self.item + 1}/{self.count}]")
        if self.label:
            head.append(self.label)
        what = STAGE_LABELS.get(stage, stage) + (f" {done}/{total}" if total > 1 else "")
        state.textinfo = f"{' '.join(head)}: {what}"


def cancel_requested(state: Any) -> Callable[[], bool]:
    """The pipeline's ``cancel`` callable: Interrupt, Skip (and 1.8+'s stop-generating) end the video."""

    def stopped() -> bool:
        return bool(
            getattr(state, "interrupted", False)
            or getattr(state, "skipped", False)
            or getattr(state, "stopping_generation", False)
        )

    return stopped


class FrameHook:
    """Final frames ``(N, H, W, 3) uint8 RGB`` -> restored frames; the newest one becomes the live preview."""

    def __init__(
        self,
        restore: RestoreFn | None,
        preview: Callable[[np.ndarray], None] | None,
        cancel: Callable[[], bool] | None = None,
        interval: float = PREVIEW_INTERVAL_S,
    ) -> None:
        self.restore = restore
        self.preview = preview
        self.cancel = cancel
        self.interval = interval
        self._last = -1e9
        self.frames_seen = 0

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        if self.restore is not None:
            out = []
            for frame in frames:
                if self.cancel is not None and self.cancel():
                    raise CancelledError("cancelled during face restoration")
                restored = self.restore(frame)
                if restored.shape != frame.shape:  # a restorer may return another size: keep the video's
                    restored = _resize(restored, frame.shape[1], frame.shape[0])
                out.append(restored)
            frames = np.stack(out).astype(np.uint8, copy=False)
        self.frames_seen += len(frames)
        now = time.monotonic()
        if self.preview is not None and len(frames) and now - self._last >= self.interval:
            self._last = now
            self.preview(frames[-1])
        return frames


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.asarray(rgb, np.uint8)).resize((width, height), Image.LANCZOS))


# ----------------------------------------------------------------------------------------------- session


class Pipeline(Protocol):
    """The surface of :class:`..pipeline.SadTalker` the session uses (tests pass stand-ins)."""

    @property
    def loaded(self) -> list[str]:
        """Names of the models held."""
        ...

    def generate(
        self,
        options: GenerationOptions,
        progress: Callable[[str, int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        frame_hook: Callable[[np.ndarray], np.ndarray] | None = None,
        on_exists: str | None = None,
        *,
        fragmented: bool = False,
        stream: Callable[[bytes], None] | None = None,
        on_output: Callable[[Path], None] | None = None,
    ) -> Result:
        """One video: ``progress(stage, done, total)`` with a stage of :data:`STAGES`; ``frame_hook`` maps
        each chunk of final frames ``(n, H, W, 3)`` uint8 RGB before encoding; ``on_exists`` as the CLI's.
        ``fragmented`` / ``stream`` / ``on_output``: streaming (only passed when streaming; see
        ``SadTalker.generate``)."""
        ...

    def unload(self) -> None:
        """Drop the models held (the next generation loads again)."""
        ...


TalkerFactory = Callable[[ModelDirs, Any, str, bool], Pipeline]
"""``(model_dirs, device, dtype, winograd) -> pipeline``."""


def default_talker_factory(dirs: ModelDirs, device: Any, dtype: str, winograd: bool) -> Pipeline:
    from ..pipeline import SadTalker

    return SadTalker(model_dirs=dirs, device=device, dtype=dtype, winograd=winograd)


@dataclass(frozen=True)
class RunOutcome:
    """One finished video for the UI / API."""

    video_path: Path
    infotext: str
    result: Result


class Session:
    """What the extension keeps between generations: one pipeline object (models stay loaded in it)."""

    def __init__(self, host: Host, talker_factory: TalkerFactory | None = None) -> None:
        self.host = host
        self.factory = talker_factory or default_talker_factory
        self._talker: Pipeline | None = None
        self._key: tuple | None = None
        self._lock = threading.RLock()
        self.live = LiveStreams()
        """Streams of the tab's "Play while generating" jobs (``GET /sadtalker/v1/stream/{token}``)."""

    # -- models
    def model_dirs(self) -> ModelDirs:
        """Weight folders: ``--sadtalker-checkpoint-dir`` / ``--sadtalker-gfpgan-dir``, env, ``models/SadTalker``,
        the extension's own folders (sadtalker_ext.paths order)."""
        try:
            models = self.host.models_path()
        except Exception:
            models = None
        return resolve_model_dirs(
            flag_checkpoint_dir=self.host.cmd_opt("sadtalker_checkpoint_dir", None),
            flag_gfpgan_dir=self.host.cmd_opt("sadtalker_gfpgan_dir", None),
            webui_models_dir=models,
        )

    def talker(self, settings: WebUISettings) -> Pipeline:
        """The pipeline for the current folders, device, precision and CPU convolution choice (rebuilt when
        one of them changed)."""
        dirs = self.model_dirs()
        device = self.host.device()
        gpu = str(device).startswith(("cuda", "xpu", "mps"))
        dtype = settings.dtype if gpu or settings.dtype != "float16" else "float32"  # float16 needs a GPU
        key = (dirs.checkpoints, dirs.gfpgan, str(device), dtype, settings.cpu_winograd)
        with self._lock:
            if self._talker is None or self._key != key:
                self.unload()
                self._talker = self.factory(dirs, device, dtype, settings.cpu_winograd)
                self._key = key
                if self._talker.precision_advice:
                    log.info("SadTalker: %s", self._talker.precision_advice)
            return self._talker

    def unload(self) -> None:
        """Drop the pipeline's models (next generation loads again) and free accelerator memory."""
        with self._lock:
            talker, self._talker, self._key = self._talker, None, None
        if talker is not None:
            talker.unload()
        self.host.torch_gc()

    def loaded(self) -> list[str]:
        talker = self._talker
        return list(talker.loaded) if talker is not None else []

    def finish(self, settings: WebUISettings) -> None:
        """After a run: unload unless the setting keeps models, and free VRAM either way."""
        if not settings.keep_models_loaded:
            self.unload()
        else:
            self.host.torch_gc()

    # -- output
    def output_folder(self, settings: WebUISettings, when: datetime | None = None) -> Path:
        """``<result dir>/<YYYY-MM-DD>/`` (no date part when the setting is off)."""
        root = result_root(self.host, settings)
        if settings.date_subfolder:
            root = root / (when or datetime.now()).strftime("%Y-%m-%d")
        return root

    # -- one video
    def run(
        self,
        options: GenerationOptions,
        *,
        restorer: str = NO_RESTORER,
        progress: Callable[[str, int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        preview: bool = True,
        settings: WebUISettings | None = None,
        stream: Callable[[bytes], None] | None = None,
        on_output: Callable[[Path], None] | None = None,
    ) -> RunOutcome:
        """Generate one video into the output folder. Raises SadTalkerError subclasses for the user.

        ``stream``: the video is written as a fragmented MP4 and ``stream(data)`` gets its init segment and
        each fragment as soon as it is written (``SadTalker.generate``); ``on_output(path)`` gets the claimed
        output path before rendering (only passed to the pipeline when ``stream`` is given)."""
        from ..pipeline import default_output
        from ..video.writer import check_folder

        settings = settings or WebUISettings.read(self.host)
        restore = None
        if restorer and restorer != NO_RESTORER:
            restore = self.host.face_restorer(restorer)
            if restore is None:
                names = ", ".join(self.host.face_restorer_names()) or "none"
                raise InputError(
                    f"face restoration {restorer!r} is not available in this WebUI (available: {names})"
                )
        talker = self.talker(settings)
        show = self._preview_fn() if preview and settings.live_preview else None
        hook = FrameHook(restore, show, cancel) if restore is not None or show is not None else None
        on_exists = None
        if not options.output:  # a first guess: the pipeline's writer claims the name really free
            folder = check_folder(self.output_folder(settings))
            options = options.replace(output=str(default_output(options, folder)))
            on_exists = "unique"
        else:
            check_folder(Path(options.output).parent)
        t0 = time.perf_counter()
        streaming = (
            {"fragmented": True, "stream": stream, "on_output": on_output} if stream is not None else {}
        )
        result = talker.generate(
            options, progress=progress, cancel=cancel, frame_hook=hook, on_exists=on_exists, **streaming
        )
        elapsed = time.perf_counter() - t0
        return RunOutcome(Path(result.video_path), infotext(options, result, restorer, elapsed), result)

    def _preview_fn(self) -> Callable[[np.ndarray], None] | None:
        state = self.host.state
        if not hasattr(state, "assign_current_image"):
            return None

        def show(frame: np.ndarray) -> None:
            from PIL import Image

            state.assign_current_image(Image.fromarray(np.asarray(frame, np.uint8)))

        return show


def infotext(
    options: GenerationOptions, result: Any, restorer: str = NO_RESTORER, seconds: float | None = None
) -> str:
    """One line of ``Key: value`` pairs describing a video (like the WebUI's generation parameters)."""
    parts: list[tuple[str, Any]] = [("Picture", Path(options.source).name)]
    if options.driven_audio:
        parts.append(("Audio", Path(options.driven_audio).name))
    elif options.idle_seconds is not None:
        parts.append(("Idle", f"{options.idle_seconds:g} s"))
    if options.ref_video:
        parts += [("Reference", Path(options.ref_video).name), ("Reference mode", options.ref_mode)]
    if options.ref_pose_video:
        parts.append(("Pose reference", Path(options.ref_pose_video).name))
    parts += [
        ("Size", options.size), ("Preprocess", options.preprocess), ("Still", options.still),
        ("Pose style", options.pose_style), ("Expression scale", f"{options.expression_scale:g}"),
        ("Blink", options.use_blink), ("Seed", getattr(result, "seed", options.seed)),
        ("Batch size", options.batch_size), ("Face detector", options.face_detector),
    ]  # fmt: skip
    if options.face_index:
        parts.append(("Face index", options.face_index))
    for name, angles in (
        ("Yaw", options.input_yaw),
        ("Pitch", options.input_pitch),
        ("Roll", options.input_roll),
    ):
        if angles:
            parts.append((name, " ".join(f"{a:g}" for a in angles)))
    if restorer and restorer != NO_RESTORER:
        parts.append(("Face restoration", restorer))
    frames = getattr(result, "num_frames", 0)
    if frames:
        parts.append(("Frames", frames))
    width, height = getattr(result, "width", 0), getattr(result, "height", 0)
    if width and height:
        parts.append(("Video size", f"{width}x{height}"))
    if seconds is not None:
        parts.append(("Time taken", f"{seconds:.1f} s"))
    parts.append(("Version", f"sadtalker_ext {__version__}"))
    return "SadTalker, " + ", ".join(f"{k}: {v}" for k, v in parts)


# ----------------------------------------------------------------------------------------------- handlers


def message_html(text: str, css: str = "") -> str:
    cls = f" class='{css}'" if css else ""
    return f"<div{cls}><p>{html.escape(text).replace(chr(10), '<br>')}</p></div>"


def _saved_html(paths: Sequence[Path], extra: str = "") -> str:
    if not paths:
        return message_html(extra or "No video was made.")
    folders = sorted({str(Path(p).parent) for p in paths})
    items = "".join(f"<li><code>{html.escape(str(p))}</code></li>" for p in paths)
    where = ", ".join(f"<code>{html.escape(f)}</code>" for f in folders)
    note = f"<p>{html.escape(extra)}</p>" if extra else ""
    return f"<div class='sadtalker-saved'><p>Saved to {where}</p><ul>{items}</ul>{note}</div>"


def picture_file(value: Any, folder: Path) -> Any:
    """The tab's picture value as something :func:`file_value` takes: paths and file values pass through; an
    image (PIL or array: the tab's ``type="pil"`` picture on gradio 4) is written to ``folder/picture.png``."""
    if value is None or isinstance(value, str | Path | Mapping):
        return value
    from PIL import Image

    if isinstance(value, np.ndarray):
        value = Image.fromarray(value)
    if not isinstance(value, Image.Image):
        return value
    path = folder / "picture.png"
    value.save(path)
    return str(path)


UPLOAD_NAME_FIELDS = {
    "sadtalker_picture": "source",
    "sadtalker_audio": "driven_audio",
    "sadtalker_ref_video": "ref_video",
}
"""elem_id of a tab input -> its form field, for the upload names ``javascript/sadtalker.js`` sends."""
UPLOAD_NAMES_SLOT = "sadtalker:upload-names"
"""Value of the tab's hidden upload-names textbox in the page; the script puts the names in its place (what
arrives unchanged means no names: a host that did not load the script)."""
_SAME_KIND = ({".jpg", ".jpeg"}, {".tif", ".tiff"})


def upload_names(value: Any) -> dict[str, str]:
    """The tab's hidden upload-names value (JSON ``{elem_id: file name}`` that ``javascript/sadtalker.js``
    records when the user picks or drops a file) -> ``{form field: file name}``; anything malformed is ignored.

    gradio hands uploads to Python under temporary names (3.41: ``tmpcan1rlob.png`` for the picture,
    ``speech-0-100.wav`` for the recording; gradio 4: the tab's PIL picture has no name at all), so the name
    the user knows only exists in the browser.
    """
    try:
        raw = json.loads(value) if isinstance(value, str) and value.strip() else {}
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    names: dict[str, str] = {}
    for elem_id, field in UPLOAD_NAME_FIELDS.items():
        name = _safe_file_name(raw.get(elem_id))
        if name:
            names[field] = name
    return names


def _safe_file_name(name: Any) -> str | None:
    """A plain file name (no folders, no control characters, at most 120 characters) or None."""
    if not isinstance(name, str):
        return None
    name = "".join(ch for ch in name.replace("\\", "/").rsplit("/", 1)[-1] if ch.isprintable()).strip()
    name = name.lstrip(".")
    if not name:
        return None
    stem, suffix = Path(name).stem, Path(name).suffix
    if len(suffix) > 10:
        stem, suffix = name, ""
    return stem[: 120 - len(suffix)] + suffix


def with_user_names(form: dict[str, Any], names: Mapping[str, str], folder: Path) -> dict[str, Any]:
    """Give each uploaded file the user's name: a link (or copy) ``folder/<field>/<name>`` replaces the temp
    path, so progress text, infotext and the output name show ``face.png``, not gradio's temp name. The suffix
    stays the file's own where the content differs in kind (gradio 3 re-encodes the recording as wav)."""
    form = dict(form)
    for field, name in names.items():
        path = file_value(form.get(field))
        if not path or not Path(path).is_file():
            continue
        actual = Path(path).suffix.lower()
        wanted = Path(name).suffix.lower()
        same_kind = wanted == actual or any({wanted, actual} <= kind for kind in _SAME_KIND)
        target = name if same_kind or not actual else Path(name).stem + Path(path).suffix
        if target == Path(path).name:
            continue
        dest = folder / field / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, dest)
        except OSError:  # another file system, or links not allowed: copy
            shutil.copyfile(path, dest)
        form[field] = str(dest)
    return form


def generate_single(session: Session, id_task: str, *values: Any) -> list[Any]:
    """The Generate button (wrapped by ``wrap_gradio_gpu_call``): ``[video, infotext, html]``.

    ``values``: the :data:`FORM_FIELDS` values, then (from the tab) the upload names (:func:`upload_names`),
    the "Play while generating" box and the job's :class:`LiveStream` (opened by :func:`streaming_generate`;
    anything else there, e.g. a token, means no streaming).
    """
    count = len(FORM_FIELDS)
    if len(values) not in (count, count + 1, count + 3):
        raise TypeError(
            f"generate_single: expected {count} form values (+ upload names, + play box and stream), "
            f"got {len(values)}"
        )
    form = dict(zip(FORM_FIELDS, values[:count], strict=True))
    names = upload_names(values[count]) if len(values) > count else {}
    stream = values[count + 2] if len(values) == count + 3 else None
    with tempfile.TemporaryDirectory(prefix="sadtalker_picture_") as tmp:
        form["source"] = picture_file(form.get("source"), Path(tmp))
        form = with_user_names(form, names, Path(tmp))
        return _generate_single(session, form, stream if isinstance(stream, LiveStream) else None)


def streaming_generate(session: Session, handler: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    """The tab's Generate around ``handler`` (the host-wrapped :func:`generate_single`): with the play box
    ticked and a well-formed token from the page, the job's stream is registered under that token BEFORE
    ``handler`` waits for the GPU queue (so the page can attach while the job waits), handed to it in the
    token's place, and closed when the handler returns, whatever happened. A token that is malformed or
    already taken: the job runs without streaming."""
    count = len(FORM_FIELDS)

    def generate(id_task: str, *values: Any) -> list[Any]:
        stream = None
        if len(values) == count + 3:
            play, token = values[count + 1], values[count + 2]
            stream = session.live.open(token) if play is True else None
            values = (*values[: count + 2], stream)
        try:
            return handler(id_task, *values)
        finally:
            if stream is not None:
                stream.close()

    return generate


def tab_error_text(session: Session, options: GenerationOptions, exc: SadTalkerError) -> str:
    """The message the tab shows for ``exc``: missing weight files point at the tab's own Download button
    (the pipeline's message names the command line, right for the CLI); anything else unchanged."""
    if not isinstance(exc, CheckpointError):
        return str(exc)
    from ..weights import MISSING, missing_files, required_files

    try:
        selection = required_files(
            options.size,
            options.preprocess,
            enhancer=options.enhancer == "gfpgan",
            detector=options.face_detector == "retinaface",
            background=options.background_enhancer == "realesrgan",
        )
        rows = [r for r in missing_files(selection, session.model_dirs()) if r.state == MISSING]
    except SadTalkerError:
        return str(exc)
    if not rows:  # not a missing file (a damaged or refused one): the loader's own words
        return str(exc)
    ticks = [f"size {', '.join(str(s) for s in selection.sizes)}"]
    ticks += [f"'{label}'" for flag, label in DOWNLOAD_BOXES.items() if getattr(selection, flag)]
    lines = [f"Missing weight file{'s' if len(rows) > 1 else ''}:"]
    lines += [f"  {r.name} -> {r.path.parent}" for r in rows]
    lines.append(
        "Fetch them in this tab: open Models (below), tick " + ", ".join(ticks)
        + ", and press 'Download missing weights'."
    )  # fmt: skip
    return "\n".join(lines)


DOWNLOAD_BOXES = {
    "full": "Full-picture modes (full / extfull)",
    "detector": "RetinaFace + FAN face detector",
    "enhancer": "GFPGAN face enhancer",
    "background": "Real-ESRGAN background enhancer",
}
"""``weights.Selection`` flag -> label of its checkbox in the Models section (the tab's download row)."""


def _generate_single(session: Session, form: dict[str, Any], stream: LiveStream | None = None) -> list[Any]:
    host = session.host
    state = host.state
    settings = WebUISettings.read(host)
    try:
        options, restorer = options_from_form({**form, "max_audio_seconds": settings.max_audio_seconds})
    except SadTalkerError as exc:
        if stream is not None:
            stream.close(error=str(exc))
        return [None, "", message_html(str(exc), "error")]
    HostProgress.start(state, 1)
    progress = HostProgress(state, 0, 1, Path(options.source).name)
    try:
        outcome = session.run(
            options,
            restorer=restorer,
            progress=progress,
            cancel=cancel_requested(state),
            settings=settings,
            stream=stream.append if stream is not None else None,
        )
    except CancelledError:
        if stream is not None:
            stream.close(error="interrupted")
        return [None, "", message_html("Interrupted: no video was written.")]
    except SadTalkerError as exc:
        if stream is not None:
            stream.close(error=str(exc))
        return [None, "", message_html(tab_error_text(session, options, exc), "error")]
    finally:
        session.finish(settings)
    return [str(outcome.video_path), outcome.infotext, _saved_html([outcome.video_path])]


def generate_batch(session: Session, id_task: str, pictures: Any, recordings: Any, *values: Any) -> list[Any]:
    """The batch button: every picture x every recording (or idle length) -> ``[files, infotexts, html]``.

    Skip ends the current video and goes on; Interrupt stops the batch. A failing pair is reported and
    the rest still run.
    """
    host = session.host
    state = host.state
    settings = WebUISettings.read(host)
    form = dict(zip(FORM_FIELDS, values, strict=True))
    pics = [p for p in (file_value(x) for x in (pictures or [])) if p]
    auds = [a for a in (file_value(x) for x in (recordings or [])) if a]
    if not pics:
        return [None, "", message_html("Batch: add at least one picture.", "error")]
    if not auds and not form.get("idle_mode"):
        return [None, "", message_html("Batch: add recordings, or tick idle mode.", "error")]
    pairs = list(itertools.product(pics, auds or [None]))
    HostProgress.start(state, len(pairs))
    made: list[Path] = []
    infos: list[str] = []
    problems: list[str] = []
    try:
        for index, (pic, aud) in enumerate(pairs):
            if getattr(state, "interrupted", False):
                problems.append(f"interrupted before {len(pairs) - index} of {len(pairs)} videos")
                break
            label = Path(pic).name + (f" + {Path(aud).name}" if aud else "")
            try:
                options, restorer = options_from_form(
                    {
                        **form,
                        "source": pic,
                        "driven_audio": aud,
                        "max_audio_seconds": settings.max_audio_seconds,
                    },
                    front_end="webui-batch",
                )
                outcome = session.run(
                    options,
                    restorer=restorer,
                    progress=HostProgress(state, index, len(pairs), label),
                    cancel=cancel_requested(state),
                    settings=settings,
                )
            except CancelledError:
                if getattr(state, "interrupted", False):
                    problems.append(f"{label}: interrupted")
                    break
                state.skipped = False
                problems.append(f"{label}: skipped")
                continue
            except CheckpointError as exc:  # the same files for every pair: say it once, stop
                problems.append(tab_error_text(session, options, exc))
                break
            except SadTalkerError as exc:
                problems.append(f"{label}: {exc}")
                continue
            made.append(outcome.video_path)
            infos.append(outcome.infotext)
    finally:
        session.finish(settings)
    summary = f"{len(made)} of {len(pairs)} videos made."
    if problems:
        summary += "\n" + "\n".join(problems)
    return [[str(p) for p in made] or None, "\n".join(infos), _saved_html(made, summary)]
