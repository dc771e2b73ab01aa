"""Weight files are read once per cache: later loads and later generations reuse the built models.

A pipeline (:class:`SadTalker`) keeps its models in its own cache: two pipelines never drop each other's.

Counts every ``safetensors.safe_open`` and ``torch.load`` (the only two ways the loaders read tensors)
by file and, for safetensors, by the prefixes then read. Uses a tiny-width renderer (official key names)
and official-width stand-in motion / reconstruction tensors, like the end-to-end tests.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch

from sadtalker_ext import checkpoints
from sadtalker_ext.checkpoints import ModelCache
from sadtalker_ext.nets.generator import OcclusionAwareSPADEGenerator
from sadtalker_ext.nets.kp_detector import KPDetector
from sadtalker_ext.options import GenerationOptions
from sadtalker_ext.pipeline import SadTalker
from sadtalker_ext.preprocess.extract import ExtractionCache
from sadtalker_ext.render.loading import load_renderer_nets
from tests import standin

ST256, ST512, MAP_CROP, MAP_FULL = standin.FILES
TINY_KP, TINY_GEN = standin.TINY_KP, standin.TINY_GEN


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return standin.write_reduced_checkpoints(
        tmp_path_factory.mktemp("cache_ckpt"), motion=standin.motion_tensors(0)
    )


class _Reads:
    """Counts tensor reads: ``safe_open`` per file, ``get_tensor`` per (file, top-level prefix), ``torch.load``."""

    def __init__(self, monkeypatch):
        import safetensors

        self.opens: collections.Counter = collections.Counter()
        self.prefixes: collections.Counter = collections.Counter()
        self.loads: collections.Counter = collections.Counter()
        real_open, real_load = safetensors.safe_open, torch.serialization.load
        reads = self

        class CountingHandle:
            def __init__(self, path, *args, **kwargs):
                self._name = Path(path).name
                self._inner = real_open(path, *args, **kwargs)
                reads.opens[self._name] += 1

            def __enter__(self):
                self._handle = self._inner.__enter__()
                return self

            def __exit__(self, *exc):
                return self._inner.__exit__(*exc)

            def get_tensor(self, key):
                reads.prefixes[(self._name, key.split(".")[0])] += 1
                return self._handle.get_tensor(key)

            def __getattr__(self, name):
                return getattr(self._handle, name)

        def counting_load(f, *args, **kwargs):
            reads.loads[Path(str(f)).name] += 1
            return real_load(f, *args, **kwargs)

        monkeypatch.setattr(safetensors, "safe_open", CountingHandle)
        monkeypatch.setattr(torch.serialization, "load", counting_load)  # what checkpoints.py calls

    def total(self) -> int:
        return sum(self.opens.values()) + sum(self.loads.values())


@pytest.fixture
def reads(monkeypatch):
    checkpoints.clear_cache()
    yield _Reads(monkeypatch)
    checkpoints.clear_cache()


def test_second_load_renderer_nets_reads_nothing(folder, reads):
    first = load_renderer_nets(folder, 256, "crop", "cpu", torch.float32)
    assert reads.opens[ST256] == 2  # kp_extractor, then generator: each prefix once
    assert {p for (f, p) in reads.prefixes if f == ST256} == {"kp_extractor", "generator"}
    assert reads.loads == {MAP_CROP: 1}
    before = reads.total()
    second = load_renderer_nets(folder, 256, "crop", "cpu", torch.float32)
    assert reads.total() == before
    assert second.generator is first.generator and second.mapping is first.mapping
    # another mapping file is read once, the face file not again
    load_renderer_nets(folder, 256, "full", "cpu", torch.float32)
    assert reads.loads == {MAP_CROP: 1, MAP_FULL: 1} and reads.opens[ST256] == 2


@pytest.mark.slow
def test_two_generations_read_each_file_once(folder, reads, tmp_path):
    audio = _short_audio(tmp_path)
    talker = SadTalker(checkpoint_dir=folder, gfpgan_dir=tmp_path / "none", device="cpu", result_dir=tmp_path)
    _generate(talker, audio, tmp_path / "first.mp4")
    prefixes = {p for (f, p) in reads.prefixes if f == ST256}
    assert prefixes >= {"kp_extractor", "generator", "audio2exp", "audio2pose", "face_3drecon"}
    # every prefix of the face file was read in one pass of its tensors (no tensor read twice)
    per_prefix = collections.Counter(p for (f, p) in reads.prefixes.elements() if f == ST256)
    face = standin.manifest(ST256)
    tiny = {
        "kp_extractor": len(KPDetector(TINY_KP).state_dict()),
        "generator": len(OcclusionAwareSPADEGenerator(TINY_GEN).state_dict()),
    }
    for prefix in prefixes:
        expected = tiny.get(prefix, sum(1 for k in face if k.split(".")[0] == prefix))
        assert per_prefix[prefix] == expected, prefix
    assert reads.loads == {MAP_CROP: 1}
    before = reads.total()
    _generate(talker, audio, tmp_path / "second.mp4")
    assert reads.total() == before, (reads.opens, reads.loads)


def test_pipeline_winograd_choice_reaches_the_renderer(folder, reads, tmp_path):
    """``SadTalker(winograd=False)`` (CLI ``--no_winograd``) loads a renderer with direct decoder convs."""

    def flags(talker: SadTalker) -> set[bool]:
        gen = talker._renderer_nets(256, "crop").generator
        return {m.winograd for m in gen.modules() if "winograd" in type(m).__dict__}

    kw = {"checkpoint_dir": folder, "gfpgan_dir": tmp_path / "none", "device": "cpu", "result_dir": tmp_path}
    assert flags(SadTalker(**kw)) == {True}
    assert flags(SadTalker(**kw, winograd=False)) == {False}


def _short_audio(tmp_path: Path) -> Path:
    """0.12 s of a shared recording (3 video frames)."""
    import soundfile as sf

    wav, sr = sf.read(standin.MEDIA_DIR / "RD_Radio31_000.wav", dtype="float32")
    audio = tmp_path / "short.wav"
    sf.write(audio, wav[: int(0.12 * sr)], sr)
    return audio


def _generate(talker: SadTalker, audio: Path, output: Path) -> None:
    """One short generation of the shared portrait with the dlib detector into ``output``."""
    options = GenerationOptions(
        source=str(standin.MEDIA_DIR / "people_0.png"),
        driven_audio=str(audio),
        face_detector="dlib",
        seed=1,
        batch_size=2,
        output=str(output),
    )
    result = talker.generate(options)
    assert result.video_path.is_file() and result.num_frames >= 1


@pytest.mark.slow
def test_unload_of_one_pipeline_keeps_the_other_pipelines_models(folder, reads, monkeypatch, tmp_path):
    """Two pipelines in one process: ``a.unload()`` drops a's models only; b's next generation reads no
    weight file and builds no face model again."""
    import dlib

    predictors = collections.Counter()
    real_predictor = dlib.shape_predictor

    def counting_predictor(path):
        predictors[Path(path).name] += 1
        return real_predictor(path)

    monkeypatch.setattr(dlib, "shape_predictor", counting_predictor)
    audio = _short_audio(tmp_path)

    kw = {"checkpoint_dir": folder, "gfpgan_dir": tmp_path / "none", "device": "cpu", "result_dir": tmp_path}
    a, b = SadTalker(**kw), SadTalker(**kw)
    _generate(b, audio, tmp_path / "b1.mp4")
    a._renderer_nets(256, "crop")  # a holds models of its own
    a._motion_nets(256)
    a._landmarks_fn("dlib", 0)(np.zeros((64, 64, 3), np.uint8))
    assert a.loaded and b.loaded
    held = b.loaded
    files, built = reads.total(), sum(predictors.values())
    a.unload()
    assert a.loaded == [] and b.loaded == held
    _generate(b, audio, tmp_path / "b2.mp4")
    assert reads.total() == files, (reads.opens, reads.loads)
    assert sum(predictors.values()) == built, predictors
    # the unloaded pipeline loads again on its next use
    a._renderer_nets(256, "crop")
    assert reads.total() > files


def test_model_cache_builds_each_key_once_and_clears():
    cache = ModelCache()
    built: list[str] = []

    def build(value: str):
        return lambda: built.append(value) or value

    assert cache.get(("a",), build("A")) == "A"
    assert cache.get(("a",), build("other")) == "A"
    assert cache.get(("b",), build("B")) == "B"
    assert built == ["A", "B"] and len(cache) == 2
    assert cache.keys() == [("a",), ("b",)] and cache.items() == [(("a",), "A"), (("b",), "B")]
    cache.clear()
    assert len(cache) == 0 and cache.get(("a",), build("again")) == "again"


def test_extraction_cache_keeps_the_latest_records_of_the_same_net_and_clears():
    net, other = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    cache = ExtractionCache(2)
    for key in "abc":
        cache.put(key, net, f"record {key}")
    assert len(cache) == 2 and cache.keys() == ["b", "c"]  # least recently used dropped
    assert cache.get("c", net) == "record c" and cache.get("c", other) is None
    cache.clear()
    assert len(cache) == 0 and cache.get("c", net) is None
