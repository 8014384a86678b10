"""Client selection: which clients train in a round, and the aggregation correction a method needs.

``federation.selection`` picks ``m = max(min_clients, round(fraction N))`` of the ``N`` clients per round:

- ``uniform``: ``m`` distinct clients, every subset equally likely (inclusion probability ``m / N``).
- ``size``: ``m`` independent draws *with replacement*, client ``k`` with probability ``q_k = n_k / sum_j n_j``
  (its share of the data). A client drawn ``c_k`` times trains once and counts ``c_k`` times: the aggregate uses
  the Horvitz-Thompson factor ``c_k / (m q_k)`` on the strategy's weight ``b_k`` (``n_k / n`` or ``1/N``), i.e.
  ``p_k proportional to b_k c_k / q_k``. Because ``E[c_k] = m q_k``, the unnormalised estimate
  ``sum_k b_k c_k / (m q_k) w_k`` has expectation ``sum_k b_k w_k`` over all ``N`` clients: unbiased. With
  sample weights ``b_k = q_k`` the factors ``c_k / m`` already sum to 1, so the normalised aggregate is the same
  estimate (exactly unbiased); with ``weighting=uniform`` the normalisation makes it a ratio estimator.
- ``power_of_choice`` (Cho, Wang, Joshi 2022, "Towards understanding biased client selection"): ``d`` distinct
  candidates uniformly (``d = min(N, max(m, round(candidates N)))``); each reports its loss at the current global
  model on its own data; the ``m`` with the highest loss train (ties: the lower id). Biased on purpose (towards
  the clients the model serves worst): no correction.
- ``availability``: client ``k`` is online in round ``t`` with probability
  ``a_k(t) = low + (high - low) (1 + cos(2 pi (t / period - phi_k))) / 2`` (a diurnal trace; ``phi_k`` uniform in
  ``[0, 1)``, drawn once per client), independently per round; ``m`` distinct clients are drawn uniformly among
  the online ones (all of them when fewer are online; the most available client when none is). Availability is
  not the server's choice, so no correction (the skew it causes is what it measures).

Randomness: uniform draws from ``(seed, SAMPLE, round)``, the other methods' from ``(seed, SELECT, round)``, a
client's phase from ``(seed, AVAILABILITY, k)``, its online coin from ``(seed, AVAILABILITY, round, k)``
(:mod:`spikefed.seeding`). Power-of-choice's extra broadcasts to the ``d - m`` candidates that do not train are
not counted in ``bytes_down``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..seeding import Purpose, numpy_rng

__all__ = ["SELECTIONS", "Selection", "SelectionSpec", "availability", "availability_phase", "horvitz_thompson",
           "power_of_choice", "select", "size_draws", "uniform_draw"]

SELECTIONS = ("uniform", "power_of_choice", "size", "availability")


@dataclass(frozen=True)
class SelectionSpec:
    """How the clients of a round are chosen (see the module docstring)."""

    method: str = "uniform"
    candidates: float = 1.0  # power_of_choice: d = round(candidates * N), at least m
    period: float = 24.0  # availability: rounds per day
    low: float = 0.1  # availability: the lowest online probability of a day
    high: float = 0.9  # availability: the highest

    def __post_init__(self) -> None:
        if self.method not in SELECTIONS:
            raise ValueError(f"unknown selection {self.method!r}; valid: {', '.join(SELECTIONS)}")
        if not (math.isfinite(self.candidates) and 0 < self.candidates <= 1):
            raise ValueError(f"selection candidates must be in (0, 1], got {self.candidates}")
        if not (math.isfinite(self.period) and self.period > 0):
            raise ValueError(f"availability period must be > 0, got {self.period}")
        if not 0 <= self.low <= self.high <= 1:
            raise ValueError(f"availability needs 0 <= low <= high <= 1, got low={self.low}, high={self.high}")


@dataclass(frozen=True)
class Selection:
    """The round's clients (sorted, distinct) and, where the method needs it, each one's aggregation factor."""

    clients: list[int]
    factors: dict[int, float] | None = None  # client -> multiplier of its strategy weight (None: none)


def uniform_draw(rng: np.random.Generator, n: int, m: int) -> list[int]:
    """``m`` distinct clients of ``n``, uniformly."""
    return sorted(rng.choice(n, size=m, replace=False).tolist())


def size_draws(rng: np.random.Generator, sizes: Sequence[int], m: int) -> np.ndarray:
    """How often each client is drawn in ``m`` draws with replacement, ``q_k = n_k / sum n`` (counts ``[N]``)."""
    q = np.asarray(sizes, dtype=np.float64)
    q = q / q.sum()
    return np.bincount(rng.choice(len(q), size=m, replace=True, p=q), minlength=len(q))


def horvitz_thompson(counts: np.ndarray, q: np.ndarray) -> dict[int, float]:
    """The aggregation factors ``c_k / (m q_k)`` of the drawn clients (``m = sum c``)."""
    m = int(counts.sum())
    return {int(k): float(counts[k] / (m * q[k])) for k in np.flatnonzero(counts)}


def power_of_choice(candidates: Sequence[int], losses: Sequence[float], m: int) -> list[int]:
    """The ``m`` candidates with the highest loss (ties: the lower client id), sorted."""
    ranked = sorted(zip(candidates, losses), key=lambda cl: (-cl[1], cl[0]))
    return sorted(int(c) for c, _ in ranked[:m])


def availability_phase(seed: int, client: int) -> float:
    """Client ``client``'s phase ``phi_k`` in ``[0, 1)`` (once per run)."""
    return float(numpy_rng(seed, Purpose.AVAILABILITY, None, client).random())


def availability(spec: SelectionSpec, phase: float, rnd: int) -> float:
    """``a_k(t) = low + (high - low) (1 + cos(2 pi (t / period - phi_k))) / 2``."""
    return spec.low + (spec.high - spec.low) * (1 + math.cos(2 * math.pi * (rnd / spec.period - phase))) / 2


def select(spec: SelectionSpec, seed: int, rnd: int, sizes: Sequence[int], m: int,
           losses: Callable[[list[int]], list[float]] | None = None) -> Selection:
    """The clients of round ``rnd`` (``m`` of ``len(sizes)``). ``losses(candidates)`` (power_of_choice): each
    candidate's loss at the current global model."""
    n = len(sizes)
    if not 1 <= m <= n:
        raise ValueError(f"cannot select {m} of {n} clients")
    if spec.method == "uniform":  # the stream of every run before selection methods existed
        return Selection(uniform_draw(numpy_rng(seed, Purpose.SAMPLE, rnd), n, m))
    rng = numpy_rng(seed, Purpose.SELECT, rnd)
    if spec.method == "size":
        counts = size_draws(rng, sizes, m)
        q = np.asarray(sizes, dtype=np.float64) / float(np.sum(sizes))
        return Selection(sorted(int(k) for k in np.flatnonzero(counts)), horvitz_thompson(counts, q))
    if spec.method == "power_of_choice":
        if losses is None:
            raise ValueError("power_of_choice needs the candidates' losses")
        d = min(n, max(m, int(round(spec.candidates * n))))
        cand = uniform_draw(rng, n, d)
        return Selection(power_of_choice(cand, losses(cand), m))
    probs = [availability(spec, availability_phase(seed, k), rnd) for k in range(n)]
    online = [k for k in range(n) if numpy_rng(seed, Purpose.AVAILABILITY, rnd, k).random() < probs[k]]
    if not online:
        return Selection([int(np.argmax(probs))])
    if len(online) <= m:
        return Selection(online)
    return Selection(sorted(online[i] for i in uniform_draw(rng, len(online), m)))
