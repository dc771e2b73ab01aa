"""Weight files are read once per process: later loads and later generations reuse the built models.

Counts every ``safetensors.safe_open`` and ``torch.load`` (the only two ways the loaders read tensors)
by file and, for safetensors, by the prefixes then read. Uses a tiny-width renderer (official key names)
and official-width stand-in motion / reconstruction tensors, like the end-to-end tests.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from sadtalker_ext import checkpoints
from sadtalker_ext.nets.dense_motion import DenseMotionConfig
from sadtalker_ext.nets.generator import GeneratorConfig, OcclusionAwareSPADEGenerator
from sadtalker_ext.nets.kp_detector import KPDetector, KPDetectorConfig
from sadtalker_ext.nets.mapping import MappingConfig, MappingNet
from sadtalker_ext.nets.spade_decoder import SpadeDecoderConfig
from sadtalker_ext.render.loading import load_renderer_nets
from tests import standin

ST256, ST512, MAP_CROP, MAP_FULL = standin.FILES

TINY_KP = KPDetectorConfig(
    num_kp=3, block_expansion=2, max_features=8, num_blocks=2, reshape_channel=16, reshape_depth=2
)
TINY_GEN = GeneratorConfig(
    block_expansion=4,
    max_features=16,
    reshape_channel=4,
    reshape_depth=4,
    num_resblocks=1,
    dense_motion=DenseMotionConfig(
        num_kp=3,
        feature_channel=4,
        block_expansion=2,
        max_features=8,
        num_blocks=2,
        reshape_depth=4,
        compress=2,
    ),
    decoder=SpadeDecoderConfig(input_nc=16, hidden_nc=4, output_nc=4, num_middle_blocks=1),
)
TINY_MAP = MappingConfig(coeff_nc=70, descriptor_nc=8, layer=3, num_kp=3, num_bins=66)


def _filled(prefix: str, module: torch.nn.Module) -> dict[str, np.ndarray]:
    fill = standin.fill_module()
    out = {}
    for key, value in module.state_dict().items():
        dtype = "int64" if value.dtype == torch.int64 else "float32"
        out[prefix + key] = np.ascontiguousarray(fill.fill_tensor(prefix + key, tuple(value.shape), dtype, 0))
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache_ckpt")
    keys = {
        k for k in standin.manifest(ST256) if k.split(".")[0] in ("audio2exp", "audio2pose", "face_3drecon")
    }
    tensors = standin.standin_tensors(ST256, 0, keys=keys)
    tensors.update(_filled("kp_extractor.", KPDetector(TINY_KP)))
    tensors.update(_filled("generator.", OcclusionAwareSPADEGenerator(TINY_GEN)))
    for key in [k for k in tensors if k.endswith(".weight_orig")]:  # unit spectral norm
        base = key[: -len("weight_orig")]
        u, _, vt = np.linalg.svd(tensors[key].reshape(tensors[key].shape[0], -1).astype(np.float64))
        tensors[base + "weight_u"] = np.ascontiguousarray(u[:, 0], dtype=np.float32)
        tensors[base + "weight_v"] = np.ascontiguousarray(vt[0], dtype=np.float32)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(out / ST256))
    (out / ST512).hardlink_to(out / ST256)
    for name, coeff_nc in ((MAP_CROP, 70), (MAP_FULL, 73)):
        net = MappingNet(dataclasses.replace(TINY_MAP, coeff_nc=coeff_nc))
        state = {k[len("mapping.") :]: torch.from_numpy(v) for k, v in _filled("mapping.", net).items()}
        torch.save({"mapping": state, "epoch": 0}, str(out / name))
    return out


class _Reads:
    """Counts tensor reads: ``safe_open`` per file, ``get_tensor`` per (file, top-level prefix), ``torch.load``."""

    def __init__(self, monkeypatch):
        import safetensors

        self.opens: collections.Counter = collections.Counter()
        self.prefixes: collections.Counter = collections.Counter()
        self.loads: collections.Counter = collections.Counter()
        real_open, real_load = safetensors.safe_open, torch.load
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
        monkeypatch.setattr(torch, "load", counting_load)

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
    import soundfile as sf

    from sadtalker_ext.options import GenerationOptions
    from sadtalker_ext.pipeline import SadTalker

    wav, sr = sf.read(standin.MEDIA_DIR / "RD_Radio31_000.wav", dtype="float32")
    audio = tmp_path / "short.wav"
    sf.write(audio, wav[: int(0.12 * sr)], sr)

    def generate(talker: SadTalker, name: str) -> None:
        options = GenerationOptions(
            source=str(standin.MEDIA_DIR / "people_0.png"),
            driven_audio=str(audio),
            face_detector="dlib",
            seed=1,
            batch_size=2,
            output=str(tmp_path / name),
        )
        result = talker.generate(options)
        assert result.video_path.is_file() and result.num_frames >= 1

    talker = SadTalker(checkpoint_dir=folder, gfpgan_dir=tmp_path / "none", device="cpu", result_dir=tmp_path)
    generate(talker, "first.mp4")
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
    generate(talker, "second.mp4")
    assert reads.total() == before, (reads.opens, reads.loads)
    # a second pipeline object in the same process reuses the process cache too
    generate(
        SadTalker(checkpoint_dir=folder, gfpgan_dir=tmp_path / "none", device="cpu", result_dir=tmp_path),
        "third.mp4",
    )
    assert reads.total() == before, (reads.opens, reads.loads)
