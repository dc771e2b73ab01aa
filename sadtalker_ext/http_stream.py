"""``POST /sadtalker/v1/stream``: one generation whose fragmented MP4 goes to the HTTP client as it is made.

Shared by the WebUI API (:mod:`.webui.api`) and the standalone app (:mod:`.app`); each gives a ``work``
function that runs the generation (taking the host's queue, the app's busy lock...) and this module runs
it in a thread and answers the request.

The contract (README, *HTTP streaming*):

* Request: the JSON body of ``/sadtalker/v1/generate`` (:mod:`.http_request`; ``return`` is ignored).
* Until the first byte: the request is checked (paths, sizes, options), then the job waits for its turn,
  loads models, prepares the motion and renders until the encoder has written the init segment. Any error
  up to there is an ordinary JSON error ``{"detail": message}`` with the usual status (400/403/404/413/422
  the request, 409 missing weights or an interrupted run, 500 a failure).
* Then ``200``, ``Content-Type: video/mp4``, ``Content-Encoding: identity`` (the hosts' GZipMiddleware
  would hold back the end of each fragment), chunked: the first chunk is the init segment (``ftyp`` +
  ``moov``), then one chunk per fragment (``moof`` + ``mdat``, one second of video from a keyframe, its audio
  interleaved) as soon as the encoder has written it, then the ``mfra`` index. Headers
  ``X-SadTalker-Job`` (the job id the server log uses) and ``X-SadTalker-Output`` (the path the finished
  file will have, percent-encoded UTF-8; the file is there only once the whole video is done).
* A failure after the first byte: the server logs it with the job id and drops the connection without the
  closing chunk, so the client sees an incomplete (truncated) response, never a short video that looks whole.
* The client closing the connection cancels the job: the renderer stops at its next batch (that frees the
  GPU queue), no final file is written.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import CancelledError, CheckpointError, InputError, SadTalkerError
from .http_request import ApiError

log = logging.getLogger(__name__)

ROUTE = "/sadtalker/v1/stream"
MEDIA_TYPE = "video/mp4"
JOB_HEADER = "X-SadTalker-Job"
OUTPUT_HEADER = "X-SadTalker-Output"
DISCONNECT_POLL_S = 0.5
"""How often the wait for the first byte looks whether the client is still there."""

Work = Callable[[Callable[[bytes], None], Callable[[], bool], Callable[[Path], None]], Any]
"""``work(sink, cancelled, on_output)``: runs the generation, streaming into ``sink``, stopping when
``cancelled()`` says so, reporting the claimed output path to ``on_output``."""


def error_status(exc: BaseException) -> tuple[int, str]:
    """``(HTTP status, message)`` for what a generation raised (the statuses of ``/generate``)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, CancelledError):
        return 409, f"interrupted: {exc}"
    if isinstance(exc, CheckpointError):
        return 409, str(exc)
    if isinstance(exc, InputError):
        return 422, str(exc)
    if isinstance(exc, SadTalkerError):
        return 500, str(exc)
    return 500, (
        f"internal error in the SadTalker extension ({type(exc).__name__}); the traceback is in the server log"
    )


class StreamBrokenError(SadTalkerError):
    """The generation failed after streaming had started (the response is cut off)."""


class StreamJob:
    """One streamed generation: ``work`` in a thread, its segments handed to the event loop in order.

    Create it inside the event loop (``loop``: the running one), then :meth:`start`.
    """

    def __init__(self, work: Work, loop: asyncio.AbstractEventLoop, label: str = "") -> None:
        self.id = uuid.uuid4().hex[:12]
        self.label = label
        self._work = work
        self._loop = loop
        self._items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._cancel = threading.Event()
        self.output: Path | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.bytes_sent = 0
        self._thread = threading.Thread(target=self._run, name=f"sadtalker-stream-{self.id}", daemon=True)

    # -- worker thread side
    def start(self) -> None:
        log.info("SadTalker stream job %s started%s", self.id, f" ({self.label})" if self.label else "")
        self._thread.start()

    def _put(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (server stopping): nobody listens any more
            self._cancel.set()

    def _sink(self, data: bytes) -> None:
        if not self._cancel.is_set():
            self._put("data", data)

    def _on_output(self, path: Path) -> None:
        self.output = Path(path)

    def _run(self) -> None:
        try:
            self.result = self._work(self._sink, self._cancel.is_set, self._on_output)
        except BaseException as exc:  # reported to the client (before the first byte) or logged
            self.error = exc
        finally:
            self.done.set()
            self._put("end", None)

    # -- event loop side
    def cancel(self, why: str = "the client went away") -> None:
        """Ask the generation to stop (at the renderer's next batch); no final file will be written."""
        if not self.done.is_set() and not self._cancel.is_set():
            log.info("SadTalker stream job %s: cancelling (%s)", self.id, why)
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    async def first(self, disconnected: Callable[[], Any] | None = None) -> bytes | None:
        """The first segment, or None when the job ended before it (see :attr:`error`). ``disconnected``
        (an async callable, e.g. ``request.is_disconnected``) is asked every :data:`DISCONNECT_POLL_S`
        seconds while waiting; a client gone cancels the job and raises :class:`CancelledError`."""
        getter = asyncio.ensure_future(self._items.get())
        try:
            while True:
                done, _ = await asyncio.wait({getter}, timeout=DISCONNECT_POLL_S)
                if done:
                    kind, value = getter.result()
                    return value if kind == "data" else None
                if disconnected is not None and await disconnected():
                    self.cancel("the client went away before the first byte")
                    raise CancelledError("the client went away")
        finally:
            if not getter.done():
                getter.cancel()

    async def rest(self, first: bytes) -> AsyncIterator[bytes]:
        """``first``, then every further segment as it comes. Raises :class:`StreamBrokenError` (after logging
        it with the job id) when the generation fails; leaving early (the client went away) cancels the job."""
        finished = False
        try:
            self.bytes_sent += len(first)
            yield first
            while True:
                kind, value = await self._items.get()
                if kind == "end":
                    break
                self.bytes_sent += len(value)
                yield value
            if self.error is not None:
                status, message = error_status(self.error)
                log.error(
                    "SadTalker stream job %s failed after %d bytes were sent (%s): %s",
                    self.id, self.bytes_sent, status, message,
                    exc_info=status == 500 and not isinstance(self.error, SadTalkerError),
                )  # fmt: skip
                raise StreamBrokenError(f"stream job {self.id} failed: {message}")
            finished = True
            log.info("SadTalker stream job %s finished: %s (%d bytes)", self.id, self.output, self.bytes_sent)
        finally:
            if not finished and self.error is None:
                self.cancel("the client went away")


async def stream_response(request: Any, prepare: Callable[[Any], tuple[Work, str]]) -> Any:
    """Answer one ``POST /sadtalker/v1/stream`` (Starlette / FastAPI ``request``).

    ``prepare(body) -> (work, label)`` checks the request (raising :class:`ApiError`) in a worker thread;
    ``work`` then runs in its own thread (:class:`StreamJob`). Returns a JSON error response or the
    streaming ``video/mp4`` response (module docstring).
    """
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response, StreamingResponse

    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"detail": "the request body must be JSON"}, status_code=400)
    try:
        work, label = await run_in_threadpool(prepare, body)
    except Exception as exc:
        status, message = error_status(exc)
        if status == 500:
            log.exception("SadTalker stream: the request could not be prepared")
        return JSONResponse({"detail": message}, status_code=status)
    job = StreamJob(work, asyncio.get_running_loop(), label)
    job.start()
    try:
        first = await job.first(request.is_disconnected)
    except CancelledError:
        return Response(status_code=499)  # nobody reads it: the client has gone
    except BaseException:
        job.cancel("the request handler stopped")
        raise
    if first is None:
        error = job.error or SadTalkerError("the generation ended without a video")
        status, message = error_status(error)
        if status == 500 and not isinstance(error, SadTalkerError):
            log.error("SadTalker stream job %s failed", job.id, exc_info=error)
        return JSONResponse({"detail": message}, status_code=status, headers={JOB_HEADER: job.id})
    # Content-Encoding identity: the hosts' GZipMiddleware (A1111 and Forge add it) leaves the response alone;
    # it would otherwise hold back the end of each fragment in its compressor until the next one
    headers = {
        JOB_HEADER: job.id,
        "Cache-Control": "no-store",
        "Content-Encoding": "identity",
        "X-Content-Type-Options": "nosniff",
    }
    if job.output is not None:
        headers[OUTPUT_HEADER] = quote(str(job.output))
    return StreamingResponse(job.rest(first), media_type=MEDIA_TYPE, headers=headers)
