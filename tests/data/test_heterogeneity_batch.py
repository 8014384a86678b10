"""The stacked heterogeneity report equals the per-client functions (js_divergence, fit_gaussian,
hellinger_gaussian) run client by client, including empty and one-sample clients, diagonal covariances, the
blocked sums and the wide-feature path."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spikefed.data import heterogeneity_batch as hb
from spikefed.data import heterogeneity as het
from spikefed.data.heterogeneity import client_heterogeneity, fit_gaussian, hellinger_gaussian, js_divergence
from spikefed.data.partition import label_distribution


def _reference(x: np.ndarray, labels: np.ndarray, parts: list[np.ndarray], c: int, eps: float, diag: bool
               ) -> tuple[list[float], list[float], list[list[int]]]:
    """The report's distances the plain way: one client at a time, counts by a Python loop."""
    feats = x.reshape(len(labels), -1)
    mu_all, cov_all = fit_gaussian(feats, diag)
    glob = [int((labels == k).sum()) for k in range(c)]
    jsd, hell, counts = [], [], []
    for p in parts:
        row = [int(sum(1 for j in p if labels[j] == k)) for k in range(c)]
        counts.append(row)
        if len(p) == 0:
            jsd.append(math.nan)
            hell.append(math.nan)
            continue
        jsd.append(js_divergence(row, glob))
        mu, cov = fit_gaussian(feats[p], diag)
        hell.append(hellinger_gaussian(mu, cov, mu_all, cov_all, eps=eps))
    return jsd, hell, counts


def _parts(rng: np.random.Generator, n: int, clients: int) -> list[np.ndarray]:
    order = rng.permutation(n)
    cuts = np.sort(rng.choice(np.arange(1, n), size=clients - 1, replace=False))
    parts = [np.sort(p) for p in np.split(order, cuts)]
    parts[3] = parts[3][:1]  # one sample
    parts[5] = np.zeros(0, dtype=np.int64)  # empty
    return parts


def _close(a: list[float], b: list[float]) -> None:
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert (math.isnan(u) and math.isnan(v)) or u == pytest.approx(v, abs=1e-12)


@pytest.mark.parametrize("diag", [False, True])
@pytest.mark.parametrize("block_bytes", [hb.SEGMENT_BLOCK_BYTES, 200])  # 200: a block per client or two
def test_stacked_report_equals_the_per_client_functions(diag: bool, block_bytes: int,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hb, "SEGMENT_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3)) * np.array([1.0, 2.0, 0.5]) + rng.normal(size=3)
    labels = rng.integers(0, 4, size=300)
    parts = _parts(rng, 300, 17)
    report = client_heterogeneity(x, labels, parts, 4, eps=0.05, covariance="diag" if diag else "full")
    jsd, hell, counts = _reference(x, labels, parts, 4, 0.05, diag)
    _close(report["jsd"], jsd)
    _close(report["hellinger"], hell)
    assert report["label_counts"] == counts and report["sizes"] == [len(p) for p in parts]
    assert report["classes"] == [sum(1 for v in row if v) for row in counts]
    assert math.isnan(report["hellinger"][5]) and not math.isnan(report["hellinger"][3])


def test_wide_features_take_the_per_client_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    x, labels = rng.normal(size=(120, 5)), rng.integers(0, 3, size=120)
    parts = _parts(rng, 120, 9)
    stacked = client_heterogeneity(x, labels, parts, 3, eps=0.1)
    monkeypatch.setattr(het, "BATCH_COVARIANCE_BYTES", 0)
    loop = client_heterogeneity(x, labels, parts, 3, eps=0.1)
    _close(stacked["hellinger"], loop["hellinger"])
    _close(loop["hellinger"], _reference(x, labels, parts, 3, 0.1, False)[1])


def test_pca_report_of_a_tall_set_equals_the_per_client_functions_on_svd_axes() -> None:
    """N > 4 D: the axes come from X^T X; the distances equal those on the full SVD's axes."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    labels = rng.integers(0, 3, size=400)
    parts = _parts(rng, 400, 12)
    report = client_heterogeneity(x, labels, parts, 3, eps=1e-6, pca_dims=2)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    _, hell, _ = _reference(centred @ vt[:2].T, labels, parts, 3, 1e-6, False)
    for u, v in zip(report["hellinger"], hell):
        assert (math.isnan(u) and math.isnan(v)) or u == pytest.approx(v, abs=1e-9)


def test_failing_factorisation_raises_the_per_client_error() -> None:
    x = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])  # rank 1: singular without a ridge
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError) as plain:  # what the one-client function says for the first client
        mu, cov = fit_gaussian(x[:2], False)
        hellinger_gaussian(mu, cov, *fit_gaussian(x, False), eps=0.0)
    assert "must be symmetric positive definite" in str(plain.value)
    with pytest.raises(ValueError) as stacked:
        client_heterogeneity(x, labels, [np.arange(2), np.arange(2, 4)], 2, eps=0.0)
    assert str(stacked.value) == str(plain.value)


def test_label_counts_and_part_errors() -> None:
    labels = np.array([2, 0, 1, 1, 2, 2])
    parts = [np.array([0, 4]), [1, 2, 3], np.zeros(0), np.array([5], dtype=np.uint8)]
    assert label_distribution(labels, parts, 3).tolist() == [[0, 0, 2], [1, 2, 0], [0, 0, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match=r"parts\[1\] indices must lie in \[0, 6\)"):
        label_distribution(labels, [np.array([0]), np.array([6])], 3)
    with pytest.raises(ValueError, match=r"parts\[1\] must be a 1-D integer index array"):
        label_distribution(labels, [np.array([0]), np.array([0.5])], 3)
