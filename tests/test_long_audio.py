"""Long recordings: the motion stage reports progress the user can see move (and can be cancelled
inside it); the audio length limit is an option (``max_audio_seconds``, ``--max_audio_seconds``) that
the too-long message names."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from sadtalker_ext.errors import CancelledError, InputError
from sadtalker_ext.motion import MotionNets
from sadtalker_ext.nets.expnet import ExpNet
from sadtalker_ext.nets.posevae import Audio2PoseNet, PoseVAEConfig
from sadtalker_ext.nets.res_unet import ResUnetConfig
from sadtalker_ext.options import MAX_AUDIO_SECONDS, GenerationOptions
from sadtalker_ext.pipeline import SadTalker
from tests import standin
from tests.standin import MEDIA_DIR

PICTURE = MEDIA_DIR / "people_0.png"
SR = 16000
LONG_SECONDS = 60.0


def reduced_motion_nets() -> MotionNets:
    """ExpNet and PoseVAE with their per-window mel conv stacks replaced by one conv (same 512-wide
    embedding) and a narrow pose ResUnet: the official code around them, at a fraction of the cost."""
    torch.manual_seed(0)
    expnet = ExpNet()
    expnet.audio_encoder = nn.Sequential(nn.Conv2d(1, 512, (80, 16)))
    posenet = Audio2PoseNet(PoseVAEConfig(unet=ResUnetConfig(filters=(2, 4, 4, 8))))
    posenet.audio_encoder.audio_encoder = nn.Sequential(nn.Conv2d(1, 512, (80, 16)))
    return MotionNets(expnet.eval(), posenet.eval(), torch.device("cpu"), torch.float32)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllable-like bursts of a few harmonics plus noise, float32 in [-1, 1] at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    voiced = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4))
    envelope = np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None) ** 2
    wav = 0.3 * voiced * envelope + 0.01 * rng.standard_normal(t.shape)
    return (wav / np.abs(wav).max() * 0.8).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Reduced-width renderer + official-width reconstruction net stand-ins (the motion nets are replaced)."""
    return standin.write_reduced_checkpoints(
        tmp_path_factory.mktemp("ckpt"), seed=0, motion=standin.motion_tensors(0)
    )


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    import soundfile as sf

    path = tmp_path_factory.mktemp("audio") / "long_speech.wav"
    sf.write(path, speech_like(LONG_SECONDS), SR, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def talker(checkpoints, tmp_path_factory):
    t = SadTalker(checkpoint_dir=checkpoints, gfpgan_dir=tmp_path_factory.mktemp("gf"), device="cpu")
    nets = reduced_motion_nets()
    t._motion_nets = lambda size: nets
    yield t
    t.unload()


def _options(audio, **kw) -> GenerationOptions:
    values = {"source": str(PICTURE), "driven_audio": str(audio), "face_detector": "dlib", "seed": 3}
    values.update(kw)
    return GenerationOptions(**values)


def test_motion_stage_progress_moves_in_chunks(talker, long_wav):
    calls: list[tuple[str, int, int]] = []
    prep = talker.prepare(
        _options(long_wav),
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )
    frames = int(LONG_SECONDS * 25)
    assert prep.num_frames == frames
    motion = [(done, total) for stage, done, total in calls if stage == "motion"]
    totals = {total for _, total in motion[1:]}
    assert len(totals) == 1, totals  # one total after the stage starts
    (total,) = totals
    # ExpNet in chunks of 10 frames, then the PoseVAE in chunks of 32: one step per network call
    assert total == -(-frames // 10) + -(-(frames - 1) // 32)
    done = [d for d, _ in motion[1:]]
    assert done[0] == 0 and done[-1] == total
    assert done == sorted(done), done
    assert len(set(done)) >= 20  # the user sees it move, not "0/1" until the end
    # the render plan still covers every frame
    assert prep.plan.sequence.shape[0] == frames


def test_cancel_inside_the_motion_stage(talker, long_wav):
    seen: list[tuple[int, int]] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "motion":
            seen.append((done, total))

    def cancel() -> bool:
        return len(seen) >= 3  # the stage's start, then two chunks

    with pytest.raises(CancelledError, match="while generating the motion"):
        talker.prepare(_options(long_wav), progress=progress, cancel=cancel)
    assert len(seen) == 3  # stopped at once, long before the end of the stage
    done, total = seen[-1]
    assert 0 < done < total // 10


def test_max_audio_seconds_is_honoured_and_named(talker, long_wav):
    with pytest.raises(InputError) as info:
        talker.prepare(_options(long_wav, max_audio_seconds=LONG_SECONDS - 10))
    text = str(info.value)
    assert f"at most {LONG_SECONDS - 10:g} s" in text
    assert "max_audio_seconds" in text and "--max_audio_seconds" in text and "Maximum audio length" in text
    assert "raise the maximum audio length." not in text  # the old wording named no option


def test_options_field(tmp_path):
    assert GenerationOptions(source="a.png", driven_audio="b.wav").max_audio_seconds == MAX_AUDIO_SECONDS
    opts = GenerationOptions.from_mapping(
        {"source": "a.png", "idle_seconds": "900", "max_audio_seconds": "1200"}
    )
    assert opts.max_audio_seconds == 1200.0 and opts.idle_seconds == 900.0
    with pytest.raises(InputError, match="raise the limit with the option max_audio_seconds"):
        GenerationOptions(source="a.png", idle_seconds=900)
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(InputError, match="max_audio_seconds"):
            GenerationOptions(source="a.png", driven_audio="b.wav", max_audio_seconds=bad)


def test_cli_flag_raises_and_lowers_the_limit(checkpoints, tmp_path):
    """The real CLI process: --max_audio_seconds below the recording's length refuses it with a message that
    names the flag (before any model loads); the flag reaches the options."""
    import soundfile as sf

    from sadtalker_ext import cli

    wav = tmp_path / "speech.wav"
    sf.write(wav, speech_like(6.0), SR, subtype="PCM_16")
    res = subprocess.run(
        [sys.executable, "-m", "sadtalker_ext", "--source_image", str(PICTURE), "--driven_audio", str(wav),
         "--max_audio_seconds", "5", "--face_detector", "dlib", "--checkpoint_dir", str(checkpoints),
         "--gfpgan_dir", str(tmp_path / "gf"), "--result_dir", str(tmp_path / "out"), "--no_progress"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert "at most 5 s" in res.stderr and "--max_audio_seconds" in res.stderr
    assert not list((tmp_path / "out").glob("*.mp4"))
    args = cli.build_parser().parse_args(
        ["--source_image", str(PICTURE), "--driven_audio", str(wav), "--max-audio-seconds", "1800"]
    )
    assert cli.options_for(cli.collect_jobs(args)[0], args).max_audio_seconds == 1800.0
    args = cli.build_parser().parse_args(["--source_image", str(PICTURE), "--driven_audio", str(wav)])
    assert cli.options_for(cli.collect_jobs(args)[0], args).max_audio_seconds == MAX_AUDIO_SECONDS


def test_standalone_app_field():
    from sadtalker_ext import app

    assert "max_audio_seconds" in app.FORM_FIELDS
    values = {"source": str(PICTURE), "driven_audio": "b.wav", "max_audio_seconds": 1500.0}
    assert app.options_from_form(values).max_audio_seconds == 1500.0
