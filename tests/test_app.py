"""Standalone app: form -> options, model status text, gradio-less start, and the UI build when gradio exists."""

from __future__ import annotations

import base64
import builtins
import logging
from pathlib import Path

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


def _fake_launch(monkeypatch) -> dict:
    """``app.main`` builds a stand-in app that records the build_app arguments and launch() arguments."""
    pytest.importorskip("gradio")
    seen: dict = {}

    class Demo:
        def queue(self):
            return self

        def launch(self, **kw):
            seen["launch"] = kw
            return "fastapi-app", "http://127.0.0.1:7860/", None

        def sadtalker_add_routes(self, fastapi_app):
            seen["routes_on"] = fastapi_app

        def block_thread(self):
            seen["blocked"] = True

    monkeypatch.setattr(app, "build_app", lambda **kw: seen.update(kw) or Demo())
    return seen


def test_no_winograd_reaches_the_pipeline(monkeypatch):
    seen = _fake_launch(monkeypatch)
    assert app.main(["--no_winograd", "--device", "cpu"]) == 0
    assert seen["winograd"] is False and seen["launch"]["server_name"] == "127.0.0.1"
    # launched without blocking, the streaming route added to gradio's app, then the main thread waits
    assert (
        seen["launch"]["prevent_thread_lock"] is True
        and seen["routes_on"] == "fastapi-app"
        and seen["blocked"]
    )


def test_build_app_with_gradio(tmp_path):
    pytest.importorskip("gradio")
    talker = SadTalker(checkpoint_dir=tmp_path / "ck", gfpgan_dir=tmp_path / "gf")
    demo = app.build_app(talker)
    assert demo.sadtalker is talker


# ------------------------------------------------------------------ uploads (HTTP tests: tests/webui/test_app_http.py)
def test_upload_guard_roots_links_and_names(tmp_path):
    up, lib, scratch = tmp_path / "up", tmp_path / "lib", tmp_path / "scratch"
    (up / "abc").mkdir(parents=True)
    lib.mkdir()
    uploaded = up / "abc" / "tmp1234.png"
    uploaded.write_bytes(b"picture")
    outside = lib / "face.png"
    outside.write_bytes(b"library picture")
    (up / "link.png").symlink_to(outside)
    guard = app.UploadGuard(upload_dir=up)
    # inside the upload folder: kept, under the user's name (a link in the scratch folder)
    got = Path(guard.resolve({"path": str(uploaded), "orig_name": "my face.png"}, "source", scratch))
    assert got.name == "my face.png" and got.read_bytes() == b"picture" and got.is_relative_to(scratch)
    assert guard.resolve({"name": str(uploaded), "is_file": True}, "source", scratch) == str(
        uploaded.resolve()
    )
    for hostile in (str(outside), str(up / ".." / "lib" / "face.png"), str(up / "link.png"), "/etc/passwd"):
        for value in (hostile, {"path": hostile}, {"name": hostile, "is_file": True}, [{"path": hostile}]):
            with pytest.raises(InputError, match="face picture: refused") as err:
                guard.resolve(value, "source", scratch)
            assert "library picture" not in str(err.value)
    # a folder the user allowed (--allowed_dir)
    allowed = app.UploadGuard([lib], upload_dir=up)
    assert allowed.resolve(str(outside), "source", scratch) == str(outside.resolve())
    with pytest.raises(InputError, match="--allowed_dir"):
        allowed.resolve(str(tmp_path / "elsewhere.png"), "source", scratch)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ({"path": "http://example.com/a.wav"}, "URLs are not accepted"),
        ([{"path": "a"}, {"path": "b"}], "one file is expected"),
        ({"name": "a.wav", "data": "!!!"}, "not valid base64"),
        ({"name": "a.wav", "data": "data:audio/wav,abc"}, "only base64 data URLs"),
        ({"name": "a.wav", "data": "data:audio/wav;base64,"}, "expected base64 data|empty"),
        ({"name": "a.wav", "data": "UklGRg==", "crop_min": 10, "crop_max": 90}, "trimming"),
        ({"orig_name": "a.wav"}, "no file in it"),
        (42, "expected an uploaded file"),
    ],
)
def test_upload_guard_refusals(tmp_path, value, needle):
    with pytest.raises(InputError, match=needle):
        app.UploadGuard(upload_dir=tmp_path / "up").resolve(value, "driven_audio", tmp_path / "s")


def test_inline_uploads_keep_a_safe_name(tmp_path):
    guard = app.UploadGuard(upload_dir=tmp_path / "up")
    wav = b"RIFF\x00\x00\x00\x00WAVEfmt "
    data = "data:audio/wav;base64," + base64.b64encode(wav).decode()
    got = Path(
        guard.resolve({"name": "C:\\Users\\me\\..\\my speech.wav", "data": data}, "driven_audio", tmp_path)
    )
    assert got.name == "my speech.wav" and got.read_bytes() == wav and got.parent.parent == tmp_path
    nameless = Path(guard.resolve(data, "driven_audio", tmp_path / "b"))
    assert nameless.name == "speech.wav"
    assert app.upload_name("../../.bashrc", "source", ".png") == "bashrc.png"
    assert app.upload_name("\x00\n", "ref_video", ".mp4") == "reference.mp4"
    assert app.upload_name("a" * 300 + ".jpeg", "source") == "a" * 100 + ".jpeg"
    assert guard.resolve(None, "source", tmp_path) is None and guard.resolve({}, "source", tmp_path) is None


def test_first_contact_keeps_retinaface_when_dlib_cannot_run(tmp_path, monkeypatch):
    talker = SadTalker(checkpoint_dir=tmp_path / "ck", gfpgan_dir=tmp_path / "gf")
    monkeypatch.setattr(app, "dlib_usable", lambda model_dir=None: False)
    detector, banner = app.first_contact(talker)
    assert detector == "retinaface" and "Face detector: dlib" not in banner
    assert "- `detection_Resnet50_Final.pth`" in banner and "- `SadTalker_V0.0.2_256.safetensors`" in banner
    monkeypatch.setattr(app, "dlib_usable", lambda model_dir=None: True)
    detector, banner = app.first_contact(talker)
    assert detector == "dlib" and "Face detector: dlib" in banner
    assert "- `detection_Resnet50_Final.pth`" not in banner  # not needed with dlib; named in the dlib note
    assert "`detection_Resnet50_Final.pth`" in banner


def test_one_line_messages():
    assert app.one_line("missing weight files:\n  A -> x\n  B -> y\ndownload with: cmd") == (
        "missing weight files: A -> x; B -> y; download with: cmd"
    )


def test_download_button_fetches_what_the_settings_need(tmp_path, monkeypatch):
    import sadtalker_ext.download as dl

    seen = {}

    class Report:
        ok = True

        def summary(self):
            return "present  X"

    def fake_download(selection, dirs, progress=None):
        seen.update(selection=selection, dirs=dirs)
        progress(
            type("P", (), {"total": None, "done": 0, "index": 1, "count": 1, "name": "X", "phase": "check"})
        )
        return Report()

    monkeypatch.setattr(dl, "download", fake_download)
    talker = SadTalker(checkpoint_dir=tmp_path / "ck", gfpgan_dir=tmp_path / "gf")
    options = app.options_from_form(
        _form(preprocess="full", size=512, face_detector="dlib", enhancer="gfpgan")
    )
    ticks = []
    text = app.download_missing(talker, options, lambda *a, **kw: ticks.append((a, kw)))
    sel = seen["selection"]
    assert sel.sizes == (512,) and sel.full and sel.enhancer and sel.detector and not sel.background
    assert seen["dirs"] is talker.dirs and "All needed files are present." in text and ticks


def test_allowed_dir_reaches_build_app(monkeypatch, tmp_path):
    seen = _fake_launch(monkeypatch)
    assert app.main(["--allowed_dir", str(tmp_path), "--allowed-dir", "/srv/pics", "--device", "cpu"]) == 0
    assert seen["allowed_dirs"] == [str(tmp_path), "/srv/pics"]
    assert app.build_parser().parse_args([]).allowed_dirs == []


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_inline_upload_suffix_from_real_picture_bytes(fmt, tmp_path):
    """The app and the API name inline uploads by their bytes (one sniffing function, sadtalker_ext.form)."""
    import io

    from PIL import Image

    from sadtalker_ext.form import sniff_suffix
    from sadtalker_ext.webui.api import parse_request

    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 200, 30)).save(buffer, format=fmt)
    data = buffer.getvalue()
    expected = {"JPEG": ".jpg"}.get(fmt, "." + fmt.lower())
    assert sniff_suffix(data, "source") == expected
    guard = app.UploadGuard(upload_dir=tmp_path / "up")
    encoded = base64.b64encode(data).decode()
    assert guard.resolve(f"data:image/x;base64,{encoded}", "source", tmp_path / "s").endswith(expected)
    options = parse_request({"source_base64": encoded, "idle_seconds": 1}, [], tmp_path)[0]
    assert options.source.endswith(expected)


def test_inline_upload_suffix_of_wav_and_unknown_bytes(tmp_path):
    import io
    import wave

    from sadtalker_ext.form import sniff_suffix

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 160)
    assert sniff_suffix(buffer.getvalue(), "driven_audio") == ".wav"
    assert sniff_suffix(b"RIFF\x00\x00\x00\x00AVI LIST", "ref_video") == ".avi"
    assert sniff_suffix(b"\x00\x00\x00\x18ftypmp42", "ref_video") == ".mp4"
    assert sniff_suffix(b"RIFF\x00\x00\x00\x00XXXX", "source") == ".png"  # unknown: the field's usual kind
    assert sniff_suffix(b"plain", "driven_audio") == ".wav"


@pytest.mark.parametrize(
    ("value", "status", "needle"),
    [
        (123, 422, "expected base64 data"),
        ("data:image/png,rawbytes", 400, "only base64 data URLs"),
        ("!!!not base64!!!", 400, "not valid base64"),
    ],
)
def test_bad_inline_data_same_words_in_app_and_api(tmp_path, value, status, needle):
    """One decoder (sadtalker_ext.form.decode_inline) for the app's inline uploads and the API's *_base64."""
    from sadtalker_ext.webui.api import ApiError, parse_request

    guard = app.UploadGuard(upload_dir=tmp_path / "up")
    with pytest.raises(InputError, match=needle):
        guard.resolve(
            {"name": "x.png", "data": value} if value else "data:;base64,", "source", tmp_path / "s"
        )
    with pytest.raises(ApiError, match=needle) as err:
        parse_request({"source_base64": value, "idle_seconds": 1}, [], tmp_path)
    assert err.value.status == status


def test_inline_data_size_limit(monkeypatch, tmp_path):
    from sadtalker_ext import form
    from sadtalker_ext.webui.api import ApiError, decode_base64

    encoded = base64.b64encode(b"x" * 4096).decode()
    with pytest.raises(InputError, match="larger than 0 MB"):
        form.decode_inline(encoded, "face picture", max_bytes=1024)
    monkeypatch.setattr("sadtalker_ext.http_request.MAX_BASE64_BYTES", 1024)  # its home
    with pytest.raises(ApiError) as err:
        decode_base64(encoded, "source")
    assert err.value.status == 413
