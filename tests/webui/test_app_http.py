"""The standalone app (sadtalker_ext.app) through its real HTTP API, launched on 127.0.0.1.

It lives under tests/webui because ``./run.sh test`` runs this folder under gradio 3.41 (.venv) and again
under gradio 4.40 (.venv-gradio4): the file values differ between the two (gradio 3: ``{'name', 'is_file'}``
or inline ``{'name', 'data'}``; gradio 4: ``{'path', 'orig_name'}``), and both must be refused when they
point outside gradio's upload folder. The pipeline is the real ``SadTalker`` with empty weight folders: it
checks the inputs, then stops at the missing weights, before any model.
"""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path

import pytest

from tests.test_pipeline_e2e import media, tiny_checkpoints, vector  # noqa: F401 - shared fixtures
from tests.webui.conftest import sample_png, sample_wav
from tests.webui.test_browser import _wait, driver  # noqa: F401 - the headless Chromium fixture

gr = pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")
GRADIO3 = int(gr.__version__.split(".")[0]) < 4
SECRET = "TOPSECRET-LINE-0451"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(base_url, talker, upload_dir, tmp)``: the app launched as ``main`` does (queue on), on a free port."""
    from sadtalker_ext import app
    from sadtalker_ext.pipeline import SadTalker

    tmp = tmp_path_factory.mktemp("app_http")
    mp = pytest.MonkeyPatch()
    mp.setenv("GRADIO_TEMP_DIR", str(tmp / "gradio_uploads"))
    mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")

    class Recording(SadTalker):
        """The real pipeline; remembers the options each generation got."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.calls = []

        def generate(self, options, progress=None, cancel=None, frame_hook=None, **streaming):
            self.calls.append(options)
            return super().generate(
                options, progress=progress, cancel=cancel, frame_hook=frame_hook, **streaming
            )

    talker = Recording(checkpoint_dir=tmp / "ck", gfpgan_dir=tmp / "gf", result_dir=tmp / "results")
    demo = app.build_app(talker)
    port = _free_port()
    app.serve(demo, block=False, server_name="127.0.0.1", server_port=port, quiet=True)  # as app.main does
    try:
        yield f"http://127.0.0.1:{port}", talker, Path(os.environ["GRADIO_TEMP_DIR"]), tmp
    finally:
        demo.close()
        mp.undo()


def _file_value(path: str, orig_name: str | None = None) -> dict:
    """What the browser sends for an uploaded file (gradio 3 or 4 format)."""
    if GRADIO3:
        return {"name": path, "is_file": True, "orig_name": orig_name, "data": None}
    return {"path": path, "orig_name": orig_name, "meta": {"_type": "gradio.FileData"}}


def _form(source=None, driven_audio=None, ref_video=None, **kw) -> list:
    from sadtalker_ext.app import FORM_FIELDS

    values = {
        "source": source, "driven_audio": driven_audio, "idle_mode": False, "idle_seconds": 5,
        "ref_video": ref_video, "ref_mode": "pose", "preprocess": "crop", "still": False, "pose_style": 0,
        "expression_scale": 1.0, "size": 256, "batch_size": 2, "use_blink": True, "seed": -1, "input_yaw": "",
        "input_pitch": "", "input_roll": "", "face_detector": "dlib", "face_index": 0, "enhancer": "none",
        "background_enhancer": "none", "max_audio_seconds": 600,
    }  # fmt: skip
    values.update(kw)
    return [values[k] for k in FORM_FIELDS] + [False, ""]  # "Play while generating" off: no stream token


def _generate(base: str, values: list) -> tuple[int, str | None, list | None]:
    """POST the generate endpoint: (status, error message or None, output data or None)."""
    # /run/predict with fn_index: the route the attack used (the Generate button is the first event)
    r = httpx.post(f"{base}/run/predict", json={"data": values, "fn_index": 0}, timeout=300)
    body = r.json()
    return r.status_code, body.get("error"), body.get("data")


def _upload(base: str, name: str, data: bytes) -> str:
    r = httpx.post(f"{base}/upload", files=[("files", (name, data))], timeout=60)
    assert r.status_code == 200, r.text
    return r.json()[0]


def test_server_files_outside_the_upload_folder_are_refused(served):
    base, talker, upload_dir, tmp = served
    secret = tmp / "secret.wav"
    sample_wav(secret)  # a decodable recording outside any upload folder
    text_secret = tmp / "notes.txt"
    text_secret.write_text(f"{SECRET}\n")
    upload_dir.mkdir(parents=True, exist_ok=True)
    link = upload_dir / "innocent.wav"
    link.symlink_to(secret)
    picture = _upload(base, "face.png", sample_png(tmp / "up" / "face.png").read_bytes())
    speech = _upload(base, "speech.wav", sample_wav(tmp / "up" / "speech.wav").read_bytes())
    hostile = [
        "/etc/passwd",
        str(text_secret),
        str(secret),
        str(upload_dir / ".." / "secret.wav"),  # ../ out of the upload folder
        str(link),  # a symlink inside it that leads out
    ]
    fields = {"source": (picture, "face picture"), "driven_audio": (speech, "speech recording"),
              "ref_video": (None, "reference video")}  # fmt: skip
    calls_before = len(talker.calls)
    for field, (_, label) in fields.items():
        for path in hostile:
            values = {f: _file_value(p) if p else None for f, (p, _) in fields.items()}
            values[field] = _file_value(path)
            status, error, _ = _generate(base, _form(**values))
            assert status != 200 and error, (field, path, status)
            assert label in error and "refused" in error and "upload" in error, (field, path, error)
            assert SECRET not in error and "root:" not in error, error
    if GRADIO3:  # gradio 3 also takes a bare path string or an inline value marked is_file
        status, error, _ = _generate(base, _form(source=str(text_secret), driven_audio=_file_value(speech)))
        assert status != 200 and "refused" in error and SECRET not in error
    assert len(talker.calls) == calls_before  # the pipeline never saw any of them


def test_uploads_keep_their_names_and_missing_weights_read_as_one_line(served):
    from sadtalker_ext.pipeline import default_output

    base, talker, upload_dir, tmp = served
    picture = _upload(base, "face one.png", sample_png(tmp / "up2" / "face one.png").read_bytes())
    wav = sample_wav(tmp / "up2" / "speech.wav")
    inline_audio = {  # gradio 3's audio component may send the recording inline, with the user's name
        "name": "C:\\Users\\me\\my speech.wav",
        "data": "data:audio/wav;base64," + base64.b64encode(wav.read_bytes()).decode(),
        "is_file": False,
    }
    for audio, audio_name in ((_file_value(_upload(base, "speech.wav", wav.read_bytes()), "speech.wav"),
                               "speech.wav"), (inline_audio, "my speech.wav")):  # fmt: skip
        status, error, _ = _generate(
            base, _form(source=_file_value(picture, "face one.png"), driven_audio=audio)
        )
        assert status != 200 and error
        # the empty weight folders: a readable one-line message, no escaped line breaks, the way out named
        assert "\\n" not in error and "\n" not in error, error
        assert "SadTalker_V0.0.2_256.safetensors" in error and "Download missing weights" in error, error
        options = talker.calls[-1]
        assert Path(options.source).name == "face one.png" and Path(options.driven_audio).name == audio_name
        assert Path(options.source).resolve().is_relative_to(upload_dir.resolve())
        assert default_output(options, tmp / "results").name.startswith(f"face one__{Path(audio_name).stem}_")
        assert not Path(options.driven_audio).exists() or audio is not inline_audio  # scratch copy removed


def test_bad_base64_and_garbage_picture_get_clear_messages(served):
    base, _, _, tmp = served
    speech = _file_value(_upload(base, "speech.wav", sample_wav(tmp / "up3" / "speech.wav").read_bytes()))
    garbage = base64.b64encode(os.urandom(40 << 20)).decode()
    status, error, _ = _generate(base, _form(source=f"data:image/png;base64,{garbage}", driven_audio=speech))
    assert status != 200 and error and "not a picture" in error, error
    bad = {"name": "face.png", "data": "data:image/png;base64,!!!not base64!!!", "is_file": False}
    status, error, _ = _generate(base, _form(source=bad, driven_audio=speech))
    assert status != 200 and error and "face picture" in error and "not valid base64" in error, error


def test_first_view_shows_missing_weights_download_and_the_usable_detector(served):
    base, talker, _, _ = served
    config = httpx.get(f"{base}/config", timeout=60).json()
    props = [(c["type"], c.get("props", {})) for c in config["components"]]
    models = [p for t, p in props if t == "accordion" and p.get("label") == "Models"]
    assert models and models[0]["open"] is True  # the status is shown at once
    banners = [p for t, p in props if t == "markdown" and "Weight files are missing" in str(p.get("value"))]
    assert banners and banners[0].get("visible", True) is not False
    text = banners[0]["value"]
    assert "\n- `SadTalker_V0.0.2_256.safetensors`" in text and "Download missing weights" in text
    assert "Face detector: dlib" in text and "detection_Resnet50_Final.pth" in text
    from sadtalker_ext.app import dlib_usable

    assert dlib_usable(talker.dirs.gfpgan), "the test environments install dlib-bin + face-recognition-models"
    detector = [p for t, p in props if t == "dropdown" and p.get("label") == "Face detector"]
    assert detector and detector[0]["value"] == "dlib"
    buttons = [p.get("value") for t, p in props if t == "button"]
    assert "Download missing weights" in buttons
    audio = [t for t, p in props if str(p.get("label", "")).startswith("Speech recording")]
    assert audio == ["audio"]  # a player


def test_browser_upload_keeps_names_and_shows_the_error(served, driver):  # noqa: F811 - the fixture
    """Headless Chromium uploads a picture and a recording the way a user does and presses Generate: the
    pipeline gets both files under the user's names, and the missing-weights message appears in one line."""
    from selenium.webdriver.common.by import By

    base, talker, _, tmp = served
    picture = sample_png(tmp / "browser" / "my face.png")
    speech = sample_wav(tmp / "browser" / "hello world.wav")
    calls_before = len(talker.calls)
    driver.get(base)
    for elem_id, path in (("sadtalker_app_source", picture), ("sadtalker_app_audio", speech)):
        field = _wait(
            lambda e=elem_id: driver.find_elements(By.CSS_SELECTOR, f"#{e} input[type=file]"),
            what=f"file input of #{elem_id}",
            driver=driver,
        )[0]
        driver.execute_script("arguments[0].style.display = 'block'; arguments[0].hidden = false;", field)
        field.send_keys(str(path))
    player = (
        "#sadtalker_app_audio audio, #sadtalker_app_audio [data-testid=waveform-controls]"  # gradio 3 / 4
    )
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, player), what="audio player", driver=driver)
    # both uploads done: the picture shows (gradio 3: in the preview beside the file input)
    shown = "#sadtalker_app_preview img" if GRADIO3 else "#sadtalker_app_source img"
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, shown), what="the picture", driver=driver)
    driver.find_element(By.ID, "sadtalker_app_generate").click()
    _wait(lambda: len(talker.calls) > calls_before, timeout=60, what="a generation", driver=driver)
    options = talker.calls[-1]
    assert Path(options.source).name == "my face.png" and Path(options.driven_audio).name == "hello world.wav"
    toast = "//*[contains(text(), 'Weight files missing for these settings')]"  # the error pop-up's text
    text = _wait(
        lambda: [e.text for e in driver.find_elements(By.XPATH, toast) if e.text],
        what="the missing-weights message",
        driver=driver,
    )[0]
    assert "Download missing weights" in text and "SadTalker_V0.0.2_256.safetensors" in text
    # "Play while generating" (ticked) had started its player: the job ended without a video, so it is gone
    _wait(lambda: not driver.find_elements(By.CSS_SELECTOR, ".sadtalker-live"), what="no live player",
          driver=driver)  # fmt: skip
    assert len(talker.calls) == calls_before + 1
    assert "\\n" not in text  # gradio 3 showed the repr of a multi-line message: literal backslash-n


def test_real_generation_names_the_video_after_the_uploads(tiny_checkpoints, media, tmp_path, monkeypatch):  # noqa: F811
    """The real pipeline (stand-in weights, dlib landmarks) behind a launched app: two uploaded files with
    the user's names give a two-frame video named after them."""
    from sadtalker_ext import app
    from sadtalker_ext.pipeline import SadTalker
    from sadtalker_ext.video import probe

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_uploads"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    talker = SadTalker(
        checkpoint_dir=tiny_checkpoints, gfpgan_dir=tmp_path / "gf", result_dir=tmp_path / "out"
    )
    demo = app.build_app(talker)
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        base = f"http://127.0.0.1:{port}"
        picture = _upload(base, "my face.png", Path(media["picture"]).read_bytes())
        speech = _upload(base, "hello.wav", Path(media["cut"](2)).read_bytes())
        values = _form(source=_file_value(picture, "my face.png"), driven_audio=_file_value(speech, "hello.wav"),
                       seed=3)  # fmt: skip
        status, error, data = _generate(base, values)
    finally:
        demo.close()
    assert status == 200 and not error, error
    video = Path(data[1].splitlines()[0])  # the Details box starts with the video's path
    assert video.parent == tmp_path / "out" and video.name.startswith("my face__hello")
    assert video.is_file() and probe(video).num_frames == 2
