"""Reduced precision applies to the per-frame convolutions (hourglass, mask / occlusion convs, third / fourth,
SPADE decoder); keypoints, Gaussians, grids, warps and the source encoding stay float32.

bfloat16 runs on the CPU here, so these tests need no GPU (float16 follows the same code path on one).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.bench import synthetic_plan
from sadtalker_ext import checkpoints
from sadtalker_ext.errors import InputError
from sadtalker_ext.pipeline import SadTalker
from sadtalker_ext.render.animate import Renderer
from sadtalker_ext.render.loading import load_renderer_nets
from tests import standin
from tests.conftest import parity_device, vector_params


@pytest.fixture(autouse=True)
def _drop_cache():
    yield
    checkpoints.clear_cache()


def _dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters()} | {
        b.dtype for b in module.buffers() if b.is_floating_point()
    }


def test_the_frame_convolutions_are_reduced_and_the_geometry_stays_float32(tmp_path):
    folder = standin.write_eighth_checkpoints(tmp_path / "ckpt")
    cpu = torch.device("cpu")
    full = load_renderer_nets(folder, 256, "crop", cpu, torch.float32)
    half = load_renderer_nets(folder, 256, "crop", cpu, torch.bfloat16)
    gen, motion_net = half.generator, half.generator.dense_motion_network
    for net in (
        gen.decoder,
        gen.third,
        gen.fourth,
        motion_net.hourglass,
        motion_net.mask,
        motion_net.occlusion,
    ):
        assert _dtypes(net) == {torch.bfloat16}
    for net in (half.kp_detector, half.mapping, gen.first, gen.down_blocks, gen.second, gen.resblocks_3d):
        assert _dtypes(net) == {torch.float32}
    assert _dtypes(motion_net.compress) == _dtypes(motion_net.norm) == {torch.float32}
    plan = synthetic_plan(2, 2)
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    outs = []
    for nets in (full, half):
        renderer = Renderer(nets, cpu)
        source = renderer.prepare_source(image, plan.source_row)
        assert source.feature.volume.dtype == torch.float32  # the source encoding
        outs.append(renderer.render_frames(source, plan, plan.batches()[0]))
    a, b = outs
    for key in ("deformation", "mask", "occlusion_map", "prediction", "decoder_logits"):
        assert b[key].dtype == torch.float32, key
    # the reduced maps run channels-last (the layout bfloat16 matrix units convolve fastest)
    assert b["decoder_input"].is_contiguous(memory_format=torch.channels_last)
    assert not b["decoder_input"].is_contiguous()
    for key, bound in (("deformation", 0.1), ("occlusion_map", 0.1), ("prediction", 0.02)):
        diff = (a[key] - b[key].float()).abs()
        assert 0 < float(diff.mean()) < bound, key  # bfloat16 rounding, not another picture


@pytest.mark.slow
@pytest.mark.parametrize("path", vector_params("render_cond_generator_animstep0_seed*.npz"))
def test_bfloat16_renderer_stays_near_the_official_float32_frame(path, standins):
    """The whole per-frame generator call in bfloat16 against the official float32 frame (well-conditioned
    weights). Measured on a 2-core Xeon (AMX): mean |diff| 0.0054, 43 % of uint8 values differ, 12 % by more
    than 2 levels; the bounds leave room for other kernels, not for another picture."""
    nets = load_renderer_nets(standins.for_vector(path), 256, "crop", torch.device("cpu"), torch.bfloat16)
    sibling = path.with_name(path.name.replace("generator_animstep0_", "make_animation_"))
    with np.load(sibling, allow_pickle=False) as s:
        source = torch.from_numpy(s["source_image"]).float()
    with np.load(path, allow_pickle=False) as z, torch.inference_mode():
        feature = nets.generator.prepare_source(source[:1])
        kp_source, kp_driving = (torch.from_numpy(z[k]).float() for k in ("kp_source", "kp_driving"))
        got = nets.generator.decode(feature, kp_source, kp_driving)["prediction"].numpy()
        ref = z["prediction"]
    diff = np.abs(got - ref)
    levels = np.abs(np.rint(got * 255) - np.rint(ref * 255))
    assert diff.mean() < 0.015, diff.mean()
    assert (levels <= 2).mean() > 0.75, (levels <= 2).mean()


# float16 has kernels on a GPU only (refused on the CPU, tested below).
HALF_DTYPES = [torch.bfloat16] + ([torch.float16] if parity_device().type == "cuda" else [])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("path", vector_params("render_cond_generator_seed*.npz"))
def test_half_decoder_stays_close_to_the_official_frame(path, dtype, standins):
    """Decoder alone from the stored input (well-conditioned weights), on the parity device: bfloat16 on
    the CPU measured mean |diff| 0.0025."""
    device = parity_device()
    nets = load_renderer_nets(standins.for_vector(path), 256, "crop", device, dtype)
    with np.load(path, allow_pickle=False) as z, torch.inference_mode():
        logits = nets.generator.decoder(torch.from_numpy(z["decoder_input"]).to(device)).float()
        diff = np.abs(torch.sigmoid(logits).cpu().numpy() - z["prediction"])
    assert diff.mean() < 0.01, diff.mean()
    assert (diff <= 2 / 255).mean() > 0.8


def test_float16_on_the_cpu_is_refused_bfloat16_accepted(tmp_path):
    with pytest.raises(InputError, match="float16 needs a GPU"):
        SadTalker(tmp_path, tmp_path, device="cpu", dtype="float16")
    assert SadTalker(tmp_path, tmp_path, device="cpu", dtype="bfloat16").dtype == torch.bfloat16
