"""Behaviour of the audio-to-coefficient stage beyond the parity vectors (randomly initialised networks)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from sadtalker_ext.checkpoints import read_safetensors_prefix
from sadtalker_ext.errors import CheckpointError, InputError
from sadtalker_ext.motion import (
    MotionResult,
    build_motion_nets,
    coefficients,
    draw_pose_noise,
    generate_coefficients,
    load_motion_nets,
    pose_noise_draws,
    save_coeff_mat,
    validate_pose_style,
)
from sadtalker_ext.motion.coefficients import predict_expression, predict_pose_motion, smooth_pose
from sadtalker_ext.nets.expnet import ExpNet
from sadtalker_ext.nets.pose_discriminator import PoseSequenceDiscriminator
from sadtalker_ext.nets.posevae import Audio2PoseNet, PoseVAEConfig
from sadtalker_ext.nets.res_unet import ResUnet
from tests.numerics import assert_within_float32_noise


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(1234)
    exp = ExpNet()
    pose = Audio2PoseNet()
    with torch.no_grad():  # give the class biases and the ExpNet output some non-trivial values
        pose.netG.decoder.classbias.normal_()
    return build_motion_nets(exp.state_dict(), pose.state_dict(), "cpu", torch.float32)


def inputs(t: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    mels = rng.uniform(-4, 2, size=(t, 1, 80, 16)).astype(np.float32)
    ratio = np.zeros((t, 1), np.float32)
    ratio[t // 2 :] = 0.7
    first = np.concatenate(
        [
            rng.normal(0, 0.4, 64),
            rng.uniform(-0.25, 0.25, 3),
            rng.uniform(-0.15, 0.15, 3),
            [1.2, 128.0, 128.0],
        ]
    ).astype(np.float32)[None]
    return mels, ratio, first


@pytest.mark.parametrize("bad", [-1, 46, 100, 1.5, True, "3", None])
def test_pose_style_refused(bad, nets) -> None:
    with pytest.raises(InputError):
        validate_pose_style(bad)
    mels, ratio, first = inputs(3)
    with pytest.raises(InputError):
        generate_coefficients(nets, mels, ratio, first, bad)


def test_pose_style_accepted() -> None:
    assert validate_pose_style(0) == 0
    assert validate_pose_style(45) == 45
    assert validate_pose_style(np.int64(7)) == 7


def test_pose_style_changes_pose_only(nets) -> None:
    mels, ratio, first = inputs(14)
    noise = draw_pose_noise(14, torch.Generator().manual_seed(3))
    a = generate_coefficients(nets, mels, ratio, first, 0, noise=noise)
    b = generate_coefficients(nets, mels, ratio, first, 45, noise=noise)
    np.testing.assert_array_equal(a.exp_pred, b.exp_pred)
    assert np.abs(a.pose_motion[1:] - b.pose_motion[1:]).max() > 0


@pytest.mark.parametrize("t", [1, 2, 12, 13, 20, 21, 32, 33, 34])
def test_edge_lengths(t: int, nets) -> None:
    mels, ratio, first = inputs(t, seed=t)
    res = generate_coefficients(nets, mels, ratio, first, 3, generator=torch.Generator().manual_seed(t))
    assert res.mat_coeffs.shape == (t, 70) and res.mat_coeffs.dtype == np.float32
    assert np.isfinite(res.mat_coeffs).all()
    assert res.noise.shape == (pose_noise_draws(t), 1, 64)
    np.testing.assert_array_equal(res.pose_motion[0], np.zeros(6, np.float32))
    np.testing.assert_array_equal(res.pose_raw[0], first[0, 64:70])
    if t > 1:
        assert np.abs(res.pose_motion[1:]).max() > 0


def test_noise_draw_counts() -> None:
    # frame 0 is the reference; the other T-1 frames go in chunks of 32 plus one tail chunk
    assert [pose_noise_draws(t) for t in (1, 2, 32, 33, 34, 65, 66)] == [0, 1, 1, 1, 2, 2, 3]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    np.testing.assert_array_equal(draw_pose_noise(70, g1).numpy(), draw_pose_noise(70, g2).numpy())


def test_noise_chunk_order(nets) -> None:
    """Draw k drives frames 1+32k .. 32+32k; the last draw drives the tail only."""
    t = 36  # 35 driven frames: one chunk (frames 1..32) and a tail of 3 (frames 33..35)
    mels, ratio, first = inputs(t)
    windows = torch.from_numpy(mels)
    ref_pose = torch.from_numpy(first[0, 64:70])
    noise = draw_pose_noise(t, torch.Generator().manual_seed(0))
    assert noise.shape[0] == 2
    base = predict_pose_motion(nets, windows, ref_pose, 2, noise)
    changed = noise.clone()
    changed[1] += 1.0
    other = predict_pose_motion(nets, windows, ref_pose, 2, changed)
    assert base.shape == (t, 6)
    torch.testing.assert_close(base[:33], other[:33], rtol=0, atol=0)
    assert float((base[33:] - other[33:]).abs().min()) > 0
    # the tail chunk decodes the LAST 32 windows and keeps its last 3 outputs
    with torch.no_grad():
        tail = nets.posenet.decode_chunk(
            windows[-32:][None], noise[1], torch.tensor([2]), ref_pose.reshape(1, 6)
        )
    torch.testing.assert_close(base[33:], tail[0, -3:], rtol=0, atol=0)
    mels, ratio, first = inputs(3)  # 2 driven frames: one draw
    with pytest.raises(ValueError, match="need 1 draws"):
        generate_coefficients(nets, mels, ratio, first, 2, noise=np.zeros((2, 1, 64), np.float32))


def test_expression_frames_independent_of_chunking(nets) -> None:
    """ExpNet frames are independent: a clip's first frames equal those of a shorter clip."""
    mels, ratio, first = inputs(12)
    windows, ref_exp = torch.from_numpy(mels), torch.from_numpy(np.repeat(first[:, :64], 12, axis=0))
    long = predict_expression(nets, windows, ref_exp, torch.from_numpy(ratio)).numpy()
    short = predict_expression(nets, windows[:5], ref_exp[:5], torch.from_numpy(ratio[:5])).numpy()
    # batch 10 vs 5 may pick other kernels: equal up to float32 noise, measured against float64
    nets64 = dataclasses.replace(nets, expnet=copy.deepcopy(nets.expnet).double(), dtype=torch.float64)
    ref = predict_expression(
        nets64, windows[:5].double(), ref_exp[:5].double(), torch.from_numpy(ratio[:5]).double()
    )
    assert_within_float32_noise(short, long[:5], ref.numpy(), what="first 5 frames")
    # the blink ratio is an input of ExpNet
    no_blink = predict_expression(nets, windows, ref_exp, torch.zeros(12, 1)).numpy()
    np.testing.assert_array_equal(long[:6], no_blink[:6])
    assert np.abs(long[6:] - no_blink[6:]).max() > 0


def test_smoothing_keeps_quadratics_and_short_clips() -> None:
    for t in (3, 4, 7, 12, 13, 40):
        x = np.arange(t, dtype=np.float64)[:, None]
        quad = (0.01 * x**2 - 0.2 * x + 0.5) * np.linspace(0.5, 1.5, 6)[None]
        np.testing.assert_allclose(smooth_pose(quad.astype(np.float32)), quad, atol=1e-5)
    rng = np.random.default_rng(0)
    noisy = rng.normal(size=(40, 6)).astype(np.float32)
    smoothed = smooth_pose(noisy)
    assert smoothed.dtype == np.float32 and smoothed.std() < 0.8 * noisy.std()
    for t in (1, 2):
        p = rng.normal(size=(t, 6)).astype(np.float32)
        np.testing.assert_array_equal(smooth_pose(p), p)


def test_motion_stage_has_no_still_mode_of_its_own(nets) -> None:
    """Still mode and expression scale are the renderer's (``render.motion.assemble_coefficients``, tested in
    test_render_motion.py and against the official rows in test_motion_parity.py); the motion stage only
    returns the .mat motion and has no second implementation of them."""
    params = inspect.signature(generate_coefficients).parameters
    assert "still" not in params and "expression_scale" not in params
    assert not hasattr(coefficients, "render_rows")
    assert "coeffs" not in {f.name for f in dataclasses.fields(MotionResult)}
    mels, ratio, first = inputs(6)
    with pytest.raises(TypeError):
        generate_coefficients(nets, mels, ratio, first, 0, still=True)  # type: ignore[call-arg]


def reference_video(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    ref = rng.normal(0, 0.3, size=(n, 73)).astype(np.float32)
    ref[:, 64:70] = np.arange(n, dtype=np.float32)[:, None] * np.array(
        [0.01, 0.02, -0.01, 0.1, 0.2, 0.3], np.float32
    )
    return ref


@pytest.mark.parametrize("n", [5, 20])  # shorter than T (tiled) and longer (truncated)
def test_ref_pose(n: int, nets) -> None:
    t = 14
    mels, ratio, first = inputs(t)
    ref = reference_video(n)
    noise = draw_pose_noise(t, torch.Generator().manual_seed(4))
    plain = generate_coefficients(nets, mels, ratio, first, 0, noise=noise)
    res = generate_coefficients(nets, mels, ratio, first, 0, noise=noise, ref_coeffs=ref, ref_mode="pose")
    rows = np.arange(t) % n
    expected = plain.mat_coeffs[:, 64:70] + (ref[rows, 64:70] - ref[0, 64:70])
    np.testing.assert_allclose(res.mat_coeffs[:, 64:70], expected, atol=1e-6)
    np.testing.assert_array_equal(res.mat_coeffs[:, :64], plain.mat_coeffs[:, :64])
    np.testing.assert_array_equal(res.mat_coeffs[0, 64:70], plain.mat_coeffs[0, 64:70])


def test_ref_blink_and_pose_blink(nets) -> None:
    t, n = 14, 5
    mels, ratio, first = inputs(t)
    ref = reference_video(n)
    noise = draw_pose_noise(t, torch.Generator().manual_seed(4))
    plain = generate_coefficients(nets, mels, ratio, first, 0, noise=noise)
    blink = generate_coefficients(nets, mels, ratio, first, 0, noise=noise, ref_coeffs=ref, ref_mode="blink")
    np.testing.assert_array_equal(blink.ref_rows[:, :64], ref[np.arange(t) % n, :64])
    np.testing.assert_array_equal(blink.ref_rows[:, 64:], np.repeat(first[:, 64:70], t, axis=0))
    assert np.abs(blink.exp_pred - plain.exp_pred).max() > 0
    np.testing.assert_array_equal(blink.mat_coeffs[:, 64:], plain.mat_coeffs[:, 64:])  # pose untouched
    # the blink ratio is ignored (zeroed) with a blink reference
    other_ratio = generate_coefficients(
        nets, mels, np.ones_like(ratio), first, 0, noise=noise, ref_coeffs=ref, ref_mode="blink"
    )
    np.testing.assert_array_equal(other_ratio.mat_coeffs, blink.mat_coeffs)
    both = generate_coefficients(
        nets, mels, ratio, first, 0, noise=noise, ref_coeffs=ref, ref_mode="pose+blink"
    )
    pose = generate_coefficients(nets, mels, ratio, first, 0, noise=noise, ref_coeffs=ref, ref_mode="pose")
    np.testing.assert_array_equal(both.mat_coeffs[:, :64], blink.mat_coeffs[:, :64])
    np.testing.assert_array_equal(both.mat_coeffs[:, 64:], pose.mat_coeffs[:, 64:])


def test_separate_pose_reference(nets) -> None:
    """Official --ref_eyeblink A --ref_pose B: expression (blinks) as with A alone, pose as with B alone."""
    t = 14
    mels, ratio, first = inputs(t)
    blink_video, pose_video = reference_video(5), reference_video(9)[::-1].copy()
    noise = draw_pose_noise(t, torch.Generator().manual_seed(4))
    both = generate_coefficients(
        nets, mels, ratio, first, 0, ref_coeffs=blink_video, ref_mode="pose+blink", pose_ref_coeffs=pose_video,
        noise=noise,
    )  # fmt: skip
    blink = generate_coefficients(
        nets, mels, ratio, first, 0, ref_coeffs=blink_video, ref_mode="blink", noise=noise
    )
    pose = generate_coefficients(
        nets, mels, ratio, first, 0, ref_coeffs=pose_video, ref_mode="pose", noise=noise
    )
    np.testing.assert_array_equal(both.mat_coeffs[:, :64], blink.mat_coeffs[:, :64])
    np.testing.assert_array_equal(both.mat_coeffs[:, 64:], pose.mat_coeffs[:, 64:])
    same = generate_coefficients(
        nets, mels, ratio, first, 0, ref_coeffs=blink_video, ref_mode="pose+blink", noise=noise
    )
    assert np.abs(same.mat_coeffs[:, 64:] - both.mat_coeffs[:, 64:]).max() > 0
    for mode in ("pose", "blink", None):
        with pytest.raises(InputError, match=r"pose\+blink"):
            generate_coefficients(
                nets, mels, ratio, first, 0, ref_coeffs=blink_video, ref_mode=mode, pose_ref_coeffs=pose_video
            )


def test_ref_all_uses_reference_motion(nets) -> None:
    mels, ratio, first = inputs(5)
    ref = reference_video(12)
    res = generate_coefficients(nets, mels, ratio, first, 0, ref_coeffs=ref, ref_mode="all")
    np.testing.assert_array_equal(res.mat_coeffs, ref[:, :70])
    assert res.exp_pred is None and res.noise.shape[0] == 0 and res.num_frames == 12


def test_ref_mode_errors(nets) -> None:
    mels, ratio, first = inputs(5)
    with pytest.raises(InputError):
        generate_coefficients(nets, mels, ratio, first, 0, ref_coeffs=reference_video(5), ref_mode="head")
    with pytest.raises(InputError):
        generate_coefficients(nets, mels, ratio, first, 0, ref_mode="pose")
    with pytest.raises(InputError):
        generate_coefficients(nets, mels, ratio, first, 0, ref_coeffs=np.zeros((5, 60)), ref_mode="pose")
    with pytest.raises(ValueError, match="ratio: expected 4 rows"):
        generate_coefficients(nets, mels[:4], ratio, first, 0)
    with pytest.raises(ValueError, match="indiv_mels: expected"):
        generate_coefficients(nets, mels[:, :, :40], ratio, first, 0)


def test_mat_export_layout(nets, tmp_path: Path) -> None:
    mels, ratio, first = inputs(9)
    res = generate_coefficients(nets, mels, ratio, first, 0, generator=torch.Generator().manual_seed(0))
    path = save_coeff_mat(tmp_path / "sub" / "pic##audio.mat", res.mat_coeffs)
    mat = loadmat(path)
    assert [k for k in mat if not k.startswith("__")] == ["coeff_3dmm"]
    assert mat["coeff_3dmm"].dtype == np.float32 and mat["coeff_3dmm"].shape == (9, 70)
    np.testing.assert_array_equal(mat["coeff_3dmm"], res.mat_coeffs)
    with pytest.raises(ValueError, match=r"coeffs: expected \(T, 70\)"):
        save_coeff_mat(tmp_path / "bad.mat", res.mat_coeffs[:, :64])


@torch.no_grad()
def test_net_shapes() -> None:
    cfg = PoseVAEConfig()
    torch.manual_seed(0)
    unet = ResUnet().eval()
    out = unet(torch.rand(2, 1, cfg.seq_len, 6))
    assert out.shape == (2, 1, 32, 6) and float(out.min()) > 0 and float(out.max()) < 1
    disc = PoseSequenceDiscriminator().eval()
    assert disc(torch.rand(3, 32, 6)).shape == (3, 8)
    net = Audio2PoseNet().eval()
    mu, logvar = net.netG.encoder(
        torch.rand(2, 32, 6), torch.rand(2, 6), torch.rand(2, 32, 512), torch.tensor([0, 5])
    )
    assert mu.shape == logvar.shape == (2, 64)
    assert net.netG.encoder.MLP.L0.in_features == 454 and net.netG.decoder.MLP.L0.in_features == 262


def test_load_strict_and_cached(standins, tmp_path: Path) -> None:
    folder = standins.folder(0, names=("SadTalker_V0.0.2_256.safetensors",))
    a = load_motion_nets(folder, 256, "cpu", torch.float32)
    assert load_motion_nets(folder, 256, "cpu", torch.float32) is a
    assert not a.expnet.training and not any(p.requires_grad for p in a.posenet.parameters())
    with pytest.raises(CheckpointError):
        load_motion_nets(tmp_path, 256, "cpu", torch.float32)
    # a file lacking one discriminator tensor is refused
    from safetensors.torch import save_file

    src = folder / "SadTalker_V0.0.2_256.safetensors"
    tensors = {f"audio2exp.{k}": v for k, v in read_safetensors_prefix(src, "audio2exp").items()}
    tensors.update({f"audio2pose.{k}": v for k, v in read_safetensors_prefix(src, "audio2pose").items()})
    del tensors["audio2pose.netD_motion.seq.3.bias"]
    broken = tmp_path / "broken"
    broken.mkdir()
    save_file(tensors, str(broken / "SadTalker_V0.0.2_256.safetensors"))
    with pytest.raises(CheckpointError, match="netD_motion"):
        load_motion_nets(broken, 256, "cpu", torch.float32)
