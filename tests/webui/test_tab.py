"""The tab, settings and generation through the host's queue wrapper (stand-in host, fake pipeline)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from tests.webui.conftest import FakeRestorer, form_values, sample_png, sample_wav


def _fns(blocks):
    """Event functions of a Blocks (a list in gradio 3.41, a dict by id in gradio 4)."""
    return list(blocks.fns.values()) if isinstance(blocks.fns, dict) else list(blocks.fns)


def _dependency_fn(blocks, output_component):
    """The function the tab wired to produce ``output_component``."""
    for fn in _fns(blocks):
        if output_component in fn.outputs and fn.fn is not None:
            return fn
    raise AssertionError("no dependency produces that component")


def test_callbacks_registered_positionally(make_extension, webui):
    make_extension()
    cbs = webui.callbacks.callback_map
    for category in ("callbacks_ui_tabs", "callbacks_ui_settings", "callbacks_app_started",
                     "callbacks_after_component", "callbacks_script_unloaded"):  # fmt: skip
        assert len(cbs[category]) == 1, category


def test_settings_section_and_defaults(make_extension, webui):
    from sadtalker_ext.webui.settings import SPECS, WebUISettings

    webui.shared.face_restorers.extend([FakeRestorer("CodeFormer"), FakeRestorer("GFPGAN")])
    ext, _ = make_extension()
    labels = webui.shared.opts.data_labels
    for spec in SPECS:
        assert spec.key in labels
        assert labels[spec.key].section == ("sadtalker", "SadTalker")
        assert webui.shared.opts.data[spec.key] == spec.default
    restricted = {k for k, v in labels.items() if v.restrict_api and k.startswith("sadtalker")}
    assert restricted == {"sadtalker_result_dir", "sadtalker_api_allowed_dirs"}
    assert webui.shared.opts.set("sadtalker_api_allowed_dirs", "/", is_api=True) is False
    args = labels["sadtalker_default_restorer"].component_args
    assert callable(args) and args()["choices"] == ["None", "CodeFormer", "GFPGAN"]
    webui.shared.opts.data["sadtalker_default_size"] = 512
    webui.shared.opts.data["sadtalker_api_allowed_dirs"] = "/a;/b\n/c"
    s = WebUISettings.read(ext.host)
    assert s.default_size == 512 and s.api_allowed_dirs == ("/a", "/b", "/c")
    webui.shared.opts.data.update(
        sadtalker_default_size="512", sadtalker_dtype="float8", sadtalker_default_batch_size="x"
    )
    s = WebUISettings.read(ext.host)  # hand-edited config.json values: parsed, or the default
    assert (s.default_size, s.dtype, s.default_batch_size) == (512, "float32", 2)


def test_tab_builds_with_defaults_from_settings(make_extension, webui):
    import gradio as gr

    webui.shared.face_restorers.append(FakeRestorer("GFPGAN"))
    make_extension()
    webui.shared.opts.data.update(sadtalker_default_size=512, sadtalker_default_preprocess="full",
                                  sadtalker_default_restorer="GFPGAN", sadtalker_default_batch_size=4)  # fmt: skip
    tabs = webui.callbacks.ui_tabs_callback()
    assert len(tabs) == 1
    blocks, title, elem_id = tabs[0]
    assert isinstance(blocks, gr.Blocks) and title == "SadTalker" and elem_id == "sadtalker"
    comps = blocks.sadtalker_components
    assert comps["size"].value == 512 and comps["preprocess"].value == "full"
    assert comps["restorer"].value == "GFPGAN" and comps["batch_size"].value == 4
    enhancers = [c[0] if isinstance(c, tuple | list) else c for c in comps["enhancer"].choices]
    assert enhancers == ["none", "gfpgan"]  # RestoreFormer is refused by the pipeline: not offered
    config = blocks.get_config_file()
    js = [d.get("js") for d in config["dependencies"]]
    assert {"sadtalker_submit", "sadtalker_submit_batch", "sadtalker_submit_download"} <= set(js)
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert {"sadtalker_picture", "sadtalker_audio", "sadtalker_ref_video", "sadtalker_video",
            "sadtalker_model_status", "sadtalker_batch_pictures"} <= ids  # fmt: skip
    # the picture input is the send-to target
    assert webui.paste.paste_fields["sadtalker"]["init_img"] is comps["source"]


def test_generate_through_queue_wrapper(make_extension, webui, tmp_path):
    from sadtalker_ext.webui.jobs import STAGES

    seen = []
    ext, talkers = make_extension(frames=6, on_render=lambda done: seen.append(_snapshot(webui)))
    blocks = ext.ui_tabs()[0][0]
    comps = blocks.sadtalker_components
    fn = _dependency_fn(blocks, comps["video"])
    assert fn.inputs[0] is comps["id_task"]
    pic = sample_png(tmp_path / "in" / "face.png")
    wav = sample_wav(tmp_path / "in" / "hello.wav")
    gc_before = _gc_calls()
    out = fn.fn("task(abc123)", *form_values(source=str(pic), driven_audio=str(wav), seed=7, batch_size=2))
    video, info, html_log = out
    assert video and Path(video).is_file()
    day = datetime.now().strftime("%Y-%m-%d")
    assert Path(video).parent == webui.root / "outputs" / "SadTalker" / day
    assert Path(video).name.startswith("face__hello_")
    assert "Seed: 7" in info and "Picture: face.png" in info and "Frames: 6" in info
    assert "Saved to" in html_log and "Time taken" in html_log  # the wrapper's stats on the last output
    # progress went through shared.state while rendering
    assert [s["job_count"] for s in seen] == [len(STAGES)] * 3
    render_job = STAGES.index("render")
    assert [s["job_no"] for s in seen] == [render_job] * 3
    assert [s["sampling_step"] for s in seen] == [2, 4, 6] and all(s["sampling_steps"] == 6 for s in seen)
    assert "rendering frames" in seen[0]["textinfo"]
    # live preview: the newest rendered frame, as a PIL image
    state = webui.shared.state
    assert state.id_live_preview >= 1 and np.asarray(state.current_image).shape == (8, 6, 3)
    # host job bookkeeping and VRAM release
    assert "task(abc123)" in webui.progress.finished_tasks
    assert _gc_calls() > gc_before
    assert len(talkers) == 1 and talkers[0].unloads == 0  # models kept (default setting)
    fn.fn("task(second)", *form_values(source=str(pic), driven_audio=str(wav)))
    assert len(talkers) == 1 and len(talkers[0].calls) == 2  # same pipeline object reused


def test_cpu_winograd_setting_reaches_a_new_pipeline(make_extension, webui, tmp_path):
    """Turning the setting off rebuilds the pipeline with direct convolutions (SadTalker(winograd=False))."""
    ext, talkers = make_extension()
    pic, wav = sample_png(tmp_path / "f.png"), sample_wav(tmp_path / "a.wav")
    from sadtalker_ext.webui.jobs import generate_single

    wrapped = ext.host.wrap_gpu_call(lambda *a: generate_single(ext.session, *a), [None, ""])
    wrapped("task(a)", *form_values(source=str(pic), driven_audio=str(wav)))
    webui.shared.opts.data["sadtalker_cpu_winograd"] = False
    wrapped("task(b)", *form_values(source=str(pic), driven_audio=str(wav)))
    assert [t.winograd for t in talkers] == [True, False] and talkers[0].unloads == 1


def test_unload_after_run_when_setting_off(make_extension, webui, tmp_path):
    ext, talkers = make_extension()
    webui.shared.opts.data["sadtalker_keep_models_loaded"] = False
    pic, wav = sample_png(tmp_path / "f.png"), sample_wav(tmp_path / "a.wav")
    from sadtalker_ext.webui.jobs import generate_single

    wrapped = ext.host.wrap_gpu_call(lambda *a: generate_single(ext.session, *a), [None, ""])
    video, _, _ = wrapped("task(x)", *form_values(source=str(pic), driven_audio=str(wav)))
    assert video and talkers[0].unloads == 1 and ext.session.loaded() == []


def test_interrupt_stops_and_flags_reset(make_extension, webui, tmp_path):
    ext, talkers = make_extension(
        frames=8, on_render=lambda done: done >= 2 and webui.shared.state.interrupt()
    )
    blocks = ext.ui_tabs()[0][0]
    fn = _dependency_fn(blocks, blocks.sadtalker_components["video"])
    pic, wav = sample_png(tmp_path / "f.png"), sample_wav(tmp_path / "a.wav")
    video, info, html_log = fn.fn("task(i)", *form_values(source=str(pic), driven_audio=str(wav)))
    assert video is None and info == "" and "Interrupted" in html_log
    assert len(talkers[0].hook_outputs) == 1  # stopped after the first chunk
    assert webui.shared.state.interrupted is False  # the wrapper resets the flags afterwards


def test_interrupt_button_sets_host_flag(make_extension, webui):
    ext, _ = make_extension()
    blocks = ext.ui_tabs()[0][0]
    button = blocks.sadtalker_components["generate"]
    del button
    interrupt = next(fn for fn in _fns(blocks) if fn.fn is not None and not fn.inputs and not fn.outputs)
    interrupt.fn()
    assert webui.shared.state.interrupted is True


def test_face_restoration_through_frame_hook(make_extension, webui, tmp_path):
    restorer = FakeRestorer("GFPGAN")
    webui.shared.face_restorers.append(restorer)
    ext, talkers = make_extension(frames=4)
    pic, wav = sample_png(tmp_path / "f.png"), sample_wav(tmp_path / "a.wav")
    from sadtalker_ext.webui.jobs import generate_single

    wrapped = ext.host.wrap_gpu_call(lambda *a: generate_single(ext.session, *a), [None, ""])
    video, info, _ = wrapped(
        "task(r)", *form_values(source=str(pic), driven_audio=str(wav), restorer="GFPGAN")
    )
    assert video and "Face restoration: GFPGAN" in info
    assert restorer.calls == 4
    first = talkers[0].hook_outputs[0]
    assert first.dtype == np.uint8 and np.all(first == 255 - 40)  # frames came back restored


def test_unexpected_error_becomes_error_html(make_extension, webui, tmp_path):
    ext, _ = make_extension(fail=RuntimeError("kaboom"))
    blocks = ext.ui_tabs()[0][0]
    fn = _dependency_fn(blocks, blocks.sadtalker_components["video"])
    pic, wav = sample_png(tmp_path / "f.png"), sample_wav(tmp_path / "a.wav")
    out = fn.fn("task(e)", *form_values(source=str(pic), driven_audio=str(wav)))
    assert len(out) == 3 and out[0] is None and "RuntimeError: kaboom" in out[-1]
    assert webui.errors.reported  # the host logged the traceback


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({}, "Upload a face picture"), ({"source": "x.png"}, "Upload a speech recording"),
     ({"source": "x.png", "driven_audio": "a.wav", "pose_style": 99}, "pose_style")],
)  # fmt: skip
def test_form_validation_messages(make_extension, webui, overrides, message):
    ext, talkers = make_extension()
    from sadtalker_ext.webui.jobs import generate_single

    wrapped = ext.host.wrap_gpu_call(lambda *a: generate_single(ext.session, *a), [None, ""])
    video, _, html_log = wrapped("task(v)", *form_values(**overrides))
    assert video is None and message in html_log and not talkers


def test_batch_all_pairs_with_skip(make_extension, webui, tmp_path):
    state = webui.shared.state
    calls = {"n": 0}

    def on_render(done):
        calls["n"] += 1
        if calls["n"] == 1:
            state.skip()  # skip the first video only

    ext, talkers = make_extension(frames=2, on_render=on_render)
    blocks = ext.ui_tabs()[0][0]
    fn = next(f for f in _fns(blocks) if f.fn is not None and len(f.inputs) == 25)
    pics = [str(sample_png(tmp_path / f"p{i}.png")) for i in range(2)]
    auds = [str(sample_wav(tmp_path / f"a{i}.wav")) for i in range(2)]
    files, infos, html_log = fn.fn("task(b)", pics, auds, *form_values())
    assert len(talkers[0].calls) == 4  # 2 pictures x 2 recordings
    assert len(files) == 3 and "3 of 4 videos made" in html_log and "skipped" in html_log
    assert len(infos.splitlines()) == 3


def test_download_button_uses_downloader_with_progress(make_extension, webui, monkeypatch):
    import sadtalker_ext.download as dl
    from sadtalker_ext.download import DownloadReport, Progress
    from sadtalker_ext.webui.models_panel import download_weights

    got = {}

    def fake_download(selection, dirs, progress=None, cancel=None, **kw):
        got.update(selection=selection, dirs=dirs)
        progress(Progress("SadTalker_V0.0.2_256.safetensors", 1, 1, "download", 50_000_000, 100_000_000))
        got["textinfo"] = webui.shared.state.textinfo
        got["step"] = (webui.shared.state.sampling_step, webui.shared.state.sampling_steps)
        return DownloadReport([])

    monkeypatch.setattr(dl, "download", fake_download)
    ext, _ = make_extension()
    wrapped = ext.host.wrap_gpu_call(lambda *a: download_weights(ext.session, *a), [None])
    status, log_html = wrapped("task(d)", ["256", "512"], True, False)
    assert got["selection"].sizes == (256, 512) and got["selection"].full and not got["selection"].detector
    assert got["dirs"] == ext.session.model_dirs()
    assert "50/100 MB" in got["textinfo"] and got["step"] == (50_000_000, 100_000_000)
    assert "sadtalker-status" in status and "present" in log_html


def test_model_dirs_follow_flags_and_models_folder(make_extension, webui, tmp_path):
    ext, _ = make_extension()
    (webui.root / "models" / "SadTalker").mkdir(parents=True)
    assert ext.session.model_dirs().checkpoints == webui.root / "models" / "SadTalker"
    webui.shared.cmd_opts.sadtalker_checkpoint_dir = str(tmp_path / "ck")
    assert ext.session.model_dirs().checkpoints == tmp_path / "ck"


def test_device_honours_use_cpu(make_extension, webui):
    ext, _ = make_extension()
    webui.shared.cmd_opts.use_cpu = ["sadtalker"]
    assert str(ext.host.device()) == "cpu"


def _snapshot(webui):
    s = webui.shared.state
    return {k: getattr(s, k) for k in ("job_count", "job_no", "sampling_step", "sampling_steps", "textinfo")}


def _gc_calls():
    from modules import devices

    return devices.gc_calls


def test_send_to_buttons_for_txt2img_img2img_extras(make_extension, webui):
    import gradio as gr

    ext, _ = make_extension()
    cb = webui.callbacks
    galleries = {}
    with gr.Blocks(analytics_enabled=False):
        for tab in ("txt2img", "img2img", "extras"):
            galleries[tab] = gr.Gallery(elem_id=f"{tab}_gallery")
            cb.after_component_callback(galleries[tab], elem_id=f"{tab}_gallery")
            with gr.Row(elem_id=f"image_buttons_{tab}") as row:
                for target in ("img2img", "inpaint", "extras"):
                    b = gr.Button(target, elem_id=f"{tab}_send_to_{target}")
                    cb.after_component_callback(b, elem_id=f"{tab}_send_to_{target}")
            last = row.children[-1]  # a ToolButton is a form component: gradio wraps it in a Form
            last = last.children[-1] if getattr(last, "children", None) else last
            assert last.elem_id == f"{tab}_send_to_sadtalker"  # placed in the host's button row
        ext.ui_tabs()
    bindings = webui.paste.registered_param_bindings
    assert [b.paste_button.elem_id for b in bindings] == [f"{t}_send_to_sadtalker" for t in galleries]
    assert all(b.tabname == "sadtalker" for b in bindings)
    assert [b.source_image_component for b in bindings] == list(galleries.values())
    assert webui.paste.paste_fields["sadtalker"]["init_img"].elem_id == "sadtalker_picture"


def test_send_to_buttons_connect_beside_the_host_paste_fields(make_extension, webui):
    """ui.create_ui() order: host tabs register their paste fields (extras with None), our tab and buttons,
    then connect_paste_params_buttons() wires every binding; it must not fail on ours (a failure there
    takes the whole WebUI page down)."""
    import gradio as gr

    ext, _ = make_extension()
    cb, pc = webui.callbacks, webui.paste
    with gr.Blocks(analytics_enabled=False):
        for tab in ("txt2img", "img2img", "extras"):
            gallery = gr.Gallery(elem_id=f"{tab}_gallery")
            cb.after_component_callback(gallery, elem_id=f"{tab}_gallery")
            b = gr.Button("extras", elem_id=f"{tab}_send_to_extras")
            cb.after_component_callback(b, elem_id=f"{tab}_send_to_extras")
        prompt = gr.Textbox(label="Prompt")
        pc.add_paste_fields("txt2img", None, [(prompt, "Prompt")])
        pc.add_paste_fields("img2img", gr.Image(), [(prompt, "Prompt")])
        pc.add_paste_fields("extras", gr.Image(), None)
        ext.ui_tabs()
        pc.connect_paste_params_buttons()
    ours = [b for b in pc.registered_param_bindings if b.tabname == "sadtalker"]
    assert len(ours) == 3 and all(b.source_tabname is None for b in ours)


def test_send_to_ignores_rows_without_a_gallery(make_extension, webui):
    import gradio as gr

    make_extension()
    with gr.Blocks(analytics_enabled=False):
        b = gr.Button("x", elem_id="txt2img_send_to_extras")
        webui.callbacks.after_component_callback(b, elem_id="txt2img_send_to_extras")
    assert webui.paste.registered_param_bindings == []


def test_send_to_wiring_survives_the_hosts_connect_with_extras(make_extension, webui):
    """Regression (real A1111 1.10.1): the host registers extras with paste fields None and txt2img with
    infotext fields; connect_paste_params_buttons() after all tabs must not raise, and each 🎤 button must
    get exactly the image transfer plus the tab switch (no infotext copy into our field-less tab)."""
    import gradio as gr

    ext, _ = make_extension()
    cb, pc = webui.callbacks, webui.paste
    with gr.Blocks(analytics_enabled=False) as page:
        prompt = gr.Textbox(elem_id="txt2img_prompt")
        pc.add_paste_fields("txt2img", None, [(prompt, "Prompt")])
        for tab in ("txt2img", "img2img", "extras"):
            gallery = gr.Gallery(elem_id=f"{tab}_gallery")
            cb.after_component_callback(gallery, elem_id=f"{tab}_gallery")
            with gr.Row():
                b = gr.Button("extras", elem_id=f"{tab}_send_to_extras")
                cb.after_component_callback(b, elem_id=f"{tab}_send_to_extras")
        pc.add_paste_fields("img2img", gr.Image(elem_id="img2img_image"), [])
        pc.add_paste_fields("extras", gr.Image(elem_id="extras_image"), None)
        ext.ui_tabs()
        pc.connect_paste_params_buttons()
    config = page.get_config_file()
    ids = {c["id"]: c["props"].get("elem_id") for c in config["components"]}
    for tab in ("txt2img", "img2img", "extras"):
        button = next(i for i, e in ids.items() if e == f"{tab}_send_to_sadtalker")
        deps = [d for d in config["dependencies"] if button in [_target_id(t) for t in d["targets"]]]
        assert sorted(d["js"] or "" for d in deps) == ["extract_image_from_gallery", "switch_to_sadtalker"]
        image_dep = next(d for d in deps if d["js"] == "extract_image_from_gallery")
        assert [ids[i] for i in image_dep["inputs"]] == [f"{tab}_gallery"]
        assert [ids[i] for i in image_dep["outputs"]] == ["sadtalker_picture"]


def _target_id(target):
    """A dependency target: an int on gradio 3, ``(id, event)`` on gradio 4."""
    return target[0] if isinstance(target, list | tuple) else target


def test_picture_as_an_image_reaches_the_pipeline_as_a_file(make_extension, webui, tmp_path):
    """gradio 4 hands the tab's picture over as a PIL image: it is written to a PNG for the run, then removed."""
    from PIL import Image

    seen = []

    def on_render(done):
        source = Path(talkers[0].calls[-1].source)
        seen.append((source, source.is_file() and Image.open(source).getpixel((3, 3))))

    ext, talkers = make_extension(frames=2, on_render=on_render)
    blocks = ext.ui_tabs()[0][0]
    fn = _dependency_fn(blocks, blocks.sadtalker_components["video"])
    wav = sample_wav(tmp_path / "in" / "hello.wav")
    picture = Image.new("RGB", (20, 24), (30, 140, 220))
    video, info, html_log = fn.fn("task(pil)", *form_values(source=picture, driven_audio=str(wav)))
    assert video and Path(video).is_file(), html_log
    source, pixel_while_rendering = seen[0]
    assert source.suffix == ".png" and pixel_while_rendering == (30, 140, 220)
    assert not source.exists()  # removed after the run
    assert "Picture: picture.png" in info
    assert talkers[0].calls[-1].source == str(source)


@pytest.mark.skipif(
    int(__import__("gradio").__version__.split(".")[0]) < 4,
    reason="gradio 4 only: gradio 3.41 image inputs never call processing_utils.save_pil_to_cache",
)
def test_picture_input_under_forges_save_pil_to_cache(make_extension, webui, tmp_path, monkeypatch):
    """Forge replaces gradio's ``processing_utils.save_pil_to_cache`` with a function that has no ``name``
    parameter (modules/ui_tempdir.py); an upload into the picture input must still reach Generate."""
    import gradio.processing_utils
    from gradio.data_classes import FileData

    def forge_like_save(pil_image, cache_dir=None, format="png"):  # the host's signature
        path = tmp_path / "forge_cache" / "img.png"
        path.parent.mkdir(exist_ok=True)
        pil_image.save(path)
        return str(path)

    monkeypatch.setattr(gradio.processing_utils, "save_pil_to_cache", forge_like_save)
    ext, talkers = make_extension(frames=2)
    blocks = ext.ui_tabs()[0][0]
    comps = blocks.sadtalker_components
    upload = sample_png(tmp_path / "upload" / "face.png", color=(1, 2, 3))
    value = comps["source"].preprocess(FileData(path=str(upload)))
    fn = _dependency_fn(blocks, comps["video"])
    wav = sample_wav(tmp_path / "in" / "hello.wav")
    video, _, html_log = fn.fn("task(forge)", *form_values(source=value, driven_audio=str(wav)))
    assert video and Path(video).is_file(), html_log
    assert len(talkers[0].calls) == 1


def test_precision_setting_reaches_the_pipeline_on_the_cpu(make_extension, webui):
    """bfloat16 is offered on CPUs too (AMX / AVX-512-BF16 make it several times faster); float16 needs a GPU,
    so a CPU host builds float32 for it. The setting's help gives the measured speed and error."""
    from sadtalker_ext.precision import BFLOAT16_ERROR, BFLOAT16_SPEED
    from sadtalker_ext.webui.settings import SPECS, WebUISettings

    ext, talkers = make_extension()
    (spec,) = [s for s in SPECS if s.key == "sadtalker_dtype"]
    assert BFLOAT16_SPEED in spec.info and BFLOAT16_ERROR in spec.info
    for chosen, built in (("bfloat16", "bfloat16"), ("float16", "float32"), ("float32", "float32")):
        webui.shared.opts.data["sadtalker_dtype"] = chosen
        ext.session.talker(WebUISettings.read(ext.host))
        assert str(ext.host.device()) == "cpu" and talkers[-1].dtype == built, chosen
