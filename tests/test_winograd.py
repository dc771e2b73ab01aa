"""Winograd F(4x4, 3x3) convolution (``nets/winograd.py``) and its use in the SPADE decoder.

Float64 proves the algorithm (transforms, strips, tile layout, bias fold) equals ``F.conv2d`` up to
rounding; float32 bounds the extra rounding; flop counts prove the decoder takes the cheaper path.
"""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sadtalker_ext.nets import winograd
from sadtalker_ext.nets.blocks import EncodeStep3d, Hourglass3d, SpectralConv2d, set_winograd
from sadtalker_ext.nets.spade_decoder import SpadeDecoder, SpadeDecoderConfig
from tests.test_nets_rearranged import _close, _randomise


def _data(seed: int, shape, co: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=dtype)
    w = torch.randn(co, shape[1], 3, 3, generator=gen, dtype=dtype) / (9 * shape[1]) ** 0.5
    b = torch.randn(co, generator=gen, dtype=dtype)
    return x, w, b


@pytest.mark.parametrize(
    ("shape", "co", "strip_tiles"),
    [
        ((1, 3, 4, 4), 5, None),  # one tile
        ((2, 4, 12, 8), 6, None),  # several tiles, batch 2, one strip
        ((3, 5, 12, 16), 7, 1),  # one tile row per strip
        ((1, 6, 20, 8), 4, 6),  # 3 rows per strip: strips of 3 and 2 tile rows
    ],
)
@torch.no_grad()
def test_equals_direct_conv_in_float64(monkeypatch, shape, co, strip_tiles):
    if strip_tiles is not None:
        monkeypatch.setattr(winograd, "STRIP_TILES", strip_tiles)
    x, w, b = _data(sum(shape), shape, co)
    kernel = winograd.transform_kernel(w)
    assert kernel.shape == (36, co, shape[1]) and kernel.dtype == torch.float64
    _close(winograd.conv3x3(x, kernel, b), F.conv2d(x, w, b, padding=1))
    _close(winograd.conv3x3(x, kernel, None), F.conv2d(x, w, None, padding=1))


@torch.no_grad()
def test_float32_rounding_stays_near_the_direct_conv():
    """Decoder-like widths: Winograd's extra rounding is ~1e-5 of the largest output (direct: ~3e-7)."""
    x, w, b = _data(3, (2, 128, 32, 32), 256, torch.float32)
    exact = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    got = winograd.conv3x3(x, winograd.transform_kernel(w), b)
    rel = float((got.double() - exact).abs().max() / exact.abs().max())
    assert rel < 3e-5, rel


@pytest.mark.parametrize(
    ("shape", "co", "strip_tiles"),
    [
        ((1, 3, 1, 4, 4), 5, None),  # one slice, one tile
        ((2, 4, 3, 12, 8), 6, None),  # several slices and tiles, batch 2, one strip
        ((1, 5, 4, 20, 8), 7, 2),  # one tile row per strip: 5 strips of 4 slices
    ],
)
@torch.no_grad()
def test_3d_equals_direct_conv_in_float64(monkeypatch, shape, co, strip_tiles):
    """Winograd over height and width, the three depth taps as shifted views of the transformed slices."""
    if strip_tiles is not None:
        monkeypatch.setattr(winograd, "STRIP_TILES", strip_tiles)
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    w = torch.randn(co, shape[1], 3, 3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(co, generator=gen, dtype=torch.float64)
    kernel = winograd.transform_kernel(winograd.depth_taps(w))
    assert kernel.shape == (36, co, 3 * shape[1])
    _close(winograd.conv3x3x3(x, kernel, b), F.conv3d(x, w, b, padding=1))
    _close(winograd.conv3x3x3(x, kernel, None), F.conv3d(x, w, None, padding=1))


@torch.no_grad()
def test_3d_float32_rounding_stays_near_the_direct_conv():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 32, 4, 16, 16, generator=gen)
    w = torch.randn(48, 32, 3, 3, 3, generator=gen) / (27 * 32) ** 0.5
    exact = F.conv3d(x.double(), w.double(), padding=1)
    got = winograd.conv3x3x3(x, winograd.transform_kernel(winograd.depth_taps(w)), None)
    rel = float((got.double() - exact).abs().max() / exact.abs().max())
    assert rel < 3e-5, rel


def test_hourglass_with_winograd_equals_the_direct_convs(monkeypatch):
    """The hourglass's encoder convs and its last conv take the 3D Winograd path where it applies (here:
    everywhere, by the patched size rule): same output in float64; off, the kernels are dropped."""
    monkeypatch.setattr(winograd, "worthwhile_3d", lambda ci, co, h, w: True)
    hourglass = _randomise(Hourglass3d(3, 4, 16, 2), 6)
    x = torch.randn(2, 3, 3, 16, 16, dtype=torch.float64)
    with torch.inference_mode():
        direct = hourglass(x)
        set_winograd(hourglass, True)
        _close(hourglass(x), direct)
    owners = [m for m in hourglass.modules() if "_winograd_kernels" in m.__dict__]
    assert hourglass.decoder in owners
    assert sum(isinstance(m, EncodeStep3d) for m in owners) == 2
    set_winograd(hourglass, False)
    assert not any("_winograd_kernels" in m.__dict__ for m in hourglass.modules())


@torch.no_grad()
def test_inputs_it_does_not_take():
    x, w, b = _data(1, (1, 3, 8, 8), 4)
    kernel = winograd.transform_kernel(w)
    assert winograd.applies(x) and winograd.applies(x.float())
    for bad in (x[..., :6], x[:, :, :7], x.to(torch.bfloat16), x[0]):
        assert not winograd.applies(bad)
    with torch.enable_grad():
        assert not winograd.applies(x)  # autograd on: the direct conv (gradients work as usual)
    with pytest.raises(ValueError, match="multiples of 4"):
        winograd.conv3x3(x[..., :6], kernel, b)
    with pytest.raises(ValueError, match="does not fit 2 input channels"):
        winograd.conv3x3(x[:, :2], kernel, b)
    volume = x[:, :, None].expand(1, 3, 2, 8, 8)
    kernel_3d = winograd.transform_kernel(
        winograd.depth_taps(torch.randn(4, 3, 3, 3, 3, dtype=torch.float64))
    )
    assert winograd.applies_3d(volume) and not winograd.applies_3d(x)
    for bad in (volume[..., :6], volume.to(torch.bfloat16)):
        assert not winograd.applies_3d(bad)
    with pytest.raises(ValueError, match="multiples of 4"):
        winograd.conv3x3x3(volume[..., :6], kernel_3d, b)
    with pytest.raises(ValueError, match="does not fit 3 input channels and 3 depth taps"):
        winograd.conv3x3x3(volume, kernel, b)
    conv = torch.nn.Conv3d(3, 4, 3, padding=1).double()
    with pytest.raises(ValueError, match="no epilogue"):
        winograd.KernelCache().conv3x3(
            "k", volume, conv, lambda: (conv.weight, conv.bias), lambda index, values: None
        )


def test_decoder_with_autograd_on_uses_the_direct_convs(monkeypatch):
    """Gradients through a decoder whose Winograd switch is on (e.g. someone fine-tuning it) still work."""
    monkeypatch.setattr(winograd, "worthwhile", lambda ci, co: True)
    cfg = SpadeDecoderConfig(input_nc=8, hidden_nc=6, output_nc=4, num_middle_blocks=1)
    dec = _randomise(SpadeDecoder(cfg), 2)
    set_winograd(dec, True)
    feature = torch.randn(1, 8, 8, 8, dtype=torch.float64, requires_grad=True)
    dec(feature).square().sum().backward()
    assert feature.grad is not None and torch.isfinite(feature.grad).all()
    assert not any("_winograd_kernels" in m.__dict__ for m in dec.modules())


def test_kernel_cache_follows_the_weights(monkeypatch):
    """The derived weight is built once, reused, and rebuilt when the weights change (new state dict)."""
    builds = []
    monkeypatch.setattr(winograd, "worthwhile", lambda ci, co: True)
    conv = _randomise(SpectralConv2d(4, 5, 3), 1).requires_grad_(False)
    real = conv.effective_weight
    monkeypatch.setattr(conv, "effective_weight", lambda: builds.append(1) or real())
    set_winograd(conv, True)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    with torch.inference_mode():
        first = conv.forward_fast(x)
        _close(first, F.conv2d(x, real(), conv.bias, padding=1))
        conv.forward_fast(x)
        assert len(builds) == 1
        with torch.no_grad():
            conv.load_state_dict(_randomise(SpectralConv2d(4, 5, 3), 2).state_dict())
        second = conv.forward_fast(x)
    assert len(builds) == 2
    _close(second, F.conv2d(x, real(), conv.bias, padding=1))
    assert float((second - first).abs().max()) > 1e-3
    set_winograd(conv, False)
    assert "_winograd_kernels" not in conv.__dict__


def test_scratch_shares_buffers_within_a_block_and_holds_nothing_after(monkeypatch):
    """Inside ``winograd.scratch()`` a thread's convs take their strip buffers and transformed kernels from one
    buffer per slot (grown as needed, reused by the next conv; a nested block shares them); the values are
    those of fresh buffers; after the block, and in other threads, nothing is held."""
    monkeypatch.setattr(winograd, "worthwhile", lambda ci, co: True)
    first_conv = _randomise(SpectralConv2d(4, 6, 3), 1)
    second_conv = _randomise(SpectralConv2d(6, 5, 3), 2)
    set_winograd(first_conv, True)
    set_winograd(second_conv, True)
    x = torch.randn(2, 4, 12, 8, dtype=torch.float64)

    def both() -> torch.Tensor:
        return second_conv.forward_fast(first_conv.forward_fast(x))

    with torch.inference_mode():
        plain = both()
        assert winograd._scratch.buffers is None
        with winograd.scratch():
            shared = both()
            held = dict(winograd._scratch.buffers)
            with winograd.scratch():
                nested = both()
            assert winograd._scratch.buffers.keys() == held.keys()
            assert all(winograd._scratch.buffers[key] is buf for key, buf in held.items())
            seen = []
            worker = threading.Thread(target=lambda: seen.append(winograd._scratch.buffers))
            worker.start()
            worker.join()
            assert seen == [None]
        assert winograd._scratch.buffers is None
    _close(shared, plain)
    _close(nested, plain)
    slots = sorted(slot for slot, _, _ in held)
    assert slots == ["gathered", "kernel", "products", "tiles_out", "transformed"]


def _flops(fn) -> int:
    """Counted flops of ``fn`` except the Winograd transforms: ``aten.mm`` by the fixed (36, 36), (16, 36) and
    (36, 9) matrices, whose cost is per channel or per weight, not per channel pair (the decoder has no other
    ``mm``)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    per_op = counter.get_flop_counts()["Global"]
    return sum(count for op, count in per_op.items() if op is not torch.ops.aten.mm)


@pytest.mark.parametrize("strip_tiles", [None, 4])
def test_decoder_with_winograd_equals_the_official_arrangement(monkeypatch, strip_tiles):
    """Every 3x3 conv that qualifies (here: all, widths are small) runs by Winograd: same logits in
    float64, and the counted multiply-adds of those convs drop (36 per tile and channel pair, not 144;
    the tile transforms, per channel, are left out of the count).
    The official arrangement (``forward_reference``, the benchmark's baseline) stays direct."""
    monkeypatch.setattr(winograd, "worthwhile", lambda ci, co: True)
    if strip_tiles is not None:  # several strips per picture: the SPADE modulation is applied strip by strip
        monkeypatch.setattr(winograd, "STRIP_TILES", strip_tiles)
    cfg = SpadeDecoderConfig(input_nc=8, hidden_nc=6, output_nc=4, num_middle_blocks=2)
    dec = _randomise(SpadeDecoder(cfg), 11)
    feature = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    with torch.inference_mode():
        direct_flops = _flops(lambda: dec(feature))
        reference_flops = _flops(lambda: dec.forward_reference(feature))
        set_winograd(dec, True)
        got = dec(feature)
        wino_flops = _flops(lambda: dec(feature))
        _close(got, dec.forward_reference(feature))
        assert _flops(lambda: dec.forward_reference(feature)) == reference_flops
    owners = [m for m in dec.modules() if "_winograd_kernels" in m.__dict__]
    # decoder (fc, middle label conv), every SPADE norm, the shortcuts, every 3x3 SpectralConv2d
    assert dec in owners and dec.up_0 in owners and dec.G_middle_1.conv_1 in owners
    assert dec.G_middle_0.norm_1 in owners and dec.up_1.norm_0 in owners
    assert wino_flops < 0.75 * direct_flops
    set_winograd(dec, False)
    assert not any("_winograd_kernels" in m.__dict__ for m in dec.modules())
    with torch.inference_mode():
        assert _flops(lambda: dec(feature)) == direct_flops


def test_decoder_keeps_the_direct_conv_where_winograd_does_not_apply():
    """Half precision, sizes that are not multiples of 4, narrow widths: no kernels are built."""
    dec = _randomise(SpadeDecoder(SpadeDecoderConfig(input_nc=8, hidden_nc=6, output_nc=4)), 5)
    set_winograd(dec, True)
    with torch.inference_mode():
        dec(torch.randn(1, 8, 6, 6, dtype=torch.float64))  # narrow widths (worthwhile() is False)
        dec.to(torch.bfloat16)(torch.randn(1, 8, 8, 8, dtype=torch.bfloat16))
    assert not any("_winograd_kernels" in m.__dict__ for m in dec.modules())
