"""Standalone app: form -> options, model status text, gradio-less start, and the UI build when gradio exists."""

from __future__ import annotations

import builtins
import logging

import pytest

from sadtalker_ext import app
from sadtalker_ext.errors import InputError
from sadtalker_ext.pipeline import SadTalker


def _form(**kw):
    values = {
        "source": "/pics/face.png", "driven_audio": "/audio/a.wav", "idle_mode": False, "idle_seconds": 5,
        "ref_video": None, "ref_mode": "pose", "preprocess": "full", "still": True, "pose_style": 3.0,
        "expression_scale": 1.2, "size": 256, "batch_size": 4.0, "use_blink": False, "seed": -1,
        "input_yaw": "0 20, -20", "input_pitch": "", "input_roll": "", "face_detector": "dlib",
        "face_index": 1.0, "enhancer": "none", "background_enhancer": "none", "max_audio_seconds": 600.0,
    }  # fmt: skip
    values.update(kw)
    assert set(values) == set(app.FORM_FIELDS)
    return values


def test_form_to_options():
    opts = app.options_from_form(_form())
    assert (
        opts.source == "/pics/face.png" and opts.driven_audio == "/audio/a.wav" and opts.idle_seconds is None
    )
    assert opts.preprocess == "full" and opts.still and opts.pose_style == 3 and opts.batch_size == 4
    assert opts.seed is None and opts.input_yaw == (0.0, 20.0, -20.0) and opts.input_pitch is None
    assert opts.face_index == 1 and not opts.use_blink and opts.extra == {"front_end": "app"}
    assert app.options_from_form(_form(seed=42.0)).seed == 42


def test_form_idle_and_reference_modes():
    idle = app.options_from_form(_form(idle_mode=True, idle_seconds=3))
    assert idle.driven_audio is None and idle.idle_seconds == 3.0
    ref = app.options_from_form(_form(driven_audio=None, ref_video={"path": "/v/ref.mp4"}, ref_mode="all"))
    assert ref.ref_video == "/v/ref.mp4" and ref.ref_mode == "all"
    plain = app.options_from_form(_form(ref_mode="blink"))  # no video: the mode is ignored
    assert plain.ref_video is None and plain.ref_mode == "pose"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"source": None}, "picture"),
        ({"driven_audio": None}, "speech"),
        ({"pose_style": 80}, "pose_style"),
        ({"input_yaw": "abc"}, "input_yaw"),
    ],
)
def test_form_errors(change, needle):
    with pytest.raises(InputError, match=needle):
        app.options_from_form(_form(**change))


def test_status_markdown_lists_files(tmp_path):
    talker = SadTalker(checkpoint_dir=tmp_path / "ck", gfpgan_dir=tmp_path / "gf")
    text = app.status_markdown(talker)
    for name in ("SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar", "GFPGANv1.4.pth"):
        assert name in text
    assert "**missing**" in text and "python -m sadtalker_ext.download" in text
    assert str(tmp_path / "ck") in text and "models in memory: none" in text


def test_main_without_gradio(monkeypatch, caplog):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "gradio" or name.startswith("gradio."):
            raise ImportError("No module named 'gradio'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with caplog.at_level(logging.ERROR):
        assert app.main([]) == 1
    assert "pip install gradio" in caplog.text


def test_parser_defaults_are_local_only():
    args = app.build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.share is False and args.port == 7860
    assert args.no_winograd is False and app.build_parser().parse_args(["--no-winograd"]).no_winograd


def test_no_winograd_reaches_the_pipeline(monkeypatch):
    pytest.importorskip("gradio")
    seen = {}

    class Demo:
        def queue(self):
            return self

        def launch(self, **kw):
            seen["launch"] = kw

    monkeypatch.setattr(app, "build_app", lambda **kw: seen.update(kw) or Demo())
    assert app.main(["--no_winograd", "--device", "cpu"]) == 0
    assert seen["winograd"] is False and seen["launch"]["server_name"] == "127.0.0.1"


def test_build_app_with_gradio(tmp_path):
    pytest.importorskip("gradio")
    talker = SadTalker(checkpoint_dir=tmp_path / "ck", gfpgan_dir=tmp_path / "gf")
    demo = app.build_app(talker)
    assert demo.sadtalker is talker
