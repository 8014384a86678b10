"""Neuron layers against closed forms, hand loops and snnTorch; state handling, manifolds and input checks."""

from __future__ import annotations

import math

import pytest
import torch

from spikefed.manifold import EPS, manifold_of, named_manifolds, project_parameters_
from spikefed.snn.neurons import (
    ALIF,
    IF,
    LIF,
    LeakyIntegrator,
    LIFState,
    RecurrentLIF,
    Synaptic,
    make_neuron,
)

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def f32(v: float) -> float:
    """The value a float32 buffer actually holds."""
    return float(torch.tensor(v, dtype=torch.float32))


def spike_times(s: torch.Tensor) -> list[int]:
    return s.flatten().nonzero().flatten().tolist()


# -- independent hand loops (straight from the equations in the module docstring) -------------------------
def hand_lif(x, beta, thr, mode="subtract", vr=0.0, u0=None, drive=None):
    """LIF over x [T, B, N]; ``drive(t, last_spikes)`` optionally adds a term to the input."""
    u = torch.zeros_like(x[0]) if u0 is None else u0.clone()
    last = (u > thr).to(x.dtype)
    S, U = [], []
    for t in range(x.shape[0]):
        inp = x[t] if drive is None else x[t] + drive(last)
        if mode == "subtract":
            u = beta * u + inp - last * (thr - vr)
        elif mode == "zero":
            u = beta * ((1 - last) * u + last * vr) + inp
        else:
            u = beta * u + inp
        last = (u > thr).to(x.dtype)
        S.append(last)
        U.append(u)
    return torch.stack(S), torch.stack(U)


def hand_lowpass(x, a):
    y = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        y = a * y + x[t]
        out.append(y)
    return torch.stack(out)


def hand_alif(x, beta, thr, rho, gamma, mode="subtract"):
    v = torch.zeros_like(x[0])
    a = torch.zeros_like(x[0])
    last = torch.zeros_like(x[0])
    S, U = [], []
    for t in range(x.shape[0]):
        a = rho * a + last
        if mode == "subtract":
            v = beta * v + x[t] - last * thr
        elif mode == "zero":
            v = beta * (1 - last) * v + x[t]
        else:
            v = beta * v + x[t]
        last = (v > thr + gamma * a).to(x.dtype)
        S.append(last)
        U.append(v)
    return torch.stack(S), torch.stack(U)


# -- LIF closed forms ---------------------------------------------------------------------------------------
# u[t] = I (1 - beta^(t+1)) / (1 - beta) before the first spike. u[t] > thr  <=>  beta^(t+1) < c with
# c = 1 - thr (1 - beta) / I  <=>  t + 1 > q = ln c / ln beta, so the first spike is t1 = floor(q)
# (strict inequality; only equal to ceil(q) - 1 when q is not an integer). With reset "zero" and v_r = 0 the
# step after a spike starts from u = beta * 0 + I = I, exactly like t = 0: the train is periodic with period
# t1 + 1, spikes at t1 + m (t1 + 1), and the count over T steps is floor((T - 1 - t1) / (t1 + 1)) + 1.
@pytest.mark.parametrize(
    "I, beta, thr, t1_expected",
    [(0.3, 0.9, 1.0, 3), (0.5, 0.8, 1.5, 4), (2.0, 0.5, 1.0, 0), (0.12, 0.95, 1.0, 10), (0.25, 0.7, 0.6, 3)],
)
def test_lif_constant_input_closed_form(I: float, beta: float, thr: float, t1_expected: int) -> None:
    b, th = f32(beta), f32(thr)  # the layer stores float32 buffers
    c = 1.0 - th * (1.0 - b) / I
    q = math.log(c) / math.log(b)
    assert abs(q - round(q)) > 1e-3  # far from the integer boundary
    t1 = math.floor(q)
    assert t1 == t1_expected  # hand-checked: e.g. 0.3, 0.57, 0.813, 1.0317 > 1 -> t1 = 3
    steps = 60
    x = torch.full((steps, 1, 1), I, dtype=F64)
    out = LIF(1, beta=beta, threshold=thr, reset="zero").run(x)
    u = out.membrane.flatten()
    closed = torch.tensor([I * (1 - b ** (t + 1)) / (1 - b) for t in range(t1 + 1)], dtype=F64)
    torch.testing.assert_close(u[: t1 + 1], closed, rtol=1e-12, atol=1e-12)
    period = t1 + 1
    want_times = list(range(t1, steps, period))
    assert spike_times(out.spikes) == want_times
    assert len(want_times) == (steps - 1 - t1) // period + 1
    # the membrane repeats with the period
    torch.testing.assert_close(u[period:], u[:-period], rtol=1e-12, atol=1e-12)


def test_lif_below_rheobase_never_spikes() -> None:
    # u -> I / (1 - beta) = 0.9 < thr
    x = torch.full((300, 1, 1), 0.09, dtype=F64)
    out = LIF(1, beta=0.9, threshold=1.0, reset="zero").run(x)
    assert out.spikes.sum() == 0
    assert out.membrane[-1].item() == pytest.approx(0.09 / (1 - f32(0.9)), rel=1e-6)


# IF, reset by subtraction, constant 0 < I <= thr, u0 = 0: u[t] = (t+1) I - thr n[t-1] (n = spikes so far, the
# reset of step t uses the spike of t-1). A spike at t needs (t+1) I > thr (n[t-1] + 1), and by induction
# n[t] = ceil((t+1) I / thr) - 1 (the largest k with k thr < (t+1) I). So the count over T steps is
# ceil(T I / thr) - 1: equal to floor(T I / thr) unless T I / thr is an integer, then one less (strict >).
# Cases use dyadic I / thr (exact in floating point) or ratios with no integer (t+1) I / thr for t < T, since
# at such boundaries the outcome depends on rounding of the accumulated membrane.
@pytest.mark.parametrize(
    "I, thr, steps",
    [(0.25, 1.0, 8), (0.25, 1.0, 9), (0.375, 1.5, 40), (0.5, 1.0, 7), (1.0, 1.0, 10), (0.31, 1.0, 25), (0.71, 2.0, 33)],
)
def test_if_constant_input_spike_count(I: float, thr: float, steps: int) -> None:
    x = torch.full((steps, 1, 1), I, dtype=F64)
    out = IF(1, threshold=thr, reset="subtract").run(x)
    th = f32(thr)
    n = [math.ceil((t + 1) * I / th) - 1 for t in range(steps)]
    want = [n[0]] + [n[t] - n[t - 1] for t in range(1, steps)]
    assert out.spikes.flatten().tolist() == [float(v) for v in want]
    assert out.spikes.sum().item() == math.ceil(steps * I / th) - 1
    if steps * I / th != int(steps * I / th):
        assert out.spikes.sum().item() == math.floor(steps * I / th)
    # membrane: u[t] = (t+1) I - thr n[t-1]
    mem = [(t + 1) * I - th * (n[t - 1] if t else 0) for t in range(steps)]
    torch.testing.assert_close(out.membrane.flatten(), torch.tensor(mem, dtype=F64), rtol=1e-12, atol=1e-12)


def test_if_integer_ratio_is_one_less_than_floor() -> None:
    # T I / thr = 2 exactly: u = .25, .5, .75, 1.0 (not > 1), 1.25 (spike), .5, .75, 1.0 -> 1 spike, not 2
    out = IF(1, threshold=1.0).run(torch.full((8, 1, 1), 0.25, dtype=F64))
    assert spike_times(out.spikes) == [4]


# -- against hand loops (all resets, nonzero reset offset, initial state) ------------------------------------
@pytest.mark.parametrize("mode", ["subtract", "zero", "none"])
@pytest.mark.parametrize("fused", [True, False])
def test_lif_against_hand_loop(mode: str, fused: bool) -> None:
    g = gen(1)
    x = torch.randn(30, 4, 6, generator=g, dtype=F64) * 0.6 + 0.3
    u0 = torch.randn(4, 6, generator=g, dtype=F64)
    lif = LIF(6, beta=0.8, threshold=0.9, reset=mode, reset_value=-0.2, fused=fused).double()
    out = lif.run(x, LIFState(u0))
    S, U = hand_lif(x, f32(0.8), f32(0.9), mode, f32(-0.2), u0)
    assert torch.equal(out.spikes, S)
    torch.testing.assert_close(out.membrane, U, rtol=1e-12, atol=1e-12)
    assert 0 < S.sum() < S.numel()


# -- snnTorch ----------------------------------------------------------------------------------------------------
SNN_T, SNN_B, SNN_N = 50, 8, 16


def run_snntorch_leaky(leaky, x):
    mem = torch.zeros_like(x[0])
    S, U = [], []
    for t in range(x.shape[0]):
        spk, mem = leaky(x[t], mem)
        S.append(spk)
        U.append(mem)
    return torch.stack(S), torch.stack(U)


@pytest.mark.parametrize("mode", ["subtract", "zero", "none"])
def test_lif_matches_snntorch_leaky(mode: str) -> None:
    snn = pytest.importorskip("snntorch")
    g = gen(2)
    x = torch.randn(SNN_T, SNN_B, SNN_N, generator=g) * 0.5 + 0.3
    gS = torch.randn(SNN_T, SNN_B, SNN_N, generator=g)
    gU = torch.randn(SNN_T, SNN_B, SNN_N, generator=g)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    out = LIF(SNN_N, beta=0.9, threshold=1.0, reset=mode).run(x1)
    S2, U2 = run_snntorch_leaky(snn.Leaky(beta=0.9, threshold=1.0, reset_mechanism=mode), x2)
    assert torch.equal(out.spikes, S2)
    assert 0 < S2.sum() < S2.numel()
    torch.testing.assert_close(out.membrane, U2, rtol=1e-5, atol=1e-5)
    ((out.spikes * gS).sum() + (out.membrane * gU).sum()).backward()
    ((S2 * gS).sum() + (U2 * gU).sum()).backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["subtract", "zero"])
def test_lif_matches_snntorch_learnable_per_neuron(mode: str) -> None:
    snn = pytest.importorskip("snntorch")
    g = gen(3)
    x = torch.randn(SNN_T, SNN_B, SNN_N, generator=g) * 0.5 + 0.3
    betas = torch.rand(SNN_N, generator=g) * 0.45 + 0.5
    thrs = torch.rand(SNN_N, generator=g) * 0.6 + 0.7
    ours = LIF(SNN_N, beta=0.9, threshold=1.0, reset=mode, learn_beta=True, learn_threshold=True)
    with torch.no_grad():
        ours.beta.copy_(betas)
        ours.threshold.copy_(thrs)
    theirs = snn.Leaky(beta=betas.clone(), threshold=thrs.clone(), learn_beta=True, learn_threshold=True,
                       reset_mechanism=mode)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    out = ours.run(x1)
    S2, U2 = run_snntorch_leaky(theirs, x2)
    assert torch.equal(out.spikes, S2)
    torch.testing.assert_close(out.membrane, U2, rtol=1e-5, atol=1e-5)
    gS = torch.randn(SNN_T, SNN_B, SNN_N, generator=g)
    ((out.spikes * gS).sum() + out.membrane.square().sum() / 100).backward()
    ((S2 * gS).sum() + U2.square().sum() / 100).backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.beta.grad, theirs.beta.grad, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(ours.threshold.grad, theirs.threshold.grad, rtol=1e-3, atol=1e-3)
    assert ours.threshold.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["subtract", "none"])
def test_synaptic_matches_snntorch(mode: str) -> None:
    # snnTorch Synaptic: syn = alpha syn + x; mem = beta mem + syn - reset thr, reset = H(mem_prev - thr)
    # (detached), spk = H(mem - thr): the same equations and ordering as ours for "subtract" and "none".
    snn = pytest.importorskip("snntorch")
    g = gen(4)
    x = torch.randn(SNN_T, SNN_B, SNN_N, generator=g) * 0.3 + 0.1
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    out = Synaptic(SNN_N, alpha=0.8, beta=0.9, threshold=1.0, reset=mode).run(x1)
    syn_layer = snn.Synaptic(alpha=0.8, beta=0.9, threshold=1.0, reset_mechanism=mode)
    syn = torch.zeros_like(x[0])
    mem = torch.zeros_like(x[0])
    S2, U2 = [], []
    for t in range(SNN_T):
        spk, syn, mem = syn_layer(x2[t], syn, mem)
        S2.append(spk)
        U2.append(mem)
    S2, U2 = torch.stack(S2), torch.stack(U2)
    assert torch.equal(out.spikes, S2)
    assert 0 < S2.sum() < S2.numel()
    torch.testing.assert_close(out.membrane, U2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.state.i, syn, rtol=1e-5, atol=1e-5)
    (out.spikes.sum() + out.membrane.sum()).backward()
    (S2.sum() + U2.sum()).backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)


def test_synaptic_zero_reset_against_hand_loop() -> None:
    # snnTorch's Synaptic "zero" reset differs from ours: it zeroes the *new* membrane, input current included
    # (mem = (beta mem + syn) (1 - reset)), while spikefed (and snnTorch's Leaky) only drop the previous potential:
    # u = beta (1 - r) u + i. So "zero" is checked against a hand loop instead.
    g = gen(5)
    x = torch.randn(40, 4, 6, generator=g, dtype=F64) * 0.3 + 0.1
    out = Synaptic(6, alpha=0.7, beta=0.85, threshold=1.0, reset="zero").double().run(x)
    cur = hand_lowpass(x, f32(0.7))
    S, U = hand_lif(cur, f32(0.85), 1.0, "zero")
    assert torch.equal(out.spikes, S)
    assert 0 < S.sum() < S.numel()
    torch.testing.assert_close(out.membrane, U, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.state.i, cur[-1], rtol=1e-12, atol=1e-12)


# -- step == run, chunked == whole ---------------------------------------------------------------------------------
FEAT = 6


def layers():
    return {
        "lif_subtract": LIF(FEAT, beta=0.85, threshold=0.8),
        "lif_zero": LIF(FEAT, beta=0.85, threshold=0.8, reset="zero", reset_value=0.1),
        "lif_none": LIF(FEAT, beta=0.85, threshold=0.8, reset="none"),
        "if": IF(FEAT, threshold=1.5),
        "graded": LIF(FEAT, graded=True),
        "synaptic": Synaptic(FEAT, alpha=0.6, beta=0.85, threshold=0.8),
        "alif": ALIF(FEAT, beta=0.85, rho=0.9, gamma=0.4, threshold=0.8),
        "rlif": RecurrentLIF(FEAT, beta=0.85, threshold=0.8, generator=gen(9), recurrent_scale=2.0),
        "refractory": LIF(FEAT, beta=0.85, threshold=0.8, refractory=2),
    }


def seq(seed: int = 10, steps: int = 24, batch: int = 4) -> torch.Tensor:
    return torch.randn(steps, batch, FEAT, generator=gen(seed)) * 0.6 + 0.35


@pytest.mark.parametrize("name", list(layers()))
def test_step_matches_run(name: str) -> None:
    layer = layers()[name]
    if name == "graded":
        with torch.no_grad():
            layer.amplitude.copy_(torch.linspace(0.5, 2.0, FEAT))
    x = seq()
    with torch.no_grad():
        out = layer.run(x)
        state = None
        for t in range(x.shape[0]):
            s, state = layer.step(x[t], state)
            assert torch.equal(s, out.spikes[t]), f"spikes differ at t={t}"
            torch.testing.assert_close(state.v, out.membrane[t], rtol=1e-6, atol=1e-6)
        fwd_spikes, fwd_state = layer(x)
    assert torch.equal(fwd_spikes, out.spikes)
    assert 0 < (out.spikes != 0).sum() < out.spikes.numel()


@pytest.mark.parametrize("name", list(layers()))
def test_chunked_run_matches_whole(name: str) -> None:
    layer = layers()[name]
    x = seq(11)
    with torch.no_grad():
        whole = layer.run(x)
        parts, mems, state = [], [], None
        for lo, hi in [(0, 5), (5, 6), (6, 17), (17, 24)]:
            o = layer.run(x[lo:hi], state)
            parts.append(o.spikes)
            mems.append(o.membrane)
            state = o.state
    assert torch.equal(torch.cat(parts), whole.spikes)
    torch.testing.assert_close(torch.cat(mems), whole.membrane, rtol=1e-6, atol=1e-6)
    for a, b in zip(state, whole.state):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["lif_subtract", "synaptic", "alif", "rlif", "refractory"])
def test_init_state_is_resting_state(name: str) -> None:
    layer = layers()[name]
    x = seq(12)
    with torch.no_grad():
        a = layer.run(x)
        b = layer.run(x, layer.init_state(x.shape[1]))
    assert torch.equal(a.spikes, b.spikes)
    assert torch.equal(a.membrane, b.membrane)


# -- refractory period --------------------------------------------------------------------------------------------
# Strong constant input I > thr, reset "zero": t=0 u = I spikes, the counter blocks input and spikes for R steps
# (u = beta * v_r = 0 then stays 0), at t = R+1 u = I again. Spikes every R+1 steps; u = I at spikes, 0 between.
@pytest.mark.parametrize("R", [1, 2, 3, 5])
def test_refractory_period_pattern(R: int) -> None:
    steps, I = 40, 3.0
    x = torch.full((steps, 1, 1), I, dtype=F64)
    out = LIF(1, beta=0.9, threshold=1.0, reset="zero", refractory=R).run(x)
    want = list(range(0, steps, R + 1))
    assert spike_times(out.spikes) == want
    mem = [I if t in want else 0.0 for t in range(steps)]
    assert out.membrane.flatten().tolist() == mem
    # subtract reset: same spike times (the input is strong enough right after the refractory period)
    out2 = LIF(1, beta=0.9, threshold=1.0, reset="subtract", refractory=R).run(x)
    assert spike_times(out2.spikes) == want


def test_refractory_zero_is_plain_lif() -> None:
    x = seq(13)
    a = LIF(FEAT, refractory=0).run(x)
    S, U = hand_lif(x.double(), f32(0.9), 1.0)
    assert torch.equal(a.spikes.double(), S)
    torch.testing.assert_close(a.membrane.double(), U, rtol=1e-5, atol=1e-5)


# -- ALIF --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["subtract", "zero", "none"])
def test_alif_gamma_zero_is_lif(mode: str) -> None:
    x = seq(14).double()
    a = ALIF(FEAT, beta=0.85, rho=0.9, gamma=0.0, threshold=0.8, reset=mode).double().run(x)
    b = LIF(FEAT, beta=0.85, threshold=0.8, reset=mode).double().run(x)
    assert torch.equal(a.spikes, b.spikes)
    torch.testing.assert_close(a.membrane, b.membrane, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["subtract", "zero"])
def test_alif_against_hand_loop(mode: str) -> None:
    x = seq(15, steps=40).double()
    out = ALIF(FEAT, beta=0.85, rho=0.9, gamma=0.4, threshold=0.8, reset=mode).double().run(x)
    S, U = hand_alif(x, f32(0.85), f32(0.8), f32(0.9), f32(0.4), mode)
    assert torch.equal(out.spikes, S)
    torch.testing.assert_close(out.membrane, U, rtol=1e-12, atol=1e-12)


def test_alif_threshold_adaptation_lengthens_intervals() -> None:
    x = torch.full((200, 1, 1), 0.5)
    lif_times = spike_times(ALIF(1, beta=0.9, rho=0.95, gamma=0.0, reset="zero").run(x).spikes)
    alif_times = spike_times(ALIF(1, beta=0.9, rho=0.95, gamma=0.5, reset="zero").run(x).spikes)
    lif_isi = [b - a for a, b in zip(lif_times, lif_times[1:])]
    alif_isi = [b - a for a, b in zip(alif_times, alif_times[1:])]
    # LIF: closed form, period t1 + 1 with t1 = floor(ln(1 - 0.2) / ln 0.9) = 2
    assert set(lif_isi) == {3} and lif_times[0] == 2
    assert alif_times[0] == lif_times[0]  # no adaptation before the first spike
    assert all(i > 3 for i in alif_isi)
    assert sum(alif_isi[-10:]) / 10 > sum(alif_isi[:3]) / 3
    assert len(alif_times) < len(lif_times)


# -- RecurrentLIF ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["subtract", "zero"])
def test_rlif_zero_weights_is_lif(mode: str) -> None:
    x = seq(16)
    r = RecurrentLIF(FEAT, beta=0.8, threshold=0.9, reset=mode)
    with torch.no_grad():
        r.recurrent.zero_()
    a = r.run(x)
    b = LIF(FEAT, beta=0.8, threshold=0.9, reset=mode).run(x)  # fused path
    assert torch.equal(a.spikes, b.spikes)
    torch.testing.assert_close(a.membrane, b.membrane, rtol=1e-6, atol=1e-6)


def test_rlif_against_hand_loop() -> None:
    x = seq(17, steps=30).double()
    r = RecurrentLIF(FEAT, beta=0.8, threshold=0.9, generator=gen(0), recurrent_scale=3.0).double()
    V = r.recurrent.detach().clone()
    assert V.abs().sum() > 0
    out = r.run(x)
    S, U = hand_lif(x, f32(0.8), f32(0.9), "subtract", drive=lambda last: last @ V.t())
    assert torch.equal(out.spikes, S)
    torch.testing.assert_close(out.membrane, U, rtol=1e-12, atol=1e-12)
    # the recurrent input actually changes the dynamics
    S0, _ = hand_lif(x, f32(0.8), f32(0.9), "subtract")
    assert not torch.equal(S, S0)
    out.spikes.sum().backward()
    assert r.recurrent.grad is not None and r.recurrent.grad.abs().sum() > 0


def test_rlif_generator_is_deterministic() -> None:
    a = RecurrentLIF(5, generator=gen(3)).recurrent
    b = RecurrentLIF(5, generator=gen(3)).recurrent
    assert torch.equal(a, b)
    assert a.abs().max() <= 1.0 / math.sqrt(5)


# -- graded spikes, learnable parameters, manifolds -----------------------------------------------------------------
def test_graded_spikes_are_amplitude_times_binary() -> None:
    lif = LIF(FEAT, threshold=0.8, graded=True)
    amp = torch.linspace(-1.0, 3.0, FEAT)
    with torch.no_grad():
        lif.amplitude.copy_(amp)
    x = seq(18)
    out = lif.run(x)
    binary = (out.membrane > 0.8).float()
    assert 0 < binary.sum() < binary.numel()
    assert torch.equal(out.spikes, amp * binary)
    out.spikes.sum().backward()
    torch.testing.assert_close(lif.amplitude.grad, binary.sum(dim=(0, 1)))
    assert manifold_of(lif.amplitude).kind == "euclidean"


def test_learnable_parameters_get_gradients_and_manifolds() -> None:
    lif = LIF(FEAT, beta=0.8, threshold=0.9, learn_beta=True, learn_threshold=True, learn_reset=True,
              reset="zero")
    x = seq(19)
    out = lif.run(x)
    (out.spikes.sum() + out.membrane.square().mean()).backward()
    for p in (lif.beta, lif.threshold, lif.reset_value):
        assert p.shape == (FEAT,)
        assert p.grad is not None and p.grad.abs().sum() > 0
    kinds = dict(named_manifolds(lif))
    assert kinds["beta"].kind == "unit_interval"
    assert kinds["threshold"].kind == "positive"
    assert kinds["reset_value"].kind == "euclidean"
    # fixed parameters are buffers, not parameters
    fixed = LIF(FEAT)
    assert list(fixed.parameters()) == []
    assert {n for n, _ in fixed.named_buffers()} >= {"beta", "threshold"}


def test_synaptic_and_alif_manifolds() -> None:
    s = Synaptic(FEAT, learn_alpha=True, learn_beta=True)
    assert manifold_of(s.alpha).kind == "unit_interval" and s.alpha.shape == (FEAT,)
    a = ALIF(FEAT, learn_adaptation=True)
    assert manifold_of(a.rho).kind == "unit_interval"
    assert manifold_of(a.gamma).kind == "euclidean"
    li = LeakyIntegrator(FEAT, learn_beta=True)
    assert manifold_of(li.beta).kind == "unit_interval"


def test_project_parameters_clamps_into_domain() -> None:
    lif = LIF(FEAT, learn_beta=True, learn_threshold=True)
    with torch.no_grad():
        lif.beta.copy_(torch.tensor([1.5, 0.5, -0.2, 1.0, 0.0, 0.99]))
        lif.threshold.copy_(torch.tensor([-2.0, 0.0, 1.0, 3.0, 1e-9, 0.5]))
    project_parameters_(lif)
    assert ((lif.beta > 0) & (lif.beta < 1)).all()
    torch.testing.assert_close(lif.beta.detach(), torch.tensor([1 - EPS, 0.5, EPS, 1 - EPS, EPS, 0.99]))
    assert (lif.threshold > 0).all()
    torch.testing.assert_close(lif.threshold.detach(), torch.tensor([EPS, EPS, 1.0, 3.0, EPS, 0.5]))


def test_out_of_domain_learnable_beta_is_clamped_in_forward() -> None:
    # before projection, a beta pushed above 1 is used as 1 - EPS (never an exploding membrane)
    lif = LIF(1, learn_beta=True, reset="none")
    with torch.no_grad():
        lif.beta.fill_(3.0)
    out = lif.run(torch.ones(50, 1, 1, dtype=F64))
    b = f32(1 - EPS)
    want = [(1 - b ** (t + 1)) / (1 - b) for t in range(50)]
    torch.testing.assert_close(out.membrane.detach().flatten(), torch.tensor(want, dtype=F64), rtol=1e-6, atol=1e-6)


# -- bad input ---------------------------------------------------------------------------------------------------
def test_run_rejects_single_step_input() -> None:
    with pytest.raises(ValueError, match=r"\[T, B"):
        LIF(FEAT).run(torch.zeros(4, FEAT))
    with pytest.raises(ValueError, match=r"\[T, B"):
        LIF().run(torch.zeros(4, FEAT))
    for layer in (Synaptic(FEAT), ALIF(FEAT), RecurrentLIF(FEAT)):
        with pytest.raises(ValueError, match=r"\[T, B"):
            layer.run(torch.zeros(4, FEAT))


def test_wrong_feature_size() -> None:
    for layer in (LIF(FEAT), IF(FEAT), Synaptic(FEAT), ALIF(FEAT), RecurrentLIF(FEAT), LeakyIntegrator(FEAT)):
        with pytest.raises(ValueError, match=str(FEAT)):
            layer(torch.zeros(3, 2, FEAT + 1))
    with pytest.raises(ValueError):
        LIF(FEAT).step(torch.zeros(2, FEAT + 1))
    with pytest.raises(ValueError):
        LIF(FEAT).run(torch.zeros(3, 2, FEAT), LIFState(torch.zeros(5, FEAT)))  # state batch mismatch


def test_integer_input_rejected() -> None:
    with pytest.raises(ValueError, match="floating"):
        LIF(FEAT).run(torch.zeros(3, 2, FEAT, dtype=torch.long))


@pytest.mark.parametrize("beta", [0.0, 1.0, 1.5, -0.1, math.nan])
def test_bad_beta(beta: float) -> None:
    with pytest.raises(ValueError, match="beta"):
        LIF(FEAT, beta=beta)
    with pytest.raises(ValueError, match="beta"):
        LeakyIntegrator(FEAT, beta=beta)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
def test_bad_alpha_and_rho(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        Synaptic(FEAT, alpha=alpha)
    with pytest.raises(ValueError, match="rho"):
        ALIF(FEAT, rho=alpha)


@pytest.mark.parametrize("thr", [0.0, -1.0, math.inf])
def test_bad_threshold(thr: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        LIF(FEAT, threshold=thr)
    with pytest.raises(ValueError, match="threshold"):
        IF(FEAT, threshold=thr)


def test_other_bad_arguments() -> None:
    with pytest.raises(ValueError, match="subtract"):
        LIF(FEAT, reset="hard")
    with pytest.raises(ValueError, match="atan"):
        LIF(FEAT, surrogate="nope")
    with pytest.raises(ValueError, match="slope"):
        LIF(FEAT, slope=0.0)
    with pytest.raises(ValueError, match="beta"):
        IF(FEAT, beta=0.5)
    with pytest.raises(ValueError, match="beta"):
        IF(FEAT, learn_beta=True)
    with pytest.raises(ValueError, match="refractory"):
        LIF(FEAT, refractory=-1)
    with pytest.raises(ValueError, match="refractory"):
        LIF(FEAT, refractory=1.5)  # type: ignore[arg-type]
    for cls in (Synaptic, ALIF, RecurrentLIF):
        with pytest.raises(ValueError, match="refractory"):
            cls(FEAT, refractory=2)
    with pytest.raises(ValueError, match="gamma"):
        ALIF(FEAT, gamma=-0.1)
    with pytest.raises(ValueError):
        LIF(0)
    with pytest.raises(ValueError):
        RecurrentLIF((2, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="features"):
        LIF().init_state(3)
    with pytest.raises(ValueError, match="lif"):
        make_neuron("hodgkin_huxley", FEAT)


def test_make_neuron_builds_each_kind() -> None:
    for kind, cls in [("if", IF), ("lif", LIF), ("synaptic", Synaptic), ("alif", ALIF), ("rlif", RecurrentLIF)]:
        layer = make_neuron(kind, FEAT)
        assert type(layer) is cls
        assert layer.run(seq(20)).spikes.shape == (24, 4, FEAT)


def test_callable_surrogate_in_layer() -> None:
    x = seq(21).requires_grad_(True)
    lif = LIF(FEAT, surrogate=lambda z: torch.full_like(z, 0.5))
    lif.run(x).spikes.sum().backward()
    # with a constant derivative 0.5 and a detached reset, dL/dx[t] = 0.5 * sum_{k>=t} beta^(k-t)
    steps = x.shape[0]
    b = f32(0.9)
    want = torch.tensor([0.5 * sum(b**j for j in range(steps - t)) for t in range(steps)])
    torch.testing.assert_close(x.grad[:, 0, 0], want, rtol=1e-5, atol=1e-6)


# -- no shared state ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [LIF, Synaptic, ALIF, RecurrentLIF])
def test_instances_never_share_state(cls) -> None:
    kw = {"generator": gen(0)} if cls is RecurrentLIF else {}
    a = cls(FEAT, **kw)
    b = cls(FEAT, **kw)
    xa, xb = seq(22) * 3, seq(23)
    with torch.no_grad():
        ref_b = b.run(xb)
        a.run(xa)
        c = cls(FEAT, **kw)  # creating another instance changes nothing either
        c.run(xa)
        again = b.run(xb)
    assert torch.equal(ref_b.spikes, again.spikes)
    assert torch.equal(ref_b.membrane, again.membrane)
    # interleaved stepping of two layers with their own states
    with torch.no_grad():
        sa = sb = None
        for t in range(xb.shape[0]):
            _, sa = a.step(xa[t], sa)
            spk_b, sb = b.step(xb[t], sb)
            assert torch.equal(spk_b, ref_b.spikes[t])
