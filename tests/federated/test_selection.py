"""Client selection: each method's sampling distribution against its formula (statistically, over many rounds),
the size-sampling correction's unbiasedness on a closed form (exact expectation over every multinomial outcome),
and runs with every method."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.selection import (SelectionSpec, availability, availability_phase, horvitz_thompson,
                                          power_of_choice, select)
from spikefed.federated.simulation import Simulation
from spikefed.federated.strategies import corrected_weights
from spikefed.federated.types import ClientUpdate

ROUNDS = 3000


def test_uniform_inclusion_is_m_over_n() -> None:
    sizes = [5, 50, 10, 20, 15, 8, 30, 12]
    hits = np.zeros(8)
    for r in range(ROUNDS):
        sel = select(SelectionSpec("uniform"), 3, r, sizes, 3)
        assert len(sel.clients) == 3 and sel.factors is None
        hits[sel.clients] += 1
    assert stats.chisquare(hits, np.full(8, ROUNDS * 3 / 8)).pvalue > 1e-3


def test_size_draws_follow_data_shares() -> None:
    sizes = np.array([5, 50, 10, 20, 15])
    q = sizes / sizes.sum()
    draws = np.zeros(5)
    for r in range(ROUNDS):
        sel = select(SelectionSpec("size"), 4, r, list(sizes), 3)
        assert sel.factors is not None and set(sel.factors) == set(sel.clients)
        # factors are c_k / (m q_k): recover the draw counts c_k
        for k, f in sel.factors.items():
            c = f * 3 * q[k]
            assert c == pytest.approx(round(c)) and round(c) >= 1
            draws[k] += round(c)
    assert draws.sum() == ROUNDS * 3
    assert stats.chisquare(draws, ROUNDS * 3 * q).pvalue > 1e-3


@pytest.mark.parametrize("weighting", ["samples", "uniform"])
def test_size_correction_is_unbiased_in_closed_form(weighting: str) -> None:
    """E over all multinomial(m, q) outcomes of the HT estimate sum_k b_k c_k / (m q_k) w_k = sum_k b_k w_k; with
    sample weights the normalised weights (what the strategy uses) give exactly that estimate."""
    sizes = np.array([3.0, 1.0, 6.0, 2.0])
    n, m = len(sizes), 3
    q = sizes / sizes.sum()
    b = q if weighting == "samples" else np.full(n, 1 / n)
    w = np.array([1.0, -2.0, 0.5, 4.0])  # one scalar "model" per client
    expect_ht, expect_norm = 0.0, 0.0
    for draw in itertools.product(range(n), repeat=m):
        prob = math.prod(q[k] for k in draw)
        counts = np.bincount(draw, minlength=n)
        factors = horvitz_thompson(counts, q)
        ids = sorted(factors)
        expect_ht += prob * sum(b[k] * factors[k] * w[k] for k in ids)
        ups = [ClientUpdate(k, int(sizes[k]), {}) for k in ids]
        p = corrected_weights(torch.tensor(b[ids] / b[ids].sum(), dtype=torch.float64), ups, factors).numpy()
        expect_norm += prob * float(p @ w[ids])
    assert expect_ht == pytest.approx(float(b @ w), rel=1e-12)
    if weighting == "samples":
        assert expect_norm == pytest.approx(float(b @ w), rel=1e-12)


def test_power_of_choice_keeps_the_highest_losses_and_its_inclusion_formula() -> None:
    assert power_of_choice([4, 1, 7, 2], [0.5, 2.0, 0.1, 2.0], 2) == [1, 2]  # tie 2.0: both; ids sorted
    assert power_of_choice([4, 1, 7, 2], [0.5, 2.0, 0.1, 3.0], 1) == [2]
    n, m, frac = 10, 2, 0.5
    d = 5
    spec = SelectionSpec("power_of_choice", candidates=frac)
    hits = np.zeros(n)
    for r in range(ROUNDS):
        sel = select(spec, 5, r, [10] * n, m, lambda cand: [float(k) for k in cand])  # loss = client id
        assert len(sel.clients) == m
        hits[sel.clients] += 1
    # client k is kept iff it is a candidate and fewer than m of the other d - 1 candidates have a higher id:
    # P = d/N * P(X < m), X ~ hypergeometric(N - 1 others, N - 1 - k higher, d - 1 draws)
    p = np.array([d / n * stats.hypergeom(n - 1, n - 1 - k, d - 1).cdf(m - 1) for k in range(n)])
    assert p.sum() == pytest.approx(m)
    mask = p > 0
    assert hits[~mask].sum() == 0  # the lowest ids can never win
    assert stats.chisquare(hits[mask], ROUNDS * p[mask]).pvalue > 1e-3


def test_availability_follows_the_diurnal_trace() -> None:
    spec = SelectionSpec("availability", period=24.0, low=0.1, high=0.9)
    n = 12
    phases = [availability_phase(7, k) for k in range(200)]
    assert stats.kstest(phases, "uniform").pvalue > 1e-3  # phi_k ~ U[0, 1)
    online = np.zeros((240, n))
    for r in range(240):
        sel = select(spec, 7, r, [10] * n, n)  # m = N: every online client is selected
        online[r, sel.clients] = 1
    a = np.array([[availability(spec, availability_phase(7, k), r) for k in range(n)] for r in range(240)])
    assert a.min() >= 0.1 - 1e-12 and a.max() <= 0.9 + 1e-12
    # per client: sum of (online - a) over the rounds ~ N(0, sum a (1 - a)) (rounds with no client online
    # force one in: rare at these probabilities, counted in the tolerance)
    z = (online - a).sum(0) / np.sqrt((a * (1 - a)).sum(0))
    assert np.all(np.abs(z) < 4.5), z
    # the trace matters: online far more often near a client's peak than near its trough
    peak = a > 0.8
    assert online[peak].mean() > 0.75 and online[a < 0.2].mean() < 0.25


def _small(*overrides: str) -> RunSettings:
    base = ["partition.num_clients=6", "partition.min_size=5", "federation.rounds=2", "federation.fraction=0.5",
            "model.hidden=[16]", "local.num_steps=4", "local.epochs=1"]
    return build_settings(RunSettings, None, base + list(overrides))


@pytest.mark.parametrize("method", ["power_of_choice", "size", "availability"])
def test_runs_with_every_method(method: str) -> None:
    sim = Simulation(build_spec(_small(f"federation.selection={method}", "federation.selection_candidates=0.8",
                                       "federation.availability_period=4")))
    for _ in range(2):
        row = sim.run_round()
        assert 1 <= row["clients"] <= 3 and row["accepted"] == row["clients"]
    factors = sim.spec.strategy.weight_factors
    assert (factors is not None) == (method == "size")


def test_power_of_choice_run_picks_the_highest_loss_clients() -> None:
    from spikefed.federated.stages.fairness import client_losses

    sim = Simulation(build_spec(_small("federation.selection=power_of_choice")))  # d = N: the global top m
    losses = client_losses(sim, sim.state.global_params, list(range(6)), 1)
    row = sim.run_round()
    assert row["participation"]["sampled"] == sorted(np.argsort(-np.array(losses), kind="stable")[:3].tolist())
