"""Training for every time step of the fleet (``devices.training_step=resolutions``).

References: the nominal network (the model's own forward on the latent values) and the same network with the
exact dt map written by hand (decays ``beta^dt``, input scale, event frames rebinned by the mean of each pair of
nominal bins, written here as a plain pair mean), differentiated by autograd; the calibration's own estimates
for the twin's factors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.func import functional_call

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.cohort import ClientData
from spikefed.federated.fleet_training import train_on_fleet
from spikefed.federated.types import FitInstructions, params_of
from spikefed.hardware.calibration import Calibration
from spikefed.hardware.devices import DeviceProfile, full_program
from spikefed.hardware.fleet import Fleet
from spikefed.snn.models import SpikingMLP, as_model_output
from spikefed.snn.train import TrainConfig, task_loss

FINE = DeviceProfile("ideal_fine", readout_noise=0.0)
COARSE = DeviceProfile("ideal_coarse", dt=2.0, readout_noise=0.0)
MISMATCHED = DeviceProfile("fine20", threshold_cv=0.2, leak_cv=0.2, gain_cv=0.2, readout_noise=0.05)


def _model() -> SpikingMLP:
    model = SpikingMLP([6, 24, 4], beta=0.9, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for lin in model.linears:
            lin.weight.mul_(5.0)  # every layer spikes
    return model


def _fleet(model: SpikingMLP, profiles: list[DeviceProfile], step: str) -> Fleet:
    n = len(profiles)
    return Fleet(model, profiles, "calibrated", list(range(10, 10 + n)), list(range(20, 20 + n)),
                 training_step=step)


def _hand_step(model: SpikingMLP, frames: torch.Tensor, y: torch.Tensor, cfg: TrainConfig
               ) -> dict[str, torch.Tensor]:
    """One SGD step on the latent values with the gradient of the nominal network's loss on ``frames [B, T, F]``
    plus the loss of the same network through the exact dt = 2 map on the pairwise means of the frames."""
    latent = params_of(model)
    exact = Calibration.identity(model)
    exact.dt = 2.0
    leaves = {n: v.clone().requires_grad_(True) for n, v in latent.items()}
    full = full_program(model, leaves)
    nominal_in = frames.transpose(0, 1)  # [T, B, F]
    t, b, f = nominal_in.shape
    coarse_in = torch.stack([(nominal_in[2 * j] + nominal_in[2 * j + 1]) / 2 for j in range(t // 2)])
    nominal = as_model_output(functional_call(model, full, (nominal_in,)), model).output
    coarse = as_model_output(functional_call(model, exact.to_device(full), (coarse_in,)), model).output
    loss = task_loss(nominal, y, cfg) + task_loss(coarse, y, replace(cfg, num_steps=t // 2))
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return {n: (v - cfg.lr * g).detach() for (n, v), g in zip(latent.items(), grads)}


@pytest.mark.parametrize("client", [0, 1])
def test_every_client_trains_at_both_time_steps(client: int) -> None:
    """A mismatch-free fleet of a dt = 1 and a dt = 2 chip (float weights, noise-free probes), event frames:
    with ``resolutions`` one SGD step of either client equals the hand step (nominal loss + exact dt = 2 loss on
    rebinned frames); with ``mixed`` the dt = 1 client trains its nominal loss alone (so it differs)."""
    model = _model()
    g = torch.Generator().manual_seed(7)
    frames = (torch.rand(24, 8, 6, generator=g) < 0.4).float() * 3.0
    y = torch.randint(0, 4, (24,), generator=g)
    cfg = TrainConfig(epochs=1, batch_size=24, num_steps=8, lr=0.05, optimizer="sgd", momentum=0.0,
                      encoder="events")
    data = [ClientData(client, frames, y)]

    def step(mode: str) -> dict[str, torch.Tensor]:
        fleet = _fleet(model, [FINE, COARSE], mode)
        return train_on_fleet("sequential", fleet, model, params_of(model), data,
                              [torch.Generator().manual_seed(1)], cfg, FitInstructions(1), None, None)[0].params

    up, ref = step("resolutions"), _hand_step(model, frames, y, cfg)
    for n, v in ref.items():
        assert torch.allclose(up[n], v, atol=1e-5), n
    assert max(float((ref[n] - params_of(model)[n]).abs().max()) for n in ref) > 1e-3  # the step moves
    mixed = step("mixed")
    differs = max(float((mixed[n] - up[n]).abs().max()) for n in ref)
    assert (differs > 1e-4) if client == 0 else (differs < 1e-6)  # mixed: the dt = 2 client alone adds a view


def test_views_are_twins_from_the_calibration_at_every_other_step() -> None:
    """Fleet with dt 1, 2 and 4: every client gets one extra view per dt != 1 of the fleet, sorted; its own
    coarse chip where the dt is its chip's, else a twin holding the calibration's estimated factors (not the
    chip's hidden ones) and the calibration's map at that dt."""
    model = _model()
    fleet = _fleet(model, [MISMATCHED, replace(MISMATCHED, name="c2", dt=2.0), replace(MISMATCHED, name="c4",
                                                                                         dt=4.0)], "resolutions")
    view = fleet.for_training()
    assert view.step_views is not None and view.chips is fleet
    for k in range(3):
        steps = [dev.profile.dt for dev, _ in view.step_views[k]]
        assert steps == [2.0, 4.0]
        for dev, cal in view.step_views[k]:
            assert cal.dt == dev.profile.dt
            if dev.profile.dt == fleet.profiles[k].dt:
                assert dev is fleet.devices[k] and cal is fleet.calibrations[k]
            else:
                assert dev is not fleet.devices[k]
                for est, twin, hidden in zip(fleet.calibrations[k].gains, dev.gains, fleet.devices[k].gains):
                    assert torch.equal(twin, est) and not torch.equal(twin, hidden)
    assert len(_fleet(model, [MISMATCHED, MISMATCHED], "resolutions").for_training().devices) == 2
    one_step = _fleet(model, [MISMATCHED, MISMATCHED], "resolutions")
    assert one_step.for_training() is one_step  # a single time step: nothing to add


def test_config_reaches_resolutions_and_naive_is_refused() -> None:
    base = ["data.name=digits", "partition.num_clients=2", "federation.rounds=1", "model.hidden=[8]",
            "devices.fleet=[{profile: coarse_dt, fraction: 0.5}, {profile: ideal, fraction: 0.5}]"]
    spec = build_spec(build_settings(RunSettings, None, base + ["devices.training_step=resolutions"]))
    assert spec.fleet.training_step == "resolutions"
    assert spec.fleet.for_training().step_views is not None
    with pytest.raises(Exception, match="training_step=resolutions"):
        build_spec(build_settings(RunSettings, None, base + ["devices.training_step=resolutions",
                                                             "devices.aggregation=naive"]))
