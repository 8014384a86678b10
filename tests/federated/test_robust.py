"""Robust aggregation and simulated attacks, against independent references (numpy, scipy, plain loops)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from spikefed.experiment.config import ConfigError, RunSettings, build_settings
from spikefed.experiment.runner import build_spec, robustness_spec
from spikefed.federated.aggregation import validate_updates
from spikefed.federated.attacks import (
    ATTACKS,
    attack_delta,
    attack_update,
    choose_malicious,
    flip_labels,
)
from spikefed.federated.robust import (
    DEFENSES,
    RobustAggregator,
    RobustnessSpec,
    apply_chart_delta,
    chart_deltas,
    coordinate_median,
    coordinate_trimmed_mean,
    fltrust_delta,
    krum,
    krum_parameters,
    krum_scores,
    multi_krum,
    norm_clip_mean,
    pairwise_sq_distances,
    robust_delta,
)
from spikefed.federated.simulation import Simulation
from spikefed.seeding import Purpose, numpy_rng
from spikefed.federated.strategies import make_strategy
from spikefed.federated.types import ClientUpdate
from spikefed.manifold import EUCLIDEAN, POSITIVE, UNIT_INTERVAL, circular

# ------------------------------------------------------------------------------------ coordinate-wise rules


@pytest.mark.parametrize("k", [1, 2, 5, 6, 11])
def test_median_matches_numpy(k: int) -> None:
    rng = np.random.default_rng(k)
    x = rng.standard_normal((k, 7, 3))
    got = coordinate_median(torch.from_numpy(x))
    np.testing.assert_allclose(got.numpy(), np.median(x, axis=0), rtol=0, atol=1e-15)


@pytest.mark.parametrize("k,beta", [(5, 0.0), (5, 0.2), (6, 0.2), (10, 0.1), (10, 0.25), (11, 0.45), (3, 0.3)])
def test_trimmed_mean_matches_scipy(k: int, beta: float) -> None:
    rng = np.random.default_rng(100 + k)
    x = rng.standard_normal((k, 4, 5)) * 3.0
    got = coordinate_trimmed_mean(torch.from_numpy(x), beta)
    np.testing.assert_allclose(got.numpy(), stats.trim_mean(x, beta, axis=0), rtol=1e-12, atol=1e-12)


def test_trimmed_mean_rejects_bad_fractions() -> None:
    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="0.5"):
        coordinate_trimmed_mean(x, 0.5)
    with pytest.raises(ValueError, match="0.5"):
        coordinate_trimmed_mean(x, -0.1)
    # beta < 0.5 always keeps at least one value: t = floor(beta K) < K / 2
    assert torch.equal(coordinate_trimmed_mean(x[:1], 0.49), x[0])


def test_trimmed_mean_zero_trim_is_plain_mean_and_median_rejects_nan() -> None:
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(coordinate_trimmed_mean(x, 0.1), x.mean(0))  # floor(0.4) = 0
    bad = x.clone()
    bad[1, 2] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        coordinate_median(bad)


# ------------------------------------------------------------------------------------------------- Krum


def _loop_sq_distances(points: np.ndarray) -> np.ndarray:
    k = points.shape[0]
    d = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            d[a, b] = float(((points[a] - points[b]) ** 2).sum())
    return d


def _loop_krum_scores(points: np.ndarray, f: int) -> np.ndarray:
    k = points.shape[0]
    d = _loop_sq_distances(points)
    scores = np.zeros(k)
    for a in range(k):
        others = sorted(d[a, b] for b in range(k) if b != a)
        scores[a] = sum(others[:k - f - 2])
    return scores


def _hand_built() -> np.ndarray:
    """Four honest updates clustered around (1, 1), one far outlier; the one nearest the others is #2."""
    return np.array([[1.1, 0.9], [0.8, 1.2], [1.0, 1.0], [1.3, 1.1], [-8.0, 9.0]])


def test_krum_picks_the_central_honest_update() -> None:
    pts = _hand_built()
    deltas = {"w": torch.from_numpy(pts)}
    d2 = pairwise_sq_distances(deltas)
    np.testing.assert_allclose(d2.numpy(), _loop_sq_distances(pts), rtol=1e-14)
    scores = krum_scores(d2, f=1)
    np.testing.assert_allclose(scores.numpy(), _loop_krum_scores(pts, 1), rtol=1e-14)
    chosen, idx = krum(deltas, f=1)
    assert idx == 2 and int(np.argmin(_loop_krum_scores(pts, 1))) == 2
    assert torch.equal(chosen["w"], torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert float(scores[4]) > 50 * float(scores[:4].max())  # the outlier scores far worst


@pytest.mark.parametrize("f", [0, 1, 3])
def test_krum_scores_match_double_loop_on_random_multi_tensor_data(f: int) -> None:
    rng = np.random.default_rng(f)
    a, b = rng.standard_normal((8, 3, 2)), rng.standard_normal((8, 5))
    deltas = {"a": torch.from_numpy(a), "b": torch.from_numpy(b)}
    flat = np.concatenate([a.reshape(8, -1), b], axis=1)
    got = krum_scores(pairwise_sq_distances(deltas), f)
    np.testing.assert_allclose(got.numpy(), _loop_krum_scores(flat, f), rtol=1e-12)


def test_krum_needs_enough_updates() -> None:
    d2 = pairwise_sq_distances({"w": torch.randn(4, 3, dtype=torch.float64)})
    krum_scores(d2, 1)  # 4 - 1 - 2 = 1 neighbour: fine
    with pytest.raises(ValueError, match="K - f - 2"):
        krum_scores(d2, 2)


def test_pairwise_distances_wrap_circular_parameters() -> None:
    # arcs -0.4 and +0.45 on a ring of period 1 are 0.15 apart through the wrap, not 0.85
    deltas = {"d": torch.tensor([[-0.4], [0.45], [0.0]], dtype=torch.float64)}
    d2 = pairwise_sq_distances(deltas, {"d": circular(1.0)})
    assert d2[0, 1].item() == pytest.approx(0.15**2)
    assert d2[0, 2].item() == pytest.approx(0.4**2)
    assert pairwise_sq_distances(deltas)[0, 1].item() == pytest.approx(0.85**2)  # euclidean: no wrap


def test_multi_krum_is_the_mean_of_the_m_best() -> None:
    pts = _hand_built()
    deltas = {"w": torch.from_numpy(pts)}
    scores = _loop_krum_scores(pts, 1)
    best3 = sorted(np.argsort(scores, kind="stable")[:3].tolist())
    got, selected = multi_krum(deltas, f=1, m=3)
    assert sorted(selected) == best3 and 4 not in selected
    np.testing.assert_allclose(got["w"].numpy(), pts[best3].mean(0), rtol=1e-14)
    # weighted: sum_S p_k d_k / sum_S p_k
    w = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    got_w, _ = multi_krum(deltas, f=1, m=3, weights=torch.from_numpy(w))
    np.testing.assert_allclose(got_w["w"].numpy(), (w[best3, None] * pts[best3]).sum(0) / w[best3].sum(), rtol=1e-14)
    # m = K - f by default in the dispatcher, and the outlier is never among the 4 best here
    got_default = robust_delta("multikrum", deltas, None, krum_f=1)
    np.testing.assert_allclose(got_default["w"].numpy(), pts[:4].mean(0), rtol=1e-14)


# --------------------------------------------------------------------------------------- norm clipping


def test_norm_clipping_with_a_bound_and_with_the_median_norm() -> None:
    a = np.array([[3.0, 4.0], [0.6, 0.8], [0.0, 0.0], [30.0, -40.0]])  # norms 5, 1, 0, 50
    deltas = {"w": torch.from_numpy(a[:, :1]), "v": torch.from_numpy(a[:, 1:])}  # norm over both tensors
    got, c = norm_clip_mean(deltas, None, clip_norm=2.0)
    factors = np.array([2.0 / 5.0, 1.0, 1.0, 2.0 / 50.0])
    expected = (factors[:, None] * a).mean(0)
    assert c == 2.0
    np.testing.assert_allclose([got["w"].item(), got["v"].item()], expected, rtol=1e-14)
    got_m, c_m = norm_clip_mean(deltas, torch.tensor([1.0, 1.0, 2.0, 4.0]))
    assert c_m == pytest.approx(np.median([5.0, 1.0, 0.0, 50.0]))  # 3.0
    p = np.array([1.0, 1.0, 2.0, 4.0]) / 8.0
    f_m = np.minimum(1.0, 3.0 / np.maximum(np.array([5.0, 1.0, 0.0, 50.0]), 1e-300))
    np.testing.assert_allclose([got_m["w"].item(), got_m["v"].item()], (p[:, None] * f_m[:, None] * a).sum(0),
                               rtol=1e-14)
    clipped_norms = np.linalg.norm(f_m[:, None] * a, axis=1)
    assert (clipped_norms <= 3.0 + 1e-12).all()


# ------------------------------------------------------------------------------------ manifolds / charts


def test_median_on_positive_and_unit_interval_parameters_stays_on_the_manifold() -> None:
    rng = np.random.default_rng(3)
    x = {"thr": torch.full((6,), 0.5, dtype=torch.float64), "beta": torch.full((6,), 0.9, dtype=torch.float64)}
    manifolds = {"thr": POSITIVE, "beta": UNIT_INTERVAL}
    thr = np.exp(rng.normal(-0.5, 2.0, (5, 6)))  # spread over orders of magnitude, all > 0
    beta = 1.0 / (1.0 + np.exp(-rng.normal(2.0, 3.0, (5, 6))))
    clients = [{"thr": torch.from_numpy(thr[k]), "beta": torch.from_numpy(beta[k])} for k in range(5)]
    for defense in DEFENSES:
        out = RobustAggregator(defense, trim_fraction=0.2, reference=clients[0])(x, clients, None, manifolds)
        assert (out["thr"] > 0).all() and ((out["beta"] > 0) & (out["beta"] < 1)).all(), defense
    med = RobustAggregator("median")(x, clients, None, manifolds)
    # the chart maps are monotone: for odd K the median in the chart is the median of the values
    np.testing.assert_allclose(med["thr"].numpy(), np.median(thr, axis=0), rtol=1e-12)
    np.testing.assert_allclose(med["beta"].numpy(), np.median(beta, axis=0), rtol=1e-12)
    # a boosted (huge, negative) log-delta still leaves the threshold positive
    huge = [{"thr": torch.full((6,), 1e-30, dtype=torch.float64), "beta": c["beta"]} for c in clients]
    out = RobustAggregator("norm_clip")(x, huge, None, manifolds)
    assert (out["thr"] > 0).all()


def test_circular_delays_wrap_through_zero() -> None:
    period = 10.0
    x = {"d": torch.tensor([0.0, 5.0], dtype=torch.float64)}
    clients = [{"d": torch.tensor([9.9, 4.9], dtype=torch.float64)},
               {"d": torch.tensor([0.1, 5.2], dtype=torch.float64)},
               {"d": torch.tensor([0.05, 5.1], dtype=torch.float64)}]
    m = {"d": circular(period)}
    deltas = chart_deltas(x, clients, m)
    np.testing.assert_allclose(deltas["d"][:, 0].numpy(), [-0.1, 0.1, 0.05], atol=1e-12)
    med = RobustAggregator("median")(x, clients, None, m)
    np.testing.assert_allclose(med["d"].numpy(), [0.05, 5.1], atol=1e-12)
    # all clients just below zero: the result wraps into [0, P)
    below = [{"d": torch.tensor([9.8 + 0.01 * k, 5.0], dtype=torch.float64)} for k in range(3)]
    for defense in DEFENSES:
        out = RobustAggregator(defense, reference=below[1])(x, below, None, m)
        assert 9.7 < out["d"][0].item() < period, defense


def test_aggregator_hook_keeps_the_server_optimizer() -> None:
    rng = np.random.default_rng(0)
    x = {"w": torch.zeros(5, dtype=torch.float64)}
    ups = [ClientUpdate(k, 10, {"w": torch.from_numpy(rng.standard_normal(5))}) for k in range(5)]
    med = np.median(np.stack([u.params["w"].numpy() for u in ups]), axis=0)
    fedavg = make_strategy("fedavg")
    fedavg.aggregator = RobustAggregator("median")
    np.testing.assert_allclose(fedavg.aggregate_fit(1, x, ups)["w"].numpy(), med, rtol=1e-14)
    half = make_strategy("fedavg", server_lr=0.5)
    half.aggregator = RobustAggregator("median")
    np.testing.assert_allclose(half.aggregate_fit(1, x, ups)["w"].numpy(), 0.5 * med, rtol=1e-12)
    plain = make_strategy("fedavg", server_lr=0.5)  # no aggregator: the weighted mean, as before
    mean = np.mean(np.stack([u.params["w"].numpy() for u in ups]), axis=0)
    np.testing.assert_allclose(plain.aggregate_fit(1, x, ups)["w"].numpy(), 0.5 * mean, rtol=1e-12)
    assert "aggregator" not in fedavg.state_dict()["config"]


def test_small_rounds_fall_back_for_krum() -> None:
    deltas = {"w": torch.tensor([[1.0], [3.0]], dtype=torch.float64)}
    assert robust_delta("krum", deltas)["w"].item() == 2.0  # K < 3: coordinate median
    three = {"w": torch.tensor([[1.0], [1.1], [9.0]], dtype=torch.float64)}
    assert robust_delta("krum", three, krum_f=0)["w"].item() in (1.0, 1.1)
    with pytest.raises(ValueError, match="krum_f=5 needs at least f [+] 3 = 8 updates"):  # never clamped
        robust_delta("krum", three, krum_f=5)
    with pytest.raises(ValueError, match="multikrum_m=4 must lie in"):
        robust_delta("multikrum", three, krum_f=0, multikrum_m=4)


def test_krum_parameters_defaults_and_refusals() -> None:
    # defaults: f = floor((K - 3) / 2), m = K - f; K < 3 without a configured f: the median (None)
    for k in range(3, 15):
        f = max(j for j in range(k) if 2 * j + 2 < k)
        assert krum_parameters(k) == (f, k - f)
    assert krum_parameters(2) is None and krum_parameters(1) is None
    assert krum_parameters(10, 2) == (2, 8) and krum_parameters(10, 2, 3) == (2, 3) and krum_parameters(3, 0) == (0, 3)
    for bad in ((10, 8), (2, 0), (10, -1), (10, 2, 0), (10, 2, 11), (10, True)):
        with pytest.raises(ValueError):
            krum_parameters(*bad)


def test_short_round_falls_back_to_the_median_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(4)
    pts = rng.standard_normal((4, 3))
    x = {"w": torch.zeros(3, dtype=torch.float64)}
    clients = [{"w": torch.from_numpy(p)} for p in pts]
    with caplog.at_level("WARNING", logger="spikefed.federated.robust"):
        out = RobustAggregator("multikrum", krum_f=2)(x, clients)  # K = 4 < f + 3 = 5
    np.testing.assert_allclose(out["w"].numpy(), np.median(pts, axis=0), rtol=1e-14)
    assert "coordinate median" in caplog.text and "krum_f=2" in caplog.text
    with pytest.raises(ValueError, match="krum_f must be an integer"):
        RobustAggregator("krum", krum_f=2.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- FLTrust


def _loop_fltrust(rows: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FLTrust with plain Python loops: TS_k = max(0, cos), D = sum TS_k |g0|/|d_k| d_k / sum TS_k."""
    r0 = math.sqrt(sum(v * v for v in ref))
    trust, out = [], [0.0] * len(ref)
    for d in rows:
        n = math.sqrt(sum(v * v for v in d))
        cos = 0.0 if n == 0 or r0 == 0 else sum(a * b for a, b in zip(d, ref)) / (n * r0)
        trust.append(max(0.0, cos))
    total = sum(trust)
    if total > 0:
        for d, t in zip(rows, trust):
            n = math.sqrt(sum(v * v for v in d))
            for i, v in enumerate(d):
                out[i] += (t * r0 / n * v if n > 0 else 0.0) / total
    return np.array(out), np.array(trust)


def test_fltrust_hand_computed() -> None:
    # g0 = (3, 4), |g0| = 5; d1 = (6, 8) (cos 1), d2 = (0, -2) (cos -0.8 -> 0), d3 = (4, 0) (cos 0.6)
    ref = {"a": torch.tensor([3.0], dtype=torch.float64), "b": torch.tensor([4.0], dtype=torch.float64)}
    rows = np.array([[6.0, 8.0], [0.0, -2.0], [4.0, 0.0]])
    deltas = {"a": torch.from_numpy(rows[:, :1].copy()), "b": torch.from_numpy(rows[:, 1:].copy())}
    got, trust = fltrust_delta(deltas, ref)
    np.testing.assert_allclose(trust.numpy(), [1.0, 0.0, 0.6], rtol=1e-14)
    # rescaled: (3, 4) and (5, 0); D = (1 * (3, 4) + 0.6 * (5, 0)) / 1.6 = (3.75, 2.5)
    np.testing.assert_allclose([got["a"].item(), got["b"].item()], [3.75, 2.5], rtol=1e-14)


def test_fltrust_matches_a_plain_loop_and_ignores_sign_flips_and_scale() -> None:
    rng = np.random.default_rng(11)
    ref = rng.standard_normal(12)
    honest = ref + 0.8 * rng.standard_normal((6, 12))
    rows = np.concatenate([honest, -honest[:2], 50.0 * honest[2:3], np.zeros((1, 12))])  # flips, boost, zero
    deltas = {"w": torch.from_numpy(rows[:, :8].reshape(-1, 2, 4).copy()), "b": torch.from_numpy(rows[:, 8:].copy())}
    reference = {"w": torch.from_numpy(ref[:8].reshape(2, 4).copy()), "b": torch.from_numpy(ref[8:].copy())}
    got, trust = fltrust_delta(deltas, reference)
    exp, exp_trust = _loop_fltrust(rows, ref)
    np.testing.assert_allclose(trust.numpy(), exp_trust, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.concatenate([got["w"].numpy().ravel(), got["b"].numpy()]), exp, rtol=1e-12)
    assert (exp_trust[:6] > 0).all() and exp_trust[-1] == 0.0
    # a flipped copy of a trusted update gets zero trust; the boosted copy counts like its original
    assert (exp_trust[6:8] == 0).all() and exp_trust[8] == pytest.approx(exp_trust[2])
    assert np.linalg.norm(exp) <= np.linalg.norm(ref) * (1 + 1e-12)  # a mean of vectors of norm |g0|


def test_fltrust_no_trust_keeps_the_model_and_wiring() -> None:
    deltas = {"w": torch.tensor([[-1.0, 0.0], [0.0, -2.0]], dtype=torch.float64)}
    got, trust = fltrust_delta(deltas, {"w": torch.tensor([1.0, 1.0], dtype=torch.float64)})
    assert trust.tolist() == [0.0, 0.0] and got["w"].tolist() == [0.0, 0.0]
    got0, trust0 = fltrust_delta(deltas, {"w": torch.zeros(2, dtype=torch.float64)})  # zero reference
    assert trust0.tolist() == [0.0, 0.0] and got0["w"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="reference"):
        robust_delta("fltrust", deltas)
    with pytest.raises(ValueError, match="shape"):
        fltrust_delta(deltas, {"w": torch.zeros(3, dtype=torch.float64)})
    with pytest.raises(ValueError, match="reference model"):
        RobustAggregator("fltrust")({"w": torch.zeros(2)}, [{"w": torch.ones(2)}])
    # the aggregator takes g0 = phi(reference) - phi(x) in the charts: positive parameters in log space
    x = {"thr": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    clients = [{"thr": torch.tensor([2.0, 4.0], dtype=torch.float64)}, {"thr": torch.tensor([0.5, 1.0],
                                                                                           dtype=torch.float64)}]
    server = {"thr": torch.tensor([math.e, 2.0 * math.e], dtype=torch.float64)}
    out = RobustAggregator("fltrust").with_reference(server)(x, clients, None, {"thr": POSITIVE})
    d1 = np.log([2.0, 2.0])  # client 1's log-delta; client 2's is -d1 (no trust); |g0| = |(1, 1)| = sqrt 2
    expected = apply_chart_delta(x, {"thr": torch.from_numpy(d1 / np.linalg.norm(d1) * math.sqrt(2.0))},
                                 {"thr": POSITIVE})
    np.testing.assert_allclose(out["thr"].numpy(), expected["thr"].numpy(), rtol=1e-12)
    np.testing.assert_allclose(out["thr"].numpy(), [math.e, 2.0 * math.e], rtol=1e-12)


# ---------------------------------------------------------------------------------------------- attacks


def _delta() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(40, 30, generator=g), "b": torch.randn(30, generator=g)}


def test_update_attacks_transform_the_delta_as_specified() -> None:
    d = _delta()
    flipped = attack_delta("sign_flip", d, sign_scale=2.5)
    boosted = attack_delta("boost", d, boost=7.0)
    for n in d:
        assert torch.equal(flipped[n], -2.5 * d[n])
        assert torch.equal(boosted[n], 7.0 * d[n])
    assert attack_delta("none", d) is d and attack_delta("label_flip", d) is d
    noise = attack_delta("noise", d, torch.Generator().manual_seed(1), noise_std=0.3)
    again = attack_delta("noise", d, torch.Generator().manual_seed(1), noise_std=0.3)
    allz = torch.cat([noise[n].flatten() for n in d]).double()
    assert all(torch.equal(noise[n], again[n]) and noise[n].shape == d[n].shape for n in d)  # seeded
    assert abs(allz.std().item() - 0.3) < 0.02 and abs(allz.mean().item()) < 0.02
    assert abs(np.corrcoef(allz.numpy(), torch.cat([d[n].flatten() for n in d]).numpy())[0, 1]) < 0.1
    bad = attack_delta("nan", d, torch.Generator().manual_seed(2))
    for n in d:
        nonfinite = ~torch.isfinite(bad[n])
        assert nonfinite.sum().item() == max(1, round(0.01 * d[n].numel()))
        assert torch.equal(bad[n][~nonfinite], d[n][~nonfinite])
    assert any(torch.isnan(bad[n]).any() for n in d) and any(torch.isinf(bad[n]).any() for n in d)
    shaped = attack_delta("shape", d)
    assert all(shaped[n].shape == (1, *d[n].shape) for n in d)
    with pytest.raises(ValueError, match="generator"):
        attack_delta("noise", d)
    with pytest.raises(ValueError, match="valid attacks"):
        attack_delta("swap", d)


def test_attack_update_works_in_the_chart() -> None:
    x = {"w": torch.zeros(4, dtype=torch.float64), "thr": torch.ones(4, dtype=torch.float64),
         "d": torch.full((4,), 0.5, dtype=torch.float64)}
    w = {"w": torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64),
         "thr": torch.tensor([1.5, 0.5, 1.0, 2.0], dtype=torch.float64),
         "d": torch.tensor([0.9, 0.1, 0.5, 0.6], dtype=torch.float64)}
    m = {"thr": POSITIVE, "d": circular(1.0)}
    out = attack_update("boost", x, w, m, boost=10.0)
    assert torch.allclose(out["w"], 10.0 * w["w"])  # euclidean: exactly b (w - x)
    assert torch.allclose(out["thr"], torch.exp(10.0 * torch.log(w["thr"])))  # log chart: stays positive
    assert (out["thr"] > 0).all()
    assert ((out["d"] >= 0) & (out["d"] < 1.0)).all()  # wraps
    assert torch.allclose(out["d"], torch.remainder(0.5 + 10.0 * torch.tensor([0.4, -0.4, 0.0, 0.1],
                                                                              dtype=torch.float64), 1.0))
    flipped = attack_update("sign_flip", x, w, m)
    assert torch.allclose(flipped["thr"] * w["thr"], torch.ones(4, dtype=torch.float64))  # 1 / (w / x)
    assert attack_update("label_flip", x, w, m) is w


def test_nonfinite_and_shape_attacks_are_rejected_by_validation() -> None:
    x = {"w": torch.zeros(3, 2), "thr": torch.ones(4)}
    m = {"w": EUCLIDEAN, "thr": POSITIVE}
    honest = {"w": torch.full((3, 2), 0.1), "thr": torch.full((4,), 1.1)}
    ups = [ClientUpdate(0, 5, honest)]
    for cid, kind in enumerate(("nan", "shape"), start=1):
        ups.append(ClientUpdate(cid, 5, attack_update(kind, x, honest, m, torch.Generator().manual_seed(cid))))
    inf = {"w": honest["w"].clone(), "thr": honest["thr"].clone()}
    inf["w"][0, 0] = math.inf
    ups.append(ClientUpdate(3, 5, inf))
    accepted, rejected = validate_updates(ups, x, None, m)
    assert [u.client_id for u in accepted] == [0]
    reasons = {e.client_id: e.reason for e in rejected}
    assert "non-finite" in reasons[1] or "manifold" in reasons[1]
    assert "shape" in reasons[2] and "(1, 3, 2)" in reasons[2]
    assert "non-finite" in reasons[3]


def test_choose_malicious_is_seeded_and_sized() -> None:
    a = choose_malicious(20, 0.2, np.random.default_rng(5))
    assert a == choose_malicious(20, 0.2, np.random.default_rng(5)) and len(a) == 4 and a == sorted(set(a))
    assert choose_malicious(20, 0.0, np.random.default_rng(5)) == []
    assert len(choose_malicious(10, 0.25, np.random.default_rng(0))) == 3  # 2.5 rounds up
    assert choose_malicious(3, 1.0, np.random.default_rng(0)) == [0, 1, 2]
    assert torch.equal(flip_labels(torch.tensor([0, 3, 9]), 10), torch.tensor([9, 6, 0]))
    with pytest.raises(ValueError):
        flip_labels(torch.tensor([10]), 10)


# ------------------------------------------------------------------------------------- config and wiring


def _small(*overrides: str) -> RunSettings:
    base = ["partition.num_clients=6", "partition.min_size=5", "federation.rounds=3", "federation.fraction=1.0",
            "model.hidden=[32]", "local.num_steps=6", "local.epochs=1"]
    return build_settings(RunSettings, None, base + list(overrides))


def test_config_section_and_defaults() -> None:
    s = RunSettings()
    assert s.robustness.attack == "none" and s.robustness.defense == "none"
    assert robustness_spec(s) is None and build_spec(_small()).robustness is None
    spec = robustness_spec(_small("robustness.attack=boost", "robustness.boost=5", "robustness.defense=krum",
                                  "robustness.krum_f=1"))
    assert spec == RobustnessSpec(attack="boost", boost=5.0, defense="krum", krum_f=1, trim_fraction=0.2)
    assert spec.aggregator() == RobustAggregator("krum", 0.2, 1, None, None)
    with pytest.raises(ConfigError, match="robustness.defense"):
        _small("robustness.defense=bulyan")
    with pytest.raises(ConfigError, match="robustness.trim_fraction"):
        _small("robustness.trim_fraction=0.5")
    with pytest.raises(ConfigError, match="unknown key"):
        _small("robustness.attackers=2")
    assert set(ATTACKS) == {"none", "label_flip", "sign_flip", "boost", "noise", "nan", "shape"}


def test_label_flip_hits_the_malicious_clients_only_and_is_seeded() -> None:
    s = _small("robustness.attack=label_flip", "robustness.attack_fraction=0.34")
    sim = Simulation(build_spec(s))
    assert len(sim.malicious) == 2
    # drawn once per run from the stream (seed, ATTACKERS)
    stream = lambda seed: numpy_rng(seed, Purpose.ATTACKERS)  # noqa: E731
    assert sorted(sim.malicious) == choose_malicious(6, 0.34, stream(0))
    assert len({tuple(choose_malicious(6, 0.34, stream(seed))) for seed in range(5)}) > 1  # depends on the seed
    y = sim.spec.data.y_train
    for c, idx in zip(sim.clients, sim.spec.parts):
        true = y[torch.as_tensor(np.asarray(idx), dtype=torch.int64)]
        assert torch.equal(c.y, 9 - true if c.client_id in sim.malicious else true)
    row = sim.run_round()
    assert row["malicious"] == 2 and row["rejected"] == 0


def test_no_robustness_section_changes_nothing() -> None:
    a = Simulation(build_spec(_small()))
    b = Simulation(build_spec(_small("robustness.attack_fraction=0.5")))  # options without attack or defence
    ra, rb = a.run_round(), b.run_round()
    assert "malicious" not in ra and a.spec.strategy.aggregator is None
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert strip(ra) == strip(rb)


@pytest.mark.parametrize("attack", ["nan", "shape"])
def test_malformed_attacks_are_rejected_and_logged(attack: str) -> None:
    sim = Simulation(build_spec(_small(f"robustness.attack={attack}", "robustness.attack_fraction=0.34")))
    row = sim.run_round()
    assert row["malicious"] == 2 and row["rejected"] == 2 and row["accepted"] == 4
    assert {r["client"] for r in row["rejections"]} == set(sim.malicious)
    assert all(r["round"] == 1 for r in row["rejections"])
    word = "non-finite" if attack == "nan" else "shape"
    assert all(word in r["reason"] or "manifold" in r["reason"] for r in row["rejections"])
    assert all(torch.isfinite(v).all() for v in sim.state.global_params.values())


def test_boost_attack_breaks_fedavg_and_median_recovers() -> None:
    """6 clients, all sampled, 2 attackers boosting by 100: plain FedAvg (without the default relative norm
    bound) is destroyed, median and trimmed mean stay close to the attack-free run; with the default bound the
    boosted updates are rejected."""
    sim = Simulation(build_spec(_small("partition.method=iid", "robustness.boost=100",
                                       "robustness.attack_fraction=0.34", "robustness.attack=boost")))
    row = sim.run_round()
    assert {r["client"] for r in row["rejections"]} == set(sim.malicious)
    assert all("norm_bound" in r["reason"] for r in row["rejections"])
    accs = {}
    for name, extra in (("clean", []), ("fedavg", ["robustness.attack=boost"]),
                        ("median", ["robustness.attack=boost", "robustness.defense=median"]),
                        ("trimmed", ["robustness.attack=boost", "robustness.defense=trimmed_mean",
                                     "robustness.trim_fraction=0.34"])):
        s = _small("partition.method=iid", "robustness.boost=100", "robustness.attack_fraction=0.34",
                   "local.epochs=2", "federation.norm_bound=null", *extra)
        sim = Simulation(build_spec(s))
        accs[name] = [sim.run_round()["accuracy"] for _ in range(3)][-1]
    assert accs["fedavg"] < accs["clean"] - 0.2
    assert accs["median"] > accs["clean"] - 0.1 and accs["trimmed"] > accs["clean"] - 0.1


def test_fltrust_root_set_comes_from_the_training_data_and_runs(tmp_path: Path) -> None:
    s = _small("robustness.attack=sign_flip", "robustness.attack_fraction=0.34", "robustness.defense=fltrust",
               "robustness.root_size=20")
    sim = Simulation(build_spec(s))
    data = sim.spec.data
    n = int(data.y_train.shape[0])
    idx = np.sort(numpy_rng(0, Purpose.ROOT).choice(n, size=20, replace=False))
    assert sim.stage("robustness").root is not None
    assert torch.equal(sim.stage("robustness").root.x, data.x_train[torch.as_tensor(idx)])
    assert torch.equal(sim.stage("robustness").root.y, data.y_train[torch.as_tensor(idx)])
    rows = [sim.run_round() for _ in range(2)]
    again = Simulation(build_spec(s))
    assert [again.run_round()["accuracy"] for _ in range(2)] == [r["accuracy"] for r in rows]
    assert all(torch.isfinite(v).all() for v in sim.state.global_params.values())
    # stateless across rounds (root set and reference training re-derived from the seed): resume is exact
    resumed = Simulation(build_spec(s))
    resumed.run_round()
    path = tmp_path / "ckpt.pt"
    resumed.save_checkpoint(path)
    fresh = Simulation(build_spec(s))
    fresh.load_checkpoint(path)
    fresh.run_round()
    for n, v in sim.state.global_params.items():
        assert torch.equal(fresh.state.global_params[n], v), n
    with pytest.raises(ValueError, match="robustness.root_size=100000 exceeds"):
        Simulation(build_spec(_small("robustness.defense=fltrust", "robustness.root_size=100000")))
    with pytest.raises(ConfigError, match="robustness.root_size"):
        _small("robustness.root_size=0")


def test_krum_f_that_cannot_fit_the_cohort_is_refused_at_setup() -> None:
    # 6 clients, all sampled: Krum allows f <= 3
    Simulation(build_spec(_small("robustness.defense=krum", "robustness.krum_f=3")))
    with pytest.raises(ValueError, match="robustness.krum_f=4 is too large for 6 clients per round"):
        Simulation(build_spec(_small("robustness.defense=krum", "robustness.krum_f=4")))
    with pytest.raises(ValueError, match="robustness.multikrum_m=7 exceeds the 6 clients"):
        Simulation(build_spec(_small("robustness.defense=multikrum", "robustness.multikrum_m=7")))
