"""GFPGAN v1.4 and Real-ESRGAN x2plus against the official gfpgan 1.3.8 / basicsr 1.4.2 code
(enhance_gfpgan_*, enhance_rrdbnet_*).

Stand-in weight files are built in the official container ``{'params_ema': state}`` from fill.py with the
vector's ``scale::`` / ``override::`` arrays and loaded through the project's real loaders
(``torch.load(weights_only=True)``, strict). Inputs, noise maps and tile sizes come from the files; tolerances
are those the .md files suggest (outputs within 2e-4 / 1e-4, uint8 within 1 level and >= 99.9 % identical).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sadtalker_ext.enhance import (
    GFPGAN_FILE,
    REALESRGAN_FILE,
    BackgroundUpscaler,
    FaceEnhancer,
    load_gfpgan,
    load_realesrgan,
)
from sadtalker_ext.nets.gfpgan import GFPGANv1Clean, sample_noise
from sadtalker_ext.nets.rrdbnet import RRDBNet
from tests.conftest import parity_device, seed_of, vector_params
from tests.face_enhance_vectors import load_npz, module_manifest, save, uint8_close, vector_state
from tests.numerics import assert_normal_draws_match

GFPGAN_ATOL = 2e-4
RRDB_ATOL = 1e-4
UINT8_MIN_IDENTICAL = 0.999
STYLE_ATOL = 2e-3  # final_linear output up to ~1e2; 1 vs 2 threads move it by 1e-4


def _seed(path: Path) -> int:
    with np.load(path, allow_pickle=False) as npz:
        return seed_of(npz, path)


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """(path, file name, network class) -> the stand-in ``{'params_ema': state}`` file of that vector."""
    root = tmp_path_factory.mktemp("enhance_parity")
    cache: dict[tuple[Path, str], Path] = {}

    def get(path: Path, name: str, net_cls: type[torch.nn.Module]) -> Path:
        if (path, name) not in cache:
            with torch.device("meta"):
                manifest = module_manifest(net_cls())
            state = vector_state(load_npz(path), manifest, _seed(path))
            cache[(path, name)] = save(state, root / path.stem / name, "params_ema")
        return cache[(path, name)]

    return get


# --------------------------------------------------------------------------------------------- GFPGAN


def _noise_maps(v: dict) -> list[torch.Tensor]:
    count = sum(1 for k in v if re.fullmatch(r"noise_enhance_\d+", k))
    return [torch.from_numpy(v[f"noise_enhance_{i}"]) for i in range(count)]


@pytest.mark.parametrize("path", vector_params("enhance_gfpgan_*.npz"))
def test_gfpgan_stored_noise_path(weight_files, path):
    """``randomize_noise=False``: the network on the stored input with the checkpoint's noise buffers, and
    the enhancer's pixel path (RGB / 255, (x - 0.5) / 0.5, clamp, round) to the uint8 result."""
    v = load_npz(path)
    device = parity_device()
    net = load_gfpgan(weight_files(path, GFPGAN_FILE, GFPGANv1Clean), device, torch.float32)
    enhancer = FaceEnhancer(net, device, torch.float32, noise_seed=None)

    seen: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    handles = [
        net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().cpu())),
        net.register_forward_hook(lambda _m, _i, out: outs.append(out.detach().cpu())),
    ]
    try:
        restored = enhancer(v["face_rgb"][None])[0]
    finally:
        for h in handles:
            h.remove()
    np.testing.assert_array_equal(seen[0].numpy(), v["net_input"])
    err = float(np.abs(outs[0].numpy() - v["output_stored_noise"]).max())
    assert err <= GFPGAN_ATOL, err
    uint8_close(restored, v["restored_bgr_stored_noise"][..., ::-1], UINT8_MIN_IDENTICAL)


@pytest.mark.parametrize("path", vector_params("enhance_gfpgan_*.npz"))
def test_gfpgan_with_the_noise_of_the_official_enhance_call(weight_files, path):
    """``GFPGANer.enhance`` (``randomize_noise=True``) with the maps it drew: the raw output, the style code
    and the uint8 face it returned."""
    v = load_npz(path)
    device = parity_device()
    net = load_gfpgan(weight_files(path, GFPGAN_FILE, GFPGANv1Clean), device, torch.float32)
    noise = [m.to(device) for m in _noise_maps(v)]
    assert [int(m.shape[-1]) for m in noise] == net.cfg.noise_sides()
    styles: list[torch.Tensor] = []
    handle = net.final_linear.register_forward_hook(lambda _m, _i, out: styles.append(out.detach().cpu()))
    try:
        with torch.no_grad():
            out = net(torch.from_numpy(v["net_input"]).to(device), noise).cpu()
    finally:
        handle.remove()
    err = float(np.abs(out.numpy() - v["output_enhance"]).max())
    assert err <= GFPGAN_ATOL, err
    assert float(np.abs(styles[0].numpy() - v["style_code"]).max()) <= STYLE_ATOL

    y = ((out.clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    uint8_close(y, v["restored_bgr_enhance"][..., ::-1], UINT8_MIN_IDENTICAL)


@pytest.mark.parametrize("path", vector_params("enhance_gfpgan_*.npz"))
def test_seeded_noise_mode_is_repeatable_and_separate(weight_files, path):
    """The project's seeded-noise option: the maps come from a private generator (the global torch RNG is
    left alone), the same seed gives the same maps, they are not the checkpoint's stored maps, and seed S
    draws what ``GFPGANer.enhance`` drew after ``torch.manual_seed(S)`` (how the vector recorded them)."""
    v = load_npz(path)
    net = load_gfpgan(weight_files(path, GFPGAN_FILE, GFPGANv1Clean), "cpu", torch.float32)
    seed = int(v["noise_seed_torch"])
    state = torch.get_rng_state()
    a = sample_noise(net.cfg, torch.Generator().manual_seed(seed))
    b = sample_noise(net.cfg, torch.Generator().manual_seed(seed))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    stored = net.stylegan_decoder.stored_noise()
    assert not any(torch.equal(x, y) for x, y in zip(a, stored, strict=True))
    official = _noise_maps(v)
    for i, (x, y) in enumerate(zip(a, official, strict=True)):  # same seed: same draws up to kernel rounding
        assert_normal_draws_match(x.numpy(), y.numpy(), f"noise map {i}")


# --------------------------------------------------------------------------------------------- RRDBNet


@pytest.mark.parametrize("path", vector_params("enhance_rrdbnet_*.npz"))
def test_rrdbnet_x2_output(weight_files, path):
    v = load_npz(path)
    device = parity_device()
    net = load_realesrgan(weight_files(path, REALESRGAN_FILE, RRDBNet), device, torch.float32)
    np.testing.assert_array_equal(
        v["net_input"], (v["input_rgb_uint8"].astype(np.float32) / 255).transpose(2, 0, 1)[None]
    )
    with torch.no_grad():
        out = net(torch.from_numpy(v["net_input"]).to(device)).cpu()
    assert tuple(out.shape) == v["output"].shape
    err = float(np.abs(out.numpy() - v["output"]).max())
    assert err <= RRDB_ATOL, err


@pytest.mark.parametrize("path", vector_params("enhance_rrdbnet_*.npz"))
def test_rrdbnet_enhance_with_official_tiling(weight_files, path):
    """``RealESRGANer.enhance`` with SadTalker's arguments (tile_pad 10, pre_pad 0) at each recorded tile
    size: mod-pad, tiles with context, crop, clamp, round; uint8 in the same channel order."""
    v = load_npz(path)
    device = parity_device()
    net = load_realesrgan(weight_files(path, REALESRGAN_FILE, RRDBNet), device, torch.float32)
    np.testing.assert_array_equal(v["enh_input_bgr"], v["enh_input_rgb"][..., ::-1])
    names = sorted(k for k in v if re.fullmatch(r"enh_output_bgr_tile\d+", k))
    assert names
    for name in names:
        tile = int(name.rsplit("tile", 1)[1])
        up = BackgroundUpscaler(net, device, torch.float32, tile=tile, tile_pad=10, pre_pad=0)
        got = up(v["enh_input_rgb"][None])[0]
        uint8_close(got, v[name][..., ::-1], UINT8_MIN_IDENTICAL)
