"""Fragmented MP4 of videos being made, kept per job for the page that started it ("Play while generating").

The page (``javascript/sadtalker_player.js``) makes a random token, sends it with Generate, and attaches
with ``GET /sadtalker/v1/stream/{token}`` (:func:`attach_route`): the answer replays the
segments written so far (the init segment first), then follows live until the job ends. Only the page that
made the token knows it; a token names at most one job, and the route reads nothing but that job's
segments (held in memory, never a file).

:class:`LiveStreams` holds the streams: :meth:`LiveStreams.open` registers a token for one job (refused:
a malformed token, one already taken), the job hands every segment to :meth:`LiveStream.append` (the
writer's ``sink``) and calls :meth:`LiveStream.close` when it ends, whatever the outcome. A closed stream
stays readable for :attr:`LiveStreams.keep_s` seconds (a page that attaches late still gets the whole
video), then it is dropped; at most :attr:`LiveStreams.max_streams` are held (the oldest closed go first).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .paths import EXTENSION_ROOT, PACKAGE_DIR

TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{22,128}")
"""A token: at least 22 URL-safe characters (>= 128 random bits as the page makes them)."""
ROUTE = "/sadtalker/v1/stream/{token}"
"""The attach route (GET): ``video/mp4``, chunked."""
PLAYER_ROUTE = "/sadtalker/v1/player.js"
PLAYER_FILE = "sadtalker_player.js"
STREAM_SLOT = "sadtalker:stream-token"
"""Value of the hidden stream-token textbox of the tab and of the standalone app: on Generate,
``javascript/sadtalker_player.js`` (its ``SADTALKER_STREAM_SLOT``) puts a new token in its place when "Play while
generating" is ticked and the browser can play the stream; what arrives unchanged (a page without the script)
means no streaming."""
LIVE_DONE_JS = "(v) => typeof sadtalker_live_done === 'function' ? sadtalker_live_done(v) : []"
"""Browser side after Generate (tab and app): the player hands over to the result, or goes away without one."""
KEEP_CLOSED_S = 120.0
MAX_STREAMS = 8


def valid_token(token: Any) -> bool:
    """Whether ``token`` has the form of a stream token (see :data:`TOKEN_PATTERN`)."""
    return isinstance(token, str) and TOKEN_PATTERN.fullmatch(token) is not None


class LiveStream:
    """The segments of one job's fragmented MP4, in order, and whether the job has ended."""

    def __init__(self) -> None:
        self._segments: list[bytes] = []
        self._closed = False
        self.closed_at: float | None = None
        """``time.monotonic()`` when the job ended (``None`` while it runs)."""
        self.error: str | None = None
        """Why the job ended without a video (``None``: it finished, or still runs)."""
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def size(self) -> int:
        """Bytes held."""
        with self._lock:
            return sum(len(s) for s in self._segments)

    def append(self, segment: bytes) -> None:
        """Add one whole segment (init segment or fragment); ignored once closed. Any thread."""
        with self._lock:
            if self._closed:
                return
            self._segments.append(bytes(segment))
            waiters = list(self._waiters)
        self._wake(waiters)

    def close(self, error: str | None = None) -> None:
        """The job has ended (``error``: why it made no video); readers get the rest, then the end."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.closed_at = time.monotonic()
            self.error = error
            waiters = list(self._waiters)
        self._wake(waiters)

    def since(self, index: int) -> tuple[list[bytes], bool]:
        """``(segments from number index on, whether the stream is closed)``."""
        with self._lock:
            return self._segments[index:], self._closed

    @staticmethod
    def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that reader's loop is gone
                loop.call_soon_threadsafe(event.set)

    async def follow(self) -> AsyncIterator[bytes]:
        """Every segment: those written so far, then each new one as it comes, until the stream closes."""
        loop = asyncio.get_running_loop()
        index = 0
        while True:
            event = asyncio.Event()
            with self._lock:
                self._waiters.append((loop, event))
            try:
                segments, closed = self.since(index)
                if segments:
                    index += len(segments)
                    yield b"".join(segments)
                    continue
                if closed:
                    return
                await event.wait()
            finally:
                with self._lock:
                    self._waiters.remove((loop, event))


class LiveStreams:
    """Token -> :class:`LiveStream` of the jobs that stream (thread-safe)."""

    def __init__(self, keep_s: float = KEEP_CLOSED_S, max_streams: int = MAX_STREAMS) -> None:
        self.keep_s = keep_s
        self.max_streams = max_streams
        self._streams: dict[str, LiveStream] = {}
        self._lock = threading.Lock()

    def open(self, token: Any) -> LiveStream | None:
        """A new stream under ``token``; ``None`` when the token is malformed or taken (the job then runs
        without streaming)."""
        if not valid_token(token):
            return None
        with self._lock:
            self._prune()
            if token in self._streams:
                return None
            stream = LiveStream()
            self._streams[token] = stream
            return stream

    def get(self, token: Any) -> LiveStream | None:
        """The stream registered under ``token`` (``None``: unknown, malformed, or dropped)."""
        if not valid_token(token):
            return None
        with self._lock:
            self._prune()
            return self._streams.get(token)

    def __len__(self) -> int:
        with self._lock:
            return len(self._streams)

    def _prune(self) -> None:
        now = time.monotonic()
        for token, stream in list(self._streams.items()):
            if stream.closed_at is not None and now - stream.closed_at > self.keep_s:
                del self._streams[token]
        closed = sorted(
            (s.closed_at, t) for t, s in self._streams.items() if s.closed_at is not None
        )  # oldest first
        while len(self._streams) >= self.max_streams and closed:
            del self._streams[closed.pop(0)[1]]


def attach_route(streams: LiveStreams) -> Any:
    """The Starlette route ``GET`` :data:`ROUTE`: 404 (JSON ``detail``) for a token that names no stream of
    ``streams``, else ``video/mp4`` as :meth:`LiveStream.follow` yields it (not cached, not sniffed)."""
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def sadtalker_stream_attach(request: Any) -> Any:
        stream = streams.get(request.path_params.get("token"))
        if stream is None:
            detail = (
                "no video is being streamed under this token (it was never started, or it ended more than "
                f"{int(streams.keep_s)} s ago)"
            )
            return JSONResponse({"detail": detail}, status_code=404)
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        return StreamingResponse(stream.follow(), media_type="video/mp4", headers=headers)

    return Route(ROUTE, sadtalker_stream_attach, methods=["GET"])


def player_script() -> Path:
    """``sadtalker_player.js``: the extension's ``javascript/`` in a checkout (the WebUI loads it from there),
    the data-only package ``sadtalker_ext/_javascript`` when installed with pip."""
    packaged = PACKAGE_DIR / "_javascript" / PLAYER_FILE
    return packaged if packaged.is_file() else EXTENSION_ROOT / "javascript" / PLAYER_FILE


def player_route() -> Any:
    """The Starlette route ``GET`` :data:`PLAYER_ROUTE`: the player script, for a page the WebUI does not
    load it into (the standalone app)."""
    from starlette.responses import Response
    from starlette.routing import Route

    async def sadtalker_player_script(request: Any) -> Any:
        text = player_script().read_text(encoding="utf-8")
        return Response(text, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    return Route(PLAYER_ROUTE, sadtalker_player_script, methods=["GET"])
