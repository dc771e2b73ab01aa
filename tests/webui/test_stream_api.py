"""``POST /sadtalker/v1/stream`` of the WebUI API through a real HTTP server (uvicorn on 127.0.0.1, the
stand-in host): fragments arrive while the job runs, disconnect cancels, errors before and after the first
byte, the request checks of ``/generate``.

The pipeline is a stand-in that writes a REAL fragmented MP4 (synthetic frames through the real
``VideoWriter``) and can be held at a gate after some frames (a test-only hook, no sleeps in product code).
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote

import numpy as np
import pytest

from sadtalker_ext.errors import CancelledError, CheckpointError, SadTalkerError
from sadtalker_ext.video import probe
from sadtalker_ext.video.fmp4 import read_fragments, top_level_boxes
from tests.webui.conftest import FakeResult, sample_png, sample_wav

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

FRAMES = 190  # 7.6 s: seven whole fragments and a short one
FRAGMENTS = [25] * 7 + [15]
"""Video frames per fragment. The stand-in holds once the first fragment has been streamed: how many frames
x264 keeps back before it lets one out (look-ahead 40, B-frames, one per frame thread) depends on the
machine, so the test waits for the fragment, not for a frame count; 190 frames leave ample room."""


class StreamingTalker:
    """Pipeline stand-in with the streaming surface of ``SadTalker.generate``: real fMP4 bytes, a gate.

    It holds at the gate (until the test sets it) once the first fragment has gone to the stream, or before
    frame ``hold_at`` when that is set; with ``fail_after_gate`` it breaks right after the gate opens."""

    def __init__(self, dirs, device, dtype, winograd=True):
        self.dirs, self.device, self.dtype = dirs, device, dtype
        self.precision_advice = None
        self.gate = threading.Event()
        self.cancel_seen = threading.Event()
        self.finished = threading.Event()
        self.fail_before: BaseException | None = None
        self.fail_after_gate = False
        self.hold_at: int | None = None
        self.calls: list = []

    loaded: ClassVar[list] = []

    def unload(self):
        pass

    def generate(self, options, progress=None, cancel=None, frame_hook=None, on_exists=None, *,
                 fragmented=False, stream=None, on_output=None):  # fmt: skip
        from sadtalker_ext.video import VideoWriter

        self.calls.append((options, fragmented, stream is not None))
        cancel = cancel or (lambda: False)
        if self.fail_before is not None:
            raise self.fail_before
        if not options.output:  # the standalone app leaves the name to the pipeline
            from sadtalker_ext.pipeline import default_output

            options = options.replace(output=str(default_output(options, Path(self.result_dir))))
            on_exists = on_exists or "unique"
        t = np.arange(FRAMES * 640) / 16000
        writer = VideoWriter(
            options.output,
            num_frames=FRAMES,
            audio=(0.3 * np.sin(2 * np.pi * 220 * t)),
            on_exists=on_exists or "error",
            fragmented=fragmented,
            sink=stream,
            keep_partial=False,
        )  # fmt: skip - as the WebUI's pipeline
        if on_output is not None:
            on_output(writer.path)
        streamed = writer_streamed(writer)
        held = False
        try:
            with writer:
                for start in range(0, FRAMES, 5):
                    hold_at = getattr(self, "hold_at", None)
                    if not held and (streamed.is_set() if hold_at is None else start >= hold_at):
                        held = True
                        while not self.gate.wait(0.05):  # held here until the test opens the gate
                            if cancel():
                                self.cancel_seen.set()
                                raise CancelledError("cancelled while held")
                        if getattr(self, "fail_after_gate", False):
                            raise SadTalkerError("the renderer broke (test)")
                    if cancel():
                        self.cancel_seen.set()
                        raise CancelledError("cancelled while rendering")
                    shade = np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None]
                    frames = np.broadcast_to((shade + 3 * np.arange(start, start + 5)[:, None, None, None]) % 256,
                                             (5, 48, 64, 3)).astype(np.uint8)  # fmt: skip
                    writer.write(frames)
                writer.finish()
        finally:
            self.finished.set()
        return FakeResult(writer.path, None, 7, FRAMES, {}, 64, 48)


def writer_streamed(writer) -> threading.Event:
    """An event set once ``writer``'s sink has been given a fragment (the sink is wrapped)."""
    seen = threading.Event()
    sink = writer.sink
    if sink is not None:

        def wrapped(segment: bytes) -> None:
            sink(segment)
            if b"moof" in top_level_boxes(segment):
                seen.set()

        writer.sink = wrapped
    return seen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(webui):
    """``(base_url, talkers, extension)``: the extension's routes on a FastAPI app served by uvicorn."""
    from fastapi import FastAPI

    from sadtalker_ext.webui.entry import Extension

    talkers: list[StreamingTalker] = []

    def factory(dirs, device, dtype, winograd):
        talkers.append(StreamingTalker(dirs, device, dtype, winograd))
        return talkers[-1]

    ext = Extension(webui.root / "extensions" / "sadtalker", talker_factory=factory)
    ext.register()
    webui.callbacks.ui_settings_callback()
    from starlette.middleware.gzip import GZipMiddleware

    app = FastAPI()
    app.add_middleware(
        GZipMiddleware, minimum_size=1000
    )  # as the hosts do (A1111 and Forge: setup_middleware)
    webui.callbacks.app_started_callback(None, app)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", talkers, ext
    finally:
        for t in talkers:
            t.gate.set()
        srv.should_exit = True
        thread.join(30)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture
def body(tmp_path):
    return {
        "source_base64": _b64(sample_png(tmp_path / "in" / "face.png")),
        "driven_audio_base64": _b64(sample_wav(tmp_path / "in" / "speech.wav")),
        "seed": 7,
    }


def test_fragments_arrive_while_the_job_runs_and_the_file_is_saved_at_the_end(server, body, webui):
    base, talkers, _ext = server
    received = bytearray()
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", f"{base}/sadtalker/v1/stream", json=body) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"] == "video/mp4"
        assert r.headers["content-encoding"] == "identity"  # not gzipped by the host's middleware
        assert r.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.headers
        job, output = (
            r.headers["x-sadtalker-job"],
            Path(unquote(r.headers["x-sadtalker-output"])),
        )
        talker = talkers[-1]
        chunks = r.iter_bytes()
        while len(read_fragments(bytes(received))) < 1:
            received += next(chunks)
        # the job is held at the gate, frames still to come: the bytes came while it was running
        assert not talker.finished.is_set()
        assert top_level_boxes(bytes(received))[:4] == [b"ftyp", b"moov", b"moof", b"mdat"]
        assert output.exists() and output.stat().st_size == 0  # only the placeholder claiming the name
        talker.gate.set()
        for chunk in chunks:
            received += chunk
    assert talker.finished.is_set() and job
    assert output.parent.parent == webui.root / "outputs" / "SadTalker"
    assert bytes(received) == output.read_bytes()  # the stream is the saved file
    frags = read_fragments(bytes(received))
    assert [f.track(1).samples for f in frags] == FRAGMENTS and all(f.track(1).first_is_sync for f in frags)
    assert probe(output).num_frames == FRAMES
    options, fragmented, streamed = talker.calls[0]
    assert fragmented and streamed and options.seed == 7 and options.extra["front_end"] == "api"


def test_client_going_away_cancels_the_job_and_frees_the_queue(server, body, webui):
    base, talkers, _ext = server
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", f"{base}/sadtalker/v1/stream", json=body) as r,
    ):
        assert r.status_code == 200
        output = Path(unquote(r.headers["x-sadtalker-output"]))
        next(r.iter_bytes())  # the init segment: streaming has started
        talker = talkers[-1]
    # the connection is closed without reading on: the job stops at its next batch (held at the gate here)
    assert talker.cancel_seen.wait(60), "the job was not cancelled"
    assert talker.finished.wait(60)
    assert not output.exists()  # no final file, no placeholder, no temp file
    assert not [p for p in output.parent.iterdir() if p.suffix in (".mp4", ".json", ".wav")]
    # the GPU queue slot is free again: the next request gets it and runs to the end
    talker.gate.set()
    r = httpx.post(f"{base}/sadtalker/v1/stream", json=body, timeout=120)
    assert r.status_code == 200 and len(read_fragments(r.content)) == len(FRAGMENTS)


@pytest.mark.parametrize(
    ("raised", "status", "needle"),
    [
        (CheckpointError("missing weight file: SadTalker_V0.0.2_256.safetensors"), 409, "missing weight"),
        (CancelledError("interrupted by the host"), 409, "interrupted"),
        (SadTalkerError("motion failed (test)"), 500, "motion failed"),
        (RuntimeError("bug (test)"), 500, "internal error"),
    ],
)
def test_failures_before_the_first_byte_answer_json(server, body, raised, status, needle):
    base, _talkers, ext = server
    from sadtalker_ext.webui.settings import WebUISettings

    ext.session.talker(WebUISettings.read(ext.session.host)).fail_before = raised
    r = httpx.post(f"{base}/sadtalker/v1/stream", json=body, timeout=120)
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert needle in r.json()["detail"]
    assert r.headers["x-sadtalker-job"]


def test_client_going_away_before_the_first_byte_cancels_the_job(server, body):
    base, _talkers, ext = server
    from sadtalker_ext.webui.settings import WebUISettings

    talker = ext.session.talker(WebUISettings.read(ext.session.host))
    talker.hold_at = 0  # held before the first frame: nothing can have been sent
    with pytest.raises(httpx.ReadTimeout):  # the client gives up waiting and closes the connection
        httpx.post(f"{base}/sadtalker/v1/stream", json=body, timeout=httpx.Timeout(60, read=2))
    assert talker.cancel_seen.wait(60), "the job waiting for its first byte was not cancelled"
    assert talker.finished.wait(60)
    folder = ext.session.output_folder(WebUISettings.read(ext.session.host))
    assert not folder.exists() or not [p for p in folder.iterdir() if p.suffix in (".mp4", ".json")]


def test_failure_after_the_first_byte_cuts_the_stream_and_is_logged(server, body, caplog):
    base, _talkers, ext = server
    from sadtalker_ext.webui.settings import WebUISettings

    talker = ext.session.talker(WebUISettings.read(ext.session.host))
    talker.fail_after_gate = True  # held once a fragment is out until the client has it, then it breaks
    received = bytearray()
    with caplog.at_level(logging.INFO, logger="sadtalker_ext"), httpx.Client(timeout=120) as client:
        with client.stream("POST", f"{base}/sadtalker/v1/stream", json=body) as r:
            assert r.status_code == 200
            job = r.headers["x-sadtalker-job"]
            chunks = r.iter_bytes()
            while not read_fragments(bytes(received)):
                received += next(chunks)
            talker.gate.set()
            with pytest.raises(httpx.RemoteProtocolError):  # no closing chunk: the client sees a cut
                for chunk in chunks:
                    received += chunk
        assert talker.finished.wait(60)
    assert top_level_boxes(bytes(received))[:4] == [b"ftyp", b"moov", b"moof", b"mdat"]
    failed = [rec for rec in caplog.records if "failed after" in rec.getMessage()]
    assert failed and job in failed[0].getMessage() and "renderer broke" in failed[0].getMessage()


@pytest.mark.parametrize(
    ("make_body", "status", "needle"),
    [
        (lambda tmp: "not json", 400, "JSON"),
        (lambda tmp: {"source": "/etc/passwd", "driven_audio_base64": "UklGRg=="}, 403, "outside"),
        (lambda tmp: {"source_base64": "@@@", "idle_seconds": 1}, 400, "not valid base64"),
        (
            lambda tmp: {
                "source_base64": _b64(sample_png(tmp / "p.png")),
                "idle_seconds": 1,
                "pose_style": 99,
            },
            422,
            "pose_style",
        ),
        (
            lambda tmp: {"source_base64": _b64(sample_png(tmp / "p.png")), "output": "/tmp/x.mp4"},
            422,
            "output",
        ),
        (
            lambda tmp: {"source_base64": base64.b64encode(b"garbage" * 20).decode(), "idle_seconds": 1},
            422,
            "not a picture",
        ),
    ],
)
def test_request_checks_as_for_generate(server, tmp_path, make_body, status, needle):
    base, talkers, _ext = server
    payload = make_body(tmp_path)
    kw = {"content": payload} if isinstance(payload, str) else {"json": payload}
    r = httpx.post(
        f"{base}/sadtalker/v1/stream", timeout=60, headers={"content-type": "application/json"}, **kw
    )
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
    assert not any(t.calls for t in talkers)  # refused before the pipeline ran


def test_missing_file_in_an_allowed_folder_is_404_and_size_limit_413(server, webui, monkeypatch):
    from sadtalker_ext import http_request

    base, _talkers, _ext = server
    missing = webui.root / "outputs" / "nothing.png"
    r = httpx.post(
        f"{base}/sadtalker/v1/stream", json={"source": str(missing), "idle_seconds": 1}, timeout=60
    )
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    monkeypatch.setattr(http_request, "MAX_BASE64_BYTES", 1000)
    big = base64.b64encode(b"\x89PNG" + b"\x00" * 4000).decode()
    r = httpx.post(f"{base}/sadtalker/v1/stream", json={"source_base64": big, "idle_seconds": 1}, timeout=60)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
