"""The tab under the user's own words: the file names the user chose (not gradio's temp names) in progress
text, infotext and output name; settings help text that survives HTML; missing weights pointing at the tab's
own Download button. Stand-in host; the real gradio components' preprocessing."""

from __future__ import annotations

import base64
import html.parser
import json
import shutil
from pathlib import Path

import pytest

from sadtalker_ext.webui.jobs import DOWNLOAD_BOXES, UPLOAD_NAMES_SLOT
from tests.webui.conftest import form_values, sample_png, sample_wav

GRADIO4 = int(__import__("gradio").__version__.split(".")[0]) >= 4


def _fns(blocks):
    return list(blocks.fns.values()) if isinstance(blocks.fns, dict) else list(blocks.fns)


def _generate_fn(blocks):
    video = blocks.sadtalker_components["video"]
    return next(fn for fn in _fns(blocks) if video in fn.outputs and fn.fn is not None)


def _data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _as_uploaded(comps, picture: Path, audio: Path, tmp_path: Path):
    """What the Generate handler receives after the user uploaded ``picture`` and ``audio``: the payloads the
    browser sends for each gradio line, through the components' own ``preprocess``."""
    if GRADIO4:  # the browser first uploads each file into gradio's cache, then sends its file data
        from gradio.data_classes import FileData

        def cached(path: Path) -> FileData:
            dest = tmp_path / "gradio-cache" / "1f2e3d" / "tmp_9x7.bin"  # the cache's name, not the user's
            dest = dest.with_suffix(path.suffix)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)
            return FileData(path=str(dest), orig_name=path.name)

        return comps["source"].preprocess(cached(picture)), comps["driven_audio"].preprocess(cached(audio))
    # gradio 3.41: the picture as a data URL (no name at all), the recording as {name, data}
    pic = comps["source"].preprocess(_data_url(picture, "image/png"))
    aud = comps["driven_audio"].preprocess(
        {"name": audio.name, "data": _data_url(audio, "audio/wav"), "is_file": False}
    )
    return pic, aud


def test_user_file_names_reach_progress_infotext_and_output_name(make_extension, webui, tmp_path):
    seen = []
    ext, talkers = make_extension(frames=2, on_render=lambda done: seen.append(webui.shared.state.textinfo))
    blocks = ext.ui_tabs()[0][0]
    comps = blocks.sadtalker_components
    fn = _generate_fn(blocks)
    assert any(i is comps["upload_names"] for i in fn.inputs)  # the names travel with Generate
    picture = sample_png(tmp_path / "mine" / "face.png")
    audio = sample_wav(tmp_path / "mine" / "speech.wav")
    pic_value, aud_value = _as_uploaded(comps, picture, audio, tmp_path)
    if not GRADIO4:  # what gradio 3.41 hands over without the names
        assert Path(pic_value).name != "face.png" and Path(aud_value).name == "speech-0-100.wav"
    names = json.dumps({"sadtalker_picture": "face.png", "sadtalker_audio": "speech.wav"})
    video, info, html_log = fn.fn(
        "task(names)", *form_values(source=pic_value, driven_audio=aud_value), names
    )
    assert video and Path(video).is_file(), html_log
    assert "Picture: face.png" in info and "Audio: speech.wav" in info, info
    assert Path(video).name.startswith("face__speech"), video
    assert seen and all("face.png" in text for text in seen), seen
    used = Path(talkers[0].calls[-1].source)
    assert used.name == "face.png" and not used.exists()  # a temporary link, removed after the run
    if not GRADIO4:
        assert Path(pic_value).is_file() and Path(aud_value).is_file()  # gradio's own files are left alone


def test_without_names_the_tab_still_runs(make_extension, webui, tmp_path):
    """A picture sent from a gallery (or a host without our script) has no upload name: gradio's file is used."""
    ext, _ = make_extension(frames=2)
    blocks = ext.ui_tabs()[0][0]
    fn = _generate_fn(blocks)
    pic, wav = sample_png(tmp_path / "f.png"), sample_wav(tmp_path / "a.wav")
    for names in (UPLOAD_NAMES_SLOT, "", "{}", "not json", json.dumps(["face.png"])):
        video, info, html_log = fn.fn("task(x)", *form_values(source=str(pic), driven_audio=str(wav)), names)
        assert video and "Picture: f.png" in info, html_log


def test_upload_names_are_plain_file_names(tmp_path):
    from sadtalker_ext.webui.jobs import upload_names, with_user_names

    raw = {
        "sadtalker_picture": "../../etc/passwd",
        "sadtalker_audio": "C:\\Users\\me\\speech.mp3",
        "sadtalker_ref_video": "\x00\x07.hidden clip\n.mp4",
        "sadtalker_other": "x.png",
    }
    assert upload_names(json.dumps(raw)) == {
        "source": "passwd", "driven_audio": "speech.mp3", "ref_video": "hidden clip.mp4"
    }  # fmt: skip
    assert upload_names(json.dumps({"sadtalker_picture": "..", "sadtalker_audio": 7})) == {}
    assert upload_names(json.dumps({"sadtalker_picture": "a" * 400 + ".png"}))["source"] == "a" * 116 + ".png"
    # the user's name, with the file's own suffix where gradio changed the format
    wav = sample_wav(tmp_path / "gradio" / "speech-0-100.wav")
    jpeg = sample_png(tmp_path / "gradio" / "tmpab12cd.jpeg")
    form = with_user_names(
        {"source": str(jpeg), "driven_audio": str(wav), "ref_video": None},
        {"source": "face.jpg", "driven_audio": "speech.mp3", "ref_video": "clip.mp4"},
        tmp_path / "named",
    )
    assert Path(form["source"]).name == "face.jpg" and Path(form["driven_audio"]).name == "speech.wav"
    assert form["ref_video"] is None
    assert Path(form["source"]).read_bytes() == jpeg.read_bytes() and jpeg.is_file()
    assert Path(form["source"]).is_relative_to(tmp_path / "named")


class _Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)


def test_settings_help_text_survives_html(make_extension, webui):
    """The host renders a setting's label and help text as HTML: ``<outputs>`` would vanish as a tag."""
    from sadtalker_ext.webui.settings import SPECS

    make_extension()
    labels = webui.shared.opts.data_labels
    for spec in SPECS:
        info = labels[spec.key]
        parser = _Text()
        parser.feed(f"{info.label}{getattr(info, 'comment_after', '')}")
        shown = html.unescape("".join(parser.parts))
        assert spec.label in shown, spec.key
        assert not spec.info or spec.info in shown, (spec.key, shown)
    assert "outputs/SadTalker" in labels["sadtalker_result_dir"].comment_after


def _real_extension(webui, tmp_path):
    """The extension with the real pipeline and empty weight folders (given by the WebUI flags)."""
    from sadtalker_ext.webui.entry import Extension

    webui.shared.cmd_opts.sadtalker_checkpoint_dir = str(tmp_path / "no checkpoints")
    webui.shared.cmd_opts.sadtalker_gfpgan_dir = str(tmp_path / "no face models")
    ext = Extension(webui.root / "extensions" / "sadtalker")
    ext.register()
    webui.callbacks.ui_settings_callback()
    return ext


@pytest.mark.parametrize(
    ("overrides", "ticks"),
    [
        ({}, ["size 256", "'RetinaFace + FAN face detector'"]),
        ({"size": 512, "preprocess": "full", "face_detector": "dlib", "enhancer": "gfpgan"},
         ["size 512", "'Full-picture modes (full / extfull)'", "'GFPGAN face enhancer'"]),
    ],
)  # fmt: skip
def test_missing_weights_point_at_the_tabs_download_button(webui, tmp_path, overrides, ticks):
    ext = _real_extension(webui, tmp_path)
    blocks = ext.ui_tabs()[0][0]
    fn = _generate_fn(blocks)
    pic, wav = sample_png(tmp_path / "f.png"), sample_wav(tmp_path / "a.wav")
    video, _, html_log = fn.fn("task(w)", *form_values(source=str(pic), driven_audio=str(wav), **overrides))
    assert video is None and "class='error'" in html_log
    text = html.unescape(html_log)
    size = overrides.get("size", 256)
    assert f"SadTalker_V0.0.2_{size}.safetensors -> {tmp_path / 'no checkpoints'}" in text, text
    assert "Download missing weights" in text and "open Models" in text
    for tick in ticks:
        assert tick in text, (tick, text)
    assert "python -m" not in text and "sadtalker_ext.download" not in text
    # every box the message names exists in the Models section, under that label
    labels = {getattr(c, "label", None) for c in blocks.sadtalker_components.values()}
    assert set(DOWNLOAD_BOXES.values()) <= labels
    assert blocks.sadtalker_components["download"].value == "Download missing weights"


def test_download_button_fetches_enhancer_and_background_when_ticked(make_extension, webui, monkeypatch):
    import sadtalker_ext.download as dl
    from sadtalker_ext.download import DownloadReport
    from sadtalker_ext.webui.models_panel import download_weights

    got = []
    monkeypatch.setattr(
        dl, "download", lambda selection, dirs, **kw: got.append(selection) or DownloadReport([])
    )
    ext, _ = make_extension()
    blocks = ext.ui_tabs()[0][0]
    comps = blocks.sadtalker_components
    button = next(f for f in _fns(blocks) if comps["download_log"] in f.outputs and f.fn is not None)
    assert [c.elem_id for c in button.inputs[-2:]] == ["sadtalker_dl_enhancer", "sadtalker_dl_background"]
    wrapped = ext.host.wrap_gpu_call(lambda *a: download_weights(ext.session, *a), [None])
    wrapped("task(d)", ["512"], False, False, True, True)
    assert got[-1].sizes == (512,) and got[-1].enhancer and got[-1].background and not got[-1].detector
