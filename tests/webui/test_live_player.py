"""Headless Chromium plays the video while it is being made ("Play while generating"), in the standalone app
and in the SadTalker tab of the stand-in host, under the installed gradio (3.41 in .venv, 4.40 in
.venv-gradio4).

The real pipeline renders (stand-in weights, dlib landmarks; tests/test_pipeline_e2e.py's fixtures). A frame
hook holds the renderer at a gate after :data:`GATE_AFTER` frames until the test opens it, so the page's
``<video>`` is seen advancing while the job is provably still running (no sleeps in product code); then the
job ends and the page shows the normal result in place of the player.
"""

from __future__ import annotations

import contextlib
import threading
import wave
from pathlib import Path

import pytest

from tests.test_pipeline_e2e import media, tiny_checkpoints, vector  # noqa: F401 - shared fixtures
from tests.webui.test_browser import _free_port, _host_page, _inject_assets, _upload, _wait, driver  # noqa: F401

gr = pytest.importorskip("gradio")
GRADIO3 = int(gr.__version__.split(".")[0]) < 4
SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "media" / "RD_Radio31_000.wav"
SECONDS = 5
"""Length of the speech: 125 frames at 25 fps."""
GATE_AFTER = 100
"""Frames that reach the encoder before the gate: x264's look-ahead keeps about 65 back, so the stream then
holds the init segment and a fragment or two (one per second of video)."""
GATE_TIMEOUT_S = 240


def speech_cut(folder: Path, seconds: float = SECONDS) -> Path:
    """The first ``seconds`` of a shared speech recording, as ``speech.wav`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "speech.wav"
    with wave.open(str(SPEECH), "rb") as src, wave.open(str(out), "wb") as dst:
        dst.setparams(src.getparams())
        dst.writeframes(src.readframes(int(src.getframerate() * seconds)))
    return out


def gated_talker_class():
    """``SadTalker`` for the browser tests: the real ``generate`` (inputs, models, face, motion, then the
    frames through the frame hook into the real writer, fragmented, streaming), except that the frames are
    a synthetic moving picture instead of rendered ones: the stand-in renderer takes about 2 s a frame on
    this shared CPU, and the first fragment needs about 65 frames in the encoder. Its frame hook waits at a
    gate (``self.gate``) once :data:`GATE_AFTER` frames were handed on; ``self.waiting`` is set while it
    waits there."""
    import numpy as np

    from sadtalker_ext.errors import CancelledError
    from sadtalker_ext.pipeline import SadTalker

    class Gated(SadTalker):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.gate = threading.Event()
            self.waiting = threading.Event()
            self.streamed: list[bool] = []

        def iter_video_frames(self, prep):
            total, size = prep.num_frames, prep.options.size
            ramp = np.linspace(0, 255, size, dtype=np.float32)
            for start in range(0, total, prep.options.batch_size):
                if prep.stopped():
                    raise CancelledError("cancelled while rendering")
                batch = []
                for i in range(start, min(start + prep.options.batch_size, total)):
                    frame = np.empty((size, size, 3), np.uint8)
                    frame[..., 0] = np.roll(ramp, 4 * i)[None, :]
                    frame[..., 1] = ramp[:, None]
                    frame[..., 2] = (i * 7) % 256
                    batch.append(frame)
                prep.report("render", start + len(batch), total)
                yield np.stack(batch)

        def generate(self, options, progress=None, cancel=None, frame_hook=None, on_exists=None, **streaming):
            self.streamed.append(streaming.get("stream") is not None)
            sent = 0

            def hook(frames):
                nonlocal sent
                if frame_hook is not None:
                    frames = frame_hook(frames)
                sent += len(frames)
                if sent >= GATE_AFTER and not self.gate.is_set():
                    self.waiting.set()
                    self.gate.wait(GATE_TIMEOUT_S)
                    self.waiting.clear()
                return frames

            return super().generate(options, progress, cancel, hook, on_exists, **streaming)

    return Gated


def _live_state(page) -> dict:
    return page.execute_script(
        "const v = document.querySelector('.sadtalker-live-video');"
        "if (!v) return {present: false};"
        "return {present: true, time: v.currentTime, paused: v.paused, ready: v.readyState,"
        " buffered: v.buffered.length ? v.buffered.end(v.buffered.length - 1) : 0,"
        " failure: window.sadtalker_live ? window.sadtalker_live.failure : null,"
        " mime: window.sadtalker_live ? window.sadtalker_live.mime : null};"
    )


def _result_src(page, elem_id: str) -> str:
    return page.execute_script(
        f"const v = document.querySelector('#{elem_id} video'); return v ? (v.currentSrc || v.src || '') : '';"
    )


def _result_time(page, elem_id: str) -> float:
    return page.execute_script(
        f"const v = document.querySelector('#{elem_id} video'); return v ? v.currentTime : 0;"
    )


def _videos(folder: Path) -> list[Path]:
    """Videos under their final names (not the writer's hidden temp file, not the empty name placeholder)."""
    return [p for p in folder.rglob("*.mp4") if not p.name.startswith(".") and p.stat().st_size > 0]


def _watch_it_play(page, talker, results: Path, result_id: str) -> None:
    """After Generate: the player's ``currentTime`` advances while the renderer waits at the gate (no video
    file yet), then the gate opens and the normal result replaces the player."""
    _wait(
        lambda: talker.waiting.is_set(),
        timeout=GATE_TIMEOUT_S,
        what="the renderer at the gate",
        driver=page,
    )
    first = _wait(lambda: (s := _live_state(page))["present"] and s["time"] > 0 and s,
                  timeout=60, what="the player playing", driver=page)  # fmt: skip
    later = _wait(lambda: (s := _live_state(page))["time"] >= first["time"] + 0.4 and s,
                  timeout=60, what=f"playback advancing (from {first}; now {_live_state(page)})",
                  driver=page)  # fmt: skip
    # still the same job, held at the gate: nothing rendered past it, no video file under its final name
    assert talker.waiting.is_set() and not talker.gate.is_set()
    assert not _videos(results)
    assert later["mime"].startswith('video/mp4; codecs="avc1.') and "mp4a.40.2" in later["mime"]
    assert later["buffered"] < SECONDS - 1  # only part of the video had arrived
    talker.gate.set()
    _wait(lambda: _result_src(page, result_id), timeout=GATE_TIMEOUT_S, what="the result video", driver=page)
    _wait(lambda: not _live_state(page)["present"], timeout=30, what="the player's handover", driver=page)
    # playback went on in the result from where the player was (not from the start)
    _wait(lambda: _result_time(page, result_id) >= later["time"], timeout=30,
          what=f"the result playing on from {later['time']:.2f} s", driver=page)  # fmt: skip
    videos = _videos(results)
    assert len(videos) == 1 and talker.streamed == [True]


@pytest.mark.slow
def test_app_plays_while_generating(driver, tiny_checkpoints, media, tmp_path, monkeypatch):  # noqa: F811
    from selenium.webdriver.common.by import By

    from sadtalker_ext import app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_uploads"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    results = tmp_path / "results"
    talker = gated_talker_class()(
        checkpoint_dir=tiny_checkpoints, gfpgan_dir=tmp_path / "no_face_models", result_dir=results
    )
    demo = app.build_app(talker)
    port = _free_port()
    app.serve(demo, block=False, server_name="127.0.0.1", server_port=port, quiet=True)  # as app.main does
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        for elem_id, path in (("sadtalker_app_source", Path(media["picture"])),
                              ("sadtalker_app_audio", speech_cut(tmp_path / "speech"))):  # fmt: skip
            field = _wait(lambda e=elem_id: driver.find_elements(By.CSS_SELECTOR, f"#{e} input[type=file]"),
                          what=f"file input of #{elem_id}", driver=driver)[0]  # fmt: skip
            driver.execute_script("arguments[0].style.display = 'block'; arguments[0].hidden = false;", field)
            field.send_keys(str(path))
        player = "#sadtalker_app_audio audio, #sadtalker_app_audio [data-testid=waveform-controls]"
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, player), what="audio player", driver=driver)
        shown = "#sadtalker_app_preview img" if GRADIO3 else "#sadtalker_app_source img"
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, shown), what="the picture", driver=driver)
        box = driver.find_element(By.CSS_SELECTOR, "#sadtalker_app_play_live input[type=checkbox]")
        assert box.is_selected()  # on by default
        driver.find_element(By.ID, "sadtalker_app_generate").click()
        _watch_it_play(driver, talker, results, "sadtalker_app_video")
    finally:
        driver.get("about:blank")  # the page lets go of its stream
        talker.gate.set()
        demo.sadtalker_shutdown(timeout=60)  # a job still running stops at its next batch
        demo.close()


@pytest.mark.slow
def test_app_without_media_source_works_as_before(driver, tiny_checkpoints, media, tmp_path, monkeypatch):  # noqa: F811
    """A browser without Media Source Extensions: the box is ticked, but no token is sent, nothing is
    streamed, no player appears, and the result is shown as before."""
    from selenium.webdriver.common.by import By

    from sadtalker_ext import app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_uploads"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    results = tmp_path / "results"
    talker = gated_talker_class()(
        checkpoint_dir=tiny_checkpoints, gfpgan_dir=tmp_path / "no_face_models", result_dir=results
    )
    talker.gate.set()  # nothing to watch: no waiting
    demo = app.build_app(talker)
    port = _free_port()
    app.serve(demo, block=False, server_name="127.0.0.1", server_port=port, quiet=True)
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": "window.MediaSource = undefined;"}
    )
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        assert driver.execute_script("return window.MediaSource === undefined;")
        for elem_id, path in (("sadtalker_app_source", Path(media["picture"])),
                              ("sadtalker_app_audio", speech_cut(tmp_path / "speech", 1))):  # fmt: skip
            field = _wait(lambda e=elem_id: driver.find_elements(By.CSS_SELECTOR, f"#{e} input[type=file]"),
                          what=f"file input of #{elem_id}", driver=driver)[0]  # fmt: skip
            driver.execute_script("arguments[0].style.display = 'block'; arguments[0].hidden = false;", field)
            field.send_keys(str(path))
        shown = "#sadtalker_app_preview img" if GRADIO3 else "#sadtalker_app_source img"
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, shown), what="the picture", driver=driver)
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#sadtalker_app_audio audio, "
              "#sadtalker_app_audio [data-testid=waveform-controls]"), what="audio player", driver=driver)  # fmt: skip
        _wait(lambda: driver.execute_script("return typeof sadtalker_live_submit === 'function';"),
              what="the player script", driver=driver)  # fmt: skip
        driver.find_element(By.ID, "sadtalker_app_generate").click()
        _wait(lambda: _result_src(driver, "sadtalker_app_video"), timeout=GATE_TIMEOUT_S, what="the result video",
              driver=driver)  # fmt: skip
        assert talker.streamed == [False] and len(demo.sadtalker_live) == 0
        assert not _live_state(driver)["present"]
        assert len(_videos(results)) == 1
    finally:
        driver.get("about:blank")
        demo.sadtalker_shutdown(timeout=60)
        demo.close()


@contextlib.contextmanager
def _served_tab(webui, talker_factory, monkeypatch, picture: Path):
    """The extension (real pipeline from ``talker_factory``) in the stand-in host page, served with the
    host's API routes (``app_started``), the way test_browser serves the tab."""
    from sadtalker_ext.webui.entry import Extension

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    ext = Extension(webui.root / "extensions" / "sadtalker", talker_factory=talker_factory)
    ext.register()
    webui.callbacks.ui_settings_callback()
    webui.shared.opts.data["sadtalker_default_face_detector"] = "dlib"  # no RetinaFace weights here
    _inject_assets(monkeypatch)
    demo = _host_page(webui, picture)
    port = _free_port()
    demo.queue()
    app, _, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    webui.callbacks.app_started_callback(demo, app)  # as the host does with the app launch() returns
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.mark.slow
def test_tab_plays_while_generating(driver, webui, tiny_checkpoints, media, tmp_path, monkeypatch):  # noqa: F811
    from selenium.webdriver.common.by import By

    from tests.webui.test_browser import sadtalker_tab

    webui.shared.cmd_opts.sadtalker_checkpoint_dir = str(tiny_checkpoints)
    webui.shared.cmd_opts.sadtalker_gfpgan_dir = str(tmp_path / "no_face_models")
    webui.shared.cmd_opts.use_cpu = ["all"]
    talkers = []

    def factory(dirs, device, dtype, winograd):
        talkers.append(gated_talker_class()(model_dirs=dirs, device=device, dtype=dtype, winograd=winograd))
        return talkers[-1]

    with _served_tab(webui, factory, monkeypatch, Path(media["picture"])) as url:
        try:
            driver.get(url)
            _wait(lambda: sadtalker_tab(driver), what="SadTalker tab button", driver=driver).click()
            _upload(driver, "sadtalker_picture", Path(media["picture"]))
            _upload(driver, "sadtalker_audio", speech_cut(tmp_path / "speech"))
            for elem_id in ("sadtalker_picture", "sadtalker_audio"):
                _wait(lambda e=elem_id: driver.execute_script(f"return !!sadtalker_uploads['{e}'];"),
                      what=f"{elem_id} upload", driver=driver)  # fmt: skip
            box = driver.find_element(By.CSS_SELECTOR, "#sadtalker_play_live input[type=checkbox]")
            assert box.is_selected()  # the setting's default
            driver.find_element(By.ID, "sadtalker_generate").click()
            _wait(lambda: talkers, timeout=120, what="the pipeline", driver=driver)
            _watch_it_play(driver, talkers[0], webui.root / "outputs", "sadtalker_video")
        finally:  # before the server closes: it waits for a running job
            driver.get("about:blank")
            webui.shared.state.interrupt()
            for t in talkers:
                t.gate.set()
