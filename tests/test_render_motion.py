"""Unit tests of the renderer driving math (no checkpoints): windows, batching, pose sequences, loop."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from sadtalker_ext.errors import CancelledError, InputError
from sadtalker_ext.nets.mapping import MappingConfig, MappingNet
from sadtalker_ext.render import motion
from sadtalker_ext.render.animate import (
    Renderer,
    frames_to_uint8,
    plan_from_options,
    plan_render,
    render_uint8,
)

# ---------------------------------------------------------------------------------------------
# windows and coefficient assembly


@pytest.mark.parametrize("frames", [1, 2, 5, 13, 27, 40])
def test_window_indices_are_clamped_neighbours(frames):
    for i in range(frames):
        idx = motion.window_indices(frames, i)
        assert idx.shape == (motion.WINDOW,) == (27,)
        for k, j in enumerate(idx.tolist()):
            assert j == min(max(i + k - 13, 0), frames - 1)
        assert idx[13] == i


def test_target_windows_transpose_rows():
    rng = np.random.default_rng(3)
    seq = rng.standard_normal((6, 70)).astype(np.float32)
    frames = [0, 3, 5]
    win = motion.target_windows(seq, frames)
    assert win.shape == (3, 70, 27) and win.dtype == np.float32
    for n, i in enumerate(frames):
        for k in range(27):
            np.testing.assert_array_equal(win[n, :, k], seq[min(max(i + k - 13, 0), 5)])
    src = motion.source_window(seq[:1])
    assert src.shape == (1, 70, 27)
    assert np.all(src == seq[0][None, :, None])


def _coeffs(frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, 73)).astype(np.float32), rng.standard_normal((frames, 70)).astype(
        np.float32
    )


def test_assemble_crop_vs_full_and_still():
    src, tgt = _coeffs(4)
    row, seq = motion.assemble_coefficients(src, tgt, preprocess="crop")
    assert row.shape == (1, 70) and seq.shape == (4, 70)
    np.testing.assert_array_equal(seq, tgt)
    row, seq = motion.assemble_coefficients(src, tgt, preprocess="extfull")
    assert row.shape == (1, 73) and seq.shape == (4, 73)
    np.testing.assert_array_equal(seq[:, :70], tgt)
    np.testing.assert_array_equal(seq[:, 70:], np.repeat(src[:, 70:], 4, axis=0))
    _, still = motion.assemble_coefficients(src, tgt, preprocess="full", still=True)
    np.testing.assert_array_equal(still[:, :64], tgt[:, :64])
    np.testing.assert_array_equal(still[:, 64:], np.repeat(src[:, 64:73], 4, axis=0))
    _, still_crop = motion.assemble_coefficients(src, tgt, preprocess="crop", still=True)
    np.testing.assert_array_equal(still_crop[:, 64:], np.repeat(src[:, 64:70], 4, axis=0))


def test_expression_scale_only_touches_expression():
    src, tgt = _coeffs(3)
    _, seq = motion.assemble_coefficients(src, tgt, expression_scale=1.7)
    np.testing.assert_array_equal(seq[:, :64], tgt[:, :64] * np.float32(1.7))
    np.testing.assert_array_equal(seq[:, 64:], tgt[:, 64:])


def test_assemble_refuses_bad_shapes():
    src, tgt = _coeffs(3)
    with pytest.raises(InputError):
        motion.assemble_coefficients(src[:, :70], tgt, preprocess="full")
    with pytest.raises(InputError):
        motion.assemble_coefficients(src, tgt[:, :64])
    with pytest.raises(InputError):
        motion.assemble_coefficients(src, tgt[:0])


# ---------------------------------------------------------------------------------------------
# batch layout


@pytest.mark.parametrize(("frames", "batch"), [(1, 1), (1, 4), (3, 2), (30, 2), (7, 3), (5, 8), (64, 64)])
def test_batch_layout_pads_to_multiple_and_is_row_major(frames, batch):
    layout = motion.batch_layout(frames, batch)
    steps = math.ceil(frames / batch)
    assert layout.shape == (batch, steps)
    assert sorted(layout.reshape(-1).tolist()) == list(range(batch * steps))
    for b in range(batch):
        assert layout[b].tolist() == list(range(b * steps, (b + 1) * steps))
    assert 0 <= batch * steps - frames < batch


def test_padded_windows_repeat_last_window():
    _, tgt = _coeffs(5)
    win = motion.padded_windows(tgt, 4)
    assert win.shape == (4, 2, 70, 27)
    flat = win.reshape(8, 70, 27)
    last = motion.target_windows(tgt, [4])[0]
    for p in range(8):
        expect = motion.target_windows(tgt, [p])[0] if p < 5 else last
        np.testing.assert_array_equal(flat[p], expect)


def test_batch_rules_refuse_nonsense():
    with pytest.raises(InputError):
        motion.batch_layout(0, 2)
    with pytest.raises(InputError):
        motion.batch_layout(3, 0)


# ---------------------------------------------------------------------------------------------
# free-view pose sequences


def test_camera_pose_single_value_is_held():
    seq = motion.camera_pose_sequence([7.5], 9)
    assert seq.shape == (9,)
    assert np.all(seq == 7.5)


@pytest.mark.parametrize(
    ("keys", "frames"),
    [([0, 20], 3), ([0, 20], 50), ([5, -5], 7), ([0, 30, -10], 41), ([-20, 20, 0, 15], 100)],
)
def test_camera_pose_constant_speed_and_truncation(keys, frames):
    seq = motion.camera_pose_sequence(keys, frames)
    assert seq.shape == (frames,)
    assert seq[0] == keys[0]
    total = sum(abs(b - a) for a, b in itertools.pairwise(keys))
    speed = total / (frames - 1)
    diffs = np.abs(np.diff(seq))
    moving = diffs[diffs > 1e-9]
    # every move between two frames is one step of the common speed (a segment change may be shorter)
    assert np.all(moving <= speed + 1e-9)
    assert np.sum(np.isclose(moving, speed)) >= len(moving) - (len(keys) - 1)
    lo, hi = min(keys), max(keys)
    assert np.all((seq >= lo - 1e-9) & (seq <= hi + 1e-9))


def test_camera_pose_padding_with_last_value():
    seq = motion.camera_pose_sequence([0, 20], 3)
    # official: arange(0, 20, 10) = [0, 10], padded to 3 frames with its last value
    assert seq.tolist() == [*np.arange(0.0, 20.0, 10.0).tolist(), 10.0]


def test_camera_pose_degenerate_lists_are_defined():
    assert motion.camera_pose_sequence([3, 3, 3], 5).tolist() == [3.0] * 5
    seq = motion.camera_pose_sequence([0, 0, 10], 6)
    np.testing.assert_allclose(seq, motion.camera_pose_sequence([0, 10], 6))
    assert motion.camera_pose_sequence([4, -4, 9], 1).tolist() == [4.0]
    with pytest.raises(InputError):
        motion.camera_pose_sequence([], 4)
    with pytest.raises(InputError):
        motion.camera_pose_sequence([0, float("nan")], 4)
    with pytest.raises(InputError):
        motion.camera_pose_sequence([0, 10], 0)


def test_camera_pose_layout_follows_batch_layout():
    seq = motion.camera_pose_sequence([-15, 25], 11)
    lay = motion.camera_pose_layout([-15, 25], 11, 4)
    pos = motion.batch_layout(11, 4)
    assert lay.dtype == np.float32 and lay.shape == pos.shape
    np.testing.assert_array_equal(lay, seq[np.minimum(pos, 10)].astype(np.float32))


# ---------------------------------------------------------------------------------------------
# head pose math


def test_headpose_degrees_range_and_peak():
    logits = torch.full((3, 66), -50.0)
    for row, b in enumerate((0, 33, 65)):
        logits[row, b] = 50.0
    deg = motion.headpose_to_degrees(logits)
    np.testing.assert_allclose(deg.numpy(), [3 * 0 - 99, 3 * 33 - 99, 3 * 65 - 99], atol=1e-4)
    flat = motion.headpose_to_degrees(torch.zeros(1, 66))
    assert abs(float(flat) - (3 * 32.5 - 99)) < 1e-4


def test_rotation_uses_314_and_pitch_yaw_roll_order():
    yaw, pitch, roll = torch.tensor([30.0]), torch.tensor([-20.0]), torch.tensor([50.0])
    r = motion.rotation_matrix(yaw, pitch, roll)[0].double()
    rad = [float(v) / 180 * 3.14 for v in (yaw, pitch, roll)]
    y, p, z = rad
    rx = torch.tensor([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]]).double()
    ry = torch.tensor([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]]).double()
    rz = torch.tensor([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]]).double()
    torch.testing.assert_close(r, rx @ ry @ rz, atol=1e-6, rtol=0)
    assert not torch.allclose(r, rz @ ry @ rx, atol=1e-3)
    # 180 degrees is 3.14 rad, not pi: cos differs from -1
    half = motion.rotation_matrix(torch.tensor([180.0]), torch.zeros(1), torch.zeros(1))[0]
    assert abs(float(half[0, 0]) - math.cos(3.14)) < 1e-6


def test_transform_keypoints_only_y_translation_and_override():
    g = torch.Generator().manual_seed(0)
    kp = torch.randn(2, 15, 3, generator=g)
    head = {k: torch.randn(2, 66, generator=g) for k in ("yaw", "pitch", "roll")}
    head["t"] = torch.tensor([[0.3, -0.2, 0.5], [-0.4, 0.1, -0.6]])
    head["exp"] = torch.randn(2, 45, generator=g)
    t_before = head["t"].clone()
    res = motion.transform_keypoints(kp, head)
    torch.testing.assert_close(head["t"], t_before)  # input not modified
    assert res.translation[:, 0].abs().sum() == 0 and res.translation[:, 2].abs().sum() == 0
    torch.testing.assert_close(res.translation[:, 1], t_before[:, 1])
    expect = kp @ res.rotation.transpose(1, 2) + res.translation[:, None] + head["exp"].view(2, 15, 3)
    torch.testing.assert_close(res.value, expect)
    over = motion.transform_keypoints(kp, head, yaw=torch.tensor([10.0, -10.0]))
    torch.testing.assert_close(over.yaw, torch.tensor([10.0, -10.0]))
    torch.testing.assert_close(over.pitch, res.pitch)
    assert not torch.allclose(over.value, res.value)


def test_frames_to_uint8_matches_img_as_ubyte():
    from skimage import img_as_ubyte

    rng = np.random.default_rng(5)
    x = rng.random((2, 3, 8, 9), dtype=np.float32)
    x[0, 0, 0, :5] = np.array([0.5, 1.5, 2.5, 127.5, 254.5], dtype=np.float32) / 255  # half-way values
    x[1, 2, 3, 4] = 1.0
    x[1, 2, 3, 5] = 0.0
    ours = frames_to_uint8(torch.from_numpy(x))
    ref = img_as_ubyte(list(x.transpose(0, 2, 3, 1)))
    assert ours.dtype == np.uint8 and ours.shape == (2, 8, 9, 3)
    np.testing.assert_array_equal(ours, ref)


# ---------------------------------------------------------------------------------------------
# the frame loop with tiny stand-in networks (checks order, batching, progress, cancel)


class _CountingKP(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        base = image.mean(dim=(1, 2, 3))[:, None, None]
        return base + torch.linspace(-0.5, 0.5, 45).view(1, 15, 3)


class _ToyGenerator:
    """Per-sample toy decoder: the frame is a function of the source feature and both keypoint sets."""

    def __init__(self):
        self.encodes = 0
        self.batch_sizes: list[int] = []

    def encode_source(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.encodes += 1
        return image * 0.5, {"img": image}

    def decode(self, feature, kp_source, kp_driving):
        feat, extra = feature
        assert feat.shape[0] == kp_driving.shape[0] == extra["img"].shape[0] == kp_source.shape[0]
        self.batch_sizes.append(kp_driving.shape[0])
        shift = (kp_driving - kp_source).sum(dim=(1, 2))[:, None, None, None]
        return {"prediction": torch.sigmoid(feat + extra["img"] + shift)}


class _Nets:
    def __init__(self, coeff_nc: int):
        torch.manual_seed(0)
        self.kp_detector = _CountingKP()
        self.generator = _ToyGenerator()
        self.mapping = MappingNet(MappingConfig(coeff_nc=coeff_nc, descriptor_nc=16)).eval()


@pytest.fixture
def toy():
    src, tgt = _coeffs(7, seed=1)
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    return src, tgt, image


@pytest.mark.parametrize("batch", [1, 3, 4, 8])
def test_loop_sequential_equals_official_and_counts(toy, batch):
    src, tgt, image = toy
    plan = plan_render(src, tgt, batch_size=batch, yaw=[0, 20], roll=[5])
    nets = _Nets(70)
    calls = []
    seq_chunks = list(
        Renderer(nets, "cpu").iter_frames(image, plan, progress=lambda d, t: calls.append((d, t)))
    )
    assert nets.kp_detector.calls == 1 and nets.generator.encodes == 1
    assert [c.shape[0] for c in seq_chunks] == [min(batch, 7 - i) for i in range(0, 7, batch)]
    assert calls[-1] == (7, 7) and [d for d, _ in calls] == list(np.cumsum([c.shape[0] for c in seq_chunks]))
    official = list(Renderer(nets, "cpu").iter_frames(image, plan, order="official"))
    steps = math.ceil(7 / batch)
    assert nets.generator.batch_sizes[-steps:] == [batch] * steps  # padded like the official loop
    a, b = torch.cat(seq_chunks), torch.cat(official)
    assert a.shape == b.shape == (7, 3, 8, 8)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # frames differ from each other (the driving windows move)
    assert not torch.allclose(a[0], a[-1])


def test_loop_pose_override_and_still(toy):
    src, tgt, image = toy
    nets = _Nets(73)
    renderer = Renderer(nets, "cpu")
    plan = plan_render(src, tgt, preprocess="full", still=True, batch_size=2, yaw=[-10, 10], pitch=[3])
    state = renderer.prepare_source(image, plan.source_row)
    drive, _ = renderer.driving_motion(state, plan, np.array([0, 6, 9]))  # 9 is a padding position
    np.testing.assert_allclose(drive.yaw.numpy(), plan.yaw[[0, 6, 6]])
    np.testing.assert_allclose(drive.pitch.numpy(), [3.0, 3.0, 3.0])
    free = plan_render(src, tgt, preprocess="full", still=True, batch_size=2)
    drive_free, _ = renderer.driving_motion(state, free, np.array([0, 6]))
    assert not torch.allclose(drive_free.yaw, drive.yaw[:2])


def test_loop_cancel_and_channel_check(toy):
    src, tgt, image = toy
    plan = plan_render(src, tgt, batch_size=2)
    nets = _Nets(70)
    asked = []

    def cancel() -> bool:
        asked.append(1)
        return len(asked) > 2

    got = []
    with pytest.raises(CancelledError):
        for chunk in Renderer(nets, "cpu").iter_frames(image, plan, cancel=cancel):
            got.append(chunk)
    assert sum(c.shape[0] for c in got) == 4
    with pytest.raises(InputError):
        list(Renderer(_Nets(73), "cpu").iter_frames(image, plan))
    with pytest.raises(InputError):
        list(Renderer(nets, "cpu").iter_frames(image, plan, order="shuffled"))


def test_plan_from_options_and_render_uint8(toy):
    from sadtalker_ext.options import GenerationOptions

    src, tgt, image = toy
    opts = GenerationOptions(
        source="face.png",
        driven_audio="speech.wav",
        preprocess="full",
        still=True,
        expression_scale=0.5,
        batch_size=3,
        input_yaw=(0.0, 10.0),
    )
    plan = plan_from_options(src, tgt, opts)
    ref = plan_render(
        src, tgt, preprocess="full", still=True, expression_scale=0.5, batch_size=3, yaw=[0, 10]
    )
    np.testing.assert_array_equal(plan.sequence, ref.sequence)
    np.testing.assert_array_equal(plan.yaw, ref.yaw)
    assert plan.pitch is None and plan.roll is None and plan.batch_size == 3 and plan.channels == 73
    nets = _Nets(73)
    chunks = list(render_uint8(nets, image, src, tgt, device="cpu", preprocess="full", batch_size=3))
    assert [c.shape for c in chunks] == [(3, 8, 8, 3), (3, 8, 8, 3), (1, 8, 8, 3)]
    assert all(c.dtype == np.uint8 for c in chunks)
    floats = torch.cat(
        list(Renderer(nets, "cpu").iter_frames(image, plan_render(src, tgt, preprocess="full")))
    )
    np.testing.assert_array_equal(np.concatenate(chunks), frames_to_uint8(floats))
