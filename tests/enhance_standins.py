"""Reduced enhancer networks for the pipeline tests (:mod:`tests.test_pipeline_enhance`,
:mod:`tests.test_pipeline_enhance_official`), saved under the official names in the official layouts; the
loaders infer the reduced widths from the tensor shapes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from sadtalker_ext.nets.gfpgan import GFPGANConfig
from sadtalker_ext.nets.rrdbnet import RRDBNet, RRDBNetConfig
from sadtalker_ext.pipeline import SadTalker
from sadtalker_ext.weights import REALESRGAN_FILE

SMALL_GFPGAN = GFPGANConfig(out_size=64, num_style_feat=32, narrow=1 / 16)
SMALL_RRDB = RRDBNetConfig(num_feat=8, num_block=1, num_grow_ch=4)


def save_realesrgan(net: RRDBNet, folder: Path) -> Path:
    """Give a freshly built reduced RRDBNet contrast (every weight x2, last bias 0.5: outputs mostly inside
    (0, 1)) and save it as ``folder/RealESRGAN_x2plus.pth`` (``{'params_ema': state}``)."""
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0)
        net.conv_last.bias.fill_(0.5)
    path = folder / REALESRGAN_FILE
    torch.save({"params_ema": net.state_dict()}, str(path))
    return path


def held_pipeline(checkpoints: Path, face_dir: Path, result_dir: Path) -> Iterator[SadTalker]:
    """A CPU pipeline on the given weight folders for a module's tests; its models are dropped after them."""
    talker = SadTalker(checkpoint_dir=checkpoints, gfpgan_dir=face_dir, device="cpu", result_dir=result_dir)
    yield talker
    talker.unload()
