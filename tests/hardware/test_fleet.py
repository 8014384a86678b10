"""Device fleets in the federated simulation: calibrated uploads, deployed evaluation, config and CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from spikefed.experiment.config import ConfigError, RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.cohort import ClientDevice, train_cohort
from spikefed.federated.simulation import Simulation
from spikefed.federated.types import FitInstructions, params_of
from spikefed.hardware.devices import DeviceProfile, full_program, get_profile
from spikefed.hardware.fleet import Fleet
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/forkserver.py (importlib import mode)
from forkserver import run_python  # noqa: E402

BASE = ["partition.num_clients=6", "partition.min_size=5", "federation.rounds=2", "federation.fraction=0.5",
        "model.hidden=[24]", "local.num_steps=6", "local.epochs=1"]


def _settings(*overrides: str) -> RunSettings:
    return build_settings(RunSettings, None, BASE + list(overrides))


def _run(settings: RunSettings) -> Simulation:
    sim = Simulation(build_spec(settings))
    for _ in range(settings.federation.rounds):
        sim.run_round()
    return sim


def test_naive_fleet_of_ideal_devices_equals_ideal_hardware() -> None:
    """Identity physics + identity map: the device code path reproduces the plain simulation."""
    plain = _run(_settings())
    fleet = _run(_settings("devices.fleet=[{profile: ideal}]", "devices.aggregation=naive"))
    for n, v in plain.state.global_params.items():
        assert torch.allclose(fleet.state.global_params[n], v, atol=1e-5), n
    row_p, row_f = plain.state.metrics[-1], fleet.state.metrics[-1]
    assert row_f["accuracy"] == pytest.approx(row_p["accuracy"], abs=1e-9)
    assert row_f["accuracy_ideal"] == pytest.approx(row_p["accuracy"], abs=1e-9)


def test_calibrated_upload_is_the_inverse_of_the_programmed_map() -> None:
    """A client that does not move its program uploads exactly the latent model it received (up to rounding)."""
    model = SpikingMLP([8, 12, 3], generator=torch.Generator().manual_seed(0), learn_threshold=True,
                       learn_beta=True, beta=0.85)
    profiles = [get_profile("analog20"), get_profile("coarse_dt").replace(gain_cv=0.1)]
    fleet = Fleet(model, profiles, "calibrated", [1, 2], [3, 4])
    latent = params_of(model)
    for k in range(2):
        start = fleet.program(k, latent)
        assert not torch.allclose(start["linears.0.weight"], latent["linears.0.weight"])  # it does map
        back = fleet.upload(k, start, {n: start[n] for n in latent})
        for n, v in latent.items():
            assert torch.allclose(back[n], v, rtol=1e-5, atol=1e-6), (k, n)


def test_device_training_trains_the_program_through_the_physics() -> None:
    """Gradients flow through g * Q(W): with a zero learning rate nothing moves; the device's forward sees the
    effective weights (a huge gain mismatch changes the training loss)."""
    model = SpikingMLP([8, 12, 3], generator=torch.Generator().manual_seed(0))
    x = torch.rand(20, 8)
    y = torch.randint(0, 3, (20,))
    from spikefed.federated.cohort import ClientData

    clients = [ClientData(0, x, y), ClientData(1, x, y)]
    latent = params_of(model)
    ideal = Fleet(model, [DeviceProfile("i")] * 2, "naive", [0, 1], [0, 1])
    wild = Fleet(model, [DeviceProfile("w", gain_cv=3.0)] * 2, "naive", [0, 1], [0, 1])
    cfg = TrainConfig(epochs=1, batch_size=20, num_steps=5, lr=1e-3)
    losses = {}
    for name, fleet in (("ideal", ideal), ("wild", wild)):
        devs = [ClientDevice(fleet.program(k, latent), fleet.devices[k]) for k in range(2)]
        ups = train_cohort(model, latent, clients, [torch.Generator().manual_seed(0) for _ in range(2)], cfg,
                           FitInstructions(1), devices=devs)
        losses[name] = [u.metrics["loss"] for u in ups]
        assert all(not torch.equal(u.params["linears.0.weight"], latent["linears.0.weight"]) for u in ups)
    assert losses["ideal"][0] == pytest.approx(losses["ideal"][1])  # same data, same ideal device
    assert losses["wild"][0] != pytest.approx(losses["ideal"][0])


def test_fleet_evaluation_of_ideal_devices_equals_plain_evaluation() -> None:
    from spikefed.data import load_digits_split

    d = load_digits_split(seed=0)
    model = SpikingMLP([64, 32, 10], generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(num_steps=8)
    fleet = Fleet(model, [get_profile("ideal")] * 3, "naive", [0, 1, 2], [0, 1, 2])
    fe = fleet.evaluate(params_of(model), d.x_test, d.y_test, cfg, torch.Generator().manual_seed(0))
    ref = evaluate(model, d.x_test, d.y_test, cfg, torch.Generator().manual_seed(0))
    assert fe.accuracy == pytest.approx(ref.accuracy, abs=1e-12)
    assert fe.by_profile == {"ideal": pytest.approx(ref.accuracy, abs=1e-12)}


def test_full_program_expands_fixed_neuron_values() -> None:
    model = SpikingMLP([4, 5, 2], generator=torch.Generator().manual_seed(0), beta=0.8, threshold=1.5)
    prog = full_program(model, params_of(model))
    assert torch.equal(prog["neurons.0.threshold"], torch.full((5,), 1.5))
    assert torch.allclose(prog["neurons.1.beta"], torch.full((2,), 0.8))


@pytest.mark.parametrize("override,needle", [
    ("devices.fleet=[{profile: analog20, gain_cv: -1}]", "gain_cv"),
    ("devices.fleet=[{profile: analog20, weight_bits: 0}]", "weight_bits"),
    ("devices.fleet=[{profile: warp9}]", r"devices.fleet.0.profile: valid: ideal, .*\(got 'warp9'\)"),
    ("devices.fleet=[{profile: ideal, fraction: 0.3}]", "sum to 1"),
])
def test_bad_device_config_is_one_clear_error(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        _settings(override)


def test_fleet_runs_with_scaffold_continual_alif_and_tbptt() -> None:
    """Formerly refused pairs run two rounds; SCAFFOLD, continual and tbptt fleets train on the sequential device
    engine and say why."""
    fleet = "devices.fleet=[{profile: analog20_8bit, fraction: 0.5}, {profile: coarse_dt, fraction: 0.5}]"
    for extra in (["federation.strategy=scaffold", "local.optimizer=sgd", "local.lr=0.05"],
                  ["continual.stream=domain_drift", "continual.tasks=2", "continual.regularizer=l2",
                   "continual.lam=1", "continual.rotation=20"],
                  ["model.neuron=alif"], ["local.tbptt=3"]):
        sim = _run(_settings(fleet, *extra))
        row = sim.state.metrics[-1]
        assert 0.0 <= row["accuracy"] <= 1.0 and row["accuracy_ideal"] is not None, extra
        if extra == ["model.neuron=alif"]:  # the generic batched engine runs ALIF devices too
            assert sim.spec.engine == "cohort" and not sim.spec.engine_note
        else:
            assert sim.spec.engine == "sequential" and sim.spec.engine_note, extra
        assert all(bool(torch.isfinite(v).all()) for v in sim.state.global_params.values())


@pytest.mark.parametrize("extra", [
    ["federation.strategy=scaffold", "local.optimizer=sgd", "local.lr=0.05"],
    ["continual.stream=domain_drift", "continual.tasks=2", "continual.regularizer=l2", "continual.lam=1",
     "continual.rotation=20"],
])
def test_ideal_fleet_equals_the_run_without_a_fleet(extra: list[str]) -> None:
    """SCAFFOLD (latent control variates) and continual anchors on a fleet of ideal devices: two rounds give
    the global model of the same run without a fleet (same engine), to float tolerance."""
    settings = _settings("federation.engine=sequential", *extra)
    start = params_of(build_spec(settings).model)
    plain = _run(settings)
    assert any(not torch.equal(plain.state.global_params[n], v) for n, v in start.items())  # it did train
    fleet = _run(_settings("federation.engine=sequential", "devices.fleet=[{profile: ideal}]",
                           "devices.aggregation=calibrated", *extra))
    for n, v in plain.state.global_params.items():
        assert torch.allclose(fleet.state.global_params[n], v, atol=1e-5), n


def test_eprop_on_a_fleet_is_refused_by_the_table() -> None:
    with pytest.raises(ConfigError, match="eligibility traces"):
        _settings("devices.fleet=[{profile: ideal}]", "local.method=eprop", "local.loss=ce_membrane",
                  "local.membrane_reduction=time_mean", "model.readout=membrane")


def test_devices_cli_lists_presets() -> None:
    done = run_python(["-m", "spikefed.cli", "devices", "--json"])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    names = [p["name"] for p in json.loads(out)]
    assert {"ideal", "digital8", "analog20", "coarse_dt"} <= set(names)
