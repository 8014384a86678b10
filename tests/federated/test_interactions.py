"""Feature combinations in ``Simulation.run_round``: device fleets with compression, faults, attacks, privacy and
event data; the metrics-row schema with skipped evaluations; resume with several features at once."""

from __future__ import annotations

import pytest
import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.boundary import parse_upload
from spikefed.federated.simulation import EVAL_KEYS, FLEET_EVAL_KEYS, Simulation, client_upload, uplink_mode
from spikefed.federated.types import ClientUpdate
from spikefed.hardware.fleet import Fleet

BASE = ["partition.num_clients=6", "partition.min_size=5", "federation.fraction=0.5", "model.hidden=[16]",
        "local.num_steps=4", "local.epochs=1"]
FLEET = "devices.fleet=[{profile: analog20_4bit, fraction: 0.5}, {profile: coarse_dt, fraction: 0.25}, " \
        "{profile: lossy, fraction: 0.25}]"


def _settings(*overrides: str) -> RunSettings:
    return build_settings(RunSettings, None, BASE + list(overrides))


def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "seconds"}


def test_rows_without_evaluation_have_the_keys_of_evaluated_rows() -> None:
    """eval_every > 1: a skipped round logs every evaluation key (null), so all rows share one schema (also
    the fleet's accuracy_ideal / accuracy_by_device)."""
    sim = Simulation(build_spec(_settings(FLEET, "federation.rounds=2", "federation.eval_every=2")))
    skipped, evaluated = sim.run_round(), sim.run_round()
    assert set(skipped) == set(evaluated)
    for k in EVAL_KEYS + FLEET_EVAL_KEYS:
        assert skipped[k] is None and evaluated[k] is not None, k
    plain = Simulation(build_spec(_settings("federation.rounds=2", "federation.eval_every=2")))
    skipped, evaluated = plain.run_round(), plain.run_round()
    assert set(skipped) == set(evaluated) and not set(FLEET_EVAL_KEYS) & set(skipped)


def test_event_data_on_devices_with_another_time_step_trains_on_rebinned_frames() -> None:
    """Event frames fix T = data.bins; a device with dt = 2 receives them rebinned to T/2 bins (issue 13; before:
    refused). The run trains and evaluates on the sequential device engine and says why."""
    sim = Simulation(build_spec(_settings("data.name=event_digits", "data.bins=4", "federation.rounds=1", FLEET)))
    row = sim.run_round()
    assert sim.spec.engine == "sequential" and "rebinned" in (sim.spec.engine_note or "")
    assert 0.0 <= row["accuracy"] <= 1.0 and row["accuracy_by_device"]
    assert sim.spec.fleet is not None and {d.num_steps(4) for d in sim.spec.fleet.devices} >= {2}


def test_event_data_on_a_lossy_fleet_trains_and_evaluates() -> None:
    """x is [N, T, F] with the events encoder: lost steps / jitter act on the time-major frames."""
    sim = Simulation(build_spec(_settings("data.name=event_digits", "data.bins=4", "federation.rounds=1",
                                          "devices.fleet=[{profile: lossy, fraction: 0.5}, "
                                          "{profile: analog20_4bit, fraction: 0.5}]")))
    row = sim.run_round()
    assert row["accepted"] == row["clients"] and 0 <= row["accuracy"] <= 1
    assert set(row["accuracy_by_device"]) == {"lossy", "analog20_4bit"}


def test_update_attack_acts_on_the_delta_against_the_received_model() -> None:
    """Lossy downlink: the client starts from the downlink reference r != x. A sign-flipping attacker uploads
    -(w - r), so the server sees x - (w - r), the mirror image of the honest x + (w - r) (before, the attack
    took the delta against the global x it never received)."""
    sim = Simulation(build_spec(_settings("federation.rounds=3", "robustness.attack=sign_flip",
                                          "robustness.attack_fraction=1.0", "compression.downlink=topk",
                                          "compression.fraction=0.05")))
    sim.run_round()
    ctx = sim.round_context(2)
    sim.stage("channel").configure(ctx)
    received = ctx.received
    x = sim.state.global_params
    assert any(not torch.equal(received[n], x[n]) for n in x)  # the reference lags the global model
    gen = torch.Generator().manual_seed(0)
    honest = ClientUpdate(0, 10, {n: received[n] + 0.01 * torch.randn(received[n].shape, generator=gen)
                                  for n in received})
    attacked = sim.stage("robustness").attack(ctx, honest)

    def server_view(u: ClientUpdate) -> dict:
        up = client_upload(sim.spec, 2, u, received, {})
        return parse_upload(up, uplink_mode(sim.spec), x, received, sim.manifolds, {0}).params

    view_honest, view_attacked = server_view(honest), server_view(attacked)
    for n in x:
        assert torch.allclose(view_attacked[n] - x[n], -(view_honest[n] - x[n]), atol=1e-5), n


@pytest.mark.parametrize("extra", [
    (FLEET, "compression.uplink=topk", "compression.fraction=0.1", "compression.downlink=qsgd8",
     "faults.dropout=0.3", "faults.deadline=2", "faults.straggler_sigma=0.5", "faults.late_policy=fednova",
     "robustness.attack=boost", "robustness.defense=median"),
    (FLEET, "privacy.dp=true", "privacy.adaptive_clip=true", "compression.uplink=topk",
     "robustness.attack=label_flip", "faults.dropout=0.2"),
])
def test_resume_with_combined_features_is_bit_identical(tmp_path, extra: tuple[str, ...]) -> None:
    settings = _settings("federation.rounds=3", *extra)
    a = Simulation(build_spec(settings))
    rows_a = [a.run_round() for _ in range(3)]
    b = Simulation(build_spec(settings))
    b.run_round()
    b.save_checkpoint(tmp_path / "c.pt")
    c = Simulation(build_spec(settings))
    c.load_checkpoint(tmp_path / "c.pt")
    rows_c = [c.run_round() for _ in range(2)]
    assert [_strip(r) for r in rows_a[1:]] == [_strip(r) for r in rows_c]
    for n in a.state.global_params:
        assert torch.equal(a.state.global_params[n], c.state.global_params[n]), n


def test_lossy_device_draws_do_not_depend_on_the_cohort() -> None:
    """A client on a lossy device trains to the same program alone or beside a client with larger batches
    (before, its lost-step / jitter draws covered the padded batch width of the cohort step)."""
    from spikefed.federated.cohort import ClientData, ClientDevice, train_cohort
    from spikefed.federated.types import FitInstructions, params_of
    from spikefed.hardware.devices import get_profile
    from spikefed.snn.models import SpikingMLP
    from spikefed.snn.train import TrainConfig

    model = SpikingMLP([6, 10, 3], generator=torch.Generator().manual_seed(0))
    data = torch.Generator().manual_seed(1)
    small = ClientData(0, torch.rand(5, 6, generator=data), torch.randint(0, 3, (5,), generator=data))
    big = ClientData(1, torch.rand(12, 6, generator=data), torch.randint(0, 3, (12,), generator=data))
    fleet = Fleet(model, [get_profile("lossy"), get_profile("ideal")], "naive", [0, 1], [0, 1])
    latent = params_of(model)
    cfg = TrainConfig(epochs=2, batch_size=8, num_steps=5, lr=1e-2)
    devs = [ClientDevice(fleet.program(k, latent), fleet.devices[k]) for k in range(2)]
    alone = train_cohort(model, latent, [small], [torch.Generator().manual_seed(7)], cfg, FitInstructions(1),
                         devices=devs[:1])[0]
    pair = train_cohort(model, latent, [small, big], [torch.Generator().manual_seed(7),
                                                      torch.Generator().manual_seed(8)], cfg, FitInstructions(1),
                        devices=devs)[0]
    for n, v in alone.params.items():
        assert torch.allclose(pair.params[n], v, atol=1e-6), n


def test_fleet_with_the_sequential_engine_trains_on_the_sequential_device_engine() -> None:
    """engine=sequential on a fleet (issue 13; before: refused): the sequential device engine trains, as asked."""
    sim = Simulation(build_spec(_settings("devices.fleet=[{profile: analog20}]", "federation.engine=sequential",
                                          "federation.rounds=1")))
    row = sim.run_round()
    assert sim.spec.engine == "sequential" and sim.spec.engine_note is None
    assert 0.0 <= row["accuracy"] <= 1.0
