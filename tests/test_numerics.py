"""The float64 reference helpers of ``tests/numerics.py``: they must compute the same math."""

from __future__ import annotations

import pytest
import torch

from tests.numerics import float64_copy


def test_float64_copy_computes_3d_convolutions_as_torch_does_and_leaves_the_original():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(5, 4, kernel_size=7, padding=3),
        torch.nn.ReLU(),
        torch.nn.Conv3d(4, 3, kernel_size=3, padding=1, bias=False),
        torch.nn.Conv3d(3, 2, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
    ).eval()
    x = torch.randn(2, 5, 6, 9, 8)
    twin = float64_copy(net)
    assert not any(isinstance(m, torch.nn.Conv3d) for m in twin.modules())
    assert all(p.dtype == torch.float32 for p in net.parameters())
    with torch.no_grad():
        got = twin(x.double())
        want = net.double()(x.double())
    assert got.dtype == torch.float64 and got.shape == want.shape == (2, 2, 6, 9, 8)
    assert got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_float64_copy_refuses_convolutions_it_does_not_implement():
    for conv in (torch.nn.Conv3d(2, 2, 3, stride=2), torch.nn.Conv3d(2, 2, 3, padding="same")):
        with pytest.raises(ValueError, match="only"):
            float64_copy(torch.nn.Sequential(conv))
