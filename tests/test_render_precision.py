"""Reduced precision applies to the SPADE decoder only; the motion path stays float32.

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


def test_only_the_decoder_is_reduced_and_motion_is_unchanged(tmp_path):
    folder = standin.write_eighth_checkpoints(tmp_path / "ckpt")
    cpu = torch.device("cpu")
    full = load_renderer_nets(folder, 256, "crop", cpu, torch.float32)
    half = load_renderer_nets(folder, 256, "crop", cpu, torch.bfloat16)
    assert _dtypes(half.generator.decoder) == {torch.bfloat16}
    for net in (half.kp_detector, half.mapping, half.generator.dense_motion_network, half.generator.first):
        assert _dtypes(net) == {torch.float32}
    plan = synthetic_plan(2, 2)
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    outs = []
    for nets in (full, half):
        renderer = Renderer(nets, cpu)
        source = renderer.prepare_source(image, plan.source_row)
        outs.append(renderer.render_frames(source, plan, plan.batches()[0]))
    a, b = outs
    for key in ("deformation", "mask", "occlusion_map", "decoder_input"):
        assert torch.equal(a[key], b[key]), key  # the whole motion path ran in float32 both times
    assert b["prediction"].dtype == torch.float32 and b["decoder_logits"].dtype == torch.float32
    diff = (a["prediction"] - b["prediction"]).abs()
    assert 0 < float(diff.mean()) < 0.02  # bfloat16 rounding, not another picture


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
