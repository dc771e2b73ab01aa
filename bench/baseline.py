"""The comparison baseline: frames rendered with the official per-step structure, using our networks.

What the official ``make_animation`` loop does per step, written out plainly:

* the source picture is repeated to the batch (``batch_size`` rows); the keypoint detector and the
  source mapping window run once per call (as in the official ``make_animation``), the generator's
  source encoder runs again on every step;
* the generator forward is the direct arrangement: dense motion from the full source volume
  (compress conv every step), grid sample, then the SPADE decoder block by block with the label map
  nearest-upsampled and every SPADE conv run separately (``SpadeDecoder.forward_reference``).

Frames come out in the official batch layout (row ``b`` holds frames ``b*steps ..``); padding positions
are rendered and dropped. Same math as :class:`sadtalker_ext.render.animate.Renderer` (float rounding aside).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from sadtalker_ext.render import motion
from sadtalker_ext.render.animate import RenderPlan


def _generator_step(generator, image: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor):
    """Official generator forward: encode the source, warp, decode. ``image (n, 3, S, S)`` -> ``(n, 3, S, S)``."""
    volume = generator.encode_source(image)
    flow = generator.dense_motion_network(volume, kp_driving, kp_source, direct=True)
    grid = flow["deformation"]
    warped = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    b, c, d, h, w = warped.shape
    hidden = generator.fourth(generator.third(warped.reshape(b, c * d, h, w)))
    occlusion = flow.get("occlusion_map")
    if occlusion is not None:
        if occlusion.shape[2:] != hidden.shape[2:]:
            occlusion = F.interpolate(occlusion, size=hidden.shape[2:], mode="bilinear")
        hidden = hidden * occlusion
    return torch.sigmoid(generator.decoder.forward_reference(hidden).float())


@torch.inference_mode()
def iter_official_structure(
    nets, source_image: torch.Tensor, plan: RenderPlan, device
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield ``(positions, frames (n, 3, S, S))`` per official step; ``positions >= T`` are padding."""

    def tensor(a) -> torch.Tensor:
        return torch.as_tensor(a).to(device=device, dtype=torch.float32)

    source_image = tensor(source_image)
    steps = list(plan.batches("official"))
    n = len(steps[0])
    # Once per call, as the official make_animation does (on the batch-repeated source picture).
    image = source_image.expand(n, *source_image.shape[1:]).contiguous()
    kp_canonical = nets.kp_detector(image).float()
    src_window = np.repeat(motion.source_window(plan.source_row), n, axis=0)
    he_source = {k: v.float() for k, v in nets.mapping(tensor(src_window)).items()}
    kp_source = motion.transform_keypoints(kp_canonical, he_source).value
    for positions in steps:
        frames = np.minimum(positions, plan.frame_count - 1)
        he_driving = {
            k: v.float()
            for k, v in nets.mapping(tensor(motion.target_windows(plan.sequence, frames))).items()
        }
        overrides = {
            name: torch.as_tensor(getattr(plan, name)[frames], dtype=torch.float32, device=device)
            for name in ("yaw", "pitch", "roll")
            if getattr(plan, name) is not None
        }
        kp_driving = motion.transform_keypoints(kp_canonical, he_driving, **overrides).value
        yield positions, _generator_step(nets.generator, image, kp_source, kp_driving)
