"""Manifold-aware aggregation: weights, weighted means, charts, dict aggregation, update validation.

Expected values are computed independently with numpy (or by hand) from the formulas.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spikefed.federated.aggregation import (
    InvalidUpdate,
    aggregate_params,
    chart_difference,
    from_chart,
    normalized_weights,
    to_chart,
    update_delta_norm,
    validate_update,
    weighted_mean,
    wrap_circular,
)
from spikefed.federated.types import ClientUpdate
from spikefed.manifold import EUCLIDEAN, POSITIVE, UNIT_INTERVAL, Manifold, circular

RING = circular(10.0)


def circ_dist(a: np.ndarray, b: np.ndarray, period: float) -> np.ndarray:
    d = np.mod(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), period)
    return np.minimum(d, period - d)


def np_logit(x: np.ndarray) -> np.ndarray:
    return np.log(x / (1.0 - x))


def np_sigmoid(y: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-y))


def np_circular_mean(w: np.ndarray, p: np.ndarray, period: float) -> np.ndarray:
    z = np.tensordot(p, np.exp(1j * 2 * np.pi * w / period), axes=1)
    return np.mod(np.angle(z) * period / (2 * np.pi), period)


# ----------------------------------------------------------------------------------------------- weights


def test_normalized_weights_formula() -> None:
    p = normalized_weights([10, 30, 60])
    assert p.dtype == torch.float64
    np.testing.assert_array_equal(p.numpy(), np.array([0.1, 0.3, 0.6]))
    n = np.array([7, 1, 123, 50])
    np.testing.assert_allclose(normalized_weights(list(n)).numpy(), n / n.sum(), rtol=0, atol=1e-16)
    np.testing.assert_array_equal(normalized_weights([5]).numpy(), [1.0])
    # numpy integers are integers too
    np.testing.assert_allclose(normalized_weights(np.array([1, 3])).numpy(), [0.25, 0.75])


@pytest.mark.parametrize("bad", [[], [0, 3], [3, -1], [2.5, 1], [True, 2]])
def test_normalized_weights_rejects(bad: list) -> None:
    with pytest.raises(ValueError):
        normalized_weights(bad)


# ------------------------------------------------------------------------------------------------- means


def test_euclidean_mean_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 2))
    n = np.array([5, 20, 1, 14])
    p = n / n.sum()
    expected = np.tensordot(p, w, axes=1)
    got = weighted_mean(torch.from_numpy(w), torch.from_numpy(p), EUCLIDEAN)
    assert got.shape == (3, 2) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-13, atol=1e-15)
    # un-normalised weights are normalised (p / sum p)
    got2 = weighted_mean(torch.from_numpy(w), list(n.astype(float)), EUCLIDEAN)
    np.testing.assert_allclose(got2.numpy(), expected, rtol=1e-13, atol=1e-15)
    # float32 stacks give float32 results
    got32 = weighted_mean(torch.from_numpy(w).float(), p, EUCLIDEAN)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_positive_mean_is_geometric() -> None:
    got = weighted_mean(torch.tensor([[1.0], [4.0]]), [0.5, 0.5], POSITIVE)
    assert got.item() == pytest.approx(2.0, rel=1e-7)
    # weights 1/3, 2/3 of 1 and 8: 8^(2/3) = 4
    got = weighted_mean(torch.tensor([1.0, 8.0], dtype=torch.float64), [1.0, 2.0], POSITIVE)
    assert got.item() == pytest.approx(4.0, rel=1e-14)
    rng = np.random.default_rng(1)
    w = rng.uniform(0.01, 5.0, size=(3, 6))
    p = np.array([0.2, 0.5, 0.3])
    expected = np.prod(w ** p[:, None], axis=0)
    np.testing.assert_allclose(weighted_mean(torch.from_numpy(w), p, POSITIVE).numpy(), expected, rtol=1e-13)


def test_unit_interval_mean_is_logit_mean() -> None:
    # by hand: 0.75 * logit(sigmoid(1)) + 0.25 * logit(sigmoid(-3)) = 0  ->  sigmoid(0) = 0.5
    vals = torch.tensor([1.0 / (1.0 + math.exp(-1.0)), 1.0 / (1.0 + math.exp(3.0))], dtype=torch.float64)
    got = weighted_mean(vals, [0.75, 0.25], UNIT_INTERVAL)
    assert got.item() == pytest.approx(0.5, abs=1e-15)
    rng = np.random.default_rng(2)
    w = rng.uniform(1e-3, 1 - 1e-3, size=(5, 4))
    p = rng.uniform(0.1, 1.0, size=5)
    p = p / p.sum()
    expected = np_sigmoid(np.tensordot(p, np_logit(w), axes=1))
    np.testing.assert_allclose(weighted_mean(torch.from_numpy(w), p, UNIT_INTERVAL).numpy(), expected, rtol=1e-12)


def test_circular_mean_wraps_through_zero() -> None:
    # delays 9 and 1 on a ring of 10 average to 0, not 5
    for dtype in (torch.float32, torch.float64):
        got = weighted_mean(torch.tensor([9.0, 1.0], dtype=dtype), [0.5, 0.5], RING)
        assert 0.0 <= got.item() < 10.0
        assert circ_dist(got.item(), 0.0, 10.0) < 1e-5
    # 2 and 4 -> 3 ; 9 (weight 3) and 1 (weight 1): phasor mean by hand
    assert weighted_mean(torch.tensor([2.0, 4.0], dtype=torch.float64), [1, 1], RING).item() == pytest.approx(3.0)
    z = 0.75 * np.exp(1j * 2 * np.pi * 0.9) + 0.25 * np.exp(1j * 2 * np.pi * 0.1)
    expected = np.mod(np.angle(z) / (2 * np.pi) * 10, 10)
    got = weighted_mean(torch.tensor([9.0, 1.0], dtype=torch.float64), [3, 1], RING).item()
    assert circ_dist(got, expected, 10.0) < 1e-12
    assert 9.0 < got < 10.0 or got < 0.5  # between 9 and 1 going through 0, nearer 9


def test_circular_mean_matches_numpy_and_stays_in_range() -> None:
    rng = np.random.default_rng(3)
    period = 7.5
    w = rng.uniform(-20, 20, size=(6, 50))  # unwrapped values are fine
    w[:, :5] = period - 1e-7  # values just below the period
    w[:, 5:10] = 0.0
    p = rng.uniform(0.1, 1.0, size=6)
    p /= p.sum()
    m = circular(period)
    expected = np_circular_mean(w, p, period)
    for dtype in (torch.float32, torch.float64):
        got = weighted_mean(torch.from_numpy(w).to(dtype), p, m)
        assert got.dtype == dtype
        assert bool(((got >= 0) & (got < period)).all())
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        assert circ_dist(got.double().numpy(), expected, period).max() < tol


def test_circular_cancelling_phasors_fall_back_to_heaviest_client() -> None:
    # equal weights on opposite points: the first client (tie) wins
    got = weighted_mean(torch.tensor([[0.0, 3.0], [5.0, 8.0]]), [1, 1], RING)
    assert got.tolist() == [0.0, 3.0]
    # 0.25 * e^{i0} + 0.5 * e^{i pi} + 0.25 * e^{i0} = 0: client 1 (largest weight, at 5) wins
    got = weighted_mean(torch.tensor([0.0, 5.0, 0.0], dtype=torch.float64), [0.25, 0.5, 0.25], RING)
    assert got.item() == 5.0
    # only cancelling elements fall back; others get the phasor mean
    got = weighted_mean(torch.tensor([[1.0, 9.0], [6.0, 1.0]], dtype=torch.float64), [1, 1], RING)
    assert got[0].item() == 1.0
    assert circ_dist(got[1].item(), 0.0, 10.0) < 1e-12


@pytest.mark.parametrize("manifold", [EUCLIDEAN, POSITIVE, UNIT_INTERVAL, RING], ids=lambda m: m.kind)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_clients_give_that_client(manifold: Manifold, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 4, generator=g, dtype=torch.float64) * 0.98 + 0.01  # in (0, 1), valid on every manifold
    if manifold.kind == "circular":
        x = x * 9.9
    x = x.to(dtype)
    stack = torch.stack([x, x, x])
    got = weighted_mean(stack, [1, 5, 2], manifold)
    assert torch.equal(got, x)
    # elements where clients agree keep the common value exactly; the others are averaged
    other = x.clone()
    other[0] = other[0] * 0.5
    got = weighted_mean(torch.stack([x, other]), [1, 1], manifold)
    assert torch.equal(got[1:], x[1:])
    assert not torch.equal(got[0], x[0])


def test_weighted_mean_does_not_mutate_and_rejects_bad_input() -> None:
    stack = torch.tensor([[0.5, 0.2], [0.4, 0.9]])
    before = stack.clone()
    weighted_mean(stack, [1, 1], UNIT_INTERVAL)
    assert torch.equal(stack, before)
    with pytest.raises(ValueError, match="positive"):
        weighted_mean(torch.tensor([1.0, 0.0]), [1, 1], POSITIVE)
    with pytest.raises(ValueError, match="positive"):
        weighted_mean(torch.tensor([1.0, -2.0]), [1, 1], POSITIVE)
    with pytest.raises(ValueError, match="unit_interval"):
        weighted_mean(torch.tensor([0.5, 1.0]), [1, 1], UNIT_INTERVAL)
    with pytest.raises(ValueError, match="non-finite"):
        weighted_mean(torch.tensor([0.5, math.nan]), [1, 1], EUCLIDEAN)
    with pytest.raises(ValueError, match="shape"):
        weighted_mean(torch.zeros(3, 2), [1, 1], EUCLIDEAN)
    with pytest.raises(ValueError, match="non-negative"):
        weighted_mean(torch.zeros(2), [1, -1], EUCLIDEAN)
    with pytest.raises(ValueError, match="zero"):
        weighted_mean(torch.zeros(2), [0, 0], EUCLIDEAN)
    with pytest.raises(ValueError, match="finite"):
        weighted_mean(torch.zeros(2), [1, math.inf], EUCLIDEAN)
    with pytest.raises(ValueError, match="floating"):
        weighted_mean(torch.zeros(2, dtype=torch.int64), [1, 1], EUCLIDEAN)
    with pytest.raises(ValueError, match="K >= 1"):
        weighted_mean(torch.zeros(0, 3), [], EUCLIDEAN)


# ------------------------------------------------------------------------------------------------ charts


def test_charts_formulas_and_round_trip() -> None:
    x = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    np.testing.assert_allclose(to_chart(x, POSITIVE).numpy(), np.log([0.1, 0.5, 0.9]), rtol=1e-15)
    np.testing.assert_allclose(to_chart(x, UNIT_INTERVAL).numpy(), np_logit(np.array([0.1, 0.5, 0.9])), rtol=1e-14)
    assert torch.equal(to_chart(x, EUCLIDEAN), x) and torch.equal(to_chart(x, RING), x)
    y = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
    np.testing.assert_allclose(from_chart(y, POSITIVE).numpy(), np.exp([-2.0, 0.0, 3.0]), rtol=1e-15)
    expected = np_sigmoid(np.array([-2.0, 0.0, 3.0]))
    np.testing.assert_allclose(from_chart(y, UNIT_INTERVAL).numpy(), expected, rtol=1e-15)
    assert from_chart(torch.tensor([-1.0, 10.0, 23.0, 9.5]), RING).tolist() == [9.0, 0.0, 3.0, 9.5]
    for m in (EUCLIDEAN, POSITIVE, UNIT_INTERVAL, RING):
        torch.testing.assert_close(from_chart(to_chart(x, m), m), x, rtol=1e-14, atol=0)
    # charts return new tensors
    z = to_chart(x, EUCLIDEAN)
    z += 1
    assert x.tolist() == [0.1, 0.5, 0.9]


def test_wrap_circular_never_returns_the_period() -> None:
    x = torch.tensor([-1e-9, -10.0, 10.0, 9.999999, -30.5], dtype=torch.float32)
    w = wrap_circular(x, 10.0)
    assert bool(((w >= 0) & (w < 10.0)).all())
    assert w[0].item() == 0.0 and w[1].item() == 0.0 and w[2].item() == 0.0
    assert w[4].item() == pytest.approx(9.5)


def test_chart_difference() -> None:
    a = torch.tensor([1.0, 9.0, 5.0, 0.0, 3.0, 7.0], dtype=torch.float64)
    b = torch.tensor([9.0, 1.0, 0.0, 5.0, 3.0, 2.5], dtype=torch.float64)
    # shortest arcs from b to a in (-5, 5]
    assert chart_difference(a, b, RING).tolist() == [2.0, -2.0, 5.0, 5.0, 0.0, 4.5]
    # float rounding lands remainder() on the period itself: the result must still lie in (-P/2, P/2]
    for dtype in (torch.float32, torch.float64):
        just_above_half = torch.nextafter(torch.tensor([5.0], dtype=dtype), torch.tensor([6.0], dtype=dtype))
        d = chart_difference(just_above_half, torch.zeros(1, dtype=dtype), RING).item()
        assert -5.0 < d <= 5.0 and circ_dist(d, just_above_half.item(), 10.0) < 1e-6
    rng = np.random.default_rng(5)
    aa, bb = rng.uniform(0, 10, 200), rng.uniform(0, 10, 200)
    d = chart_difference(torch.from_numpy(aa), torch.from_numpy(bb), RING).numpy()
    assert ((d > -5.0) & (d <= 5.0)).all()
    assert circ_dist(bb + d, aa, 10.0).max() < 1e-12
    pa, pb = rng.uniform(0.1, 3, 10), rng.uniform(0.1, 3, 10)
    np.testing.assert_allclose(
        chart_difference(torch.from_numpy(pa), torch.from_numpy(pb), POSITIVE).numpy(), np.log(pa) - np.log(pb),
        rtol=1e-12, atol=1e-14,
    )
    ua, ub = rng.uniform(0.01, 0.99, 10), rng.uniform(0.01, 0.99, 10)
    np.testing.assert_allclose(
        chart_difference(torch.from_numpy(ua), torch.from_numpy(ub), UNIT_INTERVAL).numpy(),
        np_logit(ua) - np_logit(ub), rtol=1e-12, atol=1e-13,
    )
    d = chart_difference(torch.from_numpy(pa), torch.from_numpy(pb), EUCLIDEAN)
    np.testing.assert_array_equal(d.numpy(), pa - pb)


# ---------------------------------------------------------------------------------------- dict aggregation


def test_aggregate_params_per_manifold() -> None:
    rng = np.random.default_rng(6)
    k = 3
    w = rng.normal(size=(k, 4, 2))
    thr = rng.uniform(0.2, 2.0, size=(k, 4))
    decay = rng.uniform(0.05, 0.95, size=(k, 4))
    delay = rng.uniform(0, 10, size=(k, 4))
    updates = [
        {"w": torch.from_numpy(w[i]), "thr": torch.from_numpy(thr[i]), "decay": torch.from_numpy(decay[i]),
         "delay": torch.from_numpy(delay[i])}
        for i in range(k)
    ]
    n = np.array([10, 40, 50])
    p = n / n.sum()
    # "w" has no entry: euclidean; entries for absent names are ignored
    manifolds = {"thr": POSITIVE, "decay": UNIT_INTERVAL, "delay": RING, "unused": POSITIVE}
    out = aggregate_params(updates, normalized_weights(list(n)), manifolds)
    assert list(out) == ["w", "thr", "decay", "delay"]
    np.testing.assert_allclose(out["w"].numpy(), np.tensordot(p, w, axes=1), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(out["thr"].numpy(), np.exp(np.tensordot(p, np.log(thr), axes=1)), rtol=1e-13)
    np.testing.assert_allclose(out["decay"].numpy(), np_sigmoid(np.tensordot(p, np_logit(decay), axes=1)), rtol=1e-12)
    assert circ_dist(out["delay"].numpy(), np_circular_mean(delay, p, 10.0), 10.0).max() < 1e-10
    # no manifolds at all: everything euclidean
    out = aggregate_params(updates, p, None)
    np.testing.assert_allclose(out["thr"].numpy(), np.tensordot(p, thr, axes=1), rtol=1e-13)


def test_aggregate_params_dtypes_and_errors() -> None:
    a = {"x": torch.tensor([1.0, 2.0]), "y": torch.tensor([0.5])}
    b = {"y": torch.tensor([0.25], dtype=torch.float64), "x": torch.tensor([3.0, 4.0], dtype=torch.float16)}
    out = aggregate_params([a, b], [1, 1], {})
    assert list(out) == ["x", "y"]  # order of the first update
    assert out["x"].dtype == torch.float32 and out["y"].dtype == torch.float32  # dtype of the first update
    assert out["x"].tolist() == [2.0, 3.0] and out["y"].item() == 0.375
    with pytest.raises(ValueError, match="at least one"):
        aggregate_params([], [], {})
    with pytest.raises(ValueError, match=r"update #1.*missing \['y'\]"):
        aggregate_params([a, {"x": torch.zeros(2)}], [1, 1])
    with pytest.raises(ValueError, match=r"update #1, parameter 'x'.*shape"):
        aggregate_params([a, {"x": torch.zeros(3), "y": torch.zeros(1)}], [1, 1])
    with pytest.raises(ValueError, match=r"parameter 'y'.*positive"):
        aggregate_params([a, {"x": torch.zeros(2), "y": torch.tensor([-1.0])}], [1, 1], {"y": POSITIVE})
    with pytest.raises(ValueError, match=r"update #1, parameter 'x'.*floating"):
        aggregate_params([a, {"x": torch.zeros(2, dtype=torch.int64), "y": torch.zeros(1)}], [1, 1])


# -------------------------------------------------------------------------------------------- validation


def _reference() -> dict[str, torch.Tensor]:
    return {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "thr": torch.tensor([0.5, 1.5]),
            "delay": torch.tensor([9.5])}


def _update(cid: int = 7, **changes) -> ClientUpdate:
    params = {k: v.clone() for k, v in _reference().items()}
    params["w"] += 0.1
    fields = {"client_id": cid, "num_samples": 12, "params": params}
    fields.update(changes)
    return ClientUpdate(**fields)


MANIFOLDS = {"thr": POSITIVE, "delay": RING}


def test_validate_update_accepts_good_update() -> None:
    u = _update()
    validate_update(u, _reference())
    validate_update(u, _reference(), max_norm=1.0, manifolds=MANIFOLDS)
    # a different floating dtype is fine
    validate_update(_update(params={k: v.double() for k, v in _reference().items()}), _reference())


def _bad_cases() -> list[tuple[str, ClientUpdate, dict]]:
    ref = _reference()
    p = lambda **kw: {**{k: v.clone() for k, v in ref.items()}, **kw}  # noqa: E731
    missing = p()
    del missing["thr"]
    return [
        ("missing", _update(params=missing), {}),
        ("unexpected", _update(params=p(extra=torch.zeros(1))), {}),
        ("shape", _update(params=p(w=torch.zeros(2, 3))), {}),
        ("shape", _update(params=p(w=torch.zeros(4))), {}),
        ("floating", _update(params=p(w=torch.zeros(2, 2, dtype=torch.int64))), {}),
        ("floating", _update(params=p(thr=torch.tensor([True, False]))), {}),
        ("non-finite", _update(params=p(w=torch.tensor([[1.0, math.nan], [3.0, 4.0]]))), {}),
        ("non-finite", _update(params=p(thr=torch.tensor([0.5, math.inf]))), {}),
        ("tensor", _update(params=p(w=[[1.0, 2.0], [3.0, 4.0]])), {}),
        ("num_samples", _update(num_samples=0), {}),
        ("num_samples", _update(num_samples=-3), {}),
        ("num_samples", _update(num_samples=2.0), {}),
        ("max_norm", _update(params=p(w=ref["w"] + 1.0)), {"max_norm": 1.999}),
        ("manifold", _update(params=p(thr=torch.tensor([0.5, -1.0]))), {"manifolds": MANIFOLDS}),
        ("manifold", _update(params=p(delay=torch.tensor([10.0]))), {"manifolds": MANIFOLDS}),
        ("control_delta", _update(control_delta={"w": torch.zeros(2, 2)}), {}),
        ("control_delta", _update(control_delta={**p(), "w": torch.full((2, 2), math.nan)}), {}),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_validate_update_rejects(case: int) -> None:
    what, update, kwargs = _bad_cases()[case]
    with pytest.raises(InvalidUpdate) as info:
        validate_update(update, _reference(), **kwargs)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.client_id == 7
    assert "client 7" in str(err)
    assert what in str(err)


def test_validate_update_messages_name_the_parameter() -> None:
    ref = _reference()
    bad = {k: v.clone() for k, v in ref.items()}
    bad["thr"] = torch.zeros(3)
    with pytest.raises(InvalidUpdate, match=r"client 3: .*'thr'.*shape \(2,\).*\(3,\)"):
        validate_update(_update(cid=3, params=bad), ref)
    extra = {**{k: v.clone() for k, v in ref.items()}, "surprise": torch.zeros(1)}
    del extra["w"]
    with pytest.raises(InvalidUpdate, match=r"missing parameters \['w'\], unexpected parameters \['surprise'\]"):
        validate_update(_update(cid=3, params=extra), ref)


def test_delta_norm_and_max_norm_boundary() -> None:
    ref = _reference()
    params = {k: v.clone() for k, v in ref.items()}
    params["w"] = params["w"] + torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    params["thr"] = params["thr"] + torch.tensor([0.0, 4.0])
    assert update_delta_norm(params, ref) == pytest.approx(5.0)  # sqrt(3^2 + 4^2)
    validate_update(_update(params=params), ref, max_norm=5.0 + 1e-9)
    with pytest.raises(InvalidUpdate, match="max_norm"):
        validate_update(_update(params=params), ref, max_norm=4.99)
    # circular deltas are wrapped: 9.5 -> 0.5 on a ring of 10 is a step of 1, not 9
    params = {k: v.clone() for k, v in ref.items()}
    params["delay"] = torch.tensor([0.5])
    assert update_delta_norm(params, ref, MANIFOLDS) == pytest.approx(1.0)
    assert update_delta_norm(params, ref) == pytest.approx(9.0)
    validate_update(_update(params=params), ref, max_norm=1.5, manifolds=MANIFOLDS)
    with pytest.raises(ValueError, match="max_norm"):
        validate_update(_update(), ref, max_norm=0.0)
    with pytest.raises(ValueError, match="max_norm"):
        validate_update(_update(), ref, max_norm=math.nan)


def test_invalid_update_attributes_and_pickle() -> None:
    import pickle

    e = InvalidUpdate(4, "because")
    assert (e.client_id, e.reason) == (4, "because") and str(e) == "client 4: invalid update: because"
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.client_id, e2.reason, str(e2)) == (4, "because", str(e))
