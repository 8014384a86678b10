"""Training a coarse-step chip's digital twin at the nominal step (``devices.training_step=nominal``).

References: the nominal network itself (the model's own forward on the latent values, ``T`` steps), the
sequential engine without a fleet (plain ``torch.optim`` training of the latent model), and the fleet that trains
through its chips (same seeds) for the deployed accuracy."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from spikefed.experiment.config import ConfigError, RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.cohort import ClientData, train_clients
from spikefed.federated.fleet_training import train_on_fleet
from spikefed.federated.types import FitInstructions, params_of
from spikefed.hardware.calibration import digital_twin
from spikefed.hardware.devices import DeviceProfile, full_program
from spikefed.hardware.fleet import Fleet
from spikefed.snn.models import SpikingMLP, as_model_output
from spikefed.snn.train import TrainConfig

COARSE = DeviceProfile("coarse", threshold_cv=0.2, leak_cv=0.2, gain_cv=0.2, dt=2.0, readout_noise=0.0)


def _model() -> SpikingMLP:
    model = SpikingMLP([6, 24, 4], beta=0.9, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for lin in model.linears:
            lin.weight.mul_(5.0)  # every layer spikes
    return model


def _fleet(model: SpikingMLP, profiles: list[DeviceProfile], step: str = "nominal") -> Fleet:
    n = len(profiles)
    return Fleet(model, profiles, "calibrated", list(range(10, 10 + n)), list(range(20, 20 + n)),
                 training_step=step)


def test_twin_at_the_nominal_step_runs_the_latent_network() -> None:
    """Noise-free probes: the twin of a mismatched dt = 2 chip, programmed through its dt = 1 map, spikes like
    the nominal network (the model's own forward on the latent values, T = 10 steps); the same program
    written raw (no map) does not."""
    model = _model()
    fleet = _fleet(model, [COARSE])
    view = fleet.for_training()
    assert view.num_steps(0, 10) == 10 and fleet.num_steps(0, 10) == 5  # the chip itself keeps dt = 2
    latent = params_of(model)
    x = torch.rand(10, 64, 6) * 2.0
    reference = as_model_output(functional_call(model, full_program(model, latent), (x,)), model).output
    twin = view.forward(0, view.program(0, latent), x, None)
    assert reference.sum() > 50  # the network does spike
    assert (twin != reference).float().mean() < 0.005
    raw = view.forward(0, full_program(model, latent), x, None)
    assert (raw != reference).float().mean() > 0.02  # the twin carries the chip's (estimated) mismatch


def test_twin_is_built_from_the_calibration_not_the_hidden_factors() -> None:
    """With read-out noise the estimates differ from the chip's factors; the twin holds the estimates, no
    per-synapse mismatch, the chip's bits and buffer, and the nominal step."""
    model = _model()
    profile = COARSE.replace(readout_noise=0.05, weight_bits=4, synapse_cv=0.1, delay_buffer=3)
    fleet = _fleet(model, [profile])
    dev, cal = fleet.devices[0], fleet.calibrations[0]
    twin = digital_twin(dev, cal)
    assert twin.profile.dt == 1.0 and twin.profile.weight_bits == 4 and twin.profile.delay_buffer == 3
    assert dev.profile.dt == 2.0  # the chip is untouched
    for i in range(len(dev.layers)):
        assert torch.equal(twin.gains[i], cal.gains[i]) and not torch.equal(twin.gains[i], dev.gains[i])
        assert torch.equal(twin.threshold_factors[i], cal.threshold_factors[i])
        assert torch.equal(twin.tau_factors[i], cal.tau_factors[i])
    assert twin.synapse_factors == {} and dev.synapse_factors
    with pytest.raises(ValueError, match="dt > 0"):
        digital_twin(dev, cal, 0.0)


@pytest.mark.parametrize("engine", ["sequential", "cohort"])
def test_twin_training_of_an_ideal_coarse_chip_is_plain_nominal_training(engine: str) -> None:
    """A dt = 2 chip without mismatch and float weights: its client, training the twin at the nominal step,
    uploads what the same engine without a fleet trains from the same latent model (T = 8 nominal
    steps, same data and generator); training through the chip (4 steps) uploads something else."""
    model = _model()
    ideal_coarse = DeviceProfile("ideal_coarse", dt=2.0, readout_noise=0.0)
    latent = params_of(model)
    g = torch.Generator().manual_seed(5)
    clients = [ClientData(k, torch.rand(24, 6, generator=g), torch.randint(0, 4, (24,), generator=g))
               for k in range(2)]
    cfg = TrainConfig(epochs=1, batch_size=8, num_steps=8, lr=5e-2)

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(40 + k) for k in range(2)]

    plain = train_clients(engine, model, latent, clients, gens(), cfg, FitInstructions(1))
    twin = train_on_fleet(engine, _fleet(model, [ideal_coarse] * 2), model, latent, clients, gens(), cfg,
                          FitInstructions(1), None, None)
    chip = train_on_fleet(engine, _fleet(model, [ideal_coarse] * 2, "device"), model, latent, clients, gens(),
                          cfg, FitInstructions(1), None, None)
    for p, t, c in zip(plain, twin, chip):
        assert t.steps == p.steps == 3
        moved = max(float((p.params[n] - latent[n]).abs().max()) for n in latent)
        assert moved > 1e-3
        for n in latent:
            assert torch.allclose(t.params[n], p.params[n], atol=1e-5), n
        assert max(float((c.params[n] - p.params[n]).abs().max()) for n in latent) > 1e-3


def test_deployment_is_the_chips_own_step() -> None:
    """The training step changes only training: the deployed accuracy of a latent model is the same with both
    settings (same seeds), per device."""
    from spikefed.data import load_digits_split

    d = load_digits_split(seed=0)
    model = SpikingMLP([64, 32, 10], beta=0.9, generator=torch.Generator().manual_seed(0))
    profiles = [COARSE, COARSE.replace(name="fine", dt=1.0)]
    cfg = TrainConfig(num_steps=8)
    evals = [_fleet(model, profiles, step).evaluate(params_of(model), d.x_test, d.y_test, cfg,
                                                    torch.Generator().manual_seed(0))
             for step in ("device", "nominal")]
    assert evals[0].by_device == evals[1].by_device


def test_bad_training_step_is_one_clear_error() -> None:
    model = _model()
    with pytest.raises(ValueError, match="unknown training step 'twin'"):
        _fleet(model, [COARSE], "twin")
    with pytest.raises(ValueError, match="calibration; naive aggregation has no calibration"):
        Fleet(model, [COARSE], "naive", [1], [2], training_step="nominal")
    base = ["partition.num_clients=4", "partition.min_size=5", "model.hidden=[16]",
            "devices.fleet=[{profile: coarse_dt}]"]
    with pytest.raises(ConfigError, match="training_step"):
        build_settings(RunSettings, None, base + ["devices.training_step=twin"])
    spec = build_spec(build_settings(RunSettings, None, base + ["devices.training_step=nominal"]))
    assert spec.fleet.training_step == "nominal" and spec.fleet.describe()["training_step"] == "nominal"


def test_mixed_step_adds_the_chips_loss_to_the_twins() -> None:
    """``training_step=mixed`` on a mismatch-free dt = 2 chip (float weights, noise-free probes): one SGD step on
    one batch equals a hand step on the latent values with the gradient of the nominal network's loss (T = 8)
    plus the loss of the same network through the exact dt = 2 map (T = 4 device steps)."""
    from spikefed.hardware.calibration import Calibration
    from spikefed.snn.train import encode_inputs, task_loss

    model = _model()
    chip = DeviceProfile("ideal_coarse", dt=2.0, readout_noise=0.0)
    latent = params_of(model)
    g = torch.Generator().manual_seed(7)
    x, y = torch.rand(24, 6, generator=g), torch.randint(0, 4, (24,), generator=g)
    cfg = TrainConfig(epochs=1, batch_size=24, num_steps=8, lr=0.05, optimizer="sgd", momentum=0.0)
    up = train_on_fleet("sequential", _fleet(model, [chip], "mixed"), model, latent, [ClientData(0, x, y)],
                        [torch.Generator().manual_seed(1)], cfg, FitInstructions(1), None, None)[0]
    exact = Calibration.identity(model)
    exact.dt = 2.0
    leaves = {n: v.clone().requires_grad_(True) for n, v in latent.items()}
    full = full_program(model, leaves)
    nominal = as_model_output(functional_call(model, full, (encode_inputs(x, cfg, None),)), model).output
    cfg4 = TrainConfig(num_steps=4)
    coarse = as_model_output(functional_call(model, exact.to_device(full), (encode_inputs(x, cfg4, None),)),
                             model).output
    loss = task_loss(nominal, y, cfg) + task_loss(coarse, y, cfg4)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    for (n, v), gr in zip(latent.items(), grads):
        assert torch.allclose(up.params[n], v - cfg.lr * gr, atol=1e-5), n
    twin_only = train_on_fleet("sequential", _fleet(model, [chip], "nominal"), model, latent, [ClientData(0, x, y)],
                               [torch.Generator().manual_seed(1)], cfg, FitInstructions(1), None, None)[0]
    assert max(float((twin_only.params[n] - up.params[n]).abs().max()) for n in latent) > 1e-4
