"""The live player's stream registry and its attach route ``GET /sadtalker/v1/stream/{token}``, served by a
real uvicorn server on a free local port and read with httpx as a browser reads it (chunk by chunk)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from sadtalker_ext.live_streams import (
    STREAM_SLOT,
    LiveStreams,
    attach_route,
    player_route,
    player_script,
    valid_token,
)

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

TOKEN = "a" * 22 + "0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(streams: LiveStreams):
    """A Starlette app holding only the attach and player routes, on 127.0.0.1; yields the base URL."""
    from starlette.applications import Starlette

    app = Starlette(routes=[attach_route(streams), player_route()])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_tokens_are_long_url_safe_strings_and_name_one_job():
    assert valid_token(TOKEN) and valid_token("A-_9" * 6)
    for bad in (None, 12, "", "short", "a" * 21, "a" * 129, "a" * 30 + "/..", "a" * 30 + " ", "ä" * 30):
        assert not valid_token(bad), bad
    streams = LiveStreams()
    first = streams.open(TOKEN)
    assert first is not None and streams.get(TOKEN) is first
    assert streams.open(TOKEN) is None  # taken: the second job runs without streaming
    assert streams.open("../../etc/passwd") is None and streams.get("../../etc/passwd") is None


def test_closed_streams_are_dropped_after_keep_s_and_when_too_many():
    streams = LiveStreams(keep_s=60, max_streams=3)
    tokens = [f"{i:02d}" + "t" * 22 for i in range(4)]
    for t in tokens[:3]:
        streams.open(t).close()
    assert len(streams) == 3
    assert streams.open(tokens[3]) is not None  # the oldest closed one makes room
    assert streams.get(tokens[0]) is None and streams.get(tokens[3]) is not None
    running = LiveStreams(keep_s=60, max_streams=2)
    a, b = running.open(tokens[0]), running.open(tokens[1])
    assert a and b and running.open(tokens[2]) is not None  # running jobs are never dropped
    assert len(running) == 3
    quick = LiveStreams(keep_s=0.0)
    quick.open(TOKEN).close()
    time.sleep(0.01)
    assert quick.get(TOKEN) is None


def test_attach_replays_then_follows_until_the_job_ends():
    streams = LiveStreams()
    stream = streams.open(TOKEN)
    stream.append(b"INIT-SEGMENT")
    stream.append(b"FRAGMENT-1")
    with served(streams) as base, httpx.stream("GET", f"{base}/sadtalker/v1/stream/{TOKEN}", timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "video/mp4"
        assert r.headers["cache-control"] == "no-store"
        chunks = r.iter_raw()
        assert next(chunks) == b"INIT-SEGMENT" + b"FRAGMENT-1"  # what was written before attaching
        # the job goes on: each new fragment reaches the reader while the stream is still open
        for n in (2, 3):
            threading.Timer(0.2, stream.append, (f"FRAGMENT-{n}".encode(),)).start()
            assert next(chunks) == f"FRAGMENT-{n}".encode()
            assert not stream.closed
        threading.Timer(0.2, stream.close).start()
        assert list(chunks) == []  # the job's end ends the response
    # attaching after the end (within keep_s) replays the whole video at once
    with served(streams) as base:
        again = httpx.get(f"{base}/sadtalker/v1/stream/{TOKEN}", timeout=30)
    assert again.status_code == 200
    assert again.content == b"INIT-SEGMENT" + b"FRAGMENT-1" + b"FRAGMENT-2" + b"FRAGMENT-3"


def test_two_readers_get_the_same_bytes_and_a_failed_job_ends_the_stream():
    streams = LiveStreams()
    stream = streams.open(TOKEN)
    got: list[bytes] = []

    def read(base: str) -> None:
        got.append(httpx.get(f"{base}/sadtalker/v1/stream/{TOKEN}", timeout=30).content)

    with served(streams) as base:
        readers = [threading.Thread(target=read, args=(base,)) for _ in range(2)]
        for t in readers:
            t.start()
        stream.append(b"INIT")
        time.sleep(0.3)
        stream.append(b"FRAG")
        stream.close(error="interrupted")
        stream.append(b"AFTER-THE-END")  # ignored
        for t in readers:
            t.join(timeout=30)
            assert not t.is_alive()
    assert got == [b"INITFRAG", b"INITFRAG"]
    assert stream.error == "interrupted"


def test_unknown_or_malformed_tokens_are_404_and_read_nothing():
    streams = LiveStreams()
    streams.open(TOKEN).append(b"SECRET-VIDEO")
    with served(streams) as base:
        for token in ("b" * 30, TOKEN[:-1], TOKEN + "x", "%2e%2e", "a%00" * 8):
            r = httpx.get(f"{base}/sadtalker/v1/stream/{token}", timeout=30)
            assert r.status_code == 404, token
            assert "never started" in r.json()["detail"] and b"SECRET" not in r.content
        for path in ("", "..%2F..%2Fetc%2Fpasswd", f"{TOKEN}/..", f"../stream/{TOKEN}x"):
            r = httpx.get(f"{base}/sadtalker/v1/stream/{path}", timeout=30)
            assert r.status_code == 404 and b"SECRET" not in r.content, path
        script = httpx.get(f"{base}/sadtalker/v1/player.js", timeout=30)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert script.text == player_script().read_text(encoding="utf-8")
    assert "function sadtalker_live_submit" in script.text


def test_the_player_script_replaces_the_same_placeholder_the_forms_hold():
    """The hidden textbox of the tab and the app holds STREAM_SLOT; the script looks for its own copy."""
    assert f"var SADTALKER_STREAM_SLOT = '{STREAM_SLOT}';" in player_script().read_text(encoding="utf-8")
