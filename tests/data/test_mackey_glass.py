"""Mackey-Glass generator: fixed point, plain-loop Euler reference, RK4 convergence order, windows, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from spikefed.data.mackey_glass import fixed_point, mackey_glass, mackey_glass_split, make_windows


def _euler_loop(length: int, tau: float, beta: float, gamma: float, n: float, dt: float, x0: float) -> list[float]:
    """Plain-Python Euler for the DDE with a constant history x0 on [-tau, 0], one sample per step."""
    d = int(round(tau / dt))
    xs = [x0] * (d + 1)  # times -tau .. 0
    while len(xs) < d + length:
        now, lag = xs[-1], xs[-1 - d]
        xs.append(now + dt * (beta * lag / (1 + lag**n) - gamma * now))
    return xs[d:]


def test_fixed_point_formula_and_convergence_for_small_tau() -> None:
    assert fixed_point() == pytest.approx(1.0)
    x_star = fixed_point(beta=0.3, gamma=0.1, n=4.0)
    assert x_star == pytest.approx(2.0 ** 0.25)
    assert 0.3 * x_star / (1 + x_star**4) == pytest.approx(0.1 * x_star)  # f(x*) = 0
    series = mackey_glass(400, tau=2.0, beta=0.3, gamma=0.1, n=4.0, dt=0.1, sample_every=10, x0=0.5)
    assert series[0] == 0.5
    assert abs(series[-1] - x_star) < 1e-6
    assert np.all(np.abs(np.diff(series[-50:])) < 1e-6)  # settled


def test_euler_matches_a_plain_loop_at_a_coarse_step() -> None:
    got = mackey_glass(300, tau=17.0, dt=0.5, sample_every=1, x0=1.2, method="euler")
    want = _euler_loop(300, 17.0, 0.2, 0.1, 10.0, 0.5, 1.2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def _value_at_100(dt: float, method: str = "rk4") -> float:
    return float(mackey_glass(2, dt=dt, sample_every=int(round(100 / dt)), x0=1.2, method=method)[-1])


def test_rk4_is_fourth_order_and_euler_first_order() -> None:
    ref = _value_at_100(0.0125)
    e_rk = [abs(_value_at_100(dt) - ref) for dt in (0.1, 0.05)]
    assert 10 < e_rk[0] / e_rk[1] < 22  # 2^4 = 16
    e_eu = [abs(_value_at_100(dt, "euler") - ref) for dt in (0.1, 0.05)]
    assert 1.7 < e_eu[0] / e_eu[1] < 2.3  # 2^1
    assert e_rk[0] < 1e-6 < e_eu[0]


def test_chaotic_regime_is_bounded_seeded_and_not_periodic_at_fixed_point() -> None:
    a = mackey_glass(1500, history_noise=0.1, discard=200, rng=np.random.default_rng(1))
    b = mackey_glass(1500, history_noise=0.1, discard=200, rng=np.random.default_rng(1))
    c = mackey_glass(1500, history_noise=0.1, discard=200, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.min() > 0.2 and a.max() < 1.45  # the tau = 17 attractor lies within about [0.4, 1.35]
    assert a.std() > 0.15  # it oscillates, it does not settle at x* = 1


def test_make_windows_by_hand() -> None:
    x, y = make_windows(np.arange(10.0), window=4, horizon=2, stride=3)
    np.testing.assert_array_equal(x, [[0, 1, 2, 3], [3, 4, 5, 6]])
    np.testing.assert_array_equal(y, [[2, 3, 4, 5], [5, 6, 7, 8]])


def test_split_is_normalised_windows_of_the_series() -> None:
    split = mackey_glass_split(1000, window=50, horizon=3, seed=4, stride=25)
    raw = mackey_glass(1000, history_noise=0.1, discard=500, rng=np.random.default_rng(4))
    train = raw[:700]
    assert split.mean == pytest.approx(train.mean()) and split.std == pytest.approx(train.std())
    np.testing.assert_allclose(split.denormalize(split.x_train[1, :, 0]).numpy(), raw[25:75], atol=1e-5)
    np.testing.assert_allclose(split.denormalize(split.y_train[1, :, 0]).numpy(), raw[28:78], atol=1e-5)
    np.testing.assert_allclose(split.denormalize(split.x_test[0, :, 0]).numpy(), raw[700:750], atol=1e-5)
    assert split.x_test.shape == (5, 50, 1)  # 300 test samples, non-overlapping windows of 50 + 3


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="tau / dt must be an integer"):
        mackey_glass(10, tau=17.0, dt=0.3)
    with pytest.raises(ValueError, match="tau / dt must be an integer >= 3"):
        mackey_glass(10, tau=1.0, dt=0.5)
    with pytest.raises(ValueError, match="unknown method"):
        mackey_glass(10, method="rk45")
    with pytest.raises(ValueError, match="length"):
        mackey_glass(0)
    with pytest.raises(ValueError, match="needs rng"):
        mackey_glass(10, history_noise=0.1)
    with pytest.raises(ValueError, match="beta > gamma"):
        fixed_point(beta=0.1, gamma=0.2)
    with pytest.raises(ValueError, match="window \\+ horizon"):
        make_windows(np.arange(5.0), window=4, horizon=2, stride=1)
    with pytest.raises(ValueError, match="train_fraction"):
        mackey_glass_split(100, train_fraction=1.0)
