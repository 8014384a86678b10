"""Client drift (update dissimilarity) in the metrics rows, and the multi-step FedAvg update for E > 1.

References: the dissimilarities written out in numpy; the centralized gradient of the union by autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spikefed.data import load_digits_split
from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.cohort import ClientData, train_cohort
from spikefed.federated.dissimilarity import DRIFT_KEYS, client_drift, flat_delta, update_dissimilarity
from spikefed.federated.simulation import Simulation
from spikefed.federated.strategies import make_strategy
from spikefed.federated.types import ClientUpdate, FitInstructions, params_of
from spikefed.snn.losses import mse_count_loss
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig


def _numpy_dissimilarity(d: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    p = w / w.sum()
    mean = np.zeros(d.shape[1])
    for k in range(len(d)):
        mean += p[k] * d[k]
    cos = sum(p[k] * (1 - d[k] @ mean / (np.linalg.norm(d[k]) * np.linalg.norm(mean))) for k in range(len(d)))
    norm = sum(p[k] * np.linalg.norm(d[k]) ** 2 for k in range(len(d))) / np.linalg.norm(mean) ** 2
    return float(cos), float(norm)


def test_dissimilarity_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(size=(7, 50)) + rng.normal(size=50)
    w = rng.uniform(1, 9, size=7)
    cos, norm = update_dissimilarity([torch.from_numpy(r) for r in d], w.tolist())
    ref_cos, ref_norm = _numpy_dissimilarity(d, w)
    assert cos == pytest.approx(ref_cos, rel=1e-12) and norm == pytest.approx(ref_norm, rel=1e-12)
    # the variance identity: sum p ||d - dbar||^2 = (D_norm - 1) ||dbar||^2
    p = w / w.sum()
    mean = (p[:, None] * d).sum(0)
    assert (p * ((d - mean) ** 2).sum(1)).sum() == pytest.approx((norm - 1) * (mean @ mean), rel=1e-10)


def test_identical_updates_have_no_drift_and_opposite_ones_maximal() -> None:
    v = torch.tensor([1.0, -2.0, 0.5])
    cos, norm = update_dissimilarity([v, v, v], [1, 2, 3])
    assert cos == pytest.approx(0.0, abs=1e-15) and norm == pytest.approx(1.0, rel=1e-15)
    cos, norm = update_dissimilarity([v, -v], [1, 1])  # zero average: cosine undefined -> 1, norm -> inf
    assert cos == 1.0 and math.isinf(norm)
    cos, norm = update_dissimilarity([v, -0.5 * v], [1, 1])  # average 0.25 v: one along, one against
    assert cos == pytest.approx(1.0) and norm == pytest.approx((1 + 0.25) / 2 / 0.0625)


@pytest.mark.parametrize("weights", [[1, -1], [0, 0], [1, float("nan")], [1]])
def test_bad_weights_are_refused(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weight"):
        update_dissimilarity([torch.ones(3), torch.ones(3)], weights)


def test_client_drift_reads_params_against_the_base() -> None:
    base = {"a": torch.zeros(2, 2), "b": torch.ones(3)}
    ups = [ClientUpdate(k, 10, {"a": torch.full((2, 2), float(k + 1)), "b": torch.ones(3) * (2 - k)})
           for k in range(3)]
    row = client_drift(ups, base, [0.2, 0.3, 0.5])
    d = np.stack([np.concatenate([np.full(4, k + 1.0), np.full(3, 1.0 - k)]) for k in range(3)])
    ref = _numpy_dissimilarity(d, np.array([0.2, 0.3, 0.5]))
    assert [row[k] for k in DRIFT_KEYS] == pytest.approx(list(ref), rel=1e-12)
    assert client_drift([], base, []) == dict.fromkeys(DRIFT_KEYS)
    with pytest.raises(ValueError, match="lacks"):
        flat_delta({"a": torch.zeros(2, 2)}, base)


def test_metrics_rows_carry_client_drift() -> None:
    settings = build_settings(RunSettings, None, [
        "partition.num_clients=6", "partition.min_size=5", "federation.rounds=2", "federation.fraction=0.5",
        "model.hidden=[16]", "local.num_steps=4", "local.epochs=1"])
    sim = Simulation(build_spec(settings))
    rows = [sim.run_round() for _ in range(2)]
    for row in rows:
        assert 0.0 < row["client_drift_cosine"] < 2.0 and row["client_drift_norm"] > 1.0


def test_multi_step_fedavg_is_the_scaled_centralized_step_to_second_order() -> None:
    """Seed 000/003 with E > 1 local full-batch SGD steps: sum_k p_k w_k = w - E eta sum_k p_k grad F_k(w)
    + O(eta^2). The error's slope in log-log over eta must be about 2 (first order would give 1)."""
    d = load_digits_split(seed=0)
    x, y = d.x_train.double(), d.y_train
    sizes, clients, start = [40, 17, 63], [], 0
    for i, n in enumerate(sizes):
        clients.append(ClientData(i, x[start:start + n], y[start:start + n]))
        start += n
    model = SpikingMLP([64, 20, 10], generator=torch.Generator().manual_seed(1)).double()
    w = params_of(model)
    out = model(x[:start].unsqueeze(0).expand(8, *x[:start].shape))
    grads = torch.autograd.grad(mse_count_loss(out.output, y[:start]), list(model.parameters()))
    g = dict(zip(w, grads))  # sum_k p_k grad F_k(w) = grad of the mean loss on the union (p_k = n_k / n)
    epochs, etas, errors = 3, [0.01, 0.005, 0.0025, 0.00125], []
    for eta in etas:
        cfg = TrainConfig(epochs=epochs, batch_size=1000, lr=eta, optimizer="sgd", momentum=0.0, num_steps=8)
        ups = train_cohort(model, w, clients, [torch.Generator().manual_seed(i) for i in range(3)], cfg,
                           FitInstructions(1))
        assert all(u.steps == epochs for u in ups)
        new = make_strategy("fedavg").aggregate_fit(1, w, ups, None)
        errors.append(math.sqrt(sum(float(((new[n] - (w[n] - epochs * eta * g[n])) ** 2).sum()) for n in w)))
    slope = float(np.polyfit(np.log(etas), np.log(errors), 1)[0])
    assert 1.7 < slope < 2.3, (slope, errors)
    # and the error is second order against the first-order step itself
    step = math.sqrt(sum(float(((epochs * etas[-1] * g[n]) ** 2).sum()) for n in w))
    assert errors[-1] < 0.15 * step
