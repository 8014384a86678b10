"""The compiled LIF / low-pass kernels (spikefed.snn.compiled) against the step-by-step autograd reference
(lif_reference, lowpass_reference) and the loop kernel, in values and gradients, float64 and float32.

Compiling takes tens of seconds per variant on a 2-core machine, so the comparisons are slow tests; the
selection logic (resolve_kernel, kernel_function) is tested fast."""

from __future__ import annotations

import pytest
import torch

from spikefed.snn.compiled import KERNELS, resolve_kernel
from spikefed.snn.kernels import kernel_function, lif_fused, lif_reference, lowpass, lowpass_reference
from spikefed.snn.surrogate import get_surrogate

T, B, N = 10, 3, 6


def inputs(dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(T, B, N, generator=g, dtype=torch.float64) * 0.6 + 0.35).to(dtype).requires_grad_(True)
    beta = (torch.rand(N, generator=g, dtype=torch.float64) * 0.5 + 0.45).to(dtype).requires_grad_(True)
    thr = (torch.rand(N, generator=g, dtype=torch.float64) * 0.6 + 0.7).to(dtype).requires_grad_(True)
    vr = (torch.rand(N, generator=g, dtype=torch.float64) * 0.4 - 0.2).to(dtype).requires_grad_(True)
    u0 = (torch.randn(B, N, generator=g, dtype=torch.float64) * 0.8 + 0.5).to(dtype).requires_grad_(True)
    return x, u0, beta, thr, vr


def test_resolve_kernel() -> None:
    assert KERNELS == ("loop", "compiled", "numba", "auto")
    assert resolve_kernel("loop", "cuda") == "loop"
    assert resolve_kernel("compiled", "cpu") == "compiled"
    assert resolve_kernel("numba", "cpu") == "numba"
    assert resolve_kernel("auto", "cpu") == "loop"
    assert resolve_kernel("auto", torch.device("cuda", 1)) == "compiled"
    with pytest.raises(ValueError, match="unknown local.kernel 'triton'"):
        resolve_kernel("triton")
    with pytest.raises(ValueError, match="local.kernel=numba runs on the CPU only"):
        resolve_kernel("numba", "cuda")
    with pytest.raises(ValueError, match="unknown kernel 'fast'"):
        kernel_function("lif", "fast")


@pytest.mark.slow
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("reset, detach", [("subtract", True), ("zero", True), ("none", True), ("subtract", False)])
def test_compiled_lif_matches_reference(dtype: torch.dtype, tol: float, reset: str, detach: bool) -> None:
    sur = get_surrogate("atan", 2.0)
    x, u0, beta, thr, vr = inputs(dtype, seed=3)
    S1, U1 = lif_fused(x, u0, beta, thr, vr, reset, detach, sur, kernel="compiled")
    S2, U2 = lif_reference(x, u0, beta, thr, vr, reset, detach, sur)
    assert torch.equal(S1, S2) and 0 < S1.sum() < S1.numel()
    assert torch.allclose(U1, U2, rtol=tol, atol=tol)
    g = torch.Generator().manual_seed(9)
    wS = torch.randn(S1.shape, generator=g, dtype=torch.float64).to(dtype)
    wU = torch.randn(S1.shape, generator=g, dtype=torch.float64).to(dtype)
    leaves = [x, u0, beta, thr, vr]
    g1 = torch.autograd.grad((S1 * wS).sum() + (U1 * wU).sum(), leaves, allow_unused=True)
    g2 = torch.autograd.grad((S2 * wS).sum() + (U2 * wU).sum(), leaves, allow_unused=True)
    for name, a, b in zip(("x", "u0", "beta", "thr", "v_r"), g1, g2):
        a = torch.zeros_like(x[0, 0, 0]) if a is None else a
        b = torch.zeros_like(x[0, 0, 0]) if b is None else b
        assert torch.allclose(a, b, rtol=tol * 10, atol=tol * 10), f"{name}: {(a - b).abs().max()}"


@pytest.mark.slow
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_compiled_lowpass_matches_reference(dtype: torch.dtype, tol: float) -> None:
    x, y0, a, _, _ = inputs(dtype, seed=5)
    y1 = lowpass(x, a, y0, kernel="compiled")
    y2 = lowpass_reference(x, a, y0)
    assert torch.allclose(y1, y2, rtol=tol, atol=tol)
    w = torch.randn(y1.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype)
    g1 = torch.autograd.grad((y1 * w).sum(), [x, y0, a])
    g2 = torch.autograd.grad((y2 * w).sum(), [x, y0, a])
    for a1, a2 in zip(g1, g2):
        assert torch.allclose(a1, a2, rtol=tol * 10, atol=tol * 10)
