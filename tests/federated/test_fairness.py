"""Fairness metrics of the per-client accuracy (mean, worst 10 %, Jain index) against plain formulas on hand values,
and their place in the metrics rows, the summary, the CLI digest and the report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.digest import digest
from spikefed.experiment.report import figures as rf
from spikefed.experiment.runner import build_spec, summarize
from spikefed.federated.fairness import FAIRNESS_KEYS, fairness_metrics, jain_index, worst_fraction_mean
from spikefed.federated.simulation import Simulation


def test_hand_values() -> None:
    a = [0.9, 0.5, None, 0.7, float("nan"), 0.3]  # None / NaN: clients without a defined accuracy
    got = fairness_metrics(a)
    # four defined clients: mean (0.9 + 0.5 + 0.7 + 0.3) / 4 = 0.6; floor(0.4) -> at least one: the worst, 0.3
    assert got["client_accuracy_mean"] == pytest.approx(0.6)
    assert got["client_accuracy_worst10"] == pytest.approx(0.3)
    # Jain: 2.4^2 / (4 * (0.81 + 0.25 + 0.49 + 0.09)) = 5.76 / 6.56
    assert got["client_accuracy_jain"] == pytest.approx(5.76 / 6.56)


def test_worst10_on_twenty_and_twentyfive_clients() -> None:
    vals = [i / 100 for i in range(100, 80, -1)]  # 20 clients: 1.00 .. 0.81
    assert worst_fraction_mean(vals) == pytest.approx((0.81 + 0.82) / 2)  # 10 % of 20 = 2 clients
    vals25 = list(np.linspace(0.2, 0.9, 25))
    assert worst_fraction_mean(vals25) == pytest.approx(float(np.mean(sorted(vals25)[:2])))  # floor(2.5) = 2


def test_jain_extremes_and_random_against_numpy() -> None:
    assert jain_index([0.7] * 5) == pytest.approx(1.0)
    assert jain_index([1.0, 0, 0, 0]) == pytest.approx(0.25)  # one of n served: 1/n
    assert jain_index([0.0, 0.0]) is None
    rng = np.random.default_rng(3)
    for _ in range(20):
        x = rng.uniform(0, 1, size=int(rng.integers(1, 40)))
        assert jain_index(list(x)) == pytest.approx(float(x.sum() ** 2 / (len(x) * (x ** 2).sum())))
    with pytest.raises(ValueError, match="non-negative"):
        jain_index([0.5, -0.1])


def test_nothing_defined_gives_nulls() -> None:
    assert fairness_metrics([None, float("nan")]) == dict.fromkeys(FAIRNESS_KEYS)
    assert fairness_metrics([]) == dict.fromkeys(FAIRNESS_KEYS)


def test_rows_summary_digest_and_figure() -> None:
    settings = build_settings(RunSettings, None, [
        "partition.num_clients=6", "partition.min_size=5", "federation.rounds=2", "federation.eval_every=2",
        "model.hidden=[16]", "local.num_steps=4", "local.epochs=1"])
    sim = Simulation(build_spec(settings))
    rows = [sim.run_round() for _ in range(2)]
    assert all(rows[0][k] is None for k in FAIRNESS_KEYS)  # not evaluated
    row = rows[1]
    a = np.array([v for v in row["client_accuracy"] if v is not None and not math.isnan(v)])
    assert len(a) == 6
    assert row["client_accuracy_mean"] == pytest.approx(float(a.mean()))
    assert row["client_accuracy_worst10"] == pytest.approx(float(a.min()))  # floor(0.6) -> the one worst client
    assert row["client_accuracy_jain"] == pytest.approx(float(a.sum() ** 2 / (6 * (a ** 2).sum())))
    summary = summarize(sim, settings, 1.0)
    assert summary["fairness"] == {k: pytest.approx(row[k]) for k in FAIRNESS_KEYS}
    text = dict(digest(summary))["per-client accuracy: mean / worst 10% / Jain index"]
    assert text == " / ".join(f"{row[k]:.4f}" for k in FAIRNESS_KEYS)
    fig = rf.fairness(rows)
    assert fig is not None and [t["x"] for t in fig.spec["data"]] == [[2], [2], [2]]
    assert [t["y"][0] for t in fig.spec["data"]] == pytest.approx([row[k] for k in FAIRNESS_KEYS])
    assert rf.fairness(rows[:1]) is None
