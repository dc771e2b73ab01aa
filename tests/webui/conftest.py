"""WebUI tests: a stand-in of the host's ``modules`` package (fake_modules/, tests only) and a fake pipeline."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

FAKE_MODULES = Path(__file__).resolve().parent / "fake_modules"
if str(FAKE_MODULES) not in sys.path:
    sys.path.insert(0, str(FAKE_MODULES))

REPO = Path(__file__).resolve().parents[2]

if importlib.util.find_spec("gradio") is None and not os.environ.get("CI"):
    # The WebUI tests need the WebUI's gradio (3.41) and fastapi; locally they run in the CI environment
    # (/work/civenv). In CI a missing gradio fails loudly instead.
    collect_ignore_glob = ["test_*.py"]


@dataclass
class FakeResult:
    video_path: Path
    sidecar: Path | None
    seed: int
    num_frames: int
    timings: dict = field(default_factory=dict)
    width: int = 0
    height: int = 0


class FakeTalker:
    """Pipeline stand-in with the real ``SadTalker`` surface: ``generate(options, progress=, cancel=,
    frame_hook=, on_exists=, *, fragmented=, stream=, on_output=)`` reports the real stage names, renders
    ``frames`` gray frames in chunks of ``options.batch_size``, honours ``cancel`` between chunks and writes a
    small file at ``options.output``. With ``stream``: ``b"INIT"`` before the first chunk, ``b"FRAG<n>"``
    after each (``n``: frames done), like the writer's segments (not a playable video)."""

    def __init__(self, dirs, device, dtype, winograd=True, *, frames=6, on_render=None, fail=None):
        self.dirs, self.device, self.dtype, self.winograd = dirs, device, dtype, winograd
        self.precision_advice = None
        self.frames = frames
        self.calls: list = []
        self.hook_outputs: list[np.ndarray] = []
        self.unloads = 0
        self.on_render = on_render
        self.fail = fail
        self._models = []

    @property
    def loaded(self):
        return list(self._models)

    def unload(self):
        self.unloads += 1
        self._models.clear()

    def generate(
        self, options, progress=None, cancel=None, frame_hook=None, on_exists=None, *, fragmented=False,
        stream=None, on_output=None,
    ):  # fmt: skip
        self.on_exists = on_exists
        self.fragmented = fragmented
        self.stream = stream
        return self.generate_impl(options, progress, cancel, frame_hook)

    def generate_impl(self, options, progress, cancel, frame_hook):
        from sadtalker_ext.errors import CancelledError

        self.calls.append(options)
        progress = progress or (lambda *a: None)
        cancel = cancel or (lambda: False)
        if self.fail is not None:
            raise self.fail
        for stage in ("inputs", "models", "preprocess", "motion"):
            progress(stage, 0, 1)
            progress(stage, 1, 1)
        self._models = ["motion/256", "renderer/256"]
        progress("render", 0, self.frames)
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream(b"INIT")
        done = 0
        while done < self.frames:
            if cancel():
                raise CancelledError("cancelled while rendering")
            n = min(options.batch_size, self.frames - done)
            frames = np.full((n, 8, 6, 3), 40 + done, np.uint8)
            if frame_hook is not None:
                frames = frame_hook(frames)
            self.hook_outputs.append(np.asarray(frames))
            done += n
            if stream is not None:
                stream(b"FRAG%d" % done)
            progress("render", done, self.frames)
            if self.on_render is not None:
                self.on_render(done)
        progress("encode", 0, 1)
        out = Path(options.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"\x00\x00\x00\x18ftypmp42fake-video")
        progress("encode", 1, 1)
        return FakeResult(
            out, None, options.seed if options.seed is not None else 1234, self.frames, {}, 6, 8
        )


class FakeRestorer:
    """A host face restorer (``FaceRestoration`` subclass surface): inverts the picture."""

    def __init__(self, name="GFPGAN"):
        self._name = name
        self.calls = 0

    def name(self):
        return self._name

    def restore(self, np_image):
        self.calls += 1
        return 255 - np_image


@pytest.fixture
def webui(tmp_path, monkeypatch):
    """A fresh stand-in host rooted at ``tmp_path`` (opts, state, flags, callbacks, paste fields)."""
    from modules import call_queue, errors, infotext_utils, paths_internal, progress, script_callbacks, shared

    paths_internal.set_root(str(tmp_path))
    shared.reset()
    script_callbacks.clear_callbacks()
    infotext_utils.reset()
    errors.reported.clear()
    progress.finished_tasks.clear()
    progress.recorded_results.clear()
    for var in ("SADTALKER_CHECKPOINTS", "SADTALKER_GFPGAN_DIR"):
        monkeypatch.delenv(var, raising=False)
    return types.SimpleNamespace(root=tmp_path, shared=shared, call_queue=call_queue, progress=progress,
                                 callbacks=script_callbacks, paste=infotext_utils, errors=errors)  # fmt: skip


@pytest.fixture
def make_extension(webui):
    """``make_extension(**fake_talker_kw) -> (extension, talkers)``; settings registered like the host does."""
    from sadtalker_ext.webui.entry import Extension

    def make(**kw):
        talkers: list[FakeTalker] = []

        def factory(dirs, device, dtype, winograd):
            t = FakeTalker(dirs, device, dtype, winograd, **kw)
            talkers.append(t)
            return t

        ext = Extension(webui.root / "extensions" / "sadtalker", talker_factory=factory)
        ext.register()
        webui.callbacks.ui_settings_callback()
        return ext, talkers

    return make


def real_extension(webui, checkpoints: Path, tmp_path: Path):
    """The extension with the REAL pipeline factory on ``checkpoints`` (CPU, no face-enhancer models),
    registered and its settings added like the host does."""
    from sadtalker_ext.webui.entry import Extension

    webui.shared.cmd_opts.sadtalker_checkpoint_dir = str(checkpoints)
    webui.shared.cmd_opts.sadtalker_gfpgan_dir = str(tmp_path / "no_face_models")
    webui.shared.cmd_opts.use_cpu = ["all"]
    ext = Extension(webui.root / "extensions" / "sadtalker")
    ext.register()
    webui.callbacks.ui_settings_callback()
    return ext


def sample_png(path: Path, size=(48, 64), color=(200, 120, 90)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def sample_wav(path: Path, seconds=0.5) -> Path:
    import wave

    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(16000 * seconds)
    samples = (np.sin(np.arange(n) / 16000 * 2 * np.pi * 220) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    return path


def form_values(**overrides):
    """Tab values in FORM_FIELDS order (defaults as the tab shows them)."""
    from sadtalker_ext.webui.jobs import FORM_FIELDS

    base = {
        "source": None, "driven_audio": None, "idle_mode": False, "idle_seconds": 5, "ref_video": None,
        "ref_mode": "pose", "preprocess": "crop", "still": False, "pose_style": 0, "expression_scale": 1.0,
        "size": 256, "batch_size": 2, "use_blink": True, "seed": -1, "input_yaw": "", "input_pitch": "",
        "input_roll": "", "face_detector": "retinaface", "face_index": 0,
        "enhancer": "none", "background_enhancer": "none", "restorer": "None",
    }  # fmt: skip
    base.update(overrides)
    return [base[k] for k in FORM_FIELDS]
