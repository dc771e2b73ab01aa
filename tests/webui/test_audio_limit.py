"""WebUI: the maximum audio length is a setting that reaches every tab run, the default of the API's
``max_audio_seconds`` field; the API refuses the unsupported 'RestoreFormer' enhancer by name."""

from __future__ import annotations

import base64

from tests.webui.conftest import form_values, sample_png, sample_wav


def _b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_setting_registered_and_read(make_extension, webui):
    from sadtalker_ext.options import MAX_AUDIO_SECONDS
    from sadtalker_ext.webui.settings import WebUISettings

    ext, _ = make_extension()
    label = webui.shared.opts.data_labels["sadtalker_max_audio_seconds"]
    assert "Maximum audio length" in label.label and label.section == ("sadtalker", "SadTalker")
    assert webui.shared.opts.data["sadtalker_max_audio_seconds"] == MAX_AUDIO_SECONDS
    webui.shared.opts.data["sadtalker_max_audio_seconds"] = "1800"
    assert WebUISettings.read(ext.host).max_audio_seconds == 1800.0
    for bad in ("x", -3, 0, float("nan")):  # hand-edited config.json: the default
        webui.shared.opts.data["sadtalker_max_audio_seconds"] = bad
        assert WebUISettings.read(ext.host).max_audio_seconds == MAX_AUDIO_SECONDS


def test_tab_and_batch_runs_use_the_setting(make_extension, webui, tmp_path):
    from sadtalker_ext.webui.jobs import generate_batch, generate_single

    ext, talkers = make_extension()
    webui.shared.opts.data["sadtalker_max_audio_seconds"] = 1234
    pic, wav = sample_png(tmp_path / "f.png"), sample_wav(tmp_path / "a.wav")
    wrapped = ext.host.wrap_gpu_call(lambda *a: generate_single(ext.session, *a), [None, ""])
    video, _, _ = wrapped("task(a)", *form_values(source=str(pic), driven_audio=str(wav)))
    assert video and talkers[-1].calls[-1].max_audio_seconds == 1234.0
    webui.shared.opts.data["sadtalker_max_audio_seconds"] = 99
    generate_batch(ext.session, "task(b)", [str(pic)], [str(wav)], *form_values())
    assert talkers[-1].calls[-1].max_audio_seconds == 99.0
    # an idle length over the setting is refused with a message naming the option
    webui.shared.opts.data["sadtalker_max_audio_seconds"] = 10
    _, _, html = wrapped("task(c)", *form_values(source=str(pic), idle_mode=True, idle_seconds=20))
    assert "max_audio_seconds" in html and "Maximum audio length" in html


def test_api_field_defaults_to_the_setting(make_extension, webui, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    _ext, talkers = make_extension(frames=2)
    app = FastAPI()
    webui.callbacks.app_started_callback(None, app)
    client = TestClient(app)
    webui.shared.opts.data["sadtalker_max_audio_seconds"] = 900
    body = {
        "source_base64": _b64(sample_png(tmp_path / "f.png")),
        "driven_audio_base64": _b64(sample_wav(tmp_path / "a.wav")),
    }
    r = client.post("/sadtalker/v1/generate", json=body)
    assert r.status_code == 200, r.text
    assert talkers[-1].calls[-1].max_audio_seconds == 900.0
    r = client.post("/sadtalker/v1/generate", json={**body, "max_audio_seconds": 1500})
    assert r.status_code == 200, r.text
    assert talkers[-1].calls[-1].max_audio_seconds == 1500.0
    r = client.post("/sadtalker/v1/generate", json={**body, "max_audio_seconds": -1})
    assert r.status_code == 422 and "max_audio_seconds" in r.json()["detail"]
    r = client.post("/sadtalker/v1/generate", json={**body, "enhancer": "RestoreFormer"})
    assert r.status_code == 422
    assert "'RestoreFormer' is not supported; available: none, gfpgan" in r.json()["detail"]
