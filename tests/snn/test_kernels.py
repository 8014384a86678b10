"""Fused multi-step kernels vs the step-by-step autograd reference, a hand-written Python loop,
gradcheck, and the memory contract of the fused backward."""

from __future__ import annotations

import itertools

import pytest
import torch

from spikefed.snn.kernels import lif_fused, lif_reference, lowpass, lowpass_reference
from spikefed.snn.surrogate import get_surrogate

T, B, N = 12, 3, 5
F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_inputs(per_neuron: bool, with_u0: bool, seed: int = 0):
    g = gen(seed)
    x = (torch.randn(T, B, N, generator=g, dtype=F64) * 0.6 + 0.35).requires_grad_(True)
    if per_neuron:
        beta = (torch.rand(N, generator=g, dtype=F64) * 0.5 + 0.45).requires_grad_(True)
        thr = (torch.rand(N, generator=g, dtype=F64) * 0.6 + 0.7).requires_grad_(True)
        vr = (torch.rand(N, generator=g, dtype=F64) * 0.4 - 0.2).requires_grad_(True)
    else:
        beta = torch.tensor(0.8, dtype=F64, requires_grad=True)
        thr = torch.tensor(0.9, dtype=F64, requires_grad=True)
        vr = torch.tensor(0.15, dtype=F64, requires_grad=True)
    u0 = None
    if with_u0:
        u0 = (torch.randn(B, N, generator=g, dtype=F64) * 0.8 + 0.5).requires_grad_(True)  # some start above thr
    return x, u0, beta, thr, vr


def grads(outputs, inputs):
    live = [i for i in inputs if i is not None]
    got = torch.autograd.grad(outputs, live, allow_unused=True, retain_graph=True)
    got = [torch.zeros_like(i) if gi is None else gi for i, gi in zip(live, got)]
    return got


CASES = list(itertools.product(["subtract", "zero", "none"], [True, False], [False, True], [False, True]))


@pytest.mark.parametrize("reset, detach, per_neuron, with_u0", CASES)
def test_lif_fused_matches_reference(reset: str, detach: bool, per_neuron: bool, with_u0: bool) -> None:
    sur = get_surrogate("atan", 2.0)
    x, u0, beta, thr, vr = make_inputs(per_neuron, with_u0, seed=CASES.index((reset, detach, per_neuron, with_u0)))
    S1, U1 = lif_fused(x, u0, beta, thr, vr, reset, detach, sur)
    S2, U2 = lif_reference(x, u0, beta, thr, vr, reset, detach, sur)
    assert S1.shape == S2.shape == (T, B, N)
    assert torch.equal(S1, S2)
    assert 0 < S1.sum() < S1.numel()  # both spiking and silent steps are exercised
    if reset != "none":
        # the reset path is hit (a spike was followed by another step)
        assert S1[:-1].sum() > 0
    torch.testing.assert_close(U1, U2, rtol=1e-12, atol=1e-12)

    inputs = [x, u0, beta, thr, vr]
    g = gen(7)
    gS = torch.randn(T, B, N, generator=g, dtype=F64)
    gU = torch.randn(T, B, N, generator=g, dtype=F64)
    for upstream in ("both", "spikes", "membrane"):
        if upstream == "both":
            l1, l2 = (S1 * gS).sum() + (U1 * gU).sum(), (S2 * gS).sum() + (U2 * gU).sum()
        elif upstream == "spikes":
            l1, l2 = (S1 * gS).sum(), (S2 * gS).sum()
        else:
            l1, l2 = (U1 * gU).sum(), (U2 * gU).sum()
        g1 = grads(l1, inputs)
        g2 = grads(l2, inputs)
        for a, b_ in zip(g1, g2):
            torch.testing.assert_close(a, b_, rtol=1e-10, atol=1e-12)
        if upstream != "membrane":
            thr_grad = g1[3 if u0 is not None else 2]
            assert thr_grad.abs().sum() > 0  # the threshold gradient is not trivially zero


def test_lif_fused_plain_sum_loss_and_partial_requires_grad() -> None:
    # expanded (stride-0) upstream gradients from .sum(), and only some inputs requiring grad
    x, u0, beta, thr, vr = make_inputs(True, True, seed=3)
    for reset in ("subtract", "zero"):
        S1, U1 = lif_fused(x, u0.detach(), beta.detach(), thr, 0.0, reset)
        S2, U2 = lif_reference(x, u0.detach(), beta.detach(), thr, 0.0, reset)
        g1 = torch.autograd.grad(S1.sum() + U1.sum(), [x, thr])
        g2 = torch.autograd.grad(S2.sum() + U2.sum(), [x, thr])
        for a, b_ in zip(g1, g2):
            torch.testing.assert_close(a, b_, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["fast_sigmoid", "sigmoid", "triangular", "straight_through"])
def test_lif_fused_matches_reference_other_surrogates(name: str) -> None:
    sur = get_surrogate(name)
    x, u0, beta, thr, vr = make_inputs(True, True, seed=11)
    for detach in (True, False):
        S1, U1 = lif_fused(x, u0, beta, thr, vr, "zero", detach, sur)
        S2, U2 = lif_reference(x, u0, beta, thr, vr, "zero", detach, sur)
        assert torch.equal(S1, S2)
        l1, l2 = S1.sum() + (U1**2).sum(), S2.sum() + (U2**2).sum()
        for a, b_ in zip(grads(l1, [x, u0, beta, thr, vr]), grads(l2, [x, u0, beta, thr, vr])):
            torch.testing.assert_close(a, b_, rtol=1e-10, atol=1e-12)


def test_u0_broadcast_per_neuron() -> None:
    x, _, beta, thr, vr = make_inputs(False, False, seed=5)
    u0 = torch.tensor([0.0, 1.5, -0.3, 0.95, 0.2], dtype=F64, requires_grad=True)  # shape [N], broadcast
    S1, U1 = lif_fused(x, u0, beta, thr, vr, "zero", False)
    S2, U2 = lif_reference(x, u0, beta, thr, vr, "zero", False)
    assert torch.equal(S1, S2)
    (gu1,) = torch.autograd.grad((U1 * S1.detach() + U1).sum(), [u0])
    (gu2,) = torch.autograd.grad((U2 * S2.detach() + U2).sum(), [u0])
    assert gu1.shape == (N,)
    torch.testing.assert_close(gu1, gu2, rtol=1e-10, atol=1e-12)


# -- a plain Python loop over floats, straight from the module docstring ---------------------------------
def python_lif(xs, u0, beta, thr, vr, mode):
    u = u0
    spikes, mems = [], []
    for xt in xs:
        r = 1.0 if u > thr else 0.0
        if mode == "subtract":
            u = beta * u + xt - r * (thr - vr)
        elif mode == "zero":
            u = beta * ((1.0 - r) * u + r * vr) + xt
        else:
            u = beta * u + xt
        spikes.append(1.0 if u > thr else 0.0)
        mems.append(u)
    return spikes, mems


@pytest.mark.parametrize("mode", ["subtract", "zero", "none"])
@pytest.mark.parametrize("u0", [0.0, 1.7])
@pytest.mark.parametrize("vr", [0.0, -0.25])
def test_lif_against_python_loop(mode: str, u0: float, vr: float) -> None:
    xs = [0.4, 0.9, -0.2, 0.7, 0.0, 1.3, 0.05, 0.6, 0.6, -1.0, 2.5, 0.3, 0.3, 0.3, 0.3]
    beta, thr = 0.85, 1.0
    want_s, want_u = python_lif(xs, u0, beta, thr, vr, mode)
    assert 0 < sum(want_s) and (mode == "none" or sum(want_s) < len(xs))
    x = torch.tensor(xs, dtype=F64).view(-1, 1, 1)
    u0t = torch.tensor([[u0]], dtype=F64)
    for fn in (lif_fused, lif_reference):
        s, u = fn(x, u0t, beta, thr, vr, mode)
        assert s.flatten().tolist() == want_s
        torch.testing.assert_close(u.flatten(), torch.tensor(want_u, dtype=F64), rtol=1e-14, atol=1e-14)


def test_lif_fused_u0_none_equals_zero_state() -> None:
    x, _, beta, thr, vr = make_inputs(True, False, seed=2)
    a = lif_fused(x, None, beta, thr, vr, "subtract")
    b = lif_fused(x, torch.zeros(B, N, dtype=F64), beta, thr, vr, "subtract")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_lif_unknown_reset() -> None:
    x = torch.zeros(2, 1, 1)
    with pytest.raises(ValueError, match="subtract"):
        lif_fused(x, None, 0.9, 1.0, 0.0, "hard")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="subtract"):
        lif_reference(x, None, 0.9, 1.0, 0.0, "hard")  # type: ignore[arg-type]


# -- gradcheck (where the map is smooth) ------------------------------------------------------------------
def test_gradcheck_membrane_no_reset() -> None:
    g = gen(21)
    x = torch.randn(6, 2, 3, generator=g, dtype=F64, requires_grad=True)
    u0 = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
    beta = torch.tensor([0.3, 0.6, 0.9], dtype=F64, requires_grad=True)
    thr = torch.tensor(0.5, dtype=F64, requires_grad=True)
    vr = torch.tensor(0.1, dtype=F64, requires_grad=True)

    def f(x, u0, beta, thr, vr):
        return lif_fused(x, u0, beta, thr, vr, "none")[1]

    assert torch.autograd.gradcheck(f, (x, u0, beta, thr, vr))


@pytest.mark.parametrize("mode", ["subtract", "zero"])
def test_gradcheck_membrane_detached_reset(mode: str) -> None:
    # With a detached reset, the reset signal is piecewise constant: away from u == thr the membrane is a
    # smooth function of (x, u0, beta, thr, v_r) and the fused gradient is its true derivative.
    g = gen(22)
    x = (torch.randn(8, 2, 3, generator=g, dtype=F64) * 0.5 + 0.4).requires_grad_(True)
    u0 = torch.tensor([[0.2, 1.4, -0.1], [0.7, 0.0, 1.2]], dtype=F64, requires_grad=True)
    beta = torch.tensor([0.5, 0.7, 0.9], dtype=F64, requires_grad=True)
    thr = torch.tensor([0.8, 1.0, 0.9], dtype=F64, requires_grad=True)
    vr = torch.tensor([0.1, -0.1, 0.0], dtype=F64, requires_grad=True)
    with torch.no_grad():
        S, U = lif_fused(x, u0, beta, thr, vr, mode)
        margin = torch.cat([(U - thr).abs().flatten(), (u0 - thr).abs().flatten()]).min().item()
    assert margin > 1e-3 and 0 < S.sum() < S.numel()

    def f(x, u0, beta, thr, vr):
        return lif_fused(x, u0, beta, thr, vr, mode, True)[1]

    assert torch.autograd.gradcheck(f, (x, u0, beta, thr, vr))


# -- lowpass ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_neuron", [False, True])
@pytest.mark.parametrize("with_y0", [False, True])
def test_lowpass_matches_reference_and_python_loop(per_neuron: bool, with_y0: bool) -> None:
    g = gen(31)
    x = torch.randn(T, B, N, generator=g, dtype=F64, requires_grad=True)
    a = (torch.rand(N, generator=g, dtype=F64) * 0.9 + 0.05) if per_neuron else torch.tensor(0.7, dtype=F64)
    a.requires_grad_(True)
    y0 = torch.randn(B, N, generator=g, dtype=F64, requires_grad=True) if with_y0 else None
    y1 = lowpass(x, a, y0)
    y2 = lowpass_reference(x, a, y0)
    torch.testing.assert_close(y1, y2, rtol=1e-13, atol=1e-13)
    # hand loop in Python floats
    av = a.detach().expand(N).tolist()
    for b_ in range(B):
        for n in range(N):
            y = 0.0 if y0 is None else float(y0.detach()[b_, n])
            for t in range(T):
                y = av[n] * y + float(x.detach()[t, b_, n])
                assert float(y1.detach()[t, b_, n]) == pytest.approx(y, rel=1e-12, abs=1e-12)
    gy = torch.randn(T, B, N, generator=g, dtype=F64)
    inputs = [x, a] + ([y0] if y0 is not None else [])
    g1 = torch.autograd.grad((y1 * gy).sum(), inputs)
    g2 = torch.autograd.grad((y2 * gy).sum(), inputs)
    for p, q in zip(g1, g2):
        torch.testing.assert_close(p, q, rtol=1e-11, atol=1e-12)


def test_lowpass_gradcheck() -> None:
    g = gen(32)
    x = torch.randn(7, 2, 3, generator=g, dtype=F64, requires_grad=True)
    y0 = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
    a = torch.tensor([0.2, 0.5, 0.95], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a, y0: lowpass(x, a, y0), (x, a, y0))
    s = torch.tensor(0.6, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, s: lowpass(x, s), (x, s))


# -- memory contract of the fused backward -----------------------------------------------------------------
def saved_numels(fn) -> list[int]:
    sizes: list[int] = []

    def pack(t: torch.Tensor):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sizes


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("detach", [True, False])
def test_lif_fused_saves_one_sequence_tensor(reset: str, detach: bool) -> None:
    steps, batch, feat = 7, 3, 5
    x = torch.randn(steps, batch, feat, requires_grad=True)
    u0 = torch.randn(batch, feat, requires_grad=True)
    beta = torch.full((feat,), 0.9, requires_grad=True)
    thr = torch.full((feat,), 1.0, requires_grad=True)
    vr = torch.zeros(feat, requires_grad=True)
    big = steps * batch * feat
    sizes = saved_numels(lambda: lif_fused(x, u0, beta, thr, vr, reset, detach))
    assert sum(s for s in sizes if s >= big) == big
    assert sum(s for s in sizes if s < big) <= batch * feat + 3 * feat
    # the step-by-step reference saves much more (sanity check that the hook sees saved tensors)
    ref = saved_numels(lambda: lif_reference(x, u0, beta, thr, vr, reset, detach))
    assert sum(ref) > 2 * big


def test_lowpass_saves_one_sequence_tensor() -> None:
    x = torch.randn(9, 2, 4, requires_grad=True)
    a = torch.full((4,), 0.5, requires_grad=True)
    sizes = saved_numels(lambda: lowpass(x, a))
    assert sum(s for s in sizes if s >= x.numel()) == x.numel()


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_time_constant_stacked_input_gives_client_major_outputs_with_reference_values(reset: str) -> None:
    """A direct (time-constant) ``[T, K, B, N]`` input: outputs in ``[K, T, ...]`` memory (the next stacked
    linear reads them without a copy) and the values and input gradient of the step-by-step reference."""
    g = torch.Generator().manual_seed(11)
    base = torch.randn(3, 2, 5, dtype=torch.float64, generator=g)
    x = base.clone().requires_grad_(True)
    x_ref = base.clone().requires_grad_(True)
    seq = x.unsqueeze(0).expand(6, *base.shape)
    s, u = lif_fused(seq, None, 0.8, 0.7, reset=reset)
    assert s.transpose(0, 1).is_contiguous() and u.transpose(0, 1).is_contiguous()
    s_ref, u_ref = lif_reference(x_ref.unsqueeze(0).expand(6, *base.shape), None, 0.8, 0.7, reset=reset)
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(u, u_ref, rtol=0, atol=1e-12)
    up = torch.randn(u.shape, dtype=torch.float64, generator=g)
    (gx,) = torch.autograd.grad((s.sum(0) * up.sum(0)).sum() + (u * up).sum(), [x])
    (gx_ref,) = torch.autograd.grad((s_ref.sum(0) * up.sum(0)).sum() + (u_ref * up).sum(), [x_ref])
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-10)
