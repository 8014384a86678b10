"""The numba LIF kernel (spikefed.snn.kernels_numba) against the step-by-step autograd reference (lif_reference),
finite differences (gradcheck) and, under torch.func.vmap, the loop kernel; in values and every gradient.

The kernel's machine code is cached on disk after the first compile (about 20 s per dtype on 2 cores), so
later runs load it in about a second."""

from __future__ import annotations

import pytest
import torch

numba = pytest.importorskip("numba")

from spikefed.experiment.config import RunSettings  # noqa: E402
from spikefed.experiment.runner import build_spec  # noqa: E402
from spikefed.federated.simulation import Simulation  # noqa: E402
from spikefed.snn.kernels import LowpassFunction, kernel_function, lif_fused, lif_reference  # noqa: E402
from spikefed.snn.surrogate import get_surrogate  # noqa: E402

T, B, N = 10, 3, 6
SURROGATES = ["atan", "fast_sigmoid", "sigmoid", "triangular", "straight_through", "custom"]
RESETS = [("subtract", True), ("zero", True), ("none", True), ("subtract", False), ("zero", False)]


def surrogate(name: str):
    if name == "custom":  # a callable: the kernel takes its derivative from torch
        return get_surrogate(lambda z: 1.0 / (1.0 + 3.0 * z.abs()) ** 2)
    return get_surrogate(name)


def inputs(dtype: torch.dtype, seed: int, per_neuron: bool = True):
    g = torch.Generator().manual_seed(seed)

    def draw(shape, scale, shift):
        return (torch.rand(shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype).requires_grad_(True)

    x = (torch.randn(T, B, N, generator=g, dtype=torch.float64) * 0.6 + 0.35).to(dtype).requires_grad_(True)
    shape = (N,) if per_neuron else ()
    beta, thr, vr = draw(shape, 0.5, 0.45), draw(shape, 0.6, 0.7), draw(shape, 0.4, -0.2)
    u0 = (torch.randn(B, N, generator=g, dtype=torch.float64) * 0.8 + 0.5).to(dtype).requires_grad_(True)
    return x, u0, beta, thr, vr


def grads(S, U, leaves, seed=9):
    g = torch.Generator().manual_seed(seed)
    wS = torch.randn(S.shape, generator=g, dtype=torch.float64).to(S.dtype)
    wU = torch.randn(S.shape, generator=g, dtype=torch.float64).to(S.dtype)
    out = torch.autograd.grad((S * wS).sum() + (U * wU).sum(), leaves, allow_unused=True)
    return [torch.zeros_like(leaf) if a is None else a for a, leaf in zip(out, leaves)]  # unused: zero


def close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    """Within ``tol`` relative to the reference's largest magnitude (float32 sums over T lose a few digits)."""
    a, b = a.detach().double(), b.detach().double()
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    return bool((a - b).abs().max() <= tol * scale) if b.numel() else True


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("reset, detach", RESETS)
@pytest.mark.parametrize("sur", SURROGATES)
def test_numba_lif_matches_reference(dtype, tol, reset, detach, sur) -> None:
    s = surrogate(sur)
    x, u0, beta, thr, vr = inputs(dtype, seed=3)
    S1, U1 = lif_fused(x, u0, beta, thr, vr, reset, detach, s, kernel="numba")
    S2, U2 = lif_reference(x, u0, beta, thr, vr, reset, detach, s)
    assert torch.equal(S1, S2) and 0 < S1.sum() < S1.numel()
    assert close(U1, U2, tol)
    leaves = [x, u0, beta, thr, vr]
    for name, a, b in zip(("x", "u0", "beta", "thr", "v_r"), grads(S1, U1, leaves), grads(S2, U2, leaves)):
        assert a.shape == b.shape and close(a, b, tol), f"{name}: {(a.double() - b.double()).abs().max()}"


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_numba_lif_gradcheck(reset: str) -> None:
    """Finite differences of the membrane (detached reset: the surrogate does not enter dU, so the analytic
    gradient is the true one away from spike flips) for input, initial state, decay, threshold, reset offset."""
    x, u0, beta, thr, vr = inputs(torch.float64, seed=4)

    def membrane(*args):
        return lif_fused(*args, reset=reset, detach_reset=True, kernel="numba")[1]

    assert torch.autograd.gradcheck(membrane, (x, u0, beta, thr, vr), eps=1e-7, atol=1e-8)


def test_numba_lif_scalar_parameters_and_gradients() -> None:
    x, u0, beta, thr, vr = inputs(torch.float64, seed=5, per_neuron=False)
    S1, U1 = lif_fused(x, u0, beta, thr, vr, "subtract", True, kernel="numba")
    S2, U2 = lif_reference(x, u0, beta, thr, vr, "subtract", True)
    assert torch.equal(S1, S2) and close(U1, U2, 1e-12)
    for a, b in zip(grads(S1, U1, [beta, thr, vr]), grads(S2, U2, [beta, thr, vr])):
        assert a.shape == () and close(a, b, 1e-12)


def test_numba_lif_layouts() -> None:
    """The cohort engine's layouts: a K-major stack ``[T, K, B, N]`` (kept K-major in the outputs, so the next
    layer reads them without a copy), a time-constant input (stride 0 over T) and a K-major incoming gradient.
    A step row ``B * N`` of >= 256 elements, as in the engine (shorter rows are copied to contiguous memory)."""
    k, B, N = 4, 3, 96
    g = torch.Generator().manual_seed(6)
    z = torch.randn(k, T, B, N, generator=g, dtype=torch.float64) * 0.6 + 0.35
    kmajor = z.transpose(0, 1).requires_grad_(True)  # [T, K, B, N], K-major memory
    const = (torch.randn(k, B, N, generator=g, dtype=torch.float64) * 0.6 + 0.35).requires_grad_(True)
    beta = (torch.rand(k, 1, N, generator=g, dtype=torch.float64) * 0.5 + 0.45).requires_grad_(True)
    for x, leaf in ((kmajor, kmajor), (const.unsqueeze(0).expand(T, k, B, N), const)):
        S1, U1 = lif_fused(x, None, beta, 1.0, kernel="numba")
        S2, U2 = lif_reference(x, None, beta, 1.0)
        assert torch.equal(S1, S2) and close(U1, U2, 1e-12)
        if x.stride(0) != 0:
            assert S1.stride() == x.stride() and U1.stride() == x.stride()
        w = torch.randn(k, T, B, N, generator=g, dtype=torch.float64).transpose(0, 1)  # K-major gradient
        a = torch.autograd.grad((S1 * w).sum() + (U1 * w).sum(), [leaf, beta])
        b = torch.autograd.grad((S2 * w).sum() + (U2 * w).sum(), [leaf, beta])
        assert all(close(p, q, 1e-12) for p, q in zip(a, b))


def test_numba_lif_under_vmap_matches_loop() -> None:
    """torch.func.vmap over K clients with per-client decay, threshold and reset offset: the numba kernel's
    batching rule against the loop kernel's, values and gradients (float64)."""
    k = 5
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(k, T, B, N, generator=g, dtype=torch.float64) * 0.6 + 0.35).requires_grad_(True)
    beta = (torch.rand(k, N, generator=g, dtype=torch.float64) * 0.5 + 0.45).requires_grad_(True)
    thr = (torch.rand(k, N, generator=g, dtype=torch.float64) * 0.6 + 0.7).requires_grad_(True)
    vr = (torch.rand(k, N, generator=g, dtype=torch.float64) * 0.4 - 0.2).requires_grad_(True)
    w = torch.randn(k, T, B, N, generator=g, dtype=torch.float64)
    results = {}
    for kernel in ("loop", "numba"):
        def one(xi, bi, ti, vi, kernel=kernel):
            return lif_fused(xi, None, bi, ti, vi, "zero", True, kernel=kernel)

        S, U = torch.func.vmap(one)(x, beta, thr, vr)
        results[kernel] = (S, U, *torch.autograd.grad((S * w).sum() + (U * w).sum(), [x, beta, thr, vr]))
    assert torch.equal(results["loop"][0], results["numba"][0])
    for a, b in zip(results["numba"][1:], results["loop"][1:]):
        assert close(a, b, 1e-12)


def test_numba_lif_same_bits_for_any_thread_count() -> None:
    before = torch.get_num_threads()
    x = (torch.randn(T, 8, 40, 64, generator=torch.Generator().manual_seed(8)) * 0.6 + 0.3).requires_grad_(True)
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            S, U = lif_fused(x, None, 0.9, 1.0, kernel="numba")
            (gx,) = torch.autograd.grad((S * 0.7).sum() + U.sum(), [x])
            assert torch.get_num_threads() == threads  # numba's pool does not touch torch's setting
            assert numba.get_num_threads() == min(threads, numba.config.NUMBA_NUM_THREADS)
            out.append((S, U, gx))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*out))


def test_numba_kernel_selection_and_bad_input() -> None:
    assert kernel_function("lowpass", "numba") is LowpassFunction  # the low-pass filter stays the loop's
    with pytest.raises(ValueError, match="local.kernel=numba supports float32 and float64"):
        lif_fused(torch.zeros(3, 2, dtype=torch.float16), None, 0.9, 1.0, kernel="numba")


@pytest.mark.slow
def test_cohort_round_with_numba_is_reproducible_and_close_to_loop() -> None:
    """Two rounds of a small federation: numba twice gives the same bits, and the loop's weights to float32
    rounding (a spike that flips on a rounding difference moves a weight by one Adam step, ~1e-3)."""
    def run(kernel: str) -> dict[str, torch.Tensor]:
        sim = Simulation(build_spec(RunSettings.model_validate({
            "seed": 3, "partition": {"method": "iid", "num_clients": 6},
            "model": {"kind": "mlp", "hidden": [32], "neuron": "lif"},
            "local": {"epochs": 1, "batch_size": 16, "num_steps": 8, "encoder": "direct", "kernel": kernel},
            "federation": {"rounds": 2, "eval_every": 100, "fraction": 1.0, "min_clients": 6},
        })))
        for _ in range(2):
            sim.run_round()
        return sim.state.global_params

    a, b, ref = run("numba"), run("numba"), run("loop")
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert max(float((a[n] - ref[n]).abs().max()) for n in a) < 5e-3
