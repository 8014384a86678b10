"""Simulated malicious clients: data poisoning and model-update poisoning (pure functions).

Threat model: a fixed subset ``M`` of the ``N`` clients is malicious, ``|M| = round(fraction * N)``, chosen
once per run with a seeded generator (:func:`choose_malicious`). A malicious client follows the protocol
(trains on its local data, sends an update in the agreed wire format when sampled) but may poison its data
or replace its update by anything it likes before uplink. The server does not know ``M``.

Update attacks act on the client's *chart delta* (see :mod:`spikefed.federated.aggregation`)::

    d_k = phi(w_k) - phi(x)            (circular: the shortest signed arc from x to w_k, in (-P/2, P/2])
    w_k' = phi^-1(phi(x) + a(d_k))     (the attacked parameters the client uploads)

with ``x`` the global parameters of the round and ``phi`` the parameter's chart (identity for euclidean
weights, ``log`` for positive, ``logit`` for unit-interval parameters, wrapping for circular delays). So an
attacked update stays on the parameter manifolds (it cannot be rejected merely for leaving them), and for
euclidean parameters the attack is exactly ``a(w_k - x)``.

=============  ============================================================================================
attack         effect
=============  ============================================================================================
``label_flip`` data poisoning: the client's labels become ``y -> C - 1 - y`` (``C`` classes), applied once
               when the client data is built; the update itself is the honest one on the poisoned data
``sign_flip``  ``a(d) = -s d`` (``s = sign_scale``)
``boost``      ``a(d) = b d`` (``b = boost``, model-replacement style scaling)
``noise``      ``a(d) = xi``, ``xi_i ~ N(0, sigma^2)`` i.i.d. (``sigma = noise_std``); the honest update is dropped
``nan``        ``a(d) = d`` with about 1 % of the elements of every tensor (at least one) replaced by
               ``nan, +inf, -inf, nan, ...`` at positions drawn from the client's attack generator
``shape``      ``a(d) = d`` reshaped to ``[1, *shape]`` (a leading axis): structurally malformed
=============  ============================================================================================

``nan`` and ``shape`` updates are what the server-side validation
(:func:`~spikefed.federated.aggregation.validate_updates`) rejects; the others are well-formed and need a robust
aggregator (:mod:`spikefed.federated.robust`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from spikefed.federated.aggregation import chart_difference, from_chart, to_chart
from spikefed.federated.types import ParamDict
from spikefed.manifold import EUCLIDEAN, Manifold

__all__ = [
    "ATTACKS",
    "UPDATE_ATTACKS",
    "attack_delta",
    "attack_update",
    "boost_delta",
    "choose_malicious",
    "flip_labels",
    "inject_nonfinite",
    "noise_delta",
    "sign_flip_delta",
    "wrong_shape_delta",
]

#: Attack names (``"none"``: honest clients only).
ATTACKS: tuple[str, ...] = ("none", "label_flip", "sign_flip", "boost", "noise", "nan", "shape")
#: The attacks that change the uploaded update (``label_flip`` poisons data instead).
UPDATE_ATTACKS: tuple[str, ...] = ("sign_flip", "boost", "noise", "nan", "shape")

#: Fraction of each tensor's elements replaced by non-finite values in the ``nan`` attack.
NONFINITE_FRACTION = 0.01


def _check_attack(kind: str) -> None:
    if kind not in ATTACKS:
        raise ValueError(f"unknown attack {kind!r}; valid attacks: {', '.join(ATTACKS)}")


def _finite_real(name: str, value: float, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------- who is malicious


def choose_malicious(num_clients: int, fraction: float, rng: np.random.Generator) -> list[int]:
    """The malicious client ids: ``round(fraction * num_clients)`` of ``range(num_clients)`` without
    replacement (halves round up), drawn from ``rng``; sorted ascending.
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise ValueError(f"num_clients must be an integer >= 1, got {num_clients!r}")
    if not (isinstance(fraction, (int, float)) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"attack fraction must lie in [0, 1], got {fraction!r}")
    count = min(num_clients, int(math.floor(fraction * num_clients + 0.5)))
    if count == 0:
        return []
    return sorted(int(c) for c in rng.choice(num_clients, size=count, replace=False))


# ------------------------------------------------------------------------------------------ data poisoning


def flip_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label flipping ``y -> C - 1 - y`` (new tensor, same dtype); ValueError for labels outside ``[0, C)``."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]")
    return (num_classes - 1) - y


# ---------------------------------------------------------------------------------------- update poisoning


def sign_flip_delta(delta: ParamDict, scale: float = 1.0) -> ParamDict:
    """``a(d) = -s d`` for every tensor (``s = scale > 0``)."""
    s = _finite_real("sign_scale", scale, positive=True)
    return {n: -s * d for n, d in delta.items()}


def boost_delta(delta: ParamDict, boost: float) -> ParamDict:
    """``a(d) = b d`` for every tensor (``b = boost > 0``; ``b >> 1`` is a boosted / model-replacement update)."""
    b = _finite_real("boost", boost, positive=True)
    return {n: b * d for n, d in delta.items()}


def noise_delta(delta: ParamDict, std: float, generator: torch.Generator) -> ParamDict:
    """``a(d) = xi`` with ``xi ~ N(0, std^2)`` element-wise, same shapes/dtypes as ``d`` (``d`` is discarded)."""
    sigma = _finite_real("noise_std", std, positive=True)
    out: ParamDict = {}
    for n, d in delta.items():
        z = torch.randn(d.shape, generator=generator, dtype=torch.float64)
        out[n] = (sigma * z).to(d.dtype)
    return out


def inject_nonfinite(delta: ParamDict, generator: torch.Generator,
                     fraction: float = NONFINITE_FRACTION) -> ParamDict:
    """Copy of ``delta`` with ``max(1, round(fraction * numel))`` elements of each tensor set to
    ``nan, +inf, -inf, nan, ...`` (in that cycle) at positions ``randperm(numel)[:count]`` of ``generator``.
    """
    cycle = (math.nan, math.inf, -math.inf)
    out: ParamDict = {}
    for n, d in delta.items():
        flat = d.detach().clone().reshape(-1)
        if flat.numel():
            count = max(1, int(round(fraction * flat.numel())))
            pos = torch.randperm(flat.numel(), generator=generator)[:count]
            values = torch.tensor([cycle[i % 3] for i in range(count)], dtype=flat.dtype)
            flat[pos] = values
        out[n] = flat.reshape(d.shape)
    return out


def wrong_shape_delta(delta: ParamDict) -> ParamDict:
    """``a(d) = d`` with a leading axis added, shape ``[1, *shape]`` (broadcasts against ``x``, fails validation)."""
    return {n: d.unsqueeze(0) for n, d in delta.items()}


def attack_delta(
    kind: str,
    delta: ParamDict,
    generator: torch.Generator | None = None,
    *,
    boost: float = 10.0,
    sign_scale: float = 1.0,
    noise_std: float = 1.0,
) -> ParamDict:
    """Apply the update attack ``kind`` to a client delta (see the module table); ``none`` and ``label_flip``
    return ``delta`` unchanged. ``noise`` and ``nan`` draw from ``generator`` (required for them).
    """
    _check_attack(kind)
    if kind in ("noise", "nan") and generator is None:
        raise ValueError(f"the {kind!r} attack needs a generator")
    if kind == "sign_flip":
        return sign_flip_delta(delta, sign_scale)
    if kind == "boost":
        return boost_delta(delta, boost)
    if kind == "noise":
        assert generator is not None
        return noise_delta(delta, noise_std, generator)
    if kind == "nan":
        assert generator is not None
        return inject_nonfinite(delta, generator)
    if kind == "shape":
        return wrong_shape_delta(delta)
    return delta


def attack_update(
    kind: str,
    global_params: ParamDict,
    params: ParamDict,
    manifolds: Mapping[str, Manifold] | None = None,
    generator: torch.Generator | None = None,
    *,
    boost: float = 10.0,
    sign_scale: float = 1.0,
    noise_std: float = 1.0,
) -> ParamDict:
    """The parameters a malicious client uploads: ``w' = phi^-1(phi(x) + a(phi(w) - phi(x)))`` per tensor.

    ``x = global_params``, ``w = params`` (the honestly trained client parameters), ``a`` the update attack
    ``kind`` (:func:`attack_delta`). Chart deltas are taken with
    :func:`~spikefed.federated.aggregation.chart_difference` (wrapped arcs for circular parameters), so
    well-formed attacks stay on each parameter's manifold. ``none`` and ``label_flip`` return ``params``
    itself.
    """
    _check_attack(kind)
    if kind not in UPDATE_ATTACKS:
        return params
    manifolds = manifolds or {}
    delta = {n: chart_difference(params[n].detach(), global_params[n].detach(), manifolds.get(n, EUCLIDEAN))
             for n in global_params}
    attacked = attack_delta(kind, delta, generator, boost=boost, sign_scale=sign_scale, noise_std=noise_std)
    out: ParamDict = {}
    for n, x in global_params.items():
        m = manifolds.get(n, EUCLIDEAN)
        out[n] = from_chart(to_chart(x.detach(), m) + attacked[n], m).to(params[n].dtype)
    return out
