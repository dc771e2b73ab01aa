"""The benchmark's baseline (official per-step structure) renders the same frames as our renderer.

Otherwise the speed ratio in bench/RESULTS.md would compare different work. Stand-ins at 1/8 of the official widths.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.baseline import iter_official_structure
from bench.bench import synthetic_plan
from sadtalker_ext import checkpoints
from sadtalker_ext.render.animate import Renderer
from sadtalker_ext.render.loading import load_renderer_nets
from tests import standin


def test_baseline_frames_equal_ours(tmp_path):
    folder = standin.write_eighth_checkpoints(tmp_path / "ckpt")
    cpu = torch.device("cpu")
    try:
        nets = load_renderer_nets(folder, 256, "crop", cpu, torch.float32)
        plan = synthetic_plan(5, 2)  # 5 frames at batch 2: the official layout pads one position
        image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
        renderer = Renderer(nets, cpu)
        source = renderer.prepare_source(image, plan.source_row)
        ours = {}
        for positions in plan.batches():
            frames = renderer.render_frames(source, plan, positions)["prediction"]
            ours.update(zip(positions.tolist(), frames, strict=True))
        seen = set()
        for positions, frames in iter_official_structure(nets, image, plan, cpu):
            for pos, frame in zip(positions.tolist(), frames, strict=True):
                if pos < plan.frame_count:
                    seen.add(pos)
                    assert float((frame - ours[pos]).abs().max()) < 2e-3, (
                        f"frame {pos}"
                    )  # float rounding only
        assert seen == set(range(plan.frame_count))
        assert float(np.ptp([float(f.mean()) for f in ours.values()])) > 0  # frames differ: motion is driven
    finally:
        checkpoints.clear_cache()
