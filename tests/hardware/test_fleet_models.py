"""Device fleets for every model and neuron: conv, recurrent, CuBa, ALIF, delays; per-device dt maps, rebinned
event frames, calibration of every factor, and local training on the sequential device engine."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn
from torch.func import functional_call

from spikefed.federated.cohort import ClientData, train_sequential
from spikefed.federated.fleet_training import train_on_devices
from spikefed.federated.types import FitInstructions, params_of
from spikefed.hardware.calibration import Calibration, calibrate
from spikefed.hardware.devices import Device, DeviceProfile, full_program, get_profile, rebin_time, supports_devices
from spikefed.hardware.fleet import Fleet
from spikefed.snn.delay import Delay
from spikefed.snn.models import ModelOutput, RecurrentRegressor, SpikingConvNet, SpikingMLP
from spikefed.snn.neurons import LIF
from spikefed.snn.train import TrainConfig

MISMATCH = DeviceProfile("m", threshold_cv=0.2, leak_cv=0.2, gain_cv=0.2, delay_cv=0.2, readout_noise=0.01)


class DelayNet(nn.Module):
    """Linear -> LIF -> axonal Delay -> Linear -> LIF (a test-only model with learnable delays)."""

    def __init__(self, max_delay: int = 6) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.fc1, self.lif1 = nn.Linear(5, 6), LIF(6, learn_threshold=True)
        self.delay = Delay(6, max_delay=max_delay, init="uniform", generator=gen)
        self.fc2, self.lif2 = nn.Linear(6, 3), LIF(3)
        for lin in (self.fc1, self.fc2):  # from the own generator: not from torch's global one (test order)
            bound = 1 / math.sqrt(lin.in_features)
            nn.init.uniform_(lin.weight, -bound, bound, generator=gen)
            nn.init.uniform_(lin.bias, -bound, bound, generator=gen)

    def forward(self, x: torch.Tensor, state: Any = None) -> ModelOutput:
        s1 = self.lif1.run(self.fc1(x)).spikes
        d, _ = self.delay(s1)
        out = self.lif2.run(self.fc2(d))
        return ModelOutput(out.spikes, out.membrane, [s1, out.spikes], [])


def conv(neuron: str = "lif", **kw: Any) -> SpikingConvNet:
    return SpikingConvNet((2, 6, 6), 3, channels=(3,), neuron=neuron, generator=torch.Generator().manual_seed(0),
                          **kw)


def models() -> dict[str, nn.Module]:
    g = torch.Generator().manual_seed(0)
    return {
        "conv_lif": conv(learn_threshold=True, learn_beta=True),
        "conv_synaptic": conv("synaptic"),
        "conv_alif": conv("alif"),
        "mlp_synaptic": SpikingMLP([5, 7, 3], neuron="synaptic", generator=g, learn_alpha=True),
        "mlp_alif": SpikingMLP([5, 7, 3], neuron="alif", generator=g, learn_adaptation=True),
        "mlp_rlif": SpikingMLP([5, 7, 3], neuron="rlif", generator=g),
        "recurrent_regressor": RecurrentRegressor(5, 7, neuron="ralif", generator=g),
        "delays": DelayNet(),
    }


def exact(dev: Device, dt: float = 1.0) -> Calibration:
    """The map built from the device's hidden truth (what a perfect calibration would find)."""
    return Calibration(dev.gains, dev.threshold_factors, dev.tau_factors, dt, dev.layers, dev.alpha_factors,
                       dev.rho_factors, dict(dev.delay_factors))


# -- units, effective values ------------------------------------------------------------------------------

def test_conv_units_are_per_neuron_of_the_feature_map() -> None:
    m = conv()
    dev = Device(MISMATCH, m, 1)
    assert [(u.kind, u.shape) for u in dev.layers] == [("conv", (3, 6, 6)), ("linear", (3,))]
    assert dev.gains[0].shape == (3, 6, 6) and not torch.allclose(dev.gains[0], dev.gains[0][:, :1, :1])


def test_conv_gain_folded_into_the_threshold_gives_the_spikes_of_the_gained_input() -> None:
    """A conv neuron whose input current is g * I (the physical chip, written out with a hand loop) spikes exactly
    when the simulated device (threshold f thr / g on the ungained input) does."""
    m = conv().double()
    dev = Device(DeviceProfile("g", gain_cv=0.3, threshold_cv=0.2, leak_cv=0.2), m, 4)
    prog = full_program(m, params_of(m))
    eff = dev.effective(prog)
    x = (torch.rand(8, 4, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) < 0.4).double()
    cur = nn.functional.conv2d(x.flatten(0, 1), prog["convs.0.weight"], prog["convs.0.bias"], padding=1)
    cur = cur.view(8, 4, 3, 6, 6) * dev.gains[0].double()
    beta = prog["conv_neurons.0.beta"].double() ** (1 / dev.tau_factors[0].double())
    thr = dev.threshold_factors[0].double() * prog["conv_neurons.0.threshold"].double()
    v, spikes = torch.zeros(4, 3, 6, 6, dtype=torch.float64), []
    last = torch.zeros_like(v)
    for t in range(8):
        v = beta * v + cur[t] - last * thr
        last = (v >= thr).double()
        spikes.append(last)
    ref = torch.stack(spikes)
    lif = m.conv_neurons[0]
    out = functional_call(lif, {"beta": eff["conv_neurons.0.beta"].double(),
                                "threshold": eff["conv_neurons.0.threshold"].double()},
                          (nn.functional.conv2d(x.flatten(0, 1), eff["convs.0.weight"], eff["convs.0.bias"],
                                                padding=1).view(8, 4, 3, 6, 6),))
    assert ref.sum() > 20 and torch.equal(out[0], ref)


def test_effective_values_of_every_neuron_kind_follow_the_equations() -> None:
    prof = DeviceProfile("a", threshold_cv=0.2, leak_cv=0.2, gain_cv=0.2, synapse_cv=0.1, weight_bits=6)
    m = models()["mlp_alif"]
    dev = Device(prof, m, 3)
    prog = full_program(m, params_of(m))
    eff = dev.effective(prog)
    w = prog["linears.0.weight"]
    s = float(w.abs().max()) / 31
    wq = torch.round(w / s) * s
    assert torch.allclose(eff["linears.0.weight"], dev.gains[0][:, None] * wq * dev.synapse_factors["linears.0.weight"],
                          atol=1e-6)
    assert torch.allclose(eff["neurons.0.rho"], prog["neurons.0.rho"] ** (1 / dev.rho_factors[0]))
    assert torch.allclose(eff["neurons.0.gamma"], dev.threshold_factors[0] * prog["neurons.0.gamma"])
    assert not torch.allclose(dev.rho_factors[0], dev.tau_factors[0])  # its own draw
    r = models()["mlp_rlif"]
    dr = Device(prof.replace(synapse_cv=0.0), r, 3)
    pr = full_program(r, params_of(r))
    assert torch.allclose(dr.effective(pr)["neurons.0.recurrent"],
                          dr.gains[0][:, None] * torch.round(pr["neurons.0.recurrent"] / (
                              float(pr["neurons.0.recurrent"].abs().max()) / 31)) * (
                              float(pr["neurons.0.recurrent"].abs().max()) / 31), atol=1e-6)
    sy = models()["mlp_synaptic"]
    ds = Device(prof, sy, 3)
    ps = full_program(sy, params_of(sy))
    assert torch.allclose(ds.effective(ps)["neurons.0.alpha"], ps["neurons.0.alpha"] ** (1 / ds.alpha_factors[0]))


def test_delays_get_their_line_factor_and_clamp_to_the_buffer() -> None:
    m = DelayNet()
    dev = Device(DeviceProfile("d", delay_cv=0.3, delay_buffer=3), m, 2)
    prog = full_program(m, params_of(m))
    eff = dev.effective(prog)["delay.delays"]
    assert torch.allclose(eff, (prog["delay.delays"] * dev.delay_factors["delay.delays"]).clamp(0, 2))
    assert float(eff.max()) <= 2.0


def test_unsupported_model_is_refused_naming_the_parameter() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.lif = nn.Linear(3, 2), LIF(2)
            self.scale = nn.Parameter(torch.ones(2))

    assert "scale" in (supports_devices(Odd()) or "")
    bare = nn.Sequential(nn.Linear(3, 2))
    assert "1 synapse layers and 0 neuron modules" in (supports_devices(bare) or "")
    with pytest.raises(ValueError, match="scale"):
        Device(MISMATCH, Odd(), 0)


# -- maps: exact inverses, and the device programmed by the map behaves like the latent network ------------------

@pytest.mark.parametrize("name", sorted(models()))
@pytest.mark.parametrize("dt", [1.0, 2.0])
def test_to_latent_inverts_to_device_for_every_model(name: str, dt: float) -> None:
    m = models()[name]
    dev = Device(MISMATCH.replace(dt=dt), m, 7)
    cal = exact(dev, dt)
    latent = full_program(m, params_of(m))
    prog = cal.to_device(latent)
    assert any(not torch.allclose(prog[n], latent[n]) for n in latent)
    back = cal.to_latent(prog)
    for n, v in latent.items():
        assert torch.allclose(back[n], v, rtol=1e-5, atol=1e-6), n


@pytest.mark.parametrize("name", sorted(models()))
def test_device_programmed_by_the_exact_map_computes_the_latent_network(name: str) -> None:
    """dt = 1, exact factors, float weights: the device's output equals the latent model's on ideal hardware."""
    m = models()[name].double()
    dev = Device(MISMATCH, m, 5)
    latent = {n: v.double() for n, v in full_program(m, params_of(m)).items()}
    eff = {n: v.double() for n, v in dev.effective(exact(dev).to_device(latent)).items()}
    x = torch.rand(10, 6, *((2, 6, 6) if name.startswith("conv") else (5,)), dtype=torch.float64,
                   generator=torch.Generator().manual_seed(4))
    x = (x < 0.5).double() if name.startswith("conv") else x * 2
    ref = m(x)
    got = functional_call(m, eff, (x,))
    spiking_output = name != "recurrent_regressor"  # its read-out is a membrane
    if not spiking_output:
        assert torch.allclose(got.output, ref.output, atol=1e-6)
    ref_spikes = torch.cat([h.flatten() for h in ref.hidden] + [ref.output.flatten()] * spiking_output)
    got_spikes = torch.cat([h.flatten() for h in got.hidden] + [got.output.flatten()] * spiking_output)
    assert ref_spikes.sum() > 10
    assert float((got_spikes != ref_spikes).double().mean()) < 0.01  # a rare near-threshold flip at most


def test_synaptic_dt_map_matches_the_nominal_steady_state() -> None:
    """CuBa neuron, dt = 2: decays alpha^2, beta^2 and input scale z = (1 - a^2)(1 - b^2) / ((1 - a)(1 - b))
    give a device membrane (no spikes, constant input) that converges to the nominal one (hand loops)."""
    a, b, x = 0.8, 0.9, 0.3
    cal = Calibration.identity(SpikingMLP([1, 1], neuron="synaptic", alpha=a, beta=b))
    cal.dt = 2.0
    latent = full_program(SpikingMLP([1, 1], neuron="synaptic", alpha=a, beta=b), {
        "linears.0.weight": torch.ones(1, 1), "linears.0.bias": torch.zeros(1)})
    prog = cal.to_device(latent)
    assert torch.allclose(prog["neurons.0.alpha"], torch.tensor([a * a])) and \
        torch.allclose(prog["neurons.0.beta"], torch.tensor([b * b]))
    z = float(prog["linears.0.weight"])
    assert math.isclose(z, (1 - a * a) * (1 - b * b) / ((1 - a) * (1 - b)), rel_tol=1e-6)
    i_n = u_n = i_d = u_d = 0.0
    for t in range(1, 401):
        i_n = a * i_n + x
        u_n = b * u_n + i_n
        if t % 2 == 0:
            i_d = a * a * i_d + z * x
            u_d = b * b * u_d + i_d
    assert math.isclose(u_d, u_n, rel_tol=1e-5)
    assert math.isclose(u_n, x / ((1 - a) * (1 - b)), rel_tol=1e-6)


# -- calibration of every factor -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["conv_synaptic", "conv_alif", "mlp_rlif", "delays"])
def test_calibration_recovers_every_factor_from_probes(name: str) -> None:
    m = models()[name]
    dev = Device(MISMATCH.replace(delay_buffer=5), m, 11)
    cal = calibrate(dev, torch.Generator().manual_seed(0), repeats=16)
    for i, u in enumerate(dev.layers):
        assert torch.allclose(cal.gains[i], dev.gains[i], rtol=0.01)
        assert torch.allclose(cal.threshold_factors[i], dev.threshold_factors[i], rtol=0.01)
        if u.beta is not None:
            assert torch.allclose(cal.tau_factors[i], dev.tau_factors[i], rtol=0.03)
        if u.alpha is not None:
            assert cal.alpha_factors is not None
            assert torch.allclose(cal.alpha_factors[i], dev.alpha_factors[i], rtol=0.03)
        if u.rho is not None:
            assert cal.rho_factors is not None
            assert torch.allclose(cal.rho_factors[i], dev.rho_factors[i], rtol=0.03)
    for n, h in dev.delay_factors.items():  # programmed 0.6 * 4 = 2.4 steps; read-out noise 1%
        assert torch.allclose(cal.delay_factors[n], h, rtol=0.02), (cal.delay_factors[n], h)


def test_delay_probe_is_one_spike_arriving_after_the_effective_delay() -> None:
    m = DelayNet(max_delay=8)
    dev = Device(DeviceProfile("d", delay_cv=0.2, readout_noise=0.0), m, 3)
    d_p = torch.full((6,), 3.0)
    trace = dev.probe_delay("delay.delays", d_p, 10, torch.Generator().manual_seed(0))
    d = 3.0 * dev.delay_factors["delay.delays"]
    for f in range(6):
        k, frac = math.floor(float(d[f])), float(d[f]) - math.floor(float(d[f]))
        want = [0.0] * 10
        want[k] += 1 - frac
        want[k + 1] += frac
        assert torch.allclose(trace[:, f], torch.tensor(want), atol=1e-6)


# -- event frames on a device with another dt ------------------------------------------------------------------

def test_rebin_time_against_plain_loops() -> None:
    x = torch.randint(0, 3, (6, 2, 4), generator=torch.Generator().manual_seed(5)).float()
    two = rebin_time(x, 3)
    for j in range(3):
        assert torch.equal(two[j], (x[2 * j] + x[2 * j + 1]) / 2)
    # dt = 1.5: bin 0 covers [0, 1.5) = x0 + x1 / 2, bin 1 covers [1.5, 3) = x1 / 2 + x2, each over 1.5
    frac = rebin_time(x[:3], 2)
    assert torch.allclose(frac[0], (x[0] + 0.5 * x[1]) / 1.5) and torch.allclose(frac[1], (0.5 * x[1] + x[2]) / 1.5)
    assert torch.allclose(rebin_time(x, 3).sum(0) * 2, x.sum(0))  # counts are conserved (times dt)


def test_event_frames_are_rebinned_per_device() -> None:
    m = SpikingMLP([4, 5, 3], generator=torch.Generator().manual_seed(0))
    fleet = Fleet(m, [get_profile("ideal"), get_profile("coarse_dt")], "calibrated", [0, 1], [0, 1])
    frames = torch.randint(0, 2, (7, 6, 4), generator=torch.Generator().manual_seed(6)).float()  # [B, T, F]
    cfg = TrainConfig(num_steps=6, encoder="events")
    x0, c0 = fleet.device_inputs(0, frames, cfg, None)
    x1, c1 = fleet.device_inputs(1, frames, cfg, None)
    assert x0.shape == (6, 7, 4) and c0.num_steps == 6 and torch.equal(x0, frames.transpose(0, 1))
    assert x1.shape == (3, 7, 4) and c1.num_steps == 3
    assert torch.equal(x1[1], (frames[:, 2] + frames[:, 3]) / 2)


# -- training on the sequential device engine ---------------------------------------------------------------

def _clients(shape: tuple[int, ...], n: int = 2) -> list[ClientData]:
    g = torch.Generator().manual_seed(1)
    return [ClientData(k, (torch.rand(12, *shape, generator=g) < 0.5).float(), torch.randint(0, 3, (12,), generator=g))
            for k in range(n)]


@pytest.mark.parametrize("mode", ["naive", "calibrated"])
def test_ideal_devices_train_exactly_like_the_sequential_engine(mode: str) -> None:
    """SCAFFOLD correction + FedProx, ideal devices: the device engine equals train_sequential (no fleet)."""
    m = conv(learn_threshold=True)
    clients = _clients((2, 6, 6))
    cfg = TrainConfig(epochs=1, batch_size=6, num_steps=5, lr=1e-2, optimizer="sgd")
    latent = params_of(m)
    c = {n: 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(2)) for n, v in latent.items()}
    ck = [{n: 0.5 * v for n, v in c.items()}, None]
    fit = FitInstructions(1, prox_mu=0.1, server_control=c)
    fleet = Fleet(m, [get_profile("ideal")] * 2, mode, [0, 1], [0, 1])
    gens = lambda: [torch.Generator().manual_seed(5 + k) for k in range(2)]  # noqa: E731
    ref = train_sequential(m, latent, clients, gens(), cfg, fit, ck)
    got = train_on_devices(fleet, m, latent, clients, gens(), cfg, fit, ck)
    for r, g in zip(ref, got):
        assert not torch.allclose(g.params["convs.0.weight"], latent["convs.0.weight"])
        for n in latent:
            assert torch.allclose(g.params[n], r.params[n], atol=1e-6), n
            assert r.control_delta is not None and g.control_delta is not None
            assert torch.allclose(g.control_delta[n], r.control_delta[n], atol=1e-4), n
        assert g.metrics["loss"] == pytest.approx(r.metrics["loss"], rel=1e-5)


def test_delay_model_trains_its_delays_on_mismatched_devices_with_tbptt() -> None:
    m = DelayNet()
    fleet = Fleet(m, [MISMATCH.replace(weight_bits=4, delay_buffer=4), MISMATCH.replace(dt=2.0)], "calibrated",
                  [0, 1], [0, 1])
    cfg = TrainConfig(epochs=2, batch_size=6, num_steps=8, lr=5e-2, tbptt=4, encoder="rate")
    latent = params_of(m)
    ups = train_on_devices(fleet, m, latent, _clients((5,)), [torch.Generator().manual_seed(k) for k in range(2)],
                           cfg, FitInstructions(1))
    for u in ups:
        assert set(u.params) == set(latent)
        assert not torch.allclose(u.params["delay.delays"], latent["delay.delays"])  # delays learn
        assert all(bool(torch.isfinite(v).all()) for v in u.params.values())
        assert bool((u.params["lif1.threshold"] > 0).all())


def test_eprop_on_a_fleet_is_refused_with_the_reason() -> None:
    m = SpikingMLP([5, 4, 3], generator=torch.Generator().manual_seed(0))
    fleet = Fleet(m, [get_profile("ideal")], "naive", [0], [0])
    with pytest.raises(ValueError, match="eligibility traces"):
        train_on_devices(fleet, m, params_of(m), _clients((5,), 1), [torch.Generator()],
                         TrainConfig(method="eprop", loss="ce_membrane", membrane_reduction="time_mean"),
                         FitInstructions(1))
