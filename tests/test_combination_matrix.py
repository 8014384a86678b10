"""The combination matrix (issue 13): every pair of the seeds' features trains two small rounds, or the
compatibility table refuses it with its reason. No pair may fail any other way, and docs/combinations.md lists
exactly the refused pairs the code refuses."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from spikefed.experiment import combinations as cm
from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import FederationSpec, Simulation

DOC = Path(__file__).resolve().parents[1] / "docs" / "combinations.md"
STATUSES = list(cm.matrix())
RUNS = [(s.a, s.b) for s in STATUSES if s.kind == "runs"]


def _has_module(spec: FederationSpec, *names: str) -> bool:
    return any(type(m).__name__ in names for m in spec.model.modules())


def _dense_fraction(row: dict[str, Any]) -> float:
    """Uplink bytes per delivering client over broadcast bytes per client. With SCAFFOLD both directions carry
    the control variates too, and top-k compresses only the model delta (the control delta travels dense), so
    the bound below is 0.6 rather than ~2 x compression.fraction."""
    return (row["bytes_up"] / max(row["accepted"], 1)) / (row["bytes_down"] / row["clients"])


#: what a run with the feature on must show (independent of the feature's own code path: the rows and the
#: built model and strategy)
EVIDENCE: dict[str, Callable[[FederationSpec, list[dict[str, Any]]], bool]] = {
    "fleet": lambda spec, rows: all(r["accuracy_ideal"] is not None for r in rows),
    "continual": lambda spec, rows: [r["task"] for r in rows] == [0, 1],
    "dp": lambda spec, rows: rows[-1]["dp_epsilon"] > rows[0]["dp_epsilon"] > 0,
    "secagg": lambda spec, rows: all("secagg_survivors" in r for r in rows),
    "topk_ef": lambda spec, rows: _dense_fraction(rows[-1]) < 0.6,
    "scaffold": lambda spec, rows: type(spec.strategy).__name__ == "Scaffold",
    "fedprox": lambda spec, rows: type(spec.strategy).__name__ == "FedProx",
    "attack_defence": lambda spec, rows: all("malicious" in r for r in rows),
    "faults": lambda spec, rows: all("dropped" in r for r in rows),
    "conv": lambda spec, rows: _has_module(spec, "Conv2d"),
    "recurrent": lambda spec, rows: _has_module(spec, "RecurrentLIF", "RecurrentALIF"),
    "delays": lambda spec, rows: _has_module(spec, "Delay"),
    "alif": lambda spec, rows: _has_module(spec, "ALIF", "RecurrentALIF"),
    "event_data": lambda spec, rows: spec.data.x_train.dim() >= 3,
    "eprop": lambda spec, rows: spec.local.method == "eprop",
}


def test_every_feature_has_evidence() -> None:
    assert set(EVIDENCE) == set(cm.FEATURES)


def test_no_pair_fails_outside_the_table() -> None:
    """A pair either validates, is refused by a row of the table, or sets one key two ways."""
    invalid = [f"{s.a} + {s.b}: {s.message}" for s in STATUSES if s.kind == "invalid"]
    assert not invalid, invalid


def test_refusals_are_one_line_and_name_a_key() -> None:
    for s in STATUSES:
        if s.kind == "refused":
            assert "\n" not in s.message and re.search(r"\b[a-z_]+\.[a-z_]+\b", s.message), s


def test_docs_list_exactly_the_refused_pairs() -> None:
    """docs/combinations.md is the printed matrix (regenerate: python -m spikefed.experiment.combinations)."""
    assert cm.to_markdown(STATUSES) in DOC.read_text()


def test_pair_status_recognises_a_table_refusal_and_an_invalid_value() -> None:
    """The classifier itself, on pairs built here: a table row vs a plain validation error."""
    saved = dict(cm.FEATURES)
    try:
        cm.FEATURES["bad"] = ("local.num_steps=0",)
        cm.FEATURES["sec"] = ("privacy.secure_aggregation=true",)
        cm.FEATURES["tk"] = ("compression.uplink=topk",)
        assert cm.pair_status("bad", "sec").kind == "invalid"
        refused = cm.pair_status("sec", "tk")
        assert refused.kind == "refused" and "compression.uplink" in refused.message
    finally:
        cm.FEATURES.clear()
        cm.FEATURES.update(saved)


@pytest.mark.parametrize(("a", "b"), RUNS, ids=[f"{a}+{b}" for a, b in RUNS])
def test_pair_trains_two_rounds(a: str, b: str) -> None:
    torch.manual_seed(0)  # nothing may depend on it: the run owns its generators
    settings: RunSettings = build_settings(RunSettings, None, cm.pair_overrides(a, b))
    spec = build_spec(settings)
    sim = Simulation(spec)
    rows = [sim.run_round(), sim.run_round()]
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and math.isfinite(r["loss"]), r
        assert r["train_loss"] is None or math.isfinite(r["train_loss"]), r
    assert all(torch.isfinite(v).all() for v in sim.state.global_params.values())
    for feature in (a, b):
        assert EVIDENCE[feature](spec, rows), f"{feature} left no trace in {a} + {b}"
