"""GFPGAN face enhancer and Real-ESRGAN background upscaler: network layout against the official files,
safe strict loading, the stages' pixel paths.

Reduced-width networks (out_size 64) keep the tests fast; one slow test runs the full 512 network once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sadtalker_ext import enhance
from sadtalker_ext.enhance import (
    GFPGAN_FILE,
    REALESRGAN_FILE,
    BackgroundUpscaler,
    FaceEnhancer,
    load_face_enhancer,
    load_gfpgan,
    load_realesrgan,
    read_gfpgan_state,
)
from sadtalker_ext.errors import CheckpointError, InputError
from sadtalker_ext.nets.gfpgan import GFPGANConfig, GFPGANv1Clean, sample_noise
from sadtalker_ext.nets.rrdbnet import RRDBNet, RRDBNetConfig
from sadtalker_ext.paths import EXTENSION_ROOT
from tests.numerics import assert_uint8_equal_but_ties, float32_noise

SMALL = GFPGANConfig(out_size=64, num_style_feat=32, narrow=1 / 16)


def _random_net(cfg: GFPGANConfig, seed: int) -> GFPGANv1Clean:
    """Network with every tensor perturbed (so the zero-initialised noise strengths matter too)."""
    torch.manual_seed(seed)
    net = GFPGANv1Clean(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


def _save(state: dict, path: Path, key: str | None = "params_ema") -> Path:
    torch.save({key: state} if key else state, str(path))
    return path


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    net = _random_net(SMALL, seed=3)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    path = _save(state, tmp_path_factory.mktemp("gfpgan") / GFPGAN_FILE)
    return path, state


@pytest.fixture(scope="module")
def small_net(small_file) -> GFPGANv1Clean:
    return load_gfpgan(small_file[0], "cpu", torch.float32)


def _faces(n: int, side: int, seed: int = 0) -> np.ndarray:
    """Smooth synthetic RGB 'faces' (blobs on a gradient) with a little noise, uint8 (n, side, side, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.2, 0.35)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        img = np.stack([200 * blob + 30 * xx, 150 * blob + 40 * yy, 120 * blob + 20], axis=-1)
        img += rng.normal(0, 6, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


# ------------------------------------------------------------------ layout of the official file


def _official_entry() -> dict:
    manifest = json.loads((EXTENSION_ROOT / "models" / "weights.json").read_text())
    return next(f for f in manifest["files"] if f["name"] == GFPGAN_FILE)


def test_full_config_matches_the_official_file():
    """GFPGANv1.4: 86.4 M parameters; the float32 tensors fill the released file up to the zip overhead."""
    with torch.device("meta"):
        net = GFPGANv1Clean()
    state = net.state_dict()
    params = sum(p.numel() for p in net.parameters())
    assert round(params / 1e6, 1) == 86.4
    tensor_bytes = 4 * sum(v.numel() for v in state.values())
    size = _official_entry()["size"]
    # a torch zip checkpoint stores each tensor once plus a few hundred bytes per record
    assert 0 < size - tensor_bytes < 1024 * len(state)
    assert GFPGANConfig.from_state_shapes({k: tuple(v.shape) for k, v in state.items()}) == GFPGANConfig()


def test_full_config_key_facts():
    """Shapes that follow from the official arch (GFPGANer: out 512, style 512, multiplier 2, sft_half, different_w)."""
    with torch.device("meta"):
        state = GFPGANv1Clean().state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["conv_body_first.weight"] == (32, 3, 1, 1)
    assert sum(k.startswith("conv_body_down.") and k.endswith("conv1.weight") for k in shapes) == 7
    assert shapes["conv_body_down.6.skip.weight"] == (256, 256, 1, 1)
    assert "conv_body_down.0.skip.bias" not in shapes
    assert shapes["final_linear.weight"] == (16 * 512, 256 * 16)
    assert shapes["toRGB.6.weight"] == (3, 32, 1, 1)
    assert shapes["condition_scale.6.2.weight"] == (32, 32, 3, 3)
    assert shapes["condition_shift.0.0.weight"] == (256, 256, 3, 3)
    mlp = sorted(
        int(k.split(".")[2]) for k in shapes if k.startswith("stylegan_decoder.style_mlp.") and "weight" in k
    )
    assert mlp == [1, 3, 5, 7, 9, 11, 13, 15]
    assert shapes["stylegan_decoder.constant_input.weight"] == (1, 512, 4, 4)
    assert shapes["stylegan_decoder.style_conv1.modulated_conv.weight"] == (1, 512, 512, 3, 3)
    assert shapes["stylegan_decoder.style_conv1.weight"] == (1,)
    assert shapes["stylegan_decoder.style_convs.13.bias"] == (1, 64, 1, 1)
    assert shapes["stylegan_decoder.style_convs.8.modulated_conv.weight"] == (1, 256, 512, 3, 3)
    assert shapes["stylegan_decoder.to_rgbs.6.modulated_conv.weight"] == (1, 3, 64, 1, 1)
    assert shapes["stylegan_decoder.to_rgbs.6.modulated_conv.modulation.weight"] == (64, 512)
    noises = [shapes[f"stylegan_decoder.noises.noise{i}"][-1] for i in range(15)]
    assert noises == [4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 512]
    assert "stylegan_decoder.noises.noise15" not in shapes


# ------------------------------------------------------------------ loading


def test_strict_load_of_official_layout(small_file, small_net):
    _, state = small_file
    assert small_net.cfg == SMALL
    assert not small_net.training
    assert all(not p.requires_grad for p in small_net.parameters())
    loaded = small_net.state_dict()
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_params_fallback_and_cache(tmp_path, small_file):
    _, state = small_file
    path = _save(state, tmp_path / GFPGAN_FILE, key="params")
    assert read_gfpgan_state(path).keys() == state.keys()
    first = load_gfpgan(path, "cpu", torch.float32)
    assert load_gfpgan(path, "cpu", torch.float32) is first
    assert load_gfpgan(path, "cpu", torch.float64) is not first
    # a replaced file is a new cache entry
    changed = dict(state)
    changed["final_linear.bias"] = state["final_linear.bias"] + 1
    _save(changed, path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = load_gfpgan(path, "cpu", torch.float32)
    assert second is not first
    assert torch.equal(second.final_linear.bias, changed["final_linear.bias"])


def test_missing_file_message(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_face_enhancer(tmp_path / "nowhere", "cpu", torch.float32)
    text = str(err.value)
    assert GFPGAN_FILE in text
    assert "gfpgan/weights" in text
    assert "python -m sadtalker_ext.download --enhancer" in text


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_wrong_tensors_refused(tmp_path, small_file, damage):
    _, state = small_file
    bad = dict(state)
    if damage == "missing":
        del bad["condition_shift.2.0.bias"]
    elif damage == "unexpected":
        bad["stylegan_decoder.extra"] = torch.zeros(2)
    else:
        bad["toRGB.0.weight"] = torch.zeros(3, 7, 1, 1)
    path = _save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_gfpgan(path, "cpu", torch.float32)
    assert "bad.pth" in str(err.value)


class _Planted:
    """A custom object whose unpickling would create a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_custom_object_refused(tmp_path, small_file):
    _, state = small_file
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": state, "extra": _Planted(marker)}, str(path))
    with pytest.raises(CheckpointError, match="refused"):
        load_gfpgan(path, "cpu", torch.float32)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_unreadable_file_refused(tmp_path, content):
    path = tmp_path / GFPGAN_FILE
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_gfpgan(path, "cpu", torch.float32)


def test_not_a_state_dict_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], str(path))
    with pytest.raises(CheckpointError):
        read_gfpgan_state(path)
    path2 = tmp_path / "nested.pth"
    torch.save({"params_ema": {"a": {"b": torch.zeros(1)}}}, str(path2))
    with pytest.raises(CheckpointError, match="non-tensor"):
        read_gfpgan_state(path2)


# ------------------------------------------------------------------ the stage


@pytest.mark.parametrize("side", [48, 64, 80])
def test_output_shape_range_and_change(small_net, side):
    frames = _faces(3, side)
    out = FaceEnhancer(small_net, "cpu", torch.float32, batch_size=2)(frames)
    assert out.shape == frames.shape
    assert out.dtype == np.uint8
    assert not np.shares_memory(out, frames)
    assert np.abs(out.astype(int) - frames.astype(int)).mean() > 1.0  # the network did something
    assert out.std() > 0


def test_pixel_path_equals_gfpganer_math(small_file, small_net):
    """At the network side no resize happens: RGB/255, (x-0.5)/0.5, clamp(-1, 1), round((y+1)/2*255)."""
    frames = _faces(2, SMALL.out_size, seed=5)
    noise = sample_noise(SMALL, torch.Generator().manual_seed(11))
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    net64 = load_gfpgan(small_file[0], "cpu", torch.float64)
    with torch.no_grad():
        levels = (small_net((x - 0.5) / 0.5, noise).clamp(-1, 1) + 1) / 2 * 255
        levels64 = (net64((x.double() - 0.5) / 0.5, [t.double() for t in noise]).clamp(-1, 1) + 1) / 2 * 255
    got = FaceEnhancer(small_net, "cpu", torch.float32, noise_seed=11)(frames)
    # Same math; the layout may pick other conv kernels, whose rounding can move a value that sits within
    # float32 noise of a .5 boundary by one level (1 of 24576 on an AVX-512 CPU); no other value may move.
    assert_uint8_equal_but_ties(got, levels.permute(0, 2, 3, 1), 4 * float32_noise(levels, levels64))


def test_resizes_to_network_side_and_back(small_net):
    """A 32 crop: INTER_LINEAR up to 64, restore, INTER_AREA back to 32."""
    frames = _faces(2, 32, seed=6)
    up = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_LINEAR) for f in frames])
    enh = FaceEnhancer(small_net, "cpu", torch.float32)
    restored = enh(up)
    expected = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in restored])
    np.testing.assert_array_equal(enh(frames), expected)


def test_batching_equals_one_by_one(small_net):
    frames = _faces(5, 48, seed=1)
    batched = FaceEnhancer(small_net, "cpu", torch.float32, batch_size=4)(frames)
    single = FaceEnhancer(small_net, "cpu", torch.float32, batch_size=1)
    one_by_one = np.concatenate([single(frames[i : i + 1]) for i in range(len(frames))])
    diff = np.abs(batched.astype(int) - one_by_one.astype(int))
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.999


def test_deterministic_and_seeded(small_net):
    frames = _faces(2, 64, seed=2)
    a = FaceEnhancer(small_net, "cpu", torch.float32, noise_seed=7)(frames)
    b = FaceEnhancer(small_net, "cpu", torch.float32, noise_seed=7)(frames)
    c = FaceEnhancer(small_net, "cpu", torch.float32, noise_seed=8)(frames)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).max() > 0
    # the same frame gets the same result wherever it sits in the batch
    twice = FaceEnhancer(small_net, "cpu", torch.float32, noise_seed=7)(np.stack([frames[0], frames[0]]))
    np.testing.assert_array_equal(twice[0], twice[1])


def test_stored_noise_when_seed_is_none(small_file, small_net):
    frames = _faces(1, 64, seed=4)
    got = FaceEnhancer(small_net, "cpu", torch.float32, noise_seed=None)(frames)
    stored = [t.clone() for t in small_net.stylegan_decoder.stored_noise()]
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
    net64 = load_gfpgan(small_file[0], "cpu", torch.float64)
    with torch.no_grad():
        levels = (small_net(x, stored).clamp(-1, 1) + 1) / 2 * 255
        levels64 = (net64(x.double(), [t.double() for t in stored]).clamp(-1, 1) + 1) / 2 * 255
    # Two float32 paths (this layout is channels-last, the enhancer's is contiguous; kernels vary by CPU)
    # round a value lying within float32 noise of a .5 boundary either way (1 of 12288 with AVX2 / AVX-512
    # kernels): those near-ties may differ by one level, every other value must be equal.
    noise = 4 * float32_noise(levels, levels64)
    assert_uint8_equal_but_ties(got, levels.permute(0, 2, 3, 1), noise)
    # ...while another noise moves most values by many levels
    other = FaceEnhancer(small_net, "cpu", torch.float32, noise_seed=5)(frames)
    assert (other != got).mean() > 0.5


def test_input_checks(small_net):
    enh = FaceEnhancer(small_net, "cpu", torch.float32)
    with pytest.raises(InputError):
        enh(_faces(1, 32).astype(np.float32))
    with pytest.raises(InputError):
        enh(_faces(1, 32)[0])
    with pytest.raises(InputError):
        enh(np.zeros((1, 32, 32, 4), np.uint8))
    empty = enh(np.zeros((0, 32, 32, 3), np.uint8))
    assert empty.shape == (0, 32, 32, 3)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        FaceEnhancer(small_net, "cpu", torch.float32, batch_size=0)
    with pytest.raises(ValueError, match="noise"):
        small_net(torch.zeros(1, 3, 64, 64), [torch.zeros(1, 1, 4, 4)])


def test_noise_sampling_shapes_and_seed():
    gen = torch.Generator().manual_seed(0)
    maps = sample_noise(SMALL, gen)
    assert [tuple(m.shape) for m in maps] == [(1, 1, s, s) for s in SMALL.noise_sides()]
    assert len(maps) == SMALL.num_noise == 9
    again = sample_noise(SMALL, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert all(torch.equal(a.double(), b) for a, b in zip(maps, again, strict=True))


def test_config_inference_and_validation():
    for cfg in (SMALL, GFPGANConfig(out_size=128, num_style_feat=16, narrow=1 / 32, channel_multiplier=1)):
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in GFPGANv1Clean(cfg).state_dict().items()}
        assert GFPGANConfig.from_state_shapes(shapes) == cfg
    with pytest.raises(ValueError, match="out_size must be a power of two"):
        GFPGANConfig(out_size=500)
    with pytest.raises(ValueError, match="lacks"):
        GFPGANConfig.from_state_shapes({"conv_body_down.0.conv1.weight": (1, 1, 3, 3)})


# ------------------------------------------------------------------ full size, once


@pytest.mark.slow
def test_full_size_file_loads_and_enhances_a_256_crop(tmp_path):
    """The official configuration end to end: {'params_ema': ...} file -> strict load -> one 256 crop."""
    with torch.device("meta"):
        net = GFPGANv1Clean()
    net = net.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            t.copy_(torch.randn(t.shape, generator=gen) * (0.02 if t.dim() > 1 else 0.1))
            if name.endswith("modulation.bias"):
                t.fill_(1.0)
    path = _save(net.state_dict(), tmp_path / GFPGAN_FILE)
    del net
    # the loader behind load_gfpgan, without keeping 350 MB in the process cache
    enh = FaceEnhancer(enhance._build(path, torch.device("cpu"), torch.float32), "cpu", torch.float32)
    assert enh.side == 512
    assert enh.net.cfg == GFPGANConfig()
    frames = _faces(1, 256, seed=9)
    out = enh(frames)
    assert out.shape == frames.shape
    assert out.dtype == np.uint8
    assert out.std() > 0


# ------------------------------------------------------------------ background upscaler (Real-ESRGAN x2)

SMALL_RRDB = RRDBNetConfig(num_feat=16, num_block=2, num_grow_ch=8)


@pytest.fixture(scope="module")
def rrdb_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(5)
    net = RRDBNet(SMALL_RRDB)
    with torch.no_grad():  # outputs mostly inside (0, 1), with contrast
        for p in net.parameters():
            p.mul_(2.0)
        net.conv_last.bias.fill_(0.5)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    return _save(state, tmp_path_factory.mktemp("esrgan") / REALESRGAN_FILE), state


@pytest.fixture(scope="module")
def rrdb_net(rrdb_file) -> RRDBNet:
    return load_realesrgan(rrdb_file[0], "cpu", torch.float32)


def test_rrdb_full_config_key_facts():
    """RealESRGAN_x2plus: RRDBNet(3, 3, scale 2, num_feat 64, num_block 23, num_grow_ch 32)."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in RRDBNet().state_dict().items()}
    assert shapes["conv_first.weight"] == (64, 12, 3, 3)  # pixel-unshuffled input: 3 x 2 x 2
    assert sum(k.endswith(".rdb1.conv1.weight") for k in shapes) == 23
    assert shapes["body.22.rdb3.conv5.weight"] == (64, 64 + 4 * 32, 3, 3)
    assert shapes["body.0.rdb2.conv3.weight"] == (32, 64 + 2 * 32, 3, 3)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        assert shapes[f"{name}.weight"] == (64, 64, 3, 3)
    assert shapes["conv_last.weight"] == (3, 64, 3, 3)
    assert len(shapes) == 2 * (23 * 3 * 5 + 6)
    assert RRDBNetConfig.from_state_shapes(shapes) == RRDBNetConfig()


def test_rrdb_strict_load_and_refusals(tmp_path, rrdb_file, rrdb_net):
    path, state = rrdb_file
    assert rrdb_net.cfg == SMALL_RRDB
    assert all(torch.equal(rrdb_net.state_dict()[k], v) for k, v in state.items())
    assert load_realesrgan(path, "cpu", torch.float32) is rrdb_net
    bad = dict(state)
    del bad["body.1.rdb3.conv5.bias"]
    with pytest.raises(CheckpointError, match="missing"):
        load_realesrgan(_save(bad, tmp_path / "bad.pth"), "cpu", torch.float32)
    marker = tmp_path / "code-ran"
    torch.save({"params_ema": state, "x": _Planted(marker)}, str(tmp_path / "evil.pth"))
    with pytest.raises(CheckpointError, match="refused"):
        load_realesrgan(tmp_path / "evil.pth", "cpu", torch.float32)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as err:
        load_realesrgan(tmp_path / REALESRGAN_FILE, "cpu", torch.float32)
    assert REALESRGAN_FILE in str(err.value)
    assert "gfpgan/weights" in str(err.value)


@pytest.mark.parametrize(("height", "width", "pre_pad"), [(24, 32, 0), (21, 30, 0), (19, 26, 5)])
def test_background_pixel_math(rrdb_net, height, width, pre_pad):
    """RGB/255 in, reflect pads right/bottom (pre_pad, then to even), crop, clamp, round(y*255)."""
    frames = _faces(2, 32, seed=3)[:, :height, :width]
    got = BackgroundUpscaler(rrdb_net, "cpu", torch.float32, tile=0, pre_pad=pre_pad)(frames)
    assert got.shape == (2, 2 * height, 2 * width, 3)
    assert got.std() > 10
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().contiguous() / 255
    if pre_pad:
        x = torch.nn.functional.pad(x, (0, pre_pad, 0, pre_pad), mode="reflect")
    x = torch.nn.functional.pad(x, (0, x.shape[3] % 2, 0, x.shape[2] % 2), mode="reflect")
    with torch.no_grad():
        y = rrdb_net(x)[:, :, : 2 * height, : 2 * width].clamp(0, 1)
    expected = (y * 255).round().byte().permute(0, 2, 3, 1).numpy()
    diff = np.abs(got.astype(int) - expected.astype(int))  # conv rounding may flip a rare .5
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.999


def test_background_tiles(rrdb_net):
    frames = _faces(1, 32, seed=8)
    whole = BackgroundUpscaler(rrdb_net, "cpu", torch.float32, tile=0)(frames)
    one_tile = BackgroundUpscaler(rrdb_net, "cpu", torch.float32, tile=64, tile_pad=10)(frames)
    np.testing.assert_array_equal(whole, one_tile)
    tiled = BackgroundUpscaler(rrdb_net, "cpu", torch.float32, tile=16, tile_pad=4)(frames)
    # top-left tile: the network sees rows/cols 0..20 (16 + 4 of context) and keeps its first 32 outputs
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        corner = rrdb_net(x[:, :, :20, :20])[:, :, :32, :32].clamp(0, 1)
    np.testing.assert_array_equal(
        tiled[0, :32, :32], (corner[0] * 255).round().byte().permute(1, 2, 0).numpy()
    )
    # bottom-right tile: context only above and left
    with torch.no_grad():
        last = rrdb_net(x[:, :, 12:, 12:])[:, :, 8:, 8:].clamp(0, 1)
    np.testing.assert_array_equal(tiled[0, 32:, 32:], (last[0] * 255).round().byte().permute(1, 2, 0).numpy())
    assert not np.array_equal(tiled, whole)  # context is really limited


def test_background_batching_and_checks(rrdb_net):
    frames = _faces(3, 24, seed=4)
    batched = BackgroundUpscaler(rrdb_net, "cpu", torch.float32, tile=16, tile_pad=4, batch_size=3)(frames)
    single = BackgroundUpscaler(rrdb_net, "cpu", torch.float32, tile=16, tile_pad=4, batch_size=1)
    one_by_one = np.concatenate([single(frames[i : i + 1]) for i in range(3)])
    assert np.abs(batched.astype(int) - one_by_one.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="must be multiples of"):
        BackgroundUpscaler(rrdb_net, "cpu", torch.float32, tile=15)
    with pytest.raises(ValueError, match="must be multiples of"):
        BackgroundUpscaler(rrdb_net, "cpu", torch.float32, tile_pad=3)
    with pytest.raises(InputError):
        single(frames[0])
    assert single(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, 16, 16, 3)


def test_dtype_is_the_callers(small_file):
    """float64 weights and noise: the same pixels as float32 up to rare rounding flips."""
    frames = _faces(2, 64, seed=12)
    ref = FaceEnhancer(load_gfpgan(small_file[0], "cpu", torch.float32), "cpu", torch.float32)(frames)
    net64 = load_gfpgan(small_file[0], "cpu", torch.float64)
    assert all(p.dtype == torch.float64 for p in net64.parameters())
    got = FaceEnhancer(net64, "cpu", torch.float64)(frames)
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.99
