"""The time-constant-input LIF kernel (spikefed.snn.kernels_constant) against the step-by-step autograd reference
(lif_reference on the input expanded over T), and the cohort engine against the sequential
one with ``local.kernel=numba`` (float64)."""

from __future__ import annotations

import pytest
import torch

numba = pytest.importorskip("numba")

from spikefed.data import load_digits_split  # noqa: E402
from spikefed.federated.cohort import ClientData, train_cohort, train_sequential  # noqa: E402
from spikefed.federated.types import FitInstructions, params_of  # noqa: E402
from spikefed.snn import kernels_constant as kc  # noqa: E402
from spikefed.snn.kernels import RESET_IDS, lif_reference  # noqa: E402
from spikefed.snn.kernels_constant import constant_input_reason, lif_constant_input  # noqa: E402
from spikefed.snn.models import SpikingMLP  # noqa: E402
from spikefed.snn.surrogate import get_surrogate  # noqa: E402
from spikefed.snn.train import TrainConfig  # noqa: E402

T, K, B, N = 9, 3, 4, 700  # N > the kernel's block of 512: a block boundary inside a row
BUILT_IN = ["atan", "fast_sigmoid", "sigmoid", "triangular", "straight_through"]


def _inputs(dtype: torch.dtype, seed: int, per_client: bool):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(K, B, N, generator=g, dtype=torch.float64) * 0.6 + 0.35).to(dtype).requires_grad_(True)
    shape = (K, 1, N) if per_client else ()
    beta = (torch.rand(shape, generator=g, dtype=torch.float64) * 0.5 + 0.45).to(dtype)
    thr = (torch.rand(shape, generator=g, dtype=torch.float64) * 0.6 + 0.7).to(dtype)
    vr = (torch.rand(shape, generator=g, dtype=torch.float64) * 0.4 - 0.2).to(dtype)
    u0 = (torch.randn(K, B, N, generator=g, dtype=torch.float64) * 0.8 + 0.5).to(dtype)
    return z, u0, beta, thr, vr


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("sur", BUILT_IN)
def test_matches_reference_on_the_expanded_input(dtype, tol, reset: str, sur: str) -> None:
    surrogate = get_surrogate(sur)
    for per_client in (True, False):
        z, u0, beta, thr, vr = _inputs(dtype, 1 + RESET_IDS[reset], per_client)
        S = lif_constant_input(z, T, u0, beta, thr, vr, RESET_IDS[reset], surrogate)
        S_ref, U_ref = lif_reference(z.unsqueeze(0).expand(T, *z.shape), u0, beta, thr, vr, reset, True, surrogate)
        assert torch.equal(S, S_ref)
        assert 0.05 < float(S.detach().mean()) < 0.95  # spikes and silences both occur
        w = torch.randn(S.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(dtype)
        (g,) = torch.autograd.grad((S * w).sum(), [z])
        (g_ref,) = torch.autograd.grad((S_ref * w).sum(), [z])
        scale = max(1.0, float(g_ref.abs().max()))
        assert float((g.double() - g_ref.double()).abs().max()) <= tol * scale
        assert float(g_ref.abs().max()) > 0.1


def test_output_layout_and_thread_count() -> None:
    z = (torch.randn(K, B, N, generator=torch.Generator().manual_seed(2)) * 0.6 + 0.4).requires_grad_(True)
    scalar = [torch.tensor(v) for v in (0.0, 0.9, 1.0, 0.0)]
    before = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            S = lif_constant_input(z, T, *scalar, 0, get_surrogate("atan"))
            assert S.shape == (T, K, B, N)
            assert S.transpose(0, 1).is_contiguous()  # client-major: the next stacked linear reads [K, T*B, N]
            gS = torch.randn(K, T, B, N, generator=torch.Generator().manual_seed(3)).transpose(0, 1)
            (gz,) = torch.autograd.grad(S, [z], gS)
            (gz_c,) = torch.autograd.grad(lif_constant_input(z, T, *scalar, 0, get_surrogate("atan")), [z],
                                          gS.contiguous())  # a time-major gradient gives the same numbers
            assert torch.equal(gz, gz_c)
            assert torch.get_num_threads() == threads
            out.append((S, gz))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_reasons_and_bad_input() -> None:
    z = torch.zeros(2, 3, 4)
    p = tuple(torch.tensor(v) for v in (0.0, 0.9, 1.0, 0.0))
    atan = get_surrogate("atan")
    assert constant_input_reason(z, p, True, atan) is None
    assert "detach_reset" in constant_input_reason(z, p, False, atan)
    assert "float16" in constant_input_reason(z.half(), p, True, atan)
    assert "leading" in constant_input_reason(torch.zeros(4), p, True, atan)
    assert "trained" in constant_input_reason(z, (p[0], p[1].clone().requires_grad_(True), *p[2:]), True, atan)
    custom = get_surrogate(lambda x: 1.0 / (1.0 + x.abs()) ** 2)
    assert "surrogate" in constant_input_reason(z, p, True, custom)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        lif_constant_input(z, 0, *p, 0, atan)


@pytest.fixture(scope="module")
def clients64() -> list[ClientData]:
    d = load_digits_split(seed=0)
    x, y = d.x_train.double(), d.y_train
    out, start = [], 0
    for i, n in enumerate([50, 23, 37, 11]):
        out.append(ClientData(i, x[start:start + n], y[start:start + n]))
        start += n
    return out


@pytest.mark.parametrize("variant", ["plain", "two_hidden", "regularized", "learnable"])
def test_cohort_with_numba_equals_sequential(clients64, variant: str, monkeypatch) -> None:
    """Direct coding: the first hidden layer runs the constant-input kernel (a spy counts it; a trained
    threshold falls back to the reference kernels); client updates equal the sequential engine's in float64."""
    sizes = [64, 24, 16, 10] if variant == "two_hidden" else [64, 24, 10]
    kw = dict(learn_threshold=True) if variant == "learnable" else {}
    model = SpikingMLP(sizes, generator=torch.Generator().manual_seed(0), **kw).double()
    cfg_kw = dict(epochs=2, batch_size=16, lr=0.01, optimizer="adam", num_steps=6, kernel="numba")
    if variant == "regularized":
        cfg_kw.update(reg_l1=0.01, reg_l2=0.01, reg_bounds=0.5, rate_lower=0.05, rate_upper=0.3)
    calls = []
    original = kc.lif_constant_input
    monkeypatch.setattr(kc, "lif_constant_input", lambda *a, **k: calls.append(1) or original(*a, **k))
    g = params_of(model)
    gens = [torch.Generator().manual_seed(100 + i) for i in range(4)]
    a = train_cohort(model, g, clients64, gens, TrainConfig(**cfg_kw), FitInstructions(1), None)
    gens = [torch.Generator().manual_seed(100 + i) for i in range(4)]
    b = train_sequential(model, g, clients64, gens, TrainConfig(**cfg_kw), FitInstructions(1), None)
    assert (len(calls) > 0) == (variant != "learnable")
    moved = max((u.params[n] - g[n]).abs().max().item() for u in a for n in u.params)
    assert moved > 1e-3
    diff = max((ua.params[n] - ub.params[n]).abs().max().item() for ua, ub in zip(a, b) for n in ua.params)
    assert diff < 1e-10
