"""The extension in a stand-in host of SD.Next's shape (tests/webui/sdnext_flavour.py): tab, Generate, API,
send-to buttons and face restorers, where the A1111 names exist only as empty stubs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.webui import sdnext_flavour
from tests.webui.conftest import form_values, sample_png, sample_wav
from tests.webui.test_tab import _dependency_fn


@pytest.fixture
def sdnext(webui, monkeypatch, tmp_path):
    return sdnext_flavour.apply(monkeypatch, webui.root)


def test_host_adapter_finds_what_sdnext_really_offers(sdnext, webui):
    from sadtalker_ext.webui.host import Host, host_name

    host = Host()
    assert host_name() == "SD.Next"
    assert host.data_path() == webui.root.resolve() and host.data_path().is_absolute()
    assert host.outputs_root() == webui.root.resolve() / "outputs"
    assert host.models_path() == webui.root.resolve() / "models"
    assert host.paste_module() is sdnext.paste  # generation_parameters_copypaste, not the empty stub
    assert host.face_restorer_names() == [] and host.face_restorer("GFPGAN") is None
    assert "no GFPGAN/CodeFormer" in host.restorers_note() and "SD.Next" in host.restorers_note()
    with host.job("sadtalker_api"):
        pass
    assert sdnext.state.begun == [("sadtalker_api", 0)] and sdnext.state.ended == ["job-1"]


def test_tab_builds_and_generate_makes_a_video(sdnext, make_extension, webui, tmp_path):
    ext, _ = make_extension(frames=4)
    blocks = ext.ui_tabs()[0][0]
    comps = blocks.sadtalker_components  # the real tab, not the error tab
    assert webui.paste.paste_fields["sadtalker"]["init_img"] is comps["source"]
    config = blocks.get_config_file()
    notes = [
        c["props"]["value"]
        for c in config["components"]
        if c["props"].get("elem_id") == "sadtalker_host_notes"
    ]
    assert len(notes) == 1 and "no GFPGAN/CodeFormer" in notes[0]
    assert comps["restorer"].choices in (["None"], [("None", "None")])
    fn = _dependency_fn(blocks, comps["video"])
    pic, wav = sample_png(tmp_path / "in" / "face.png"), sample_wav(tmp_path / "in" / "hello.wav")
    video, info, html_log = fn.fn("task(sdn1)", *form_values(source=str(pic), driven_audio=str(wav), seed=3))
    assert Path(video).is_file() and Path(video).is_absolute()
    assert Path(video).is_relative_to(webui.root.resolve() / "outputs" / "SadTalker")
    assert "Seed: 3" in info and "Time:" in html_log
    assert sdnext.state.begun[0][0] == "sadtalker_generate"  # the name SD.Next's wrapper needs


def test_unexpected_errors_keep_the_output_count(sdnext, make_extension, webui, tmp_path):
    """SD.Next's wrapper appends its error to the extra_outputs list it was given: if it ever handled our
    errors, the second one would come back with one output too many and gradio would refuse it."""
    ext, _ = make_extension(fail=RuntimeError("kaboom"))
    blocks = ext.ui_tabs()[0][0]
    fn = _dependency_fn(blocks, blocks.sadtalker_components["video"])
    pic, wav = sample_png(tmp_path / "f.png"), sample_wav(tmp_path / "a.wav")
    for n in range(3):
        out = fn.fn(f"task(e{n})", *form_values(source=str(pic), driven_audio=str(wav)))
        assert len(out) == 3 and out[0] is None and "RuntimeError: kaboom" in out[-1]
    assert len(webui.errors.reported) == 3  # reported the host's way


def test_api_generate_returns_an_absolute_path(sdnext, make_extension, webui, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    make_extension(frames=2)
    app = FastAPI()
    webui.callbacks.app_started_callback(None, app)
    client = TestClient(app)
    out_dir = webui.root.resolve() / "outputs"
    out_dir.mkdir(parents=True, exist_ok=True)
    pic, wav = sample_png(out_dir / "face.png"), sample_wav(out_dir / "speech.wav")
    r = client.post("/sadtalker/v1/generate", json={"source": str(pic), "driven_audio": str(wav), "seed": 1})
    assert r.status_code == 200, r.text
    path = Path(r.json()["video_path"])
    assert path.is_absolute() and path.is_file()
    assert client.get("/sadtalker/v1/version").json()["face_restorers"] == []


def test_send_to_buttons_follow_sdnext_result_panels(sdnext, make_extension, webui):
    import gradio as gr

    ext, _ = make_extension()
    cb, pc = webui.callbacks, sdnext.paste
    with gr.Blocks(analytics_enabled=False) as page:
        for tab in ("txt2img", "img2img", "control", "extras"):
            gallery = gr.Gallery(elem_id=f"{tab}_gallery")
            cb.after_component_callback(gallery, elem_id=f"{tab}_gallery")
            with gr.Row(elem_id=f"image_buttons_{tab}") as row:
                for target in sdnext_flavour.SEND_BUTTON_TABS:
                    b = gr.Button(target, elem_id=f"{target}_tab")
                    cb.after_component_callback(b, elem_id=f"{target}_tab")
            last = row.children[-1]
            last = last.children[-1] if getattr(last, "children", None) else last
            assert last.elem_id == f"{tab}_send_to_sadtalker"
        # the caption tab's own buttons (no gallery before them) get no button of ours
        for target in ("txt2img", "caption"):
            b = gr.Button(target, elem_id=f"{target}_tab")
            cb.after_component_callback(b, elem_id=f"{target}_tab")
        ext.ui_tabs()
        pc.add_paste_fields("extras", gr.Image(), None)
        pc.connect_paste_params_buttons()
    ours = [b for b in pc.registered_param_bindings if b.tabname == "sadtalker"]
    assert [b.paste_button.elem_id for b in ours] == [
        f"{t}_send_to_sadtalker" for t in ("txt2img", "img2img", "control", "extras")
    ]
    config = page.get_config_file()
    ids = {c["id"]: c["props"].get("elem_id") for c in config["components"]}
    button = next(i for i, e in ids.items() if e == "control_send_to_sadtalker")
    deps = [d for d in config["dependencies"] if button in [_target(t) for t in d["targets"]]]
    image_dep = next(d for d in deps if d["js"] == "extract_image_from_gallery")
    assert [ids[i] for i in image_dep["outputs"]] == ["sadtalker_picture"]


def _target(t):
    return t[0] if isinstance(t, list | tuple) else t


def test_a_host_without_send_to_functions_says_so(sdnext, make_extension, webui, monkeypatch, caplog):
    import sys
    import types

    import gradio as gr

    monkeypatch.setitem(sys.modules, "modules.generation_parameters_copypaste", types.ModuleType("stub"))
    ext, _ = make_extension()
    with caplog.at_level(logging.WARNING), gr.Blocks(analytics_enabled=False):
        gallery = gr.Gallery(elem_id="txt2img_gallery")
        webui.callbacks.after_component_callback(gallery, elem_id="txt2img_gallery")
        b = gr.Button("caption", elem_id="caption_tab")
        webui.callbacks.after_component_callback(b, elem_id="caption_tab")
    with caplog.at_level(logging.WARNING):
        blocks = ext.ui_tabs()[0][0]
    assert blocks.sadtalker_components["source"] is not None  # the tab is still there
    config = blocks.get_config_file()
    notes = next(
        c["props"]["value"]
        for c in config["components"]
        if c["props"].get("elem_id") == "sadtalker_host_notes"
    )
    assert "Send to SadTalker is not available" in notes and "SD.Next" in notes
    assert "add_paste_fields" in notes
    assert any("Send to SadTalker is not available" in r.getMessage() for r in caplog.records)
    assert ext.send_to.buttons == {}


def test_a_tab_that_fails_to_build_shows_why(sdnext, make_extension, monkeypatch):
    from sadtalker_ext.webui import ui

    def broken(session):
        raise AttributeError("'functools.partial' object has no attribute '__name__'")

    monkeypatch.setattr(ui, "build_tab", broken)
    ext, _ = make_extension()
    tab, title, tab_id = ext.ui_tabs()[0]
    assert (title, tab_id) == ("SadTalker", "sadtalker")
    props = [c["props"] for c in tab.get_config_file()["components"]]
    error = next(p["value"] for p in props if p.get("elem_id") == "sadtalker_error")
    assert "functools.partial" in error and "SD.Next" in error
