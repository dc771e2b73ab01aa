"""The renderer's speed arrangements compute the same values as the official arrangement, with less work.

Float64 with random weights, small widths: differences are rounding only (1e-10 relative), so any
slip in a phase kernel, a fold or an index shows up at once. Multiply-adds are counted with
``torch.utils.flop_counter`` to prove the cheaper path is the one taken.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sadtalker_ext.nets.blocks import (
    DecodeStep3d,
    Hourglass3d,
    SpadeResidual,
    conv3x3_on_upsampled,
    set_phase_form,
)
from sadtalker_ext.nets.dense_motion import DenseMotionConfig, DenseMotionNetwork
from sadtalker_ext.nets.spade_decoder import SpadeDecoder, SpadeDecoderConfig


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values in every parameter and buffer (spectral u, v and BN statistics included), float64."""
    gen = torch.Generator().manual_seed(seed)
    module = module.double().eval()
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if t.dtype != torch.float64:
                continue
            values = torch.randn(t.shape, generator=gen, dtype=torch.float64)
            if name.endswith("running_var"):
                values = values.abs() + 0.5
            elif t.dim() > 1:
                values /= (t[0].numel()) ** 0.5
            t.copy_(values)
    return module


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    scale = float(b.abs().max())
    assert scale > 0
    assert float((a - b).abs().max()) <= 1e-10 * scale


@pytest.mark.parametrize(("factor", "size"), [(1, (5, 7)), (2, (5, 7)), (3, (4, 3)), (4, (6, 5))])
def test_conv_on_upsampled_2d_equals_direct(factor, size):
    gen = torch.Generator().manual_seed(factor)
    x = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(4, generator=gen, dtype=torch.float64)
    direct = F.conv2d(F.interpolate(x, scale_factor=float(factor), mode="nearest"), w, b, padding=1)
    _close(conv3x3_on_upsampled(x, w, b, factor), direct)


def test_conv_on_upsampled_3d_keeps_depth_and_equals_direct():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 4, 5, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(5, 3, 3, 3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(5, generator=gen, dtype=torch.float64)
    direct = F.conv3d(F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest"), w, b, padding=1)
    got = conv3x3_on_upsampled(x, w, b, 2)
    assert got.shape == (2, 5, 4, 10, 12)
    _close(got, direct)


def test_decode_step_uses_the_phase_form_on_large_inputs_only(monkeypatch):
    step = _randomise(DecodeStep3d(6, 4), 1)
    small = torch.randn(1, 6, 2, 4, 4, dtype=torch.float64)  # 16 pixels: below the threshold
    large = torch.randn(1, 6, 2, 8, 8, dtype=torch.float64)  # 64 pixels
    with torch.no_grad():
        for x in (small, large):
            _close(step(x), step(x, direct=True))
        assert _flops(lambda: step(small)) == _flops(lambda: step(small, direct=True))
        assert _flops(lambda: step(large)) < 0.5 * _flops(lambda: step(large, direct=True))


def _small_dense_motion() -> DenseMotionNetwork:
    """A dense motion network of small widths (3 keypoints, 2 hourglass levels), random float64 weights."""
    cfg = DenseMotionConfig(
        block_expansion=4, max_features=16, num_blocks=2, feature_channel=4, reshape_depth=3,
        compress=2, num_kp=3, estimate_occlusion_map=True,
    )  # fmt: skip
    return _randomise(DenseMotionNetwork(cfg), 2)


def test_hourglass_and_dense_motion_match_the_direct_arrangement():
    net = _small_dense_motion()
    gen = torch.Generator().manual_seed(3)
    feature = torch.randn(2, 4, 3, 32, 32, generator=gen, dtype=torch.float64)
    kp_d = torch.rand(2, 3, 3, generator=gen, dtype=torch.float64) - 0.5
    kp_s = torch.rand(2, 3, 3, generator=gen, dtype=torch.float64) - 0.5
    with torch.no_grad():
        fast = net(feature, kp_d, kp_s)
        direct = net(feature, kp_d, kp_s, direct=True)
        for key in ("mask", "deformation", "occlusion_map"):
            _close(fast[key], direct[key])
        hourglass = net.hourglass
        x = torch.randn(1, hourglass.encoder.down_blocks[0].conv.in_channels, 3, 32, 32, dtype=torch.float64)
        assert isinstance(hourglass, Hourglass3d)
        assert _flops(lambda: hourglass(x)) < _flops(lambda: hourglass(x, direct=True))


@pytest.mark.parametrize(("upsample", "out_ch"), [(1, 6), (2, 4), (2, 6), (1, 4)])
def test_spade_block_shared_path_equals_forward(upsample, out_ch):
    block = _randomise(SpadeResidual(6, out_ch, 5, 3), 4)  # out 6: identity shortcut, 4: learned
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 6, 5, generator=gen, dtype=torch.float64)
    seg = torch.randn(2, 5, 6 * upsample, 5 * upsample, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        shared = [F.relu(norm.label_conv(seg)) for norm in block.norms()]
        got = block.forward_shared(x, shared, upsample=upsample)
        want = block(F.interpolate(x, scale_factor=float(upsample), mode="nearest"), seg)
    _close(got, want)


@pytest.mark.parametrize("output_nc", [3, 6])  # 6: up_1 keeps its width (identity shortcut)
def test_spade_decoder_equals_reference_with_fewer_multiply_adds(output_nc):
    cfg = SpadeDecoderConfig(input_nc=6, hidden_nc=4, output_nc=output_nc, num_middle_blocks=2)
    dec = _randomise(SpadeDecoder(cfg), 6)
    feature = torch.randn(2, 6, 8, 6, dtype=torch.float64)
    with torch.no_grad():
        _close(dec(feature), dec.forward_reference(feature))
        assert _flops(lambda: dec(feature)) < 0.9 * _flops(lambda: dec.forward_reference(feature))


def test_phase_form_switch_keeps_values_and_restores_the_direct_work():
    """``set_phase_form(module, False)`` (the GPU choice): every upsampled conv runs upsample-then-conv."""
    net = _small_dense_motion()
    dec = _randomise(
        SpadeDecoder(SpadeDecoderConfig(input_nc=6, hidden_nc=4, output_nc=3, num_middle_blocks=1)), 6
    )
    gen = torch.Generator().manual_seed(3)
    volume = torch.randn(1, 4, 3, 32, 32, generator=gen, dtype=torch.float64)
    kp_d, kp_s = (torch.rand(1, 3, 3, generator=gen, dtype=torch.float64) - 0.5 for _ in range(2))
    feature = torch.randn(1, 6, 8, 8, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        phase = (net(volume, kp_d, kp_s)["deformation"], dec(feature))
        work = {"net": _flops(lambda: net(volume, kp_d, kp_s)), "dec": _flops(lambda: dec(feature))}
        label_saving = sum(
            _flops(lambda b=block, f=factor: dec._label_features(feature, [b], f, phase=False))
            - _flops(lambda b=block, f=factor: dec._label_features(feature, [b], f))
            for block, factor in ((dec.up_0, 2), (dec.up_1, 4))
        )
        for module in (net, dec):
            set_phase_form(module, False)
        direct = (net(volume, kp_d, kp_s)["deformation"], dec(feature))
        assert _flops(lambda: net(volume, kp_d, kp_s)) == _flops(lambda: net(volume, kp_d, kp_s, direct=True))
        assert work["net"] < _flops(lambda: net(volume, kp_d, kp_s))
        assert label_saving > 0 and _flops(lambda: dec(feature)) == work["dec"] + label_saving
    for a, b in zip(phase, direct, strict=True):
        _close(a, b)
    assert not net.hourglass.decoder.up_blocks[0].phase_form and not dec.phase_form


def test_loader_picks_the_phase_form_and_winograd_on_the_cpu_only(tmp_path):
    from sadtalker_ext import checkpoints
    from sadtalker_ext.render.loading import load_renderer_nets
    from tests import standin
    from tests.conftest import parity_device

    device = parity_device()
    folder = standin.write_eighth_checkpoints(tmp_path)
    nets = load_renderer_nets(folder, 256, "crop", device, torch.float32)
    try:
        for switch in ("phase_form", "winograd"):
            flags = {getattr(m, switch) for m in nets.generator.modules() if switch in type(m).__dict__}
            assert flags == {device.type == "cpu"}, switch
        # winograd=False (SadTalker(winograd=False), CLI --no_winograd): other networks, direct convs
        direct = load_renderer_nets(folder, 256, "crop", device, torch.float32, winograd=False)
        assert direct.generator is not nets.generator
        assert not any(getattr(m, "winograd", False) for m in direct.generator.modules())
    finally:
        checkpoints.clear_cache()


def test_separable_keypoint_gaussians_equal_the_direct_form():
    from sadtalker_ext.nets.blocks import coordinate_grid_3d
    from sadtalker_ext.nets.dense_motion import keypoint_gaussians

    grid = coordinate_grid_3d(4, 6, 5, dtype=torch.float64, device="cpu")
    kp = torch.rand(2, 3, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 2 - 1
    diff = grid.view(1, 1, 4, 6, 5, 3) - kp.view(2, 3, 1, 1, 1, 3)
    direct = torch.exp(-0.5 * (diff**2).sum(-1) / 0.01)
    _close(keypoint_gaussians(kp, grid, 0.01), direct)


def test_keypoint_heat_has_no_subnormal_values():
    """Far from the keypoints the Gaussians underflow below float32's smallest normal number; the heat map
    zeroes those (x86 multiplies subnormals slowly) and keeps every normal value of the plain difference."""
    from sadtalker_ext.nets.blocks import coordinate_grid_3d
    from sadtalker_ext.nets.dense_motion import keypoint_gaussians, keypoint_heat

    grid = coordinate_grid_3d(16, 64, 64, dtype=torch.float32, device="cpu")
    gen = torch.Generator().manual_seed(4)
    kp_d, kp_s = (torch.rand(2, 15, 3, generator=gen) * 1.6 - 0.8 for _ in range(2))
    plain = keypoint_gaussians(kp_d, grid, 0.01) - keypoint_gaussians(kp_s, grid, 0.01)
    tiny = torch.finfo(torch.float32).tiny
    subnormal = (plain != 0) & (plain.abs() < tiny)
    assert subnormal.any()  # the case exists at the official variance
    heat = keypoint_heat(kp_d, kp_s, grid, 0.01)
    assert not ((heat != 0) & (heat.abs() < tiny)).any()
    assert torch.equal(heat[~subnormal], plain[~subnormal]) and not heat[subnormal].any()


def test_channels_last_maps_keep_their_layout_and_values():
    """Reduced precision runs channels-last: the instance norm and the hourglass's (1, 2, 2) pooling keep
    that layout and give the NCHW values (the norm in float64: exact up to rounding; the pooling step in
    bfloat16 against float32)."""
    from sadtalker_ext.nets.blocks import EncodeStep3d, instance_norm

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 8, 8, generator=gen, dtype=torch.float64)
    cl = x.contiguous(memory_format=torch.channels_last)
    got = instance_norm(cl)
    assert got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()
    _close(got, torch.nn.functional.instance_norm(x, eps=1e-5))
    step = _randomise(EncodeStep3d(4, 6), 3).float().eval()
    v = torch.randn(2, 4, 3, 8, 8, generator=gen)
    with torch.inference_mode():
        plain = step(v)
        step.to(torch.bfloat16)  # the layout where it happens: bfloat16 channels-last convolutions
        pooled = step(v.to(torch.bfloat16, memory_format=torch.channels_last_3d))
    assert pooled.is_contiguous(memory_format=torch.channels_last_3d) and not pooled.is_contiguous()
    assert float((pooled.float() - plain).abs().max()) < 0.02 * float(plain.abs().max())
