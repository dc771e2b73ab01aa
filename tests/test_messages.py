"""Messages for bad files and values: what is wrong and what to do, never a library's raw text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sadtalker_ext import checkpoints
from sadtalker_ext.errors import CheckpointError, InputError
from tests import standin

ST256 = standin.FILES[0]


# ----------------------------------------------------------------------------------------------- audio


def test_empty_audio_file_is_called_empty(tmp_path):
    from sadtalker_ext.audio.decode import load_audio

    empty = tmp_path / "speech.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as info:
        load_audio(empty)
    msg = str(info.value)
    assert "'speech.wav' is empty (0 bytes)" in msg and "Choose the file again" in msg
    assert "Invalid data" not in msg


# ----------------------------------------------------------------------------------------------- keys


@pytest.fixture(scope="module")
def eighth(tmp_path_factory) -> Path:
    """Renderer stand-ins with every official key name (1/8 of the official widths)."""
    return standin.write_eighth_checkpoints(tmp_path_factory.mktemp("eighth"))


def test_missing_keys_are_reported_as_missing_not_as_unexpected(eighth, tmp_path):
    from safetensors.numpy import load_file, save_file

    from sadtalker_ext.render.loading import load_renderer_nets

    tensors = load_file(str(eighth / ST256))
    block = "generator.dense_motion_network.hourglass.encoder.down_blocks.1."
    gone = sorted(k for k in tensors if k.startswith(block) and k != block + "conv.bias")
    gone.remove(block + "norm.num_batches_tracked")
    assert len(gone) == 5
    folder = tmp_path / "ck"
    folder.mkdir()
    save_file({k: v for k, v in tensors.items() if k not in gone}, str(folder / ST256))
    (folder / standin.FILES[2]).symlink_to(eighth / standin.FILES[2])
    checkpoints.clear_cache()
    with pytest.raises(CheckpointError) as info:
        load_renderer_nets(folder, 256, "crop", torch.device("cpu"), torch.float32)
    msg = str(info.value)
    assert "5 missing key(s): " + ", ".join(k[len("generator.") :] for k in gone) in msg, msg
    assert "unexpected" not in msg and "mismatch" not in msg, msg


def test_extra_and_missing_keys_are_both_listed(eighth, tmp_path):
    from safetensors.numpy import load_file, save_file

    from sadtalker_ext.render.loading import load_renderer_nets

    tensors = load_file(str(eighth / ST256))
    gone = "kp_extractor.predictor.down_blocks.down1.conv.weight"
    added = "kp_extractor.predictor.extra_head.weight"
    tensors[added] = tensors.pop(gone)
    folder = tmp_path / "ck"
    folder.mkdir()
    save_file(tensors, str(folder / ST256))
    (folder / standin.FILES[2]).symlink_to(eighth / standin.FILES[2])
    checkpoints.clear_cache()
    with pytest.raises(CheckpointError) as info:
        load_renderer_nets(folder, 256, "crop", torch.device("cpu"), torch.float32)
    msg = str(info.value)
    assert "1 missing key(s): predictor.down_blocks.down1.conv.weight;" in msg, msg
    assert "1 unexpected key(s) (not in the network): predictor.extra_head.weight." in msg, msg
