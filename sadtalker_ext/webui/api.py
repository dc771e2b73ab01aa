"""HTTP API of the extension (registered by ``on_app_started``): ``/sadtalker/v1/...``.

- ``POST /sadtalker/v1/generate``: JSON body. Inputs ``source`` / ``driven_audio`` / ``ref_video`` /
  ``ref_pose_video`` as paths inside the allowed folders (the WebUI outputs folder, the SadTalker output
  folder and the folders of the setting ``sadtalker_api_allowed_dirs``), or the same names with ``_base64``
  (plain base64 or a ``data:`` URL). Every other :class:`GenerationOptions` field by name (``output`` is
  not accepted: videos go to the SadTalker output folder; ``max_audio_seconds`` defaults to the setting
  ``sadtalker_max_audio_seconds``), plus ``face_restoration`` (a WebUI restorer
  name) and ``return`` (``"path"``, ``"base64"`` or ``"both"``; default ``"path"``).
  Answer: ``video_path``, ``video_base64`` (or null), ``infotext``, ``seed``, ``frames``, ``width``, ``height``.
- ``POST /sadtalker/v1/stream``: the same body; answers the video as a fragmented MP4 while it is made
  (``video/mp4``, chunked, a fragment per second of video); contract in :mod:`..http_stream`.
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
import contextlib
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CancelledError, CheckpointError, InputError, SadTalkerError
from ..http_request import (  # noqa: F401 - re-exported: the API's request handling lives there
    FILE_FIELDS,
    INLINE_STATUS,
    MAX_BASE64_BYTES,
    RETURN_MODES,
    VIDEO_SUFFIXES,
    ApiError,
    check_allowed,
    check_picture,
    decode_base64,
    parse_request,
)
from ..live_streams import attach_route
from . import jobs, models_panel
from .settings import WebUISettings, result_root

log = logging.getLogger(__name__)

API_VERSION = 1


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


def prepare_stream(session: jobs.Session, body: Any) -> tuple[Any, str]:
    """Check a ``/stream`` request like ``/generate`` (ApiError), then ``(work, label)`` for
    :func:`..http_stream.stream_response`: ``work`` takes the host's queue lock and job state and runs the
    generation streaming (cancelled by the client going away or the host's Interrupt)."""
    import shutil

    host = session.host
    settings = WebUISettings.read(host)
    roots = allowed_roots(session, settings)
    if isinstance(body, Mapping):
        body = {"max_audio_seconds": settings.max_audio_seconds, **body}
    tmp = Path(tempfile.mkdtemp(prefix="sadtalker_api_"))
    try:
        options, restorer, _mode = parse_request(body, roots, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    def work(sink, cancelled, on_output):
        try:
            with host.queue_lock(), host.job("sadtalker_api") as state:
                jobs.HostProgress.start(state, 1)
                interrupted = jobs.cancel_requested(state)
                try:
                    return session.run(
                        options,
                        restorer=restorer,
                        progress=jobs.HostProgress(state, 0, 1, Path(options.source).name),
                        cancel=lambda: cancelled() or interrupted(),
                        preview=False,
                        settings=settings,
                        stream=sink,
                        on_output=on_output,
                    )
                finally:
                    session.finish(settings)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    return work, Path(options.source).name


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

    from ..http_stream import ROUTE, stream_response

    async def sadtalker_stream(request):  # a plain Starlette endpoint: it answers a stream, not a model
        return await stream_response(request, lambda body: prepare_stream(session, body))

    app.add_route(ROUTE, sadtalker_stream, methods=["POST"])

    @app.get("/sadtalker/v1/models")
    def sadtalker_models():
        return guarded(models, session)

    @app.get("/sadtalker/v1/version")
    def sadtalker_version():
        return guarded(version, session)

    app.router.routes.append(attach_route(session.live))  # GET /sadtalker/v1/stream/{token}: the live player
