"""load_renderer_nets: file selection, width inference, caching and refusal of damaged or unsafe files.

Uses tiny hand-built checkpoint files (same key names as the official ones, small widths) so each test
takes well under a second, plus one reduced-width (all channels / 8) stand-in that renders a frame.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from sadtalker_ext import checkpoints
from sadtalker_ext.errors import CheckpointError
from sadtalker_ext.nets.generator import OcclusionAwareSPADEGenerator
from sadtalker_ext.nets.kp_detector import KPDetector
from sadtalker_ext.nets.mapping import MappingConfig, MappingNet
from sadtalker_ext.render.loading import load_renderer_nets
from tests import standin
from tests.numerics import assert_within_float32_noise

ST256, ST512, MAP_CROP, MAP_FULL = standin.FILES

TINY_KP, TINY_GEN, TINY_MAP = standin.TINY_KP, standin.TINY_GEN, standin.TINY_MAP

EIGHTH_KP, EIGHTH_GEN, EIGHTH_MAP = standin.EIGHTH_KP, standin.EIGHTH_GEN, standin.EIGHTH_MAP


_face_tensors = standin.renderer_tensors
_mapping_state = standin.mapping_state


def _write_folder(folder: Path, kp_cfg=TINY_KP, gen_cfg=TINY_GEN, map_cfg=TINY_MAP) -> Path:
    return standin.write_reduced_checkpoints(
        folder, kp_cfg=kp_cfg, gen_cfg=gen_cfg, map_cfg=map_cfg, link_512=False
    )


def _load(folder: Path, size: int = 256, preprocess: str = "crop"):
    return load_renderer_nets(folder, size, preprocess, torch.device("cpu"), torch.float32)


@pytest.fixture
def tiny(tmp_path) -> Path:
    return _write_folder(tmp_path / "ckpt")


@pytest.fixture(autouse=True, scope="module")
def _drop_cache():
    yield
    checkpoints.clear_cache()


def test_tiny_files_load_with_inferred_widths_and_render(tiny):
    nets = _load(tiny)
    assert nets.kp_detector.cfg == TINY_KP
    assert nets.generator.cfg == TINY_GEN
    assert nets.mapping.cfg == TINY_MAP
    for net in (nets.kp_detector, nets.generator, nets.mapping):
        assert not net.training
        assert all(not p.requires_grad for p in net.parameters())
    with torch.no_grad():
        image = torch.rand(1, 3, 64, 64)
        kp = nets.kp_detector(image)
        assert kp.shape == (1, 3, 3)
        out = nets.generator(image, kp * 0.9, kp)
        assert out["prediction"].shape == (1, 3, 64, 64)
        assert torch.equal(out["prediction"], torch.sigmoid(out["decoder_logits"]))
        sem = nets.mapping(torch.randn(2, 70, 27))
        assert {k: tuple(v.shape) for k, v in sem.items()} == {
            "yaw": (2, 66),
            "pitch": (2, 66),
            "roll": (2, 66),
            "t": (2, 3),
            "exp": (2, 9),
        }


def test_loaded_values_equal_file_values(tiny):
    nets = _load(tiny)
    from safetensors.numpy import load_file

    stored = load_file(str(tiny / ST256))
    assert np.array_equal(nets.kp_detector.down.weight.numpy(), stored["kp_extractor.down.weight"])
    conv = nets.generator.decoder.up_0.conv_s
    for leaf in ("weight_orig", "weight_u", "weight_v"):
        assert np.array_equal(getattr(conv, leaf).numpy(), stored[f"generator.decoder.up_0.conv_s.{leaf}"])


def test_preprocess_and_size_pick_files_and_cache(tiny):
    crop = _load(tiny, 256, "crop")
    full = _load(tiny, 256, "full")
    assert crop.mapping.cfg.coeff_nc == 70
    assert full.mapping.cfg.coeff_nc == 73
    assert _load(tiny, 256, "extfull").mapping is full.mapping
    assert _load(tiny, 256, "resize").mapping is crop.mapping
    again = _load(tiny, 256, "crop")
    assert again.generator is crop.generator
    assert again.kp_detector is crop.kp_detector
    big = _load(tiny, 512, "crop")
    assert big.generator is not crop.generator


def test_split_path_equals_forward_and_broadcasts(tiny):
    gen = _load(tiny).generator
    torch.manual_seed(0)
    image = torch.rand(1, 3, 64, 64)
    kp_s = torch.rand(1, 3, 3) - 0.5
    kp_d = torch.rand(2, 3, 3) - 0.5
    with torch.no_grad():
        feature = gen.encode_source(image)
        assert feature.shape == (1, 4, 4, 16, 16)
        split = gen.decode(feature, kp_s.expand(2, -1, -1), kp_d)
        whole = gen(image.expand(2, -1, -1, -1), kp_d, kp_s.expand(2, -1, -1))
        broadcast = gen.decode(feature, kp_s, kp_d)
        # the whole forward again in float64: its gap to float32 is the rounding the paths may differ by
        gen64 = copy.deepcopy(gen).double()
        ref = gen64(image.double().expand(2, -1, -1, -1), kp_d.double(), kp_s.double().expand(2, -1, -1))
    for key in ("prediction", "decoder_logits", "occlusion_map", "deformation", "mask"):
        # batch 1 vs 2 and expanded inputs pick other conv kernels: equal up to float32 noise (measured
        # ~25 eps * max|value| for decoder_logits on scalar, AVX2 and AVX-512 kernels alike)
        assert_within_float32_noise(split[key], whole[key], ref[key], what=key)
        assert_within_float32_noise(broadcast[key], whole[key], ref[key], what=key)


def _rewrite_face(folder: Path, edit) -> Path:
    from safetensors.numpy import load_file

    path = folder / ST256
    tensors = load_file(str(path))
    edit(tensors)
    path.unlink()
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    ("edit", "component", "what"),
    [
        (lambda t: t.pop("generator.decoder.conv_img.bias"), "generator", "missing"),
        (
            lambda t: t.pop("kp_extractor.predictor.up_blocks.up1.norm.running_var"),
            "keypoint detector",
            "missing",
        ),
        (
            lambda t: t.update({"kp_extractor.extra.weight": np.zeros((2, 2), np.float32)}),
            "keypoint detector",
            "unexpected",
        ),
        (
            lambda t: t.update({"generator.fourth.weight": np.zeros((16, 15, 1, 1), np.float32)}),
            "generator",
            "shape",
        ),
        (
            lambda t: t.update({"generator.decoder.G_middle_0.conv_0.weight_v": np.zeros(7, np.float32)}),
            "generator",
            "shape",
        ),
        (lambda t: t.pop("generator.first.conv.weight"), "generator", "first.conv.weight"),
    ],
    ids=["missing-gen", "missing-kp", "extra-kp", "shape-fourth", "shape-spectral-v", "missing-width-key"],
)
def test_damaged_safetensors_is_refused(tiny, edit, component, what):
    path = _rewrite_face(tiny, edit)
    with pytest.raises(CheckpointError) as info:
        _load(tiny)
    msg = str(info.value)
    assert str(path) in msg
    assert component in msg
    assert what in msg


def test_truncated_safetensors_is_refused(tiny):
    path = tiny / ST256
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated") as info:
        _load(tiny)
    assert str(path) in str(info.value)


def test_missing_file_is_reported(tiny):
    (tiny / MAP_FULL).unlink()
    with pytest.raises(CheckpointError, match="not found") as info:
        _load(tiny, 256, "full")
    assert MAP_FULL in str(info.value)


def test_mapping_with_wrong_shape_is_refused(tiny):
    state = _mapping_state(TINY_MAP)
    state["fc_t.weight"] = torch.zeros(4, 8)
    torch.save({"mapping": state, "epoch": 229}, str(tiny / MAP_CROP))
    with pytest.raises(CheckpointError) as info:
        _load(tiny)
    assert MAP_CROP in str(info.value)
    assert "mapping" in str(info.value)


def _side_effect(marker: str) -> int:
    Path(marker).write_text("executed")
    return 0


class _Payload:
    """Pickles to a call of ``_side_effect``: loading it must never run that call."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (_side_effect, (str(self.marker),))


def test_mapping_with_pickled_object_is_refused_unexecuted(tiny):
    marker = tiny / "executed.txt"
    torch.save(
        {"mapping": _mapping_state(TINY_MAP), "epoch": 229, "extra": _Payload(marker)}, str(tiny / MAP_CROP)
    )
    with pytest.raises(CheckpointError) as info:
        _load(tiny)
    assert MAP_CROP in str(info.value)
    assert "refused" in str(info.value)
    assert not marker.exists()


def test_reduced_width_standin_renders_a_frame(tmp_path, caplog):
    """All channel counts / 8, official key names: widths are inferred and a 256 frame is produced."""
    folder = _write_folder(tmp_path / "eighth", EIGHTH_KP, EIGHTH_GEN, EIGHTH_MAP)
    face_keys = set(_face_tensors(EIGHTH_KP, EIGHTH_GEN))
    assert face_keys == {k for k in standin.manifest(ST256) if k.startswith(("kp_extractor.", "generator."))}
    with caplog.at_level(logging.INFO, logger="sadtalker_ext.render.loading"):
        nets = _load(folder)
    assert "non-official configuration" in caplog.text
    assert nets.generator.cfg == EIGHTH_GEN
    assert nets.kp_detector.cfg == EIGHTH_KP
    assert nets.mapping.cfg == EIGHTH_MAP
    with torch.no_grad():
        image = torch.rand(1, 3, 256, 256)
        kp = nets.kp_detector(image)
        motion = nets.mapping(torch.randn(1, 70, 27))
        kp_driving = kp + 0.01 * motion["exp"].view(1, 15, 3)
        out = nets.generator.decode(nets.generator.encode_source(image), kp, kp_driving)
    assert out["prediction"].shape == (1, 3, 256, 256)
    assert out["occlusion_map"].shape == (1, 1, 64, 64)
    assert out["deformation"].shape == (1, 16, 64, 64, 3)
    assert torch.isfinite(out["decoder_logits"]).all()


def test_official_widths_are_the_defaults():
    """The default configs describe exactly the manifest shapes of the official files."""
    for prefix, net_cls in (("kp_extractor.", KPDetector), ("generator.", OcclusionAwareSPADEGenerator)):
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in net_cls().state_dict().items()}
        ref = {k[len(prefix) :]: v[0] for k, v in standin.manifest(ST256).items() if k.startswith(prefix)}
        assert set(shapes) == set(ref)
        assert all(shapes[k] == ref[k] for k in ref if not k.endswith("num_batches_tracked"))
    for name, coeff in ((MAP_CROP, 70), (MAP_FULL, 73)):
        ref = {k[len("mapping.") :]: v[0] for k, v in standin.manifest(name).items()}
        cfg = MappingConfig.from_state_shapes(ref)
        assert cfg == MappingConfig(coeff_nc=coeff)
        shapes = {k: tuple(v.shape) for k, v in MappingNet(cfg).state_dict().items()}
        assert shapes == ref
