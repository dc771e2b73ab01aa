"""``POST /sadtalker/v1/stream`` of the standalone app (``sadtalker_ext.app.serve``), launched on 127.0.0.1
under gradio 3.41 and 4.40: fragments while the job runs, the saved file, disconnect cancels, the app's
path rule (only gradio's upload folder and ``--allowed_dir``), errors as JSON before the first byte.

The pipeline is the real ``SadTalker`` (weight checks, status) whose ``generate`` is the stand-in of
``test_stream_api``: real fragmented MP4 bytes from synthetic frames, held at a gate (test-only hook).
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from urllib.parse import unquote

import pytest

from sadtalker_ext.pipeline import SadTalker
from sadtalker_ext.video import probe
from sadtalker_ext.video.fmp4 import read_fragments
from tests.webui.conftest import sample_png, sample_wav
from tests.webui.test_stream_api import FRAGMENTS, FRAMES, StreamingTalker

gr = pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")


class GatedTalker(SadTalker):
    """The real pipeline object; ``generate`` writes synthetic frames (``StreamingTalker.generate``)."""

    generate = StreamingTalker.generate

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.gate, self.cancel_seen, self.finished = threading.Event(), threading.Event(), threading.Event()
        self.fail_before, self.fail_after_gate, self.hold_at = None, False, None
        self.calls = []


@pytest.fixture
def app_server(tmp_path, monkeypatch):
    from sadtalker_ext import app
    from tests.webui.test_app_http import _free_port

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_uploads"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    talker = GatedTalker(
        checkpoint_dir=tmp_path / "ck", gfpgan_dir=tmp_path / "gf", result_dir=tmp_path / "results"
    )
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    demo = app.build_app(talker, allowed_dirs=[allowed])
    port = _free_port()
    app.serve(demo, block=False, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}", talker, allowed, tmp_path
    finally:
        talker.gate.set()
        demo.close()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_app_streams_while_generating_and_saves_the_file(app_server):
    base, talker, allowed, tmp = app_server
    body = {"source": str(sample_png(allowed / "face.png")), "driven_audio": str(sample_wav(allowed / "hi.wav")),
            "seed": 5}  # fmt: skip
    received = bytearray()
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", f"{base}/sadtalker/v1/stream", json=body) as r,
    ):
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "video/mp4" and r.headers["x-sadtalker-job"]
        output = Path(unquote(r.headers["x-sadtalker-output"]))
        chunks = r.iter_bytes()
        while not read_fragments(bytes(received)):
            received += next(chunks)
        assert not talker.finished.is_set()  # held at the gate: the fragment came while it ran
        assert output.stat().st_size == 0  # the final name only claimed
        talker.gate.set()
        for chunk in chunks:
            received += chunk
    assert output.parent == tmp / "results" and output.name.startswith("face__hi")
    assert bytes(received) == output.read_bytes() and probe(output).num_frames == FRAMES
    options, fragmented, streamed = talker.calls[0]
    assert fragmented and streamed and options.seed == 5


def test_app_client_going_away_cancels(app_server):
    base, talker, _allowed, tmp = app_server
    body = {"source_base64": _b64(sample_png(tmp / "p.png")), "idle_seconds": 1}
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", f"{base}/sadtalker/v1/stream", json=body) as r,
    ):
        assert r.status_code == 200
        output = Path(unquote(r.headers["x-sadtalker-output"]))
        next(r.iter_bytes())
    assert talker.cancel_seen.wait(60) and talker.finished.wait(60)
    assert not output.exists() and not list((tmp / "results").glob("*.mp4"))
    talker.gate.set()  # the slot is free: the next request runs to the end
    r = httpx.post(f"{base}/sadtalker/v1/stream", json=body, timeout=120)
    assert r.status_code == 200 and len(read_fragments(r.content)) == len(FRAGMENTS)


def test_app_refusals_are_json_before_the_first_byte(app_server):
    from sadtalker_ext.errors import CheckpointError

    base, talker, allowed, tmp = app_server
    secret = tmp / "secret.png"  # a server file outside the upload folder and --allowed_dir
    sample_png(secret)
    cases = [
        ({"source": str(secret), "idle_seconds": 1}, 403, "outside"),
        ({"source": str(allowed / "none.png"), "idle_seconds": 1}, 404, "not found"),
        ({"source_base64": _b64(secret), "idle_seconds": 1, "face_restoration": "GFPGAN"}, 422, "enhancer"),
        ({"source_base64": _b64(secret), "idle_seconds": 1, "size": 300}, 422, "size"),
    ]
    for body, status, needle in cases:
        r = httpx.post(f"{base}/sadtalker/v1/stream", json=body, timeout=60)
        assert r.status_code == status and needle in r.json()["detail"], (body, r.text)
    r = httpx.post(f"{base}/sadtalker/v1/stream", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert not talker.calls
    talker.fail_before = CheckpointError("missing weight file: SadTalker_V0.0.2_256.safetensors")
    r = httpx.post(f"{base}/sadtalker/v1/stream", json={"source_base64": _b64(secret), "idle_seconds": 1})
    assert r.status_code == 409 and "missing weight" in r.json()["detail"]
