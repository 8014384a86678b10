"""Izhikevich, SRM0 and two-compartment neurons against plain loops, direct convolutions and published patterns."""

from __future__ import annotations

import math

import pytest
import torch

from spikefed.snn.dendritic import TwoCompartment
from spikefed.snn.izhikevich import Izhikevich, simulate
from spikefed.snn.models import SpikingMLP
from spikefed.snn.neurons import make_neuron
from spikefed.snn.srm import SRM

# published (a, b, c, d), Izhikevich 2003, Fig. 2, written out here independently of the module
PUBLISHED = {"rs": (0.02, 0.2, -65.0, 8.0), "ib": (0.02, 0.2, -55.0, 4.0), "ch": (0.02, 0.2, -50.0, 2.0),
             "fs": (0.1, 0.2, -65.0, 2.0)}


def euler_izhikevich(a: float, b: float, c: float, d: float, current: float, steps: int, dt: float
                     ) -> tuple[list[float], list[int]]:
    v, u = -65.0, b * -65.0
    trace, spikes = [], []
    for t in range(steps):
        v, u = v + dt * (0.04 * v * v + 5 * v + 140 - u + current), u + dt * a * (b * v - u)
        if v > 30.0:
            v, u = c, u + d
            spikes.append(t)
        trace.append(v)
    return trace, spikes


@pytest.mark.parametrize("preset", list(PUBLISHED))
def test_izhikevich_trajectory_matches_a_plain_euler_loop(preset: str) -> None:
    steps, dt = 1200, 0.25
    trace, spikes = euler_izhikevich(*PUBLISHED[preset], current=10.0, steps=steps, dt=dt)
    layer = Izhikevich(1, preset=preset, dt=dt, substeps=1, input_scale=1.0).double()
    out = layer.run(torch.full((steps, 1, 1), 10.0, dtype=torch.float64))
    assert torch.allclose(out.membrane[:, 0, 0], torch.tensor(trace, dtype=torch.float64), atol=1e-9)
    assert torch.nonzero(out.spikes[:, 0, 0]).flatten().tolist() == spikes


def _isi(preset: str) -> list[float]:
    times, _ = simulate(preset, 10.0, 1000.0)
    return torch.diff(times).tolist()


def test_regular_spiking_adapts() -> None:
    isi = _isi("rs")
    assert isi[0] < 0.7 * isi[-1]  # spike-frequency adaptation: the first interval is the shortest
    assert all(b >= a - 1e-9 for a, b in zip(isi, isi[1:]))  # intervals never shorten
    assert 10 <= len(isi) + 1 <= 40  # tens of Hz


def test_fast_spiking_fires_fast_and_regular() -> None:
    fs, rs = _isi("fs"), _isi("rs")
    assert len(fs) > 4 * len(rs)  # > 100 Hz vs ~ 20 Hz
    steady = torch.tensor(fs[5:])
    assert float(steady.std() / steady.mean()) < 0.05
    assert fs[0] / fs[-1] > 0.5  # little adaptation


def test_chattering_fires_bursts() -> None:
    isi = _isi("ch")
    short = [i for i in isi if i < 10]
    long = [i for i in isi if i > 30]
    assert len(short) + len(long) == len(isi)  # bimodal: nothing between 10 and 30 ms
    bursts = len(long) + 1
    assert bursts >= 10 and len(short) >= 3 * bursts  # >= 4 spikes per burst on average


def test_intrinsically_bursting_bursts_once_then_fires_regularly() -> None:
    isi = _isi("ib")
    assert isi[0] < 10 and isi[1] < 10  # initial burst of three spikes
    tail = torch.tensor(isi[3:])
    assert float(tail.min()) > 20 and float(tail.std() / tail.mean()) < 0.05  # then regular single spikes


def test_izhikevich_gradient_flows_through_the_surrogate() -> None:
    layer = Izhikevich(3, input_scale=10.0)
    x = torch.full((30, 2, 3), 1.5, requires_grad=True)
    layer.run(x).spikes.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def srm_direct(x: torch.Tensor, tau_m: float, tau_s: float, tau_r: float, thr: float) -> tuple[torch.Tensor, ...]:
    """u[t] = sum_k eps[k] x[t-k] + sum_{k>=1} eta[k] s[t-k] by a direct sum over the whole history."""
    steps = x.shape[0]
    raw = [math.exp(-k / tau_m) - math.exp(-k / tau_s) for k in range(2000)]
    peak = max(raw)
    eps = [r / peak for r in raw]
    eta = [0.0] + [-thr * math.exp(-k / tau_r) for k in range(1, steps + 1)]
    u = torch.zeros_like(x)
    s = torch.zeros_like(x)
    for t in range(steps):
        acc = sum(eps[k] * x[t - k] for k in range(t + 1))
        acc = acc + sum(eta[k] * s[t - k] for k in range(1, t + 1)) if t else acc
        u[t] = acc
        s[t] = (u[t] > thr).to(x.dtype)
    return s, u


def test_srm_matches_a_direct_convolution() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 3, 5, generator=g, dtype=torch.float64) * 1.5
    layer = SRM(5, tau_m=8.0, tau_s=2.0, tau_r=4.0, threshold=1.0).double()
    out = layer.run(x)
    s, u = srm_direct(x, 8.0, 2.0, 4.0, 1.0)
    assert torch.allclose(out.membrane, u, atol=1e-9)
    assert torch.equal(out.spikes, s)
    assert float(s.sum()) > 10  # the refractory kernel was exercised


def test_srm_state_continues_the_sequence() -> None:
    x = torch.rand(30, 2, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
    layer = SRM(4).double()
    full = layer.run(x)
    first = layer.run(x[:12])
    second = layer.run(x[12:], first.state)  # type: ignore[arg-type]
    assert torch.allclose(torch.cat([first.membrane, second.membrane]), full.membrane, atol=1e-9)


class _AtanSpike(torch.autograd.Function):
    """Heaviside forward, atan surrogate (a = 2) backward, written out for the reference."""

    @staticmethod
    def forward(ctx, z):  # type: ignore[override]
        ctx.save_for_backward(z)
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return g * (2.0 / 2) / (1 + (math.pi / 2 * 2.0 * z) ** 2)


def dendritic_loop(x, beta, beta_d, theta_d, kappa, g_d, thr):
    d = torch.zeros_like(x[0])
    v = torch.zeros_like(x[0])
    s = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        d = beta_d * d + x[t]
        i = kappa * d + g_d * _AtanSpike.apply(d - theta_d)
        v = beta * v + i - s.detach() * thr
        s = _AtanSpike.apply(v - thr)
        out.append(s)
    return torch.stack(out)


def test_dendritic_neuron_matches_a_plain_loop_in_values_and_gradients() -> None:
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(20, 4, 6, generator=g, dtype=torch.float64) * 1.2
    for kappa in (0.0, 0.4):  # kappa = 0: the gradient reaches x only through the dendritic spike's surrogate
        x1 = x0.clone().requires_grad_(True)
        x2 = x0.clone().requires_grad_(True)
        layer = TwoCompartment(6, beta=0.9, beta_d=0.7, theta_d=1.0, kappa=kappa, g_d=1.2).double()
        s1 = layer.run(x1).spikes
        s2 = dendritic_loop(x2, 0.9, 0.7, 1.0, kappa, 1.2, 1.0)
        assert torch.equal(s1, s2) and float(s1.detach().sum()) > 0
        w = torch.linspace(0.1, 1.0, s1.numel(), dtype=torch.float64).reshape(s1.shape)
        (s1 * w).sum().backward()
        (s2 * w).sum().backward()
        assert torch.allclose(x1.grad, x2.grad, atol=1e-9)  # type: ignore[arg-type]
        assert float(x1.grad.abs().sum()) > 0  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["izhikevich", "srm", "dendritic"])
def test_new_neurons_plug_into_make_neuron_and_the_mlp(kind: str) -> None:
    assert make_neuron(kind, 4).features == (4,)
    model = SpikingMLP([5, 8, 3], neuron=kind, beta=0.9, threshold=1.0)
    out = model(torch.rand(6, 2, 5) * 2)
    assert out.output.shape == (6, 2, 3) and len(out.hidden) == 2


def test_bad_neuron_options_are_refused() -> None:
    with pytest.raises(ValueError, match="preset"):
        Izhikevich(2, preset="xx")
    with pytest.raises(ValueError, match="tau_m > tau_s"):
        SRM(2, tau_m=1.0, tau_s=2.0)
    with pytest.raises(ValueError, match="beta_d"):
        TwoCompartment(2, beta_d=1.5)
