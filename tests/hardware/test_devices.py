"""Device profiles, quantization, device physics and probe-based calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spikefed.hardware.calibration import Calibration, calibrate
from spikefed.hardware.devices import (PRESETS, Device, DeviceProfile, assign_fleet, full_program, get_profile,
                                       lognormal_factors, quantize)
from spikefed.snn.models import SpikingMLP


def mlp(learn: bool = False, readout: str = "spikes", neuron: str = "lif") -> SpikingMLP:
    kw = {} if neuron == "if" else {"beta": 0.9, "learn_beta": learn}
    return SpikingMLP([5, 7, 3], neuron=neuron, readout=readout, generator=torch.Generator().manual_seed(1),
                      learn_threshold=learn, **kw)


# -- profiles ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,needle", [
    ("threshold_cv", -0.1, "threshold_cv"), ("gain_cv", float("nan"), "gain_cv"), ("weight_bits", 0, "weight_bits"),
    ("weight_bits", 33, "weight_bits"), ("weight_bits", 4.5, "weight_bits"), ("rounding", "up", "rounding"),
    ("drop_steps", 1.0, "drop_steps"), ("jitter", -1, "jitter"), ("dt", 0.0, "dt"), ("delay_buffer", 0, "delay_buffer"),
])
def test_bad_profile_names_the_field(field: str, value: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        DeviceProfile("x", **{field: value})


def test_presets_and_overrides() -> None:
    assert PRESETS["ideal"].ideal and not PRESETS["analog20"].ideal
    p = get_profile("analog20", weight_bits=4)
    assert p.weight_bits == 4 and p.gain_cv == 0.2
    with pytest.raises(ValueError, match="unknown device profile 'nope'"):
        get_profile("nope")
    with pytest.raises(ValueError, match="unknown device profile field"):
        get_profile("ideal", colour=1)


def test_lognormal_factors_mean_and_cv() -> None:
    f = lognormal_factors(200_000, 0.2, np.random.default_rng(0)).double()
    assert abs(float(f.mean()) - 1) < 0.003
    assert abs(float(f.std() / f.mean()) - 0.2) < 0.003
    assert bool((f > 0).all())


def test_assign_fleet_counts_and_seed() -> None:
    a, b = get_profile("digital8"), get_profile("digital4")
    fleet = assign_fleet(7, [(a, 0.5), (b, 0.5)], np.random.default_rng(3))
    assert sorted(p.name for p in fleet).count("digital8") in (3, 4) and len(fleet) == 7
    assert fleet == assign_fleet(7, [(a, 0.5), (b, 0.5)], np.random.default_rng(3))
    with pytest.raises(ValueError, match="sum to 1"):
        assign_fleet(4, [(a, 0.5), (b, 0.2)], np.random.default_rng(0))


# -- quantization -----------------------------------------------------------------------------------------

def test_quantize_matches_plain_formula() -> None:
    w = torch.tensor([0.71, -0.2, 0.05, -1.4, 0.33])
    q = quantize(w, 4)
    s = 1.4 / 7
    expected = [round(v / s) * s for v in w.tolist()]  # python round: ties never occur here
    assert torch.allclose(q, torch.tensor(expected), atol=1e-7)
    assert len(set(q.tolist())) <= 15
    assert torch.equal(quantize(w, None), w)
    one = quantize(w, 1)
    m = float(w.abs().mean())
    assert torch.allclose(one, torch.tensor([m, -m, m, -m, m]))


def test_quantize_straight_through_gradient() -> None:
    w = torch.randn(6, requires_grad=True)
    quantize(w, 3).mul(torch.arange(6.0)).sum().backward()
    assert torch.equal(w.grad, torch.arange(6.0))


def test_stochastic_rounding_is_unbiased() -> None:
    w = torch.tensor([0.1234, -0.77, 1.0, 0.5])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([quantize(w, 3, "stochastic", gen) for _ in range(20000)])
    s = 1.0 / 3
    assert torch.allclose(draws.mean(0), w, atol=4 * s / math.sqrt(20000))
    levels = torch.round(draws / s)
    assert torch.allclose(levels * s, draws, atol=1e-6)  # only grid values


# -- device physics ---------------------------------------------------------------------------------------

def test_effective_values_follow_the_device_equations() -> None:
    model = mlp(learn=True)
    dev = Device(DeviceProfile("a", threshold_cv=0.2, leak_cv=0.2, gain_cv=0.2, weight_bits=8), model, seed=5)
    prog = full_program(model, {n: p.detach() for n, p in model.named_parameters()})
    eff = dev.effective(prog)
    w = prog["linears.0.weight"]
    s = float(w.abs().max()) / 127
    wq = torch.round(w / s) * s
    assert torch.allclose(eff["linears.0.weight"], dev.gains[0][:, None] * wq, atol=1e-6)
    assert torch.allclose(eff["neurons.1.threshold"], dev.threshold_factors[1] * prog["neurons.1.threshold"])
    assert torch.allclose(eff["neurons.0.beta"], prog["neurons.0.beta"] ** (1 / dev.tau_factors[0]))
    assert not torch.allclose(dev.gains[0], torch.ones(7))  # mismatch was drawn
    same = Device(dev.profile, model, seed=5)
    assert torch.equal(same.gains[1], dev.gains[1])  # seeded


def test_dropped_steps_and_jitter() -> None:
    model = mlp()
    x = torch.arange(1.0, 11.0).view(10, 1, 1).expand(10, 4000, 1)
    drop = Device(DeviceProfile("d", drop_steps=0.25), model, 0)
    out = drop.perturb_input(x, torch.Generator().manual_seed(0))
    assert abs(float((out == 0).double().mean()) - 0.25) < 0.01
    assert bool(((out == 0) | (out == x)).all())
    jit = Device(DeviceProfile("j", jitter=2), model, 0)
    out = jit.perturb_input(x, torch.Generator().manual_seed(0))
    # every sample is the ramp shifted by one integer in [-2, 2], zero-filled
    for b in range(50):
        col = out[:, b, 0]
        shifts = [s for s in range(-2, 3)
                  if torch.equal(col, torch.tensor([float(t - s + 1) if 0 <= t - s < 10 else 0.0 for t in range(10)]))]
        assert len(shifts) == 1


def test_delay_buffer_clamps_delays() -> None:
    dev = Device(DeviceProfile("d", delay_buffer=8), mlp(), 0)
    prog = full_program(dev_model := mlp(), {n: p.detach() for n, p in dev_model.named_parameters()})
    prog["delays.0.delay"] = torch.tensor([0.0, 3.5, 7.0, 12.0])
    assert torch.equal(dev.effective(prog)["delays.0.delay"], torch.tensor([0.0, 3.5, 7.0, 7.0]))


# -- calibration ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("neuron", ["lif", "if"])
def test_calibration_recovers_the_hidden_factors_from_probes(neuron: str) -> None:
    model = mlp(neuron=neuron)
    dev = Device(DeviceProfile("a", threshold_cv=0.2, leak_cv=0.2, gain_cv=0.2, readout_noise=0.01), model, 11)
    cal = calibrate(dev, torch.Generator().manual_seed(0), repeats=16)
    for i in range(2):
        assert torch.allclose(cal.gains[i], dev.gains[i], rtol=0.01)
        assert torch.allclose(cal.threshold_factors[i], dev.threshold_factors[i], rtol=0.01)
        if neuron == "lif":
            assert torch.allclose(cal.tau_factors[i], dev.tau_factors[i], rtol=0.03)
    noisy = Device(DeviceProfile("n", gain_cv=0.2, readout_noise=0.2), model, 11)
    rough = calibrate(noisy, torch.Generator().manual_seed(0), repeats=1)
    assert not torch.allclose(rough.gains[0], noisy.gains[0], rtol=0.01)  # the estimate does come from noisy probes


def test_calibrated_device_behaves_like_the_latent_network() -> None:
    """Programming to_device(latent) makes the effective values equal the latent ones (exact factors)."""
    model = mlp(learn=True)
    dev = Device(DeviceProfile("a", threshold_cv=0.2, leak_cv=0.2, gain_cv=0.2), model, 2)
    exact = Calibration(dev.gains, dev.threshold_factors, dev.tau_factors, 1.0, dev.layers)
    latent = full_program(model, {n: p.detach() for n, p in model.named_parameters()})
    eff = dev.effective(exact.to_device(latent))
    for n, v in latent.items():
        assert torch.allclose(eff[n], v, rtol=1e-5, atol=1e-6), n
    back = exact.to_latent(exact.to_device(latent))
    for n, v in latent.items():
        assert torch.allclose(back[n], v, rtol=1e-5, atol=1e-7), n


def test_coarse_dt_map_matches_zero_order_hold() -> None:
    """dt = 2: the device decay is beta^2 and a constant input integrates (1 + beta) nominal steps' worth."""
    model = mlp()
    cal = Calibration.identity(model)
    cal.dt = 2.0
    latent = full_program(model, {n: p.detach() for n, p in model.named_parameters()})
    prog = cal.to_device(latent)
    assert torch.allclose(prog["neurons.0.beta"], torch.full((7,), 0.81))
    assert torch.allclose(prog["linears.0.weight"], latent["linears.0.weight"] * 1.9)
    # a nominal LIF without reset driven by a constant current, sampled every 2 steps, equals the device's
    u_nom, u_dev = 0.0, 0.0
    for t in range(1, 21):
        u_nom = 0.9 * u_nom + 0.3
        if t % 2 == 0:
            u_dev = 0.81 * u_dev + 0.3 * 1.9
            assert math.isclose(u_nom, u_dev, rel_tol=1e-9)
    assert torch.allclose(cal.to_latent(prog)["linears.0.weight"], latent["linears.0.weight"], rtol=1e-6)
