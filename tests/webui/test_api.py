"""The HTTP API (/sadtalker/v1/...) on a FastAPI app, as on_app_started gives it."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.webui.conftest import FakeRestorer, sample_png, sample_wav


@pytest.fixture
def api(make_extension, webui):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    ext, talkers = make_extension(frames=3)
    app = FastAPI()
    webui.callbacks.app_started_callback(None, app)  # demo is None under --nowebui
    client = TestClient(app)
    client.ext, client.talkers = ext, talkers
    return client


TINY_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGNgYGAAAAAEAAH2FzhVAAAAAElFTkSuQmCC"
"""A 1x1 PNG (a real picture header, for requests whose picture is not the point)."""


def _b64(path: Path, data_url: str | None = None) -> str:
    text = base64.b64encode(path.read_bytes()).decode()
    return f"data:{data_url};base64,{text}" if data_url else text


def test_version_and_models(api, webui):
    webui.shared.face_restorers.append(FakeRestorer("CodeFormer"))
    r = api.get("/sadtalker/v1/version")
    assert r.status_code == 200
    body = r.json()
    from sadtalker_ext import __version__

    assert body["version"] == __version__ and body["api"] == 1 and body["face_restorers"] == ["CodeFormer"]
    r = api.get("/sadtalker/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["files"] and {f["state"] for f in body["files"]} == {"missing"}
    assert all(
        Path(f["path"]).parent in (Path(body["checkpoints"]), Path(body["gfpgan"])) for f in body["files"]
    )


def test_generate_with_base64_inputs_returns_path_and_base64(api, webui, tmp_path):
    pic = sample_png(tmp_path / "secret" / "face.png")
    wav = sample_wav(tmp_path / "secret" / "speech.wav")
    r = api.post(
        "/sadtalker/v1/generate",
        json={
            "source_base64": _b64(pic, "image/png"),
            "driven_audio_base64": _b64(wav),
            "seed": 3,
            "size": 256,
            "still": "true",
            "pose_style": 5,
            "return": "both",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    video = Path(body["video_path"])
    assert video.is_file() and video.resolve().is_relative_to(
        (webui.root / "outputs" / "SadTalker").resolve()
    )
    assert base64.b64decode(body["video_base64"]) == video.read_bytes()
    assert (
        "Seed: 3" in body["infotext"]
        and "Pose style: 5" in body["infotext"]
        and "Still: True" in body["infotext"]
    )
    opts = api.talkers[0].calls[0]
    assert opts.still is True and opts.pose_style == 5 and opts.extra["front_end"] == "api"
    assert Path(opts.source).suffix == ".png" and Path(opts.driven_audio).suffix == ".wav"
    assert not Path(opts.source).exists()  # the decoded inputs were temporary
    assert webui.call_queue.queue_lock.acquisitions >= 1


def test_generate_with_paths_in_allowed_folders(api, webui, tmp_path):
    inputs = webui.root / "outputs" / "txt2img-images"
    pic, wav = sample_png(inputs / "p.png"), sample_wav(inputs / "a.wav")
    r = api.post("/sadtalker/v1/generate", json={"source": str(pic), "driven_audio": str(wav)})
    assert r.status_code == 200, r.text
    assert r.json()["video_base64"] is None and Path(r.json()["video_path"]).is_file()
    # a folder from the setting is allowed too
    extra = tmp_path / "library"
    pic2 = sample_png(extra / "q.png")
    body = {"source": str(pic2), "driven_audio": str(wav)}
    assert api.post("/sadtalker/v1/generate", json=body).status_code == 403
    webui.shared.opts.data["sadtalker_api_allowed_dirs"] = str(extra)
    assert api.post("/sadtalker/v1/generate", json=body).status_code == 200


def test_paths_outside_allowed_folders_are_refused(api, webui, tmp_path):
    outputs = webui.root / "outputs"
    wav = sample_wav(outputs / "a.wav")
    secret = sample_png(tmp_path / "secret.png")
    link = outputs / "link.png"
    link.symlink_to(secret)
    dotdot = str(outputs / ".." / "secret.png")
    sample_png(webui.root / "secret.png")
    for candidate in (str(secret), dotdot, str(link), "/etc/passwd"):
        r = api.post("/sadtalker/v1/generate", json={"source": candidate, "driven_audio": str(wav)})
        assert r.status_code == 403, (candidate, r.text)
        assert "outside the folders" in r.json()["detail"]
    pic = sample_png(outputs / "p.png")
    for field in ("ref_video", "ref_pose_video"):  # every file field, the second reference video too
        body = {"source": str(pic), "driven_audio": str(wav), "ref_video": str(outputs / "p.png")}
        body.update({field: str(secret), "ref_mode": "pose+blink"})
        r = api.post("/sadtalker/v1/generate", json=body)
        assert r.status_code == 403 and field in r.json()["detail"], (field, r.text)
    r = api.post(
        "/sadtalker/v1/generate", json={"source": str(outputs / "nope.png"), "driven_audio": str(wav)}
    )
    assert r.status_code == 404
    assert not api.talkers  # nothing ran


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"source_base64": "!!!not base64!!!", "idle_seconds": 2}, 400, "not valid base64"),
        ({"idle_seconds": 2}, 422, "source"),
        ({"source_base64": "iVBORw0KGgo=", "idle_seconds": 2, "size": 300}, 422, "size must be 256 or 512"),
        ({"source_base64": "iVBORw0KGgo=", "idle_seconds": 2, "bogus": 1}, 422, "unknown option"),
        ({"source_base64": "iVBORw0KGgo=", "idle_seconds": 2, "output": "/tmp/x.mp4"}, 422, "output"),
        ({"source_base64": "iVBORw0KGgo=", "idle_seconds": 2, "return": "zip"}, 422, "return"),
        ({"source_base64": "iVBORw0KGgo="}, 422, "driven_audio"),
        (
            {"source_base64": TINY_PNG, "idle_seconds": 2, "face_restoration": "Nope"},
            422,
            "not available",
        ),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_validation_errors_are_4xx_with_message(api, body, status, needle):
    r = api.post("/sadtalker/v1/generate", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_missing_weights_answer_409(api, monkeypatch, tmp_path):
    from sadtalker_ext.errors import CheckpointError

    api.ext.session.factory = lambda *a: type(
        "T",
        (),
        {
            "precision_advice": None,
            "generate": lambda self, o, progress=None, cancel=None, frame_hook=None, on_exists=None: (
                _ for _ in ()
            ).throw(CheckpointError("missing weight files: X")),
        },
    )()
    pic = sample_png(tmp_path / "f.png")
    r = api.post("/sadtalker/v1/generate", json={"source_base64": _b64(pic), "idle_seconds": 1})
    assert r.status_code == 409 and "missing weight files" in r.json()["detail"]


def test_garbage_picture_is_refused_at_once_with_4xx(api, tmp_path):
    """40 MB of random bytes as source_base64: a clear 422 before the request joins the GPU queue."""
    import os

    wav = sample_wav(tmp_path / "a.wav")
    garbage = base64.b64encode(os.urandom(40 << 20)).decode()
    r = api.post(
        "/sadtalker/v1/generate",
        json={"source_base64": f"data:image/png;base64,{garbage}", "driven_audio_base64": _b64(wav)},
    )
    assert r.status_code == 422, r.text[:300]
    detail = r.json()["detail"]
    assert "source_base64" in detail and "not a picture" in detail and str(40 << 20) in detail
    assert not api.talkers or not api.talkers[0].calls  # nothing ran


def test_line_wrapped_base64_is_accepted(api, tmp_path):
    """`base64 face.png` wraps its output at 76 columns: the line breaks are not an error."""
    pic = sample_png(tmp_path / "face.png")
    wrapped = "\n".join(_b64(pic)[i : i + 76] for i in range(0, len(_b64(pic)), 76))
    r = api.post("/sadtalker/v1/generate", json={"source_base64": wrapped, "idle_seconds": 1})
    assert r.status_code == 200, r.text
    assert Path(r.json()["video_path"]).is_file()


def test_unexpected_error_answers_500_with_a_message(webui, make_extension):
    """A bug inside the run is a 500 whose JSON says what kind of failure it was, not a bare text page."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    make_extension(fail=RuntimeError("boom inside"))
    app = FastAPI()
    webui.callbacks.app_started_callback(None, app)
    client = TestClient(app, raise_server_exceptions=False)
    r = client.post("/sadtalker/v1/generate", json={"source_base64": TINY_PNG, "idle_seconds": 1})
    assert r.status_code == 500
    assert "RuntimeError" in r.json()["detail"] and "console" in r.json()["detail"]


def test_output_folder_problem_is_a_clear_422_before_the_pipeline_runs(api, webui, tmp_path):
    afile = tmp_path / "afile"
    afile.write_bytes(b"keep me")
    webui.shared.opts.data["sadtalker_result_dir"] = str(afile)
    pic = sample_png(tmp_path / "in" / "face.png")
    wav = sample_wav(tmp_path / "in" / "speech.wav")
    body = {"source_base64": _b64(pic, "image/png"), "driven_audio_base64": _b64(wav)}
    r = api.post("/sadtalker/v1/generate", json=body)
    assert r.status_code == 422
    assert f"{afile} is a file" in r.json()["detail"] and "output folder" in r.json()["detail"]
    assert all(not t.calls for t in api.talkers)
    assert afile.read_bytes() == b"keep me"
