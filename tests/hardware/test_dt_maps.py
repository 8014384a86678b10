"""Per-device dt: the calibration's input scale for data vs spikes, and count targets in nominal time.

References: hand loops of a nominal neuron and of a device neuron with the coarser step, and the nominal network
itself (the same model at dt = 1)."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from spikefed.hardware.calibration import Calibration
from spikefed.hardware.devices import full_program, get_profile
from spikefed.hardware.fleet import Fleet
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig, task_loss

BETA = 0.9


def mlp(neuron: str = "lif", sizes: tuple[int, ...] = (5, 7, 3)) -> SpikingMLP:
    kw = {} if neuron == "if" else {"beta": BETA}
    return SpikingMLP(list(sizes), neuron=neuron, generator=torch.Generator().manual_seed(1), **kw)


@pytest.mark.parametrize("neuron", ["lif", "if", "rlif"])
def test_data_synapses_scale_by_z_and_spike_synapses_by_z_over_dt(neuron: str) -> None:
    """dt = 2 on an ideal device: the first layer (data) gets z = 1 + beta, every later layer and every recurrent
    matrix (spikes) z / 2, biases z (a constant input); IF: z = dt, so spikes pass unscaled."""
    m = mlp(neuron)
    cal = Calibration.identity(m)
    cal.dt = 2.0
    latent = full_program(m, {n: p.detach() for n, p in m.named_parameters()})
    prog = cal.to_device(latent)
    z = 2.0 if neuron == "if" else 1 + BETA
    for layer, k in ((0, z), (1, z / 2)):
        assert torch.allclose(prog[f"linears.{layer}.weight"], latent[f"linears.{layer}.weight"] * k), layer
        assert torch.allclose(prog[f"linears.{layer}.bias"], latent[f"linears.{layer}.bias"] * z), layer
    if neuron == "rlif":
        for layer in (0, 1):
            name = f"neurons.{layer}.recurrent"
            assert torch.allclose(prog[name], latent[name] * z / 2), name
    back = cal.to_latent(prog)
    for n, v in latent.items():
        assert torch.allclose(back[n], v, rtol=1e-6, atol=1e-7), n


def test_spike_train_drives_the_device_membrane_like_the_nominal_one() -> None:
    """A spike every 4 nominal steps into a leaky membrane (spiking off). The dt = 2 device receives one spike per
    device step that holds one, through the mapped weight; its time-mean membrane equals the nominal one (hand
    loops, 4000 nominal steps); with the data scale z it would be twice as large."""
    m = mlp(sizes=(3, 1, 1))
    cal = Calibration.identity(m)
    cal.dt = 2.0
    w = 0.7
    latent = full_program(m, {"linears.0.weight": torch.ones(1, 3), "linears.0.bias": torch.zeros(1),
                              "linears.1.weight": torch.full((1, 1), w), "linears.1.bias": torch.zeros(1)})
    prog = cal.to_device(latent)
    w_dev, beta_dev = float(prog["linears.1.weight"]), float(prog["neurons.1.beta"])
    spikes = [1.0 if t % 4 == 1 else 0.0 for t in range(4000)]
    u, nominal = 0.0, 0.0
    for s in spikes:
        u = BETA * u + w * s
        nominal += u / len(spikes)
    u, device = 0.0, 0.0
    for j in range(len(spikes) // 2):
        u = beta_dev * u + w_dev * (spikes[2 * j] + spikes[2 * j + 1])
        device += u / (len(spikes) // 2)
    assert nominal == pytest.approx(w * 0.25 / (1 - BETA), rel=5e-3)
    assert device == pytest.approx(nominal, rel=5e-3)


def test_two_layer_network_on_a_coarse_device_counts_like_the_nominal_network() -> None:
    """A calibrated ideal dt = 2 device running a two-layer IF network on constant inputs: over the same time (20
    device steps, 40 nominal) its hidden and output spike counts are the nominal network's (the same model at
    dt = 1, T = 40), within 3%; with the data scale on the hidden spikes the output would count twice as many."""
    m = SpikingMLP([6, 40, 4], neuron="if", generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        m.linears[0].weight.mul_(0.2)
        m.linears[1].weight.abs_().mul_(0.2)
    fleet = Fleet(m, [get_profile("coarse_dt")], "calibrated", [0], [0])
    x = torch.rand(64, 6, generator=torch.Generator().manual_seed(4))
    cfg = TrainConfig(num_steps=40, encoder="direct")
    latent = {n: p.detach() for n, p in m.named_parameters()}
    with torch.no_grad():
        ref = m(x.unsqueeze(0).expand(40, *x.shape))
        xs, dcfg = fleet.device_inputs(0, x, cfg, None)
        got = functional_call(m, fleet.devices[0].effective(fleet.program(0, latent)), (xs,))
    assert dcfg.num_steps == 20 and 0.05 < float(ref.hidden[0].mean()) < 0.5
    for nominal, device in ((ref.hidden[0].sum(0), got.hidden[0].sum(0)), (ref.output.sum(0), got.output.sum(0))):
        assert float(nominal.sum()) > 200
        assert float(device.sum()) == pytest.approx(float(nominal.sum()), rel=0.03)


@pytest.mark.parametrize("mode", ["calibrated", "naive"])
def test_count_targets_on_a_coarse_device_are_in_device_steps(mode: str) -> None:
    """mse_count, T = 6, a dt = 2 device (3 steps) trains towards rate * 3 counts (0.8 -> 2.4, 0.2 -> 0.6), a
    dt = 1 device keeps the configuration."""
    m = mlp()
    fleet = Fleet(m, [get_profile("ideal"), get_profile("coarse_dt")], mode, [0, 1], [0, 1])
    cfg = TrainConfig(num_steps=6, loss="mse_count", correct_rate=0.8, incorrect_rate=0.2)
    assert fleet.device_config(0, cfg) == cfg
    dcfg = fleet.device_config(1, cfg)
    assert dcfg.num_steps == 3
    spikes = (torch.rand(3, 5, 3, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    y = torch.tensor([0, 1, 2, 1, 0])
    counts = spikes.sum(0)
    want = sum(((counts[b, c] - (2.4 if c == int(y[b]) else 0.6)) ** 2).item() for b in range(5) for c in range(3)) / 15
    assert float(task_loss(spikes, y, dcfg)) == pytest.approx(want, rel=1e-6)
