"""Fairness of one global model across clients: summaries of the per-client accuracy.

Every evaluated round logs ``client_accuracy`` (the global model's expected accuracy on each client's label mix,
:func:`spikefed.federated.simulation.client_accuracy`); :func:`fairness_metrics` condenses it into three numbers
over the ``n`` clients with a defined accuracy ``a_1 .. a_n`` (clients whose classes the test set lacks are left
out):

- ``client_accuracy_mean``   = ``(1/n) sum_k a_k``
- ``client_accuracy_worst10`` = mean of the ``m = max(1, floor(n / 10))`` smallest ``a_k`` (the worst 10 % of the
  clients, at least one)
- ``client_accuracy_jain``   = ``(sum_k a_k)^2 / (n sum_k a_k^2)`` (Jain's fairness index: 1 when every client
  scores the same, ``1/n`` when one client gets everything; undefined, ``None``, when every ``a_k`` is 0)

All three are ``None`` when no client has a defined accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["FAIRNESS_KEYS", "fairness_metrics", "jain_index", "worst_fraction_mean"]

#: the metrics-row keys of :func:`fairness_metrics`
FAIRNESS_KEYS = ("client_accuracy_mean", "client_accuracy_worst10", "client_accuracy_jain")


def _finite(values: Sequence[float | None]) -> list[float]:
    out = []
    for v in values:
        if v is None:
            continue
        x = float(v)
        if math.isfinite(x):
            out.append(x)
    return out


def worst_fraction_mean(values: Sequence[float], fraction: float = 0.1) -> float:
    """Mean of the ``max(1, floor(fraction * n))`` smallest of ``values`` (``n >= 1`` finite numbers)."""
    if not values:
        raise ValueError("worst_fraction_mean needs at least one value")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    m = max(1, int(math.floor(fraction * len(values) + 1e-9)))
    worst = sorted(values)[:m]
    return sum(worst) / m


def jain_index(values: Sequence[float]) -> float | None:
    """Jain's index ``(sum a)^2 / (n sum a^2)`` of ``n >= 1`` non-negative numbers; ``None`` if all are 0."""
    if not values:
        raise ValueError("jain_index needs at least one value")
    if any(v < 0 for v in values):
        raise ValueError(f"jain_index needs non-negative values, got {min(values)}")
    squares = sum(v * v for v in values)
    if squares == 0:
        return None
    return sum(values) ** 2 / (len(values) * squares)


def fairness_metrics(client_accuracy: Sequence[float | None]) -> dict[str, float | None]:
    """``{client_accuracy_mean, client_accuracy_worst10, client_accuracy_jain}`` of the per-client accuracies
    (``None`` / NaN entries are skipped; every value ``None`` when nothing is left)."""
    a = _finite(client_accuracy)
    if not a:
        return dict.fromkeys(FAIRNESS_KEYS)
    return {"client_accuracy_mean": sum(a) / len(a), "client_accuracy_worst10": worst_fraction_mean(a, 0.1),
            "client_accuracy_jain": jain_index(a)}
