"""The compatibility table (spikefed.experiment.compat): every row refuses its combination with its reason, in
config validation (before any data loads), on the Flower path, in `spikefed config show`; the engine is recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from spikefed.deploy.flower import check_deployable
from spikefed.experiment import compat
from spikefed.experiment.config import ConfigError, RunSettings, apply_overrides, build_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))  # tests/forkserver.py (importlib import mode)
from forkserver import run_python  # noqa: E402

FLEET = "devices.fleet=[{profile: analog20}]"
#: one config per row that trips exactly that row (by name)
TRIGGERS: dict[str, list[str]] = {
    "private-scaffold": ["privacy.dp=true", "federation.strategy=scaffold"],
    "private-defence": ["privacy.dp=true", "robustness.defense=median"],
    "secagg-compression": ["privacy.secure_aggregation=true", "compression.uplink=topk"],
    "continual-event-drift": ["continual.stream=domain_drift", "continual.regularizer=l2", "continual.lam=1",
                              "data.name=event_digits"],
    "ewc-private": ["continual.stream=domain_drift", "continual.regularizer=ewc", "continual.lam=1",
                    "privacy.dp=true"],
    "natural-partition-data": ["data.name=event_digits", "partition.method=subject"],
    "fleet-eprop": [FLEET, "local.method=eprop", "local.loss=ce_membrane", "local.membrane_reduction=time_mean",
                    "model.readout=membrane"],
    "fleet-naive-twin": [FLEET, "devices.aggregation=naive", "devices.training_step=nominal"],
    "fleet-blocks": [FLEET, "model.norm=tdbn"],
    "fleet-robust-training": [FLEET, "local.ib_weight=0.1"],
    "eprop-conv": ["model.kind=conv", "local.method=eprop", "local.loss=ce_membrane",
                   "local.membrane_reduction=time_mean", "model.readout=membrane"],
    "eprop-delays": ["model.delays=2", "local.method=eprop", "local.loss=ce_membrane",
                     "local.membrane_reduction=time_mean", "model.readout=membrane"],
    "conv-channels": ["model.kind=conv", "data.name=shd", "data.root=/nonexistent"],
    "flower-scaffold": ["federation.strategy=scaffold"],
    "flower-faults": ["faults.dropout=0.1"],
    "flower-attack": ["robustness.attack=boost"],
    "flower-secagg-sim": ["privacy.secure_aggregation=true"],
    "flower-continual": ["continual.stream=class_incremental"],
    "flower-downlink": ["compression.downlink=topk"],
    "network-fednova": ["network.enabled=true", "faults.late_policy=fednova"],
    "network-secagg": ["network.enabled=true", "privacy.secure_aggregation=true"],
    "flower-network": ["network.enabled=true"],
    "private-qffl": ["privacy.dp=true", "federation.strategy=qffl"],
    "qffl-defence": ["federation.strategy=qffl", "robustness.defense=median"],
    "qffl-weights": ["federation.strategy=qffl", "federation.weights=uniform"],
    "secagg-uniform-weights": ["privacy.secure_aggregation=true", "federation.weights=uniform"],
    "flower-qffl": ["federation.strategy=qffl"],
    "private-selection": ["privacy.dp=true", "federation.selection=size"],
    "qffl-size": ["federation.strategy=qffl", "federation.selection=size"],
    "flower-selection": ["federation.selection=availability"],
    "momentum-correction-ef": ["compression.uplink=topk", "compression.momentum_correction=0.9",
                               "compression.error_feedback=false"],
    "flower-momentum-correction": ["compression.uplink=topk", "compression.momentum_correction=0.9"],
    "device-fleet": [FLEET, "runtime.device=auto"],
    "device-continual": ["continual.stream=domain_drift", "continual.regularizer=l2", "continual.lam=1",
                         "runtime.device=auto"],
    "device-numba": ["local.kernel=numba", "runtime.device=auto"],
}


def test_every_row_has_a_trigger() -> None:
    assert set(TRIGGERS) == {r.name for r in compat.REFUSALS}


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_each_row_refuses_its_combination_with_its_reason(name: str) -> None:
    """Config validation (which reads no data) refuses a ``run`` row with exactly that row's one-line message;
    a ``flower`` row passes validation and is refused by the deployment's check."""
    row = next(r for r in compat.REFUSALS if r.name == name)
    overrides = ["continual.tasks=2", "federation.rounds=2"] + TRIGGERS[name]
    expected = row.reason(_unchecked(apply_overrides({}, overrides)))
    if row.where == "run":
        with pytest.raises(ConfigError) as e:
            build_settings(RunSettings, None, overrides)
    else:
        settings = build_settings(RunSettings, None, overrides)  # fine in simulation
        with pytest.raises(ConfigError) as e:
            check_deployable(settings)
    assert str(e.value) == expected and "\n" not in expected
    assert any(k.split(".")[0] in expected for k in row.keys), expected  # the message names the keys


def _unchecked(data: dict) -> RunSettings:
    """The settings validated by everything but the table (to compute the row's own message independently)."""
    saved = compat.REFUSALS
    try:
        compat.REFUSALS = ()  # type: ignore[misc]
        return RunSettings.model_validate(data)
    finally:
        compat.REFUSALS = saved  # type: ignore[misc]


def test_defaults_are_refused_nowhere() -> None:
    settings = build_settings(RunSettings, None, [])
    assert compat.refusals(settings, "flower") == []


def test_config_show_prints_the_table_and_the_flower_refusals() -> None:
    r = run_python(["-m", "spikefed.cli", "config", "show", "--set", "faults.dropout=0.1"], timeout=120)
    assert r.returncode == 0, r.stderr
    for row in compat.REFUSALS:
        assert row.name in r.stdout
    assert "on Flower this config is refused: faults:" in r.stdout


def test_engine_is_decided_once_and_recorded(tmp_path) -> None:
    r = run_python(["-m", "spikefed.cli", "run", "--out", str(tmp_path / "run"), "--json",
                    "--set", "local.tbptt=2", "--set", "federation.rounds=1", "--set", "local.epochs=1",
                    "--set", "partition.num_clients=4", "--set", "local.num_steps=4"], timeout=300)
    assert r.returncode == 0, r.stderr
    assert "engine: sequential, not cohort:" in r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["engine"] == "sequential" and "truncated BPTT" in summary["engine_note"]
