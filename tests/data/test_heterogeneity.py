from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spikefed.data.heterogeneity import (
    TABLE_COLUMNS,
    client_heterogeneity,
    format_table,
    hellinger_gaussian,
    js_divergence,
)

LOG2_3 = math.log2(3.0)


def entropy2(p: list[float]) -> float:
    """Shannon entropy in bits of a normalised list (plain Python, 0 log 0 = 0)."""
    return -sum(v * math.log2(v) for v in p if v > 0)


def normalised(v: np.ndarray) -> list[float]:
    return [float(x) / float(sum(v)) for x in v]


def h2_1d(m1: float, v1: float, m2: float, v2: float) -> float:
    """Closed form H^2 between N(m1, s1^2) and N(m2, s2^2), written with variances v = s^2."""
    s1, s2 = math.sqrt(v1), math.sqrt(v2)
    return 1 - math.sqrt(2 * s1 * s2 / (v1 + v2)) * math.exp(-((m1 - m2) ** 2) / (4 * (v1 + v2)))


def spd(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T + 0.5 * np.eye(d)


# ------------------------------------------------------------------------------------------------- JSD


def test_jsd_identical_is_zero() -> None:
    assert js_divergence([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(0.0, abs=1e-15)
    assert js_divergence([1, 2, 3, 0], [2, 4, 6, 0]) == pytest.approx(0.0, abs=1e-15)  # normalised inside


def test_jsd_disjoint_supports_is_one_bit() -> None:
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0, abs=1e-12)
    assert js_divergence([3, 1, 0, 0], [0, 0, 5, 5]) == pytest.approx(1.0, abs=1e-12)
    assert js_divergence([1, 0], [0, 1], base=math.e) == pytest.approx(math.log(2), abs=1e-12)


def test_jsd_hand_value() -> None:
    # p = [1, 0], q = [1/2, 1/2], m = [3/4, 1/4]:
    #   KL(p||m) = log2(4/3) = 2 - log2 3
    #   KL(q||m) = 1/2 log2((1/2)/(3/4)) + 1/2 log2((1/2)/(1/4)) = 1/2 (1 - log2 3) + 1/2 = 1 - 1/2 log2 3
    #   JSD = 1/2 (2 - log2 3) + 1/2 (1 - 1/2 log2 3) = 3/2 - 3/4 log2 3 = 0.3112781...
    expected = 1.5 - 0.75 * LOG2_3
    assert expected == pytest.approx(0.3112781, abs=1e-7)
    assert js_divergence([1, 0], [0.5, 0.5]) == pytest.approx(expected, abs=1e-12)
    assert js_divergence([0.5, 0.5], [1, 0]) == pytest.approx(expected, abs=1e-12)
    assert js_divergence([1, 0], [0.5, 0.5], base=math.e) == pytest.approx(expected * math.log(2), abs=1e-12)


def test_jsd_matches_entropy_form_symmetric_and_bounded() -> None:
    # Independent formula: JSD = H(m) - (H(p) + H(q)) / 2.
    g = np.random.default_rng(0)
    for _ in range(50):
        p = g.random(6) * (g.random(6) > 0.3)
        q = g.random(6) * (g.random(6) > 0.3)
        p[0] += 0.1
        q[1] += 0.1
        pn, qn = normalised(p), normalised(q)
        m = [(a + b) / 2 for a, b in zip(pn, qn)]
        expected = entropy2(m) - (entropy2(pn) + entropy2(qn)) / 2
        assert js_divergence(p, q) == pytest.approx(expected, abs=1e-12)
        assert js_divergence(p, q) == pytest.approx(js_divergence(q, p), abs=1e-15)
        assert 0.0 <= js_divergence(p, q) <= 1.0
    assert js_divergence(torch.tensor([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(1.5 - 0.75 * LOG2_3)


def test_jsd_bad_input() -> None:
    with pytest.raises(ValueError, match="p must be nonnegative"):
        js_divergence([-0.1, 1.1], [0.5, 0.5])
    with pytest.raises(ValueError, match="q must have a positive sum"):
        js_divergence([1, 0], [0, 0])
    with pytest.raises(ValueError, match="p and q must have the same length, got 2 and 3"):
        js_divergence([1, 0], [1, 1, 1])
    with pytest.raises(ValueError, match=r"p must be a non-empty 1-D vector, got shape \[2, 2\]"):
        js_divergence([[1, 0], [0, 1]], [1, 1])
    with pytest.raises(ValueError, match="q must be finite"):
        js_divergence([1, 0], [math.nan, 1])
    with pytest.raises(ValueError, match="base must be a finite float > 1"):
        js_divergence([1, 0], [0, 1], base=1.0)


# -------------------------------------------------------------------------------------------- Hellinger


def test_hellinger_identical_is_zero() -> None:
    mu = np.array([0.3, -1.0, 2.0, 0.0, 5.0])
    cov = spd(5, 1)
    assert hellinger_gaussian(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-6)
    # Singular (constant-feature) covariances are made usable by the eps ridge.
    zero = np.zeros((5, 5))
    assert hellinger_gaussian(mu, zero, mu, zero) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("m1", "v1", "m2", "v2"),
    [(0.0, 1.0, 0.0, 4.0), (0.0, 1.0, 1.0, 1.0), (1.5, 0.25, -2.0, 3.0), (10.0, 2.0, 10.5, 0.1)],
)
def test_hellinger_1d_closed_form(m1: float, v1: float, m2: float, v2: float) -> None:
    h = hellinger_gaussian([m1], [[v1]], [m2], [[v2]], eps=0.0)
    assert h**2 == pytest.approx(h2_1d(m1, v1, m2, v2), abs=1e-12)
    # eps adds to both variances; scalars are accepted for d = 1.
    h_eps = hellinger_gaussian(m1, v1, m2, v2, eps=0.3)
    assert h_eps**2 == pytest.approx(h2_1d(m1, v1 + 0.3, m2, v2 + 0.3), abs=1e-12)


def test_hellinger_equal_variances_hand_value() -> None:
    # N(0, 1) vs N(1, 1): H^2 = 1 - exp(-1/8).
    assert hellinger_gaussian([0.0], [[1.0]], [1.0], [[1.0]], eps=0.0) == pytest.approx(
        math.sqrt(1 - math.exp(-0.125)), abs=1e-12
    )


def test_hellinger_multivariate_against_product_of_1d() -> None:
    # Independent coordinates: BC = prod_k BC_k with 1 - BC_k = H_k^2 from the 1-D closed form; a common
    # rotation of both Gaussians (mu -> R mu, S -> R S R^T) leaves H unchanged, exercising full covariances.
    g = np.random.default_rng(2)
    d = 6
    m1, m2 = g.normal(size=d), g.normal(size=d) * 0.5
    v1, v2 = g.uniform(0.2, 3.0, size=d), g.uniform(0.2, 3.0, size=d)
    bc = math.prod(1 - h2_1d(m1[k], v1[k], m2[k], v2[k]) for k in range(d))
    expected = math.sqrt(1 - bc)
    assert hellinger_gaussian(m1, np.diag(v1), m2, np.diag(v2), eps=0.0) == pytest.approx(expected, abs=1e-10)
    r, _ = np.linalg.qr(g.normal(size=(d, d)))
    rotated = hellinger_gaussian(r @ m1, r @ np.diag(v1) @ r.T, r @ m2, r @ np.diag(v2) @ r.T, eps=0.0)
    assert rotated == pytest.approx(expected, abs=1e-9)


def test_hellinger_far_apart_symmetric_and_bounded() -> None:
    cov = spd(3, 4)
    far = hellinger_gaussian(np.zeros(3), cov, np.full(3, 100.0), cov)
    assert 0.999 < far <= 1.0
    a = hellinger_gaussian(np.zeros(3), cov, np.ones(3), spd(3, 5))
    b = hellinger_gaussian(np.ones(3), spd(3, 5), np.zeros(3), cov)
    assert a == pytest.approx(b, abs=1e-12) and 0.0 < a < 1.0
    # High dimension: log-determinants do not overflow (det of 500 * I_400 is 10^1079).
    big = 500.0 * np.eye(400)
    assert hellinger_gaussian(np.zeros(400), big, np.zeros(400), big) == pytest.approx(0.0, abs=1e-6)


def test_hellinger_bad_input() -> None:
    eye = np.eye(2)
    with pytest.raises(ValueError, match="eps must be a finite float >= 0"):
        hellinger_gaussian(np.zeros(2), eye, np.zeros(2), eye, eps=-1e-6)
    with pytest.raises(ValueError, match=r"cov2 must have shape \[2, 2\] to match mu2, got \[3, 3\]"):
        hellinger_gaussian(np.zeros(2), eye, np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="mu1 and mu2 must have the same dimension, got 2 and 3"):
        hellinger_gaussian(np.zeros(2), eye, np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match=r"cov1 \+ eps\*I must be symmetric positive definite"):
        hellinger_gaussian(np.zeros(2), -eye, np.zeros(2), eye, eps=0.0)
    with pytest.raises(ValueError, match="mu1 must be finite"):
        hellinger_gaussian([math.inf, 0.0], eye, np.zeros(2), eye)


# ---------------------------------------------------------------------------------- client heterogeneity


def test_client_heterogeneity_by_hand() -> None:
    x = np.array([0.0, 2.0, 4.0, 8.0])[:, None]
    labels = np.array([0, 0, 1, 1])
    eps = 1e-3
    report = client_heterogeneity(x, labels, [np.array([0, 1]), np.array([2, 3])], 2, eps=eps)
    # Each client holds one class of a 50/50 set: JSD([1, 0], [1/2, 1/2]) = 3/2 - 3/4 log2 3 (see test above).
    jsd = 1.5 - 0.75 * LOG2_3
    assert report["jsd"] == pytest.approx([jsd, jsd], abs=1e-12)
    assert report["sizes"] == [2, 2] and report["classes"] == [1, 1]
    assert report["label_counts"] == [[2, 0], [0, 2]]
    # Gaussian fits with ddof = 1: all (mean 3.5, var 35/3); client 0 (1, 2); client 1 (6, 8).
    h0 = math.sqrt(h2_1d(1.0, 2.0 + eps, 3.5, 35 / 3 + eps))
    h1 = math.sqrt(h2_1d(6.0, 8.0 + eps, 3.5, 35 / 3 + eps))
    assert report["hellinger"] == pytest.approx([h0, h1], abs=1e-12)
    assert report["mean_jsd"] == pytest.approx(jsd) and report["max_jsd"] == pytest.approx(jsd)
    assert report["mean_hellinger"] == pytest.approx((h0 + h1) / 2)
    assert report["max_hellinger"] == pytest.approx(max(h0, h1))


def test_client_heterogeneity_whole_single_and_empty_clients() -> None:
    g = np.random.default_rng(0)
    x = g.normal(size=(60, 2, 2))
    labels = np.arange(60) % 3
    parts = [np.arange(60), np.array([7]), np.array([], dtype=np.int64)]
    report = client_heterogeneity(torch.from_numpy(x).float(), labels, parts, 3)
    assert report["jsd"][0] == pytest.approx(0.0, abs=1e-12)
    assert report["hellinger"][0] == pytest.approx(0.0, abs=1e-5)
    # Single sample: covariance taken as 0, i.e. eps * I after the ridge; label [0, 1, 0] vs uniform.
    flat = x.reshape(60, 4).astype(np.float32).astype(np.float64)
    centred = flat - flat.mean(axis=0)
    expected = hellinger_gaussian(flat[7], np.zeros((4, 4)), flat.mean(axis=0), centred.T @ centred / 59)
    assert report["hellinger"][1] == pytest.approx(expected, abs=1e-9) and 0.99 < expected <= 1.0
    assert report["jsd"][1] == pytest.approx(
        entropy2([1 / 6, 2 / 3, 1 / 6]) - (entropy2([0, 1, 0]) + entropy2([1 / 3] * 3)) / 2, abs=1e-12
    )
    # Empty client: nan, left out of the summaries.
    assert math.isnan(report["jsd"][2]) and math.isnan(report["hellinger"][2]) and report["sizes"][2] == 0
    assert report["mean_jsd"] == pytest.approx(report["jsd"][1] / 2)
    assert report["max_hellinger"] == pytest.approx(report["hellinger"][1])


def test_client_heterogeneity_flattens_and_diag_option() -> None:
    g = np.random.default_rng(1)
    x = g.normal(size=(80, 1, 2, 3)) * np.arange(1, 7).reshape(1, 1, 2, 3)
    labels = g.integers(0, 4, size=80)
    parts = [np.arange(0, 30), np.arange(30, 80)]
    images = client_heterogeneity(x, labels, parts, 4)
    flat = client_heterogeneity(x.reshape(80, 6), labels, parts, 4)
    assert images == flat
    # covariance="diag": H^2 = 1 - prod over features of the 1-D Bhattacharyya coefficients.
    diag = client_heterogeneity(x, labels, parts, 4, covariance="diag", eps=0.01)
    xf = x.reshape(80, 6)
    for i, p in enumerate(parts):
        bc = math.prod(
            1 - h2_1d(xf[p, k].mean(), xf[p, k].var(ddof=1) + 0.01, xf[:, k].mean(), xf[:, k].var(ddof=1) + 0.01)
            for k in range(6)
        )
        assert diag["hellinger"][i] == pytest.approx(math.sqrt(1 - bc), abs=1e-10)


def test_client_heterogeneity_ranks_skewed_partition_higher() -> None:
    # Two well-separated classes: a label-sorted split is far from the whole set in labels and features.
    g = np.random.default_rng(3)
    labels = np.repeat([0, 1], 100)
    x = g.normal(size=(200, 3)) + 4.0 * labels[:, None]
    mixed = client_heterogeneity(x, labels, [np.arange(0, 200, 2), np.arange(1, 200, 2)], 2)
    split = client_heterogeneity(x, labels, [np.arange(100), np.arange(100, 200)], 2)
    assert split["mean_jsd"] == pytest.approx(1.5 - 0.75 * LOG2_3)
    assert mixed["mean_jsd"] == pytest.approx(0.0, abs=1e-12)
    assert split["mean_hellinger"] > 0.5 > 0.2 > mixed["mean_hellinger"]


def test_client_heterogeneity_bad_input() -> None:
    x = np.zeros((4, 2))
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"x of shape \[N, ...\] with N = len\(labels\) = 4, got \[3, 2\]"):
        client_heterogeneity(x[:3], labels, [np.arange(4)], 2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\)"):
        client_heterogeneity(x, labels, [np.arange(4)], 1)
    with pytest.raises(ValueError, match=r"unknown covariance 'low-rank'; valid choices: 'full', 'diag'"):
        client_heterogeneity(x, labels, [np.arange(4)], 2, covariance="low-rank")
    with pytest.raises(ValueError, match=r"parts\[0\] indices must lie in \[0, 4\)"):
        client_heterogeneity(x, labels, [np.array([4])], 2)


# ----------------------------------------------------------------------------------------------- table


def test_format_table() -> None:
    x = np.array([0.0, 2.0, 4.0, 8.0, 1.0])[:, None]
    labels = np.array([0, 0, 1, 1, 2])
    report = client_heterogeneity(x, labels, [np.array([0, 1, 2]), np.array([3, 4])], 3)
    rows = format_table(report)
    assert TABLE_COLUMNS == ("client", "size", "classes", "jsd", "hellinger")
    assert [r[:3] for r in rows] == [(0, 3, 2), (1, 2, 2)]
    assert [r[3] for r in rows] == report["jsd"] and [r[4] for r in rows] == report["hellinger"]
    assert all(type(v) is float for r in rows for v in r[3:])
    bad = dict(report, jsd=[0.1])
    with pytest.raises(ValueError, match="report lists must have one entry per client"):
        format_table(bad)
    with pytest.raises(ValueError, match="report must be a dict from client_heterogeneity"):
        format_table({"sizes": [1]})


def test_pca_subspace_hellinger_matches_manual_projection() -> None:
    """pca_dims=k: Gaussian fits in the top-k principal subspace of all features (checked with numpy's SVD)."""
    import numpy as np

    from spikefed.data.heterogeneity import client_heterogeneity, hellinger_gaussian

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12))
    labels = rng.integers(0, 3, size=200)
    parts = [np.arange(0, 80), np.arange(80, 200)]
    got = client_heterogeneity(x, labels, parts, 3, pca_dims=3, eps=1e-6)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    z = centred @ vt[:3].T
    mu, cov = z.mean(axis=0), np.cov(z, rowvar=False)
    for i, p in enumerate(parts):
        zi = z[p]
        want = hellinger_gaussian(zi.mean(axis=0), np.cov(zi, rowvar=False), mu, cov, eps=1e-6)
        assert abs(got["hellinger"][i] - want) < 1e-9
    full = client_heterogeneity(x, labels, parts, 3, eps=1e-6)
    assert full["hellinger"] != got["hellinger"]  # the projection changes the measure
