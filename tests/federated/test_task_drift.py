"""Task-drift measures (spikefed.federated.task_drift) against scipy, numpy and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from spikefed.federated.continual import rotate_images
from spikefed.federated.task_drift import (feature_drift, fit_through_origin, hidden_counts, model_drift,
                                           spearman, task_optimum)
from spikefed.federated.types import params_of
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig

CFG = TrainConfig(epochs=1, batch_size=16, lr=3e-3, num_steps=6)


def _data(n: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 30).astype(float), rng.normal(size=30)
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, rel=1e-12)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        spearman([1.0], [2.0])


def test_fit_through_origin() -> None:
    a, rmse = fit_through_origin([1.0, 2.0, 3.0], [2.0, 4.0, 7.0])
    assert a == pytest.approx((2 + 8 + 21) / 14) and rmse == pytest.approx(
        np.sqrt(np.mean((np.array([2, 4, 7]) - a * np.array([1, 2, 3])) ** 2)))


def test_feature_drift_is_zero_for_the_same_inputs_and_at_least_the_mean_shift() -> None:
    model = SpikingMLP([64, 32, 10], generator=torch.Generator().manual_seed(0))
    p = params_of(model)
    x, _ = _data()
    assert feature_drift(model, p, x, x, CFG) == pytest.approx(0.0, abs=1e-5)
    counts = hidden_counts(model, p, x, CFG)
    assert counts.shape == (80, 32) and float(counts.min()) >= 0 and float(counts.max()) <= CFG.num_steps
    # W2 of a pure mean shift of the features is the shift's norm: compare with the Gaussian formula directly
    xr = rotate_images(x, 90)
    d = feature_drift(model, p, x, xr, CFG)
    fa = hidden_counts(model, p, x, CFG).numpy()
    fb = hidden_counts(model, p, xr, CFG).numpy()
    assert d > 0 and d >= np.linalg.norm(fa.mean(0) - fb.mean(0)) - 1e-9  # W2 >= distance of the means
    with pytest.raises(ValueError, match=">= 2"):
        feature_drift(model, p, x[:1], x, CFG)


def test_model_drift_and_task_optimum() -> None:
    model = SpikingMLP([64, 16, 10], generator=torch.Generator().manual_seed(0))
    p = params_of(model)
    x, y = _data()
    a = task_optimum(model, p, x, y, CFG, seed=3)
    b = task_optimum(model, p, x, y, CFG, seed=3)
    assert model_drift(a, b) == 0.0 and model_drift(a, p) > 0.0
    flat = torch.cat([(a[n] - p[n]).flatten() for n in p])
    assert model_drift(a, p) == pytest.approx(float(flat.double().norm()), rel=1e-9)
    assert all(torch.equal(v, params_of(model)[n]) for n, v in p.items())  # the model itself is untouched
    with pytest.raises(ValueError):
        model_drift(a, {"x": torch.zeros(1)})
