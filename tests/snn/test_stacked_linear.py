"""The cohort's stacked linear layer against autograd's own ``baddbmm`` / ``bmm`` (float64, values and gradients)."""

from __future__ import annotations

import pytest
import torch

from spikefed.snn.stacked import stacked_linear


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(3, 7, 5, 4), (1, 1, 1, 1), (4, 20, 16, 10)])
def test_values_and_gradients_equal_autograd_baddbmm(bias: bool, shape: tuple[int, int, int, int]) -> None:
    k, r, fan_in, fan_out = shape
    g = torch.Generator().manual_seed(sum(shape) + bias)
    x = torch.randn(k, r, fan_in, dtype=torch.float64, generator=g)
    w = torch.randn(k, fan_out, fan_in, dtype=torch.float64, generator=g)
    b = torch.randn(k, fan_out, dtype=torch.float64, generator=g) if bias else None
    up = torch.randn(k, r, fan_out, dtype=torch.float64, generator=g)
    leaves = [t.clone().requires_grad_(True) for t in (x, w) + ((b,) if bias else ())]
    ref_leaves = [t.clone().requires_grad_(True) for t in (x, w) + ((b,) if bias else ())]
    got = stacked_linear(*leaves, *(() if bias else (None,)))
    if bias:
        ref = torch.baddbmm(ref_leaves[2].unsqueeze(1), ref_leaves[0], ref_leaves[1].transpose(1, 2))
    else:
        ref = torch.bmm(ref_leaves[0], ref_leaves[1].transpose(1, 2))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    grads = torch.autograd.grad((got * up).sum(), leaves)
    ref_grads = torch.autograd.grad((ref * up).sum(), ref_leaves)
    for a, e in zip(grads, ref_grads):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, rtol=0, atol=1e-10)


def test_weight_gradient_is_the_sum_over_rows_written_out() -> None:
    """dL/dw[k, o, i] = sum_r g[k, r, o] x[k, r, i], a loop over the definition."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=g)
    w = torch.randn(2, 4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    up = torch.randn(2, 5, 4, dtype=torch.float64, generator=g)
    (gw,) = torch.autograd.grad((stacked_linear(x, w) * up).sum(), [w])
    for k in range(2):
        for o in range(4):
            for i in range(3):
                expect = sum(float(up[k, r, o]) * float(x[k, r, i]) for r in range(5))
                assert float(gw[k, o, i]) == pytest.approx(expect, abs=1e-12)


def test_only_the_requested_gradients_are_computed() -> None:
    x = torch.randn(2, 3, 4)
    w = torch.randn(2, 5, 4, requires_grad=True)
    b = torch.randn(2, 5)
    (gw,) = torch.autograd.grad(stacked_linear(x, w, b).sum(), [w])
    assert gw.shape == w.shape
