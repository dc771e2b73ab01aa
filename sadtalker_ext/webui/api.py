"""HTTP API of the extension (registered by ``on_app_started``): ``/sadtalker/v1/...``.

- ``POST /sadtalker/v1/generate``: JSON body. Inputs ``source`` / ``driven_audio`` / ``ref_video`` /
  ``ref_pose_video`` as paths inside the allowed folders (the WebUI outputs folder, the SadTalker output
  folder and the folders of the setting ``sadtalker_api_allowed_dirs``), or the same names with ``_base64``
  (plain base64 or a ``data:`` URL). Every other :class:`GenerationOptions` field by name (``output`` is
  not accepted: videos go to the SadTalker output folder; ``max_audio_seconds`` defaults to the setting
  ``sadtalker_max_audio_seconds``), plus ``face_restoration`` (a WebUI restorer
  name) and ``return`` (``"path"``, ``"base64"`` or ``"both"``; default ``"path"``).
  Answer: ``video_path``, ``video_base64`` (or null), ``infotext``, ``seed``, ``frames``, ``width``, ``height``.
- ``GET /sadtalker/v1/models``: weight folders and the state of every file.
- ``GET /sadtalker/v1/version``: versions and what the host offers.
- ``GET /sadtalker/v1/stream/{token}``: the fragmented MP4 of the tab's "Play while generating" job that the
  page started under ``token`` (:mod:`..live_streams`); 404 for any other token.

Errors: 400 bad JSON / base64, 422 a ``source_base64`` that is neither a picture nor a video, 403 a path outside the allowed folders, 404 a missing input file, 409 missing
weights or an interrupted run, 422 an invalid option; the body is ``{"detail": "<message>"}``.
The body is read as a plain dict (no pydantic model) so pydantic 1 (A1111) and 2 (Forge) both work.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CancelledError, CheckpointError, InputError, SadTalkerError
from ..live_streams import attach_route
from ..options import GenerationOptions
from . import jobs, models_panel
from .settings import NO_RESTORER, WebUISettings, result_root

log = logging.getLogger(__name__)

API_VERSION = 1
FILE_FIELDS = ("source", "driven_audio", "ref_video", "ref_pose_video")
RETURN_MODES = ("path", "base64", "both")
MAX_BASE64_BYTES = 200 << 20


class ApiError(Exception):
    """An error answered with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def allowed_roots(session: jobs.Session, settings: WebUISettings) -> list[Path]:
    """Folders API paths may point into (resolved, symlinks followed)."""
    host = session.host
    roots = [host.outputs_root(), result_root(host, settings)]
    roots += [host.absolute(d) for d in settings.api_allowed_dirs]
    out: list[Path] = []
    for r in roots:
        with contextlib.suppress(OSError, RuntimeError):
            resolved = Path(r).resolve()
            if resolved not in out:
                out.append(resolved)
    return out


def check_allowed(value: str, roots: Iterable[Path], field: str) -> str:
    """The resolved path of ``value`` when it is an existing file inside one of ``roots``; else ApiError.

    Symlinks are resolved first, so neither ``..`` nor a link can lead outside.
    """
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, f"{field}: expected a file path string")
    if "\x00" in value:
        raise ApiError(400, f"{field}: invalid path")
    try:
        resolved = Path(value).expanduser().resolve()
    except (OSError, RuntimeError) as exc:
        raise ApiError(400, f"{field}: invalid path ({exc})") from exc
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise ApiError(
            403,
            f"{field}: {value} is outside the folders the SadTalker API may read (setting 'sadtalker_api_allowed_dirs')",
        )
    if not resolved.is_file():
        raise ApiError(404, f"{field}: file not found: {value}")
    return str(resolved)


def _sniff_suffix(data: bytes, field: str) -> str:
    signatures = (
        (b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
        (b"ID3", ".mp3"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"\x1aE\xdf\xa3", ".webm"),
    )  # fmt: skip
    for magic, suffix in signatures:
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return ".wav"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return ".avi"
    if data[4:8] == b"ftyp":
        return ".mp4"
    return {"source": ".png", "driven_audio": ".wav"}.get(field, ".mp4")


def decode_base64(text: Any, field: str) -> bytes:
    """Plain base64 or a ``data:<mime>;base64,`` URL -> bytes (ApiError 400 when it is not base64)."""
    if not isinstance(text, str) or not text:
        raise ApiError(422, f"{field}_base64: expected a base64 string")
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            raise ApiError(400, f"{field}_base64: only base64 data URLs are accepted")
    text = "".join(text.split())  # line-wrapped output of `base64` is fine
    if len(text) * 3 // 4 > MAX_BASE64_BYTES:
        raise ApiError(413, f"{field}_base64: larger than {MAX_BASE64_BYTES >> 20} MB")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"{field}_base64: not valid base64 ({exc})") from exc
    if not data:
        raise ApiError(400, f"{field}_base64: empty")
    return data


VIDEO_SUFFIXES = (".mp4", ".webm", ".avi")


def check_picture(path: Path, field: str) -> None:
    """ApiError 422 unless the decoded ``source`` is a picture Pillow recognises or a video container.

    Only the header is read (the pipeline checks the size and decodes it later); this answers a garbage
    upload at once, before the request waits for the GPU queue.
    """
    if path.suffix in VIDEO_SUFFIXES:
        return
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path):
                pass
    except Image.DecompressionBombError:
        return  # a real picture, too large: the pipeline's message says the size and the limit
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        size = path.stat().st_size
        raise ApiError(
            422,
            f"{field}_base64: the decoded data ({size} bytes) is not a picture (png, jpg, webp, bmp, gif, ...) "
            "or a video; send the picture file's bytes base64-encoded",
        ) from exc


def parse_request(body: Any, roots: list[Path], tmp: Path) -> tuple[GenerationOptions, str, str]:
    """Request JSON -> (validated options, face restorer name, return mode). Base64 inputs are written into ``tmp``."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "the request body must be a JSON object")
    values = dict(body)
    restorer = str(values.pop("face_restoration", None) or NO_RESTORER)
    mode = values.pop("return", "path")
    if mode not in RETURN_MODES:
        raise ApiError(422, f"return must be one of {', '.join(RETURN_MODES)}; got {mode!r}")
    if "output" in values:
        raise ApiError(
            422, "output: not accepted by the API; videos are saved in the SadTalker output folder"
        )
    if "extra" in values:
        raise ApiError(422, "extra: not accepted by the API")
    for field in FILE_FIELDS:
        encoded = values.pop(f"{field}_base64", None)
        given = values.get(field)
        if encoded is not None and given not in (None, ""):
            raise ApiError(422, f"give either {field} or {field}_base64, not both")
        if encoded is not None:
            data = decode_base64(encoded, field)
            path = tmp / f"api_{field}{_sniff_suffix(data, field)}"
            path.write_bytes(data)
            values[field] = str(path)
        elif given not in (None, ""):
            values[field] = check_allowed(given, roots, field)
    if not values.get("source"):
        raise ApiError(422, "source: give a picture as source (a path) or source_base64")
    values["extra"] = {"front_end": "api", "face_restoration": restorer}
    try:
        options = GenerationOptions.from_mapping(values)
    except InputError as exc:
        raise ApiError(422, str(exc)) from exc
    if "source_base64" in body:  # after the options: their messages come first
        check_picture(Path(options.source), "source")
    return options, restorer, mode


def generate(session: jobs.Session, body: Any) -> dict[str, Any]:
    """Run one generation for the API under the host's queue lock, with the host progress state."""
    host = session.host
    settings = WebUISettings.read(host)
    roots = allowed_roots(session, settings)
    if isinstance(body, Mapping):  # the setting is the default of the request field
        body = {"max_audio_seconds": settings.max_audio_seconds, **body}
    with tempfile.TemporaryDirectory(prefix="sadtalker_api_") as tmp:
        options, restorer, mode = parse_request(body, roots, Path(tmp))
        with host.queue_lock(), host.job("sadtalker_api") as state:
            jobs.HostProgress.start(state, 1)
            try:
                outcome = session.run(
                    options,
                    restorer=restorer,
                    progress=jobs.HostProgress(state, 0, 1, Path(options.source).name),
                    cancel=jobs.cancel_requested(state),
                    preview=False,
                    settings=settings,
                )
            except CancelledError as exc:
                raise ApiError(409, f"interrupted: {exc}") from exc
            except CheckpointError as exc:
                raise ApiError(409, str(exc)) from exc
            except InputError as exc:
                raise ApiError(422, str(exc)) from exc
            except SadTalkerError as exc:
                raise ApiError(500, str(exc)) from exc
            finally:
                session.finish(settings)
    result = outcome.result
    answer: dict[str, Any] = {
        "video_path": str(outcome.video_path) if mode in ("path", "both") else None,
        "video_base64": None,
        "infotext": outcome.infotext,
        "seed": getattr(result, "seed", None),
        "frames": getattr(result, "num_frames", None),
        "width": getattr(result, "width", None),
        "height": getattr(result, "height", None),
    }
    if mode in ("base64", "both"):
        answer["video_base64"] = base64.b64encode(Path(outcome.video_path).read_bytes()).decode("ascii")
    return answer


def models(session: jobs.Session) -> dict[str, Any]:
    dirs = session.model_dirs()
    return {
        "checkpoints": str(dirs.checkpoints),
        "checkpoints_source": dirs.checkpoints_source,
        "gfpgan": str(dirs.gfpgan),
        "gfpgan_source": dirs.gfpgan_source,
        "files": models_panel.status_rows(session),
        "loaded": session.loaded(),
    }


def version(session: jobs.Session) -> dict[str, Any]:
    import gradio as gr

    return {
        "version": __version__,
        "api": API_VERSION,
        "gradio": str(getattr(gr, "__version__", "")),
        "face_restorers": session.host.face_restorer_names(),
    }


def register_routes(app: Any, session: jobs.Session) -> None:
    """Add the routes to the host's FastAPI ``app`` (sync handlers: FastAPI runs them in its thread pool)."""
    from fastapi import Body, HTTPException

    def guarded(func: Any, *args: Any) -> dict[str, Any]:
        try:
            return func(*args)
        except ApiError as exc:
            raise HTTPException(status_code=exc.status, detail=exc.message) from exc
        except SadTalkerError as exc:
            raise HTTPException(status_code=500, detail=str(exc)) from exc
        except Exception as exc:
            # an answer with a message instead of a bare "Internal Server Error"; the traceback goes to the log
            log.exception("SadTalker API: unexpected error")
            raise HTTPException(
                status_code=500,
                detail=f"internal error in the SadTalker extension ({type(exc).__name__}); "
                "the traceback is in the WebUI console",
            ) from exc

    @app.post("/sadtalker/v1/generate")
    def sadtalker_generate(body: Any = Body(...)):  # noqa: B008 - FastAPI's idiom; no return annotation (it would become a response model)
        return guarded(generate, session, body)

    @app.get("/sadtalker/v1/models")
    def sadtalker_models():
        return guarded(models, session)

    @app.get("/sadtalker/v1/version")
    def sadtalker_version():
        return guarded(version, session)

    app.router.routes.append(attach_route(session.live))  # GET /sadtalker/v1/stream/{token}: the live player
