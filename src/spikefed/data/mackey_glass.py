"""Mackey-Glass time series, generated here (no download), and windows for one-step / k-step-ahead prediction.

The delay differential equation::

    dx/dt = beta * x(t - tau) / (1 + x(t - tau)^n) - gamma * x(t)

(defaults beta = 0.2, gamma = 0.1, n = 10, tau = 17: the classic chaotic regime). For tau small enough the fixed
point ``x* = (beta / gamma - 1)^(1 / n)`` (x* = 1 with the defaults) is stable and every solution settles there.

Integrator (:func:`mackey_glass`): fixed step ``dt`` on a grid with ``tau / dt = d`` an integer (``d >= 3``), a
history buffer holding ``x`` on the grid points of ``[-tau, 0]``, filled with ``x0 + history_noise * u``,
``u ~ U[-1, 1)`` i.i.d. from the run's ``numpy.random.Generator``.

- ``method="rk4"``: classical Runge-Kutta 4 in ``x``; the delayed term is known on the grid at the step's start
  and end (``x[j]``, ``x[j + 1]`` with ``j = k - d``) and at the half step from a cubic Lagrange interpolation
  through four grid points: central ``(-x[j-1] + 9 x[j] + 9 x[j+1] - x[j+2]) / 16``, or one-sided where the central
  stencil would span a time ``m * tau`` (m = 0, 1, ...), at which the solution's derivatives jump (the
  discontinuity of ``x'`` at t = 0 propagates to ``x''`` at tau, ...). Fourth order in ``dt`` for a smooth
  (e.g. constant) history;
- ``method="euler"``: ``x[k+1] = x[k] + dt * f(x[k], x[k - d])`` (first order; a reference for coarse checks).

Every ``sample_every``-th grid point from ``t = 0`` is returned (``sample_every * dt`` time units apart), after
``discard`` transient samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["METHODS", "MackeyGlassSplit", "fixed_point", "mackey_glass", "make_windows", "mackey_glass_split"]

METHODS: tuple[str, ...] = ("rk4", "euler")


def _positive(name: str, value: object, *, integer: bool = False, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = value >= 0 if allow_zero else value > 0  # type: ignore[operator]
    if not ok:
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _lag_half(x: np.ndarray, j: int, d: int) -> float:
    """The delayed value half-way through ``[j, j + 1]``: cubic interpolation whose stencil never spans a point
    ``t = m * tau`` (index a multiple of d), where the solution's derivatives jump."""
    if j % d == 0:  # the interval starts at a breaking point: forward stencil j .. j+3
        return (5.0 * x[j] + 15.0 * x[j + 1] - 5.0 * x[j + 2] + x[j + 3]) / 16.0
    if (j + 1) % d == 0:  # it ends at one: backward stencil j-2 .. j+1
        return (x[j - 2] - 5.0 * x[j - 1] + 15.0 * x[j] + 5.0 * x[j + 1]) / 16.0
    return (-x[j - 1] + 9.0 * x[j] + 9.0 * x[j + 1] - x[j + 2]) / 16.0


def _rk4_increment(x: np.ndarray, k: int, j: int, d: int, h: float, f) -> float:  # type: ignore[no-untyped-def]
    lag_half = _lag_half(x, j, d)
    k1 = f(x[k], x[j])
    k2 = f(x[k] + 0.5 * h * k1, lag_half)
    k3 = f(x[k] + 0.5 * h * k2, lag_half)
    k4 = f(x[k] + h * k3, x[j + 1])
    return h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def fixed_point(beta: float = 0.2, gamma: float = 0.1, n: float = 10.0) -> float:
    """The positive equilibrium ``x* = (beta / gamma - 1)^(1 / n)`` (needs ``beta > gamma``)."""
    if not beta > gamma > 0:
        raise ValueError(f"a positive fixed point needs beta > gamma > 0, got beta={beta!r}, gamma={gamma!r}")
    return (beta / gamma - 1.0) ** (1.0 / n)


def mackey_glass(length: int, *, tau: float = 17.0, beta: float = 0.2, gamma: float = 0.1, n: float = 10.0,
                 dt: float = 0.1, sample_every: int = 10, x0: float = 1.2, history_noise: float = 0.0,
                 discard: int = 0, method: str = "rk4", rng: np.random.Generator | None = None) -> np.ndarray:
    """``length`` samples of a Mackey-Glass trajectory (float64 ``[length]``); see the module docstring.

    ``history_noise > 0`` needs ``rng`` (the only source of randomness). Raises ``ValueError`` on a bad argument
    (``tau / dt`` not an integer >= 2, non-positive sizes, unknown method) or a trajectory that stops being finite.
    """
    length = int(_positive("length", length, integer=True))
    for name, value in (("tau", tau), ("beta", beta), ("gamma", gamma), ("n", n), ("dt", dt), ("x0", x0)):
        _positive(name, value)
    sample_every = int(_positive("sample_every", sample_every, integer=True))
    discard = int(_positive("discard", discard, integer=True, allow_zero=True))
    _positive("history_noise", history_noise, allow_zero=True)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    ratio = tau / dt
    d = round(ratio)
    if abs(ratio - d) > 1e-9 * max(1.0, ratio) or d < 3:
        raise ValueError(f"tau / dt must be an integer >= 3 (the delay on the grid), got tau={tau!r}, dt={dt!r}")
    if history_noise > 0 and not isinstance(rng, np.random.Generator):
        raise ValueError("history_noise > 0 needs rng: a numpy.random.Generator")
    steps = (discard + length - 1) * sample_every
    x = np.empty(d + 1 + steps)  # x[i] is x at time (i - d) * dt; x[0..d] is the history on [-tau, 0]
    x[:d + 1] = x0
    if history_noise > 0:
        x[:d + 1] += history_noise * rng.uniform(-1.0, 1.0, d + 1)  # type: ignore[union-attr]

    def f(xt: float, lag: float) -> float:
        return beta * lag / (1.0 + lag ** n) - gamma * xt

    h = dt
    for k in range(d, d + steps):  # x[k] is known, compute x[k + 1]; the delayed interval is [j, j + 1]
        j = k - d
        x[k + 1] = x[k] + (h * f(x[k], x[j]) if method == "euler" else _rk4_increment(x, k, j, d, h, f))
        if not math.isfinite(x[k + 1]):
            raise ValueError(f"the trajectory became {x[k + 1]} at t = {(k + 1 - d) * dt}; lower dt")
    series = x[d:][::sample_every]
    return series[discard:discard + length].copy()


@dataclass(frozen=True, eq=False)
class MackeyGlassSplit:
    """Windows for ``horizon``-step-ahead prediction, normalised with the training part's mean and std.

    ``x_*``: inputs ``[N, L, 1]``, ``y_*``: targets ``[N, L, 1]`` with ``y[i, t] = series[s_i + t + horizon]`` for
    input ``x[i, t] = series[s_i + t]`` (both normalised, float32). ``mean`` and ``std`` undo the normalisation.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float
    std: float
    horizon: int

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean


def make_windows(series: np.ndarray, window: int, horizon: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``series [N]`` into inputs ``[M, window]`` and targets shifted by ``horizon`` (same shape)."""
    window = int(_positive("window", window, integer=True))
    horizon = int(_positive("horizon", horizon, integer=True))
    stride = int(_positive("stride", stride, integer=True))
    series = np.asarray(series, dtype=np.float64)
    if series.ndim != 1 or series.shape[0] < window + horizon:
        raise ValueError(f"series must be 1-D with at least window + horizon = {window + horizon} samples, "
                         f"got shape {series.shape}")
    starts = np.arange(0, series.shape[0] - window - horizon + 1, stride)
    idx = starts[:, None] + np.arange(window)[None, :]
    return series[idx], series[idx + horizon]


def mackey_glass_split(length: int = 3000, *, window: int = 200, horizon: int = 1, train_fraction: float = 0.7,
                       stride: int | None = None, seed: int = 0, history_noise: float = 0.1,
                       **kwargs: object) -> MackeyGlassSplit:
    """A seeded Mackey-Glass series split in time (the first ``train_fraction`` trains, the rest tests), cut into
    windows (training stride ``stride``, default ``window // 4``; test windows do not overlap). ``kwargs`` go to
    :func:`mackey_glass` (tau, dt, sample_every, discard, ...; ``discard`` defaults to 500 transient samples)."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    kwargs.setdefault("discard", 500)
    rng = np.random.default_rng(seed)
    series = mackey_glass(length, history_noise=history_noise, rng=rng, **kwargs)  # type: ignore[arg-type]
    cut = int(length * train_fraction)
    train, test = series[:cut], series[cut:]
    for part, values in (("training", train), ("test", test)):
        if values.shape[0] < window + horizon:
            raise ValueError(f"the {part} part of the series has {values.shape[0]} samples, fewer than window + "
                             f"horizon = {window + horizon}; raise length or lower window")
    mean, std = float(train.mean()), float(train.std())
    if not std > 0:
        raise ValueError("the training part of the series is constant; use a chaotic tau (e.g. 17)")
    xs_tr, ys_tr = make_windows((train - mean) / std, window, horizon, stride or max(1, window // 4))
    xs_te, ys_te = make_windows((test - mean) / std, window, horizon, window)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).float().unsqueeze(-1)

    return MackeyGlassSplit(t(xs_tr), t(ys_tr), t(xs_te), t(ys_te), mean, std, int(horizon))
