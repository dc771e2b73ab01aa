"""The tab's "Play while generating" on the Python side: Generate's handler (``jobs.streaming_generate``
around the host-wrapped ``generate_single``, as ui.py wires it) opens the job's live stream under the page's
token, the pipeline streams into it while it renders, the job's end closes it; the host app's attach route
serves it. The pipeline is the stand-in FakeTalker (tests/webui/conftest.py); the browser half is
tests/webui/test_live_player.py."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tests.test_pipeline_e2e import media, tiny_checkpoints, vector  # noqa: F401 - shared fixtures
from tests.webui.conftest import form_values, real_extension, sample_png, sample_wav

TOKEN = "0123456789abcdef" * 3


@pytest.fixture
def tab(make_extension, webui, tmp_path):
    """``(generate(play, token) -> outputs, extension, talkers, app client)``: the Generate handler as the tab
    wires it, and the host's FastAPI app with the extension's routes (``app_started``)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from sadtalker_ext.webui import jobs

    seen: list = []
    also: list = []  # more callbacks after each rendered chunk

    def on_render(done):
        seen.append(_state(ext, done))
        for callback in also:
            callback(done)

    ext, talkers = make_extension(frames=6, on_render=on_render)
    app = FastAPI()
    webui.callbacks.app_started_callback(None, app)
    handler = jobs.streaming_generate(
        ext.session, ext.host.wrap_gpu_call(functools.partial(jobs.generate_single, ext.session), [None, ""])
    )
    pic = sample_png(tmp_path / "in" / "face.png")
    wav = sample_wav(tmp_path / "in" / "speech.wav")

    def generate(play, token, **form):
        values = form_values(source=str(pic), driven_audio=str(wav), batch_size=2, **form)
        return handler("task(live)", *values, "", play, token)

    generate.seen, generate.also = seen, also
    return generate, ext, talkers, TestClient(app)


def _state(ext, done):
    stream = ext.session.live.get(TOKEN)
    return None if stream is None else (done, stream.since(0)[0], stream.closed)


def test_the_job_streams_under_the_pages_token_while_it_renders(tab, webui):
    generate, ext, talkers, client = tab
    video, info, html_log = generate(True, TOKEN)
    assert video and "Frames: 6" in info, html_log
    assert talkers[0].fragmented is True and talkers[0].stream is not None
    # each chunk was in the stream before the next was rendered, with the job still running
    assert generate.seen == [
        (2, [b"INIT", b"FRAG2"], False),
        (4, [b"INIT", b"FRAG2", b"FRAG4"], False),
        (6, [b"INIT", b"FRAG2", b"FRAG4", b"FRAG6"], False),
    ]
    stream = ext.session.live.get(TOKEN)
    assert stream.closed and stream.error is None
    # the host app's route replays it (the job is over: the whole stream, then the end)
    r = client.get(f"/sadtalker/v1/stream/{TOKEN}")
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert r.content == b"INITFRAG2FRAG4FRAG6"
    assert client.get(f"/sadtalker/v1/stream/{'f' * 48}").status_code == 404


def test_without_the_box_or_a_token_nothing_is_streamed(tab):
    generate, ext, talkers, client = tab
    for play, token in ((False, TOKEN), (True, ""), (True, "sadtalker:stream-token"), (True, "short")):
        video, _, html_log = generate(play, token)
        assert video, html_log
        assert talkers[-1].stream is None and talkers[-1].fragmented is False
        assert ext.session.live.get(TOKEN) is None and len(ext.session.live) == 0
    assert client.get(f"/sadtalker/v1/stream/{TOKEN}").status_code == 404


def test_a_taken_token_leaves_the_other_stream_alone(tab):
    generate, ext, talkers, _ = tab
    other = ext.session.live.open(TOKEN)
    other.append(b"SOMEONE ELSE")
    video, _, html_log = generate(True, TOKEN)
    assert video, html_log
    assert talkers[-1].stream is None  # this job ran without streaming
    assert other.since(0) == ([b"SOMEONE ELSE"], False)


def test_a_failed_or_interrupted_job_ends_its_stream(tab, webui):
    generate, ext, _, client = tab
    video, _, html_log = generate(True, TOKEN, seed="not a number")  # refused before the pipeline
    assert video is None and "error" in html_log
    stream = ext.session.live.get(TOKEN)
    assert stream.closed and stream.error and stream.since(0)[0] == []
    assert client.get(f"/sadtalker/v1/stream/{TOKEN}").content == b""

    token = "9" * 40
    generate.also.append(lambda done: webui.shared.state.interrupt())
    video, _, html_log = generate(True, token)
    assert video is None and "Interrupted" in html_log
    stream = ext.session.live.get(token)
    assert stream.closed and stream.error == "interrupted"
    assert stream.since(0)[0] == [b"INIT", b"FRAG2"]  # what was streamed before the interrupt


def test_the_tab_has_the_box_and_the_player_place(make_extension, webui):
    from sadtalker_ext.live_streams import STREAM_SLOT

    ext, _ = make_extension()
    tab = ext.ui_tabs()[0][0]
    c = tab.sadtalker_components
    assert c["play_live"].value is True  # the setting's default
    assert c["stream_token"].value == STREAM_SLOT and c["stream_token"].visible is False
    assert c["live"].elem_id == "sadtalker_live"
    webui.shared.opts.data["sadtalker_play_while_generating"] = False
    c = ext.ui_tabs()[0][0].sadtalker_components
    assert c["play_live"].value is False


def test_real_pipeline_streams_the_saved_file(webui, tiny_checkpoints, media, tmp_path):  # noqa: F811
    """The real pipeline (stand-in weights, dlib landmarks) behind the tab's Generate: the live stream holds
    exactly the bytes of the saved video, a fragmented MP4 (init segment, fragments)."""
    from sadtalker_ext.video import probe
    from sadtalker_ext.video.fmp4 import top_level_boxes
    from sadtalker_ext.webui import jobs

    ext = real_extension(webui, tiny_checkpoints, tmp_path)
    handler = jobs.streaming_generate(
        ext.session, ext.host.wrap_gpu_call(functools.partial(jobs.generate_single, ext.session), [None, ""])
    )
    values = form_values(source=media["picture"], driven_audio=media["cut"](2), face_detector="dlib", seed=7)
    video, _, html_log = handler("task(real)", *values, "", True, TOKEN)
    assert video, html_log
    stream = ext.session.live.get(TOKEN)
    segments, closed = stream.since(0)
    assert closed and stream.error is None
    assert b"".join(segments) == Path(video).read_bytes()  # what the page played is the saved file
    assert top_level_boxes(segments[0])[:2] == [b"ftyp", b"moov"] and b"moof" in top_level_boxes(segments[1])
    meta = probe(video)
    assert meta.num_frames == 2 and meta.has_audio
