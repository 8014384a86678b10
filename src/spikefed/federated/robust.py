"""Byzantine-robust aggregation on parameter charts (pure functions), and the robustness setup of a run.

The plain aggregate of a round is the manifold-aware weighted mean (:mod:`spikefed.federated.aggregation`).
A robust *defence* replaces that mean; the strategy's server optimizer then steps towards the robust target
exactly as it would towards the mean (:attr:`spikefed.federated.strategies.Strategy.aggregator`).

Every defence works on the clients' **chart deltas** relative to the current global parameters ``x``::

    d_k = phi(w_k) - phi(x)        per tensor; circular(P): the shortest signed arc in (-P/2, P/2]
    D   = defence(d_1 .. d_K)      element-wise or on the concatenated vector, in float64
    target = project(phi^-1(phi(x) + D))

with the charts of :mod:`~spikefed.federated.aggregation` (identity, ``log`` for positive, ``logit`` for
unit-interval parameters; circular values step on the raw value and wrap into ``[0, P)``). So positive
parameters stay positive, unit-interval ones inside ``(0, 1)``, and delays wrap correctly (a client at
``P - 0.1`` and one at ``0.1`` around ``x = 0`` are 0.2 apart, not ``P - 0.2``). Vector norms and distances use
``||d||^2 = sum_tensors sum_i d_i^2`` over all parameters together (circular differences wrapped).

Defences (``K`` updates, weights ``p_k`` normalised to sum one):

- ``median`` — coordinate-wise median (Yin et al. 2018): ``D_i = median_k d_{k,i}``; for even ``K`` the mean of
  the two middle values (as ``numpy.median``). Unweighted.
- ``trimmed_mean`` — coordinate-wise ``beta``-trimmed mean (Yin et al. 2018): sort ``d_{(1),i} <= ... <=
  d_{(K),i}``, drop ``t = floor(beta K)`` from each end, ``D_i = 1/(K - 2t) sum_{j=t+1}^{K-t} d_{(j),i}``
  (as ``scipy.stats.trim_mean``). Unweighted; ``0 <= beta < 0.5`` always keeps ``K - 2t >= 1`` values.
- ``krum`` — Krum (Blanchard et al. 2017): with ``f`` the assumed number of Byzantine updates and
  ``s(k) = sum_{j in N_k} ||d_k - d_j||^2`` where ``N_k`` are the ``K - f - 2`` nearest neighbours of ``d_k``
  (``j != k``), ``D = d_{k*}`` with ``k* = argmin_k s(k)`` (lowest index on ties).
- ``multikrum`` — Multi-Krum (same paper): the ``m`` updates with the lowest scores ``S_m``,
  ``D = sum_{k in S_m} p_k d_k / sum_{k in S_m} p_k`` (the plain mean of the paper when all ``p_k`` are equal).
- ``norm_clip`` — norm clipping (Sun et al. 2019): ``c`` = ``clip_norm`` or, if unset, the median of the
  round's ``||d_k||``; ``D = sum_k p_k min(1, c / ||d_k||) d_k``.

- ``fltrust`` — FLTrust (Cao et al. 2021): the server trains the round's global model on a small clean root
  set of its own (drawn from the training data, never the test set) and gets the reference delta ``g_0``;
  trust ``TS_k = ReLU(cos(d_k, g_0))``, every update rescaled to the reference norm,
  ``D = sum_k TS_k (||g_0|| / ||d_k||) d_k / sum_k TS_k`` (``D = 0`` when every ``TS_k = 0``; a zero ``d_k``
  or a zero ``g_0`` has ``cos = 0``). Unweighted.

Small rounds: Krum needs ``K - f - 2 >= 1`` and Multi-Krum ``1 <= m <= K``. A configured ``krum_f`` or
``multikrum_m`` is never clamped: the pure functions raise, the simulation refuses at setup a value that does
not fit its nominal cohort, and a round whose *accepted* updates are too few for it (rejections, dropouts)
falls back to the coordinate median, with a warning in the log. With ``krum_f`` unset, ``f`` is the largest the
paper allows for the round's ``K``, ``f = floor((K - 3) / 2)`` (``2f + 2 < K``), and the default Multi-Krum
``m`` is ``K - f``; rounds with ``K < 3`` use the coordinate median.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from spikefed.federated.aggregation import chart_difference, from_chart, to_chart
from spikefed.federated.attacks import ATTACKS
from spikefed.federated.types import ParamDict
from spikefed.manifold import EUCLIDEAN, Manifold

__all__ = [
    "DEFENSES",
    "RobustAggregator",
    "RobustnessSpec",
    "apply_chart_delta",
    "chart_deltas",
    "coordinate_median",
    "coordinate_trimmed_mean",
    "delta_norms",
    "fltrust_delta",
    "krum_parameters",
    "krum",
    "krum_scores",
    "multi_krum",
    "norm_clip_mean",
    "pairwise_sq_distances",
    "robust_delta",
]

#: Defence names (``"none"``: the strategy's weighted mean).
DEFENSES: tuple[str, ...] = ("none", "median", "trimmed_mean", "krum", "multikrum", "norm_clip", "fltrust")

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- charts


def chart_deltas(
    global_params: ParamDict, client_params: Sequence[ParamDict], manifolds: Mapping[str, Manifold] | None = None
) -> dict[str, torch.Tensor]:
    """Per parameter, the stack ``[K, *shape]`` (float64) of chart deltas ``d_k = phi(w_k) - phi(x)``.

    Circular parameters give the shortest signed arc in ``(-P/2, P/2]``
    (:func:`~spikefed.federated.aggregation.chart_difference`). Names follow ``global_params``.
    """
    if not client_params:
        raise ValueError("robust aggregation needs at least one update, got none")
    manifolds = manifolds or {}
    out: dict[str, torch.Tensor] = {}
    for name, x in global_params.items():
        m = manifolds.get(name, EUCLIDEAN)
        x64 = x.detach().to(torch.float64)
        out[name] = torch.stack([
            chart_difference(p[name].detach().to(device=x.device, dtype=torch.float64), x64, m)
            for p in client_params
        ])
    return out


def apply_chart_delta(
    global_params: ParamDict, delta: Mapping[str, torch.Tensor], manifolds: Mapping[str, Manifold] | None = None
) -> ParamDict:
    """``project(phi^-1(phi(x) + D))`` per tensor, in the dtype and device of ``x`` (new tensors)."""
    manifolds = manifolds or {}
    out: ParamDict = {}
    for name, x in global_params.items():
        m = manifolds.get(name, EUCLIDEAN)
        y = to_chart(x.detach().to(torch.float64), m) + delta[name].to(device=x.device, dtype=torch.float64)
        out[name] = m.project_(from_chart(y, m).to(x.dtype))
    return out


def _wrap_half(d: torch.Tensor, m: Manifold) -> torch.Tensor:
    """A difference of two chart deltas; for circular(P) wrapped into ``(-P/2, P/2]``."""
    if m.kind != "circular":
        return d
    return chart_difference(d, torch.zeros_like(d), m)


# ---------------------------------------------------------------------------------- coordinate-wise rules


def _check_stack(stack: torch.Tensor) -> torch.Tensor:
    if not isinstance(stack, torch.Tensor) or not stack.is_floating_point():
        raise ValueError(f"expected a floating-point stack [K, ...], got {getattr(stack, 'dtype', type(stack))}")
    if stack.ndim < 1 or stack.shape[0] < 1:
        raise ValueError(f"expected a stack of shape [K >= 1, ...], got {tuple(stack.shape)}")
    if not torch.isfinite(stack).all():
        raise ValueError("the stack contains non-finite values; validate updates first")
    return stack


def coordinate_median(stack: torch.Tensor) -> torch.Tensor:
    """Element-wise median over axis 0 of ``[K, ...]``; even ``K``: mean of the two middle values.

    ``D_i = d_{((K+1)/2),i}`` for odd ``K``, ``(d_{(K/2),i} + d_{(K/2+1),i}) / 2`` for even ``K`` (sorted order
    statistics), as ``numpy.median(stack, axis=0)``.
    """
    s = _check_stack(stack).sort(dim=0).values
    k = s.shape[0]
    if k % 2:
        return s[k // 2].clone()
    return 0.5 * (s[k // 2 - 1] + s[k // 2])


def coordinate_trimmed_mean(stack: torch.Tensor, beta: float) -> torch.Tensor:
    """Element-wise ``beta``-trimmed mean over axis 0: drop ``t = floor(beta K)`` smallest and largest.

    ``D_i = 1/(K - 2t) sum_{j=t+1}^{K-t} d_{(j),i}``, as ``scipy.stats.trim_mean(stack, beta, axis=0)``.
    Raises ``ValueError`` unless ``0 <= beta < 0.5``.
    """
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0.0 <= beta < 0.5:
        raise ValueError(f"trim fraction beta must lie in [0, 0.5), got {beta!r}")
    s = _check_stack(stack).sort(dim=0).values
    k = s.shape[0]
    t = int(math.floor(beta * k))  # beta < 0.5 keeps K - 2t >= 1 values
    return s[t:k - t].mean(0)


# ------------------------------------------------------------------------------------- vector-level rules


def delta_norms(deltas: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``||d_k|| = sqrt(sum_tensors sum_i d_{k,i}^2)`` for stacks ``{name: [K, ...]}`` -> float64 ``[K]``."""
    total: torch.Tensor | None = None
    for stack in deltas.values():
        sq = stack.to(torch.float64).pow(2).flatten(1).sum(1)
        total = sq if total is None else total + sq
    if total is None:
        raise ValueError("no parameters")
    return total.sqrt()


def pairwise_sq_distances(
    deltas: Mapping[str, torch.Tensor], manifolds: Mapping[str, Manifold] | None = None
) -> torch.Tensor:
    """``D2[a, b] = ||d_a - d_b||^2`` (float64 ``[K, K]``, zero diagonal), summed over all tensors.

    Differences of circular parameters are wrapped into ``(-P/2, P/2]`` first. Computed row by row from the
    differences themselves (no ``|a|^2 + |b|^2 - 2ab`` cancellation).
    """
    manifolds = manifolds or {}
    stacks = [(deltas[n].to(torch.float64), manifolds.get(n, EUCLIDEAN)) for n in deltas]
    if not stacks:
        raise ValueError("no parameters")
    k = stacks[0][0].shape[0]
    out = torch.zeros(k, k, dtype=torch.float64)
    for a in range(k):
        row = torch.zeros(k, dtype=torch.float64)
        for s, m in stacks:
            diff = _wrap_half(s - s[a], m)
            row += diff.pow(2).flatten(1).sum(1)
        out[a] = row
    out.fill_diagonal_(0.0)
    return out


def krum_scores(distances: torch.Tensor, f: int) -> torch.Tensor:
    """Krum scores ``s(k) = sum of the K - f - 2 smallest ||d_k - d_j||^2 over j != k`` (float64 ``[K]``).

    ``distances`` is the ``[K, K]`` matrix of squared distances (:func:`pairwise_sq_distances`). Raises
    ``ValueError`` unless ``f >= 0`` and ``K - f - 2 >= 1``.
    """
    d = torch.as_tensor(distances, dtype=torch.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square [K, K] matrix, got {tuple(d.shape)}")
    k = d.shape[0]
    if isinstance(f, bool) or not isinstance(f, numbers.Integral) or f < 0:
        raise ValueError(f"f must be an integer >= 0, got {f!r}")
    neighbours = k - int(f) - 2
    if neighbours < 1:
        raise ValueError(f"Krum needs K - f - 2 >= 1 (K={k} updates, f={f})")
    off = d.masked_fill(torch.eye(k, dtype=torch.bool), math.inf)  # exclude j == k
    return off.sort(dim=1).values[:, :neighbours].sum(1)


def _best(scores: torch.Tensor, m: int) -> list[int]:
    """Indices of the ``m`` lowest scores, ascending by score, lower index first on ties."""
    order = torch.argsort(scores, stable=True)
    return [int(i) for i in order[:m]]


def krum(deltas: Mapping[str, torch.Tensor], f: int,
         manifolds: Mapping[str, Manifold] | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """Krum: ``(d_{k*}, k*)`` with ``k* = argmin_k s(k)`` (:func:`krum_scores`) for stacks ``{name: [K, ...]}``."""
    scores = krum_scores(pairwise_sq_distances(deltas, manifolds), f)
    best = _best(scores, 1)[0]
    return {n: s[best].to(torch.float64).clone() for n, s in deltas.items()}, best


def _weighted_rows(deltas: Mapping[str, torch.Tensor], coef: torch.Tensor) -> dict[str, torch.Tensor]:
    """``sum_k coef_k d_k`` per stack (float64)."""
    return {n: torch.tensordot(coef, s.to(torch.float64), dims=1) for n, s in deltas.items()}


def _norm_weights(weights: torch.Tensor | Sequence[float] | None, k: int) -> torch.Tensor:
    if weights is None:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    p = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
    if p.ndim != 1 or p.shape[0] != k:
        raise ValueError(f"weights must have shape [{k}], got {tuple(p.shape)}")
    if not torch.isfinite(p).all() or (p < 0).any() or not p.sum() > 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {p.tolist()}")
    return p / p.sum()


def multi_krum(
    deltas: Mapping[str, torch.Tensor],
    f: int,
    m: int,
    weights: torch.Tensor | Sequence[float] | None = None,
    manifolds: Mapping[str, Manifold] | None = None,
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Multi-Krum: weighted mean of the ``m`` updates with the lowest Krum scores; returns ``(D, selected)``.

    ``D = sum_{k in S} p_k d_k / sum_{k in S} p_k`` (``weights=None``: equal weights, the paper's mean).
    """
    stacks = list(deltas.values())
    k = stacks[0].shape[0] if stacks else 0
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or not 1 <= m <= k:
        raise ValueError(f"multikrum m must be an integer in [1, K={k}], got {m!r}")
    p = _norm_weights(weights, k)
    selected = _best(krum_scores(pairwise_sq_distances(deltas, manifolds), f), int(m))
    coef = torch.zeros(k, dtype=torch.float64)
    coef[selected] = p[selected]
    if not coef.sum() > 0:
        coef[selected] = 1.0
    return _weighted_rows(deltas, coef / coef.sum()), selected


def norm_clip_mean(
    deltas: Mapping[str, torch.Tensor],
    weights: torch.Tensor | Sequence[float] | None = None,
    clip_norm: float | None = None,
) -> tuple[dict[str, torch.Tensor], float]:
    """Clipped weighted mean ``D = sum_k p_k min(1, c / ||d_k||) d_k``; returns ``(D, c)``.

    ``c = clip_norm`` or, when ``None``, the median (:func:`coordinate_median`) of the norms ``||d_k||``
    (:func:`delta_norms`, circular deltas are already wrapped arcs). A zero delta is left as is.
    """
    norms = delta_norms(deltas)
    k = norms.shape[0]
    p = _norm_weights(weights, k)
    if clip_norm is None:
        c = float(coordinate_median(norms))
    else:
        if isinstance(clip_norm, bool) or not isinstance(clip_norm, numbers.Real) or not (
                clip_norm > 0 and math.isfinite(clip_norm)):
            raise ValueError(f"clip_norm must be a finite number > 0 or None, got {clip_norm!r}")
        c = float(clip_norm)
    factor = torch.where(norms > c, c / norms.clamp_min(1e-300), torch.ones_like(norms))
    return _weighted_rows(deltas, p * factor), c


def fltrust_delta(
    deltas: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """FLTrust: ``D = sum_k TS_k (||g_0|| / ||d_k||) d_k / sum_k TS_k`` with ``TS_k = ReLU(cos(d_k, g_0))``.

    ``deltas`` are the stacks ``{name: [K, ...]}``, ``reference`` the server's delta ``g_0`` ``{name: [...]}``
    (same names and shapes without the leading axis). ``cos`` and norms are taken over all tensors together. A
    zero ``d_k`` or a zero ``g_0`` gets ``cos = 0`` (no trust); when no update has positive trust ``D = 0`` (the
    model stays). Returns ``(D, TS)`` (``TS``: float64 ``[K]``).
    """
    if set(reference) != set(deltas):
        raise ValueError(f"the reference has parameters {sorted(reference)}, the updates {sorted(deltas)}")
    ref = {n: torch.as_tensor(reference[n]).to(torch.float64) for n in deltas}
    for n, s in deltas.items():
        if tuple(ref[n].shape) != tuple(s.shape[1:]):
            raise ValueError(f"parameter {n!r}: reference shape {tuple(ref[n].shape)}, updates {tuple(s.shape[1:])}")
        if not torch.isfinite(ref[n]).all():
            raise ValueError(f"parameter {n!r}: the reference delta contains non-finite values")
    norms = delta_norms(deltas)
    ref_norm = float(delta_norms({n: r.unsqueeze(0) for n, r in ref.items()})[0])
    dots = sum(s.to(torch.float64).flatten(1) @ ref[n].flatten() for n, s in deltas.items())
    assert isinstance(dots, torch.Tensor)
    usable = (norms > 0) & (ref_norm > 0)
    cos = torch.where(usable, dots / (norms * ref_norm).clamp_min(1e-300), torch.zeros_like(norms))
    trust = cos.clamp_min(0.0)
    total = float(trust.sum())
    if not total > 0:
        return {n: torch.zeros_like(r) for n, r in ref.items()}, trust
    coef = torch.where(usable, trust * ref_norm / norms.clamp_min(1e-300), torch.zeros_like(norms)) / total
    return _weighted_rows(deltas, coef), trust


# ------------------------------------------------------------------------------------------- dispatcher


def robust_delta(
    defense: str,
    deltas: Mapping[str, torch.Tensor],
    weights: torch.Tensor | Sequence[float] | None = None,
    manifolds: Mapping[str, Manifold] | None = None,
    *,
    trim_fraction: float = 0.1,
    krum_f: int | None = None,
    multikrum_m: int | None = None,
    clip_norm: float | None = None,
    reference: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The robust aggregate ``D`` of chart-delta stacks ``{name: [K, ...]}`` under ``defense``.

    ``none`` is the weighted mean ``sum_k p_k d_k``. Krum/Multi-Krum take ``f`` and ``m`` from
    :func:`krum_parameters` (``ValueError`` when a given ``krum_f`` / ``multikrum_m`` does not fit ``K``; with
    both unset, the coordinate median when ``K < 3``). Trimmed mean with ``floor(beta K) = 0`` is the plain
    (unweighted) mean. ``fltrust`` needs ``reference``, the server's chart delta ``g_0`` (:func:`fltrust_delta`).
    """
    if defense not in DEFENSES:
        raise ValueError(f"unknown defense {defense!r}; valid defenses: {', '.join(DEFENSES)}")
    stacks = list(deltas.values())
    if not stacks:
        raise ValueError("no parameters")
    k = stacks[0].shape[0]
    for n, s in deltas.items():
        _check_stack(s)
        if s.shape[0] != k:
            raise ValueError(f"parameter {n!r}: {s.shape[0]} updates, expected {k}")
    if defense == "none":
        return _weighted_rows(deltas, _norm_weights(weights, k))
    if defense == "trimmed_mean":
        return {n: coordinate_trimmed_mean(s.to(torch.float64), trim_fraction) for n, s in deltas.items()}
    if defense == "norm_clip":
        return norm_clip_mean(deltas, weights, clip_norm)[0]
    if defense == "fltrust":
        if reference is None:
            raise ValueError("the fltrust defence needs the server's reference delta (reference=None)")
        return fltrust_delta(deltas, reference)[0]
    fm = None if defense == "median" else krum_parameters(k, krum_f, multikrum_m if defense == "multikrum" else None)
    if fm is None:
        return {n: coordinate_median(s.to(torch.float64)) for n, s in deltas.items()}
    if defense == "krum":
        return krum(deltas, fm[0], manifolds)[0]
    return multi_krum(deltas, fm[0], fm[1], weights, manifolds)[0]


def krum_parameters(k: int, krum_f: int | None = None, multikrum_m: int | None = None) -> tuple[int, int] | None:
    """``(f, m)`` of Krum / Multi-Krum for ``K = k`` updates, or ``None`` (use the coordinate median).

    Unset ``krum_f``: ``f = floor((K - 3) / 2)``, the largest with ``2f + 2 < K``, and ``None`` when ``K < 3``.
    Unset ``multikrum_m``: ``m = K - f``. A given value is used as it is: ``ValueError`` unless
    ``K - f - 2 >= 1`` and ``1 <= m <= K`` (never clamped).
    """
    if krum_f is None:
        if k < 3:
            return None
        f = (k - 3) // 2
    else:
        if isinstance(krum_f, bool) or not isinstance(krum_f, numbers.Integral) or krum_f < 0:
            raise ValueError(f"krum_f must be an integer >= 0, got {krum_f!r}")
        f = int(krum_f)
        if k - f - 2 < 1:
            raise ValueError(f"krum_f={f} needs at least f + 3 = {f + 3} updates (Krum: K - f - 2 >= 1), got K={k}")
    m = k - f if multikrum_m is None else int(multikrum_m)
    if not 1 <= m <= k:
        raise ValueError(f"multikrum_m={m} must lie in [1, K={k}]")
    return f, m


@dataclass(frozen=True)
class RobustAggregator:
    """A robust replacement of the strategy's weighted mean (plug into ``Strategy.aggregator``).

    Called as ``aggregator(global_params, client_params, weights, manifolds) -> target`` with
    ``target = project(phi^-1(phi(x) + robust_delta(defense, chart_deltas(x, w_1..w_K))))``.

    ``fltrust`` needs ``reference``: the parameters the server trained from ``x`` on its root set this round
    (the simulation sets it every round, :meth:`with_reference`); ``g_0 = chart_deltas(x, [reference])``.
    Krum/Multi-Krum rounds whose ``K`` is too small for a configured ``krum_f`` / ``multikrum_m`` use the
    coordinate median and log a warning (see the module docstring).
    """

    defense: str
    trim_fraction: float = 0.1
    krum_f: int | None = None
    multikrum_m: int | None = None
    clip_norm: float | None = None
    reference: ParamDict | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.defense not in DEFENSES:
            raise ValueError(f"unknown defense {self.defense!r}; valid defenses: {', '.join(DEFENSES)}")
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must lie in [0, 0.5), got {self.trim_fraction!r}")
        for name, low in (("krum_f", 0), ("multikrum_m", 1)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low):
                raise ValueError(f"{name} must be an integer >= {low} or None, got {v!r}")
        if self.clip_norm is not None and not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise ValueError(f"clip_norm must be a finite number > 0 or None, got {self.clip_norm!r}")

    def __call__(
        self,
        global_params: ParamDict,
        client_params: Sequence[ParamDict],
        weights: torch.Tensor | Sequence[float] | None = None,
        manifolds: Mapping[str, Manifold] | None = None,
    ) -> ParamDict:
        deltas = chart_deltas(global_params, client_params, manifolds)
        defense = self.defense
        if defense in ("krum", "multikrum"):
            try:
                krum_parameters(len(client_params), self.krum_f, self.multikrum_m if defense == "multikrum" else None)
            except ValueError as e:
                logger.warning("%s: %s; this round uses the coordinate median", defense, e)
                defense = "median"
        reference = None
        if defense == "fltrust":
            if self.reference is None:
                raise ValueError("the fltrust defence needs the server's reference model (RobustAggregator.reference)")
            reference = {n: s[0] for n, s in chart_deltas(global_params, [self.reference], manifolds).items()}
        agg = robust_delta(defense, deltas, weights, manifolds, trim_fraction=self.trim_fraction,
                           krum_f=self.krum_f, multikrum_m=self.multikrum_m, clip_norm=self.clip_norm,
                           reference=reference)
        return apply_chart_delta(global_params, agg, manifolds)

    def with_reference(self, reference: ParamDict) -> "RobustAggregator":
        """This aggregator with the round's server reference model (``fltrust``)."""
        return dataclasses.replace(self, reference=reference)


# ------------------------------------------------------------------------------------------- run setup


@dataclass(frozen=True)
class RobustnessSpec:
    """Attack and defence of a simulated run (``FederationSpec.robustness``; ``None`` there: neither).

    ``attack`` one of :data:`~spikefed.federated.attacks.ATTACKS` on ``round(attack_fraction * N)`` clients
    chosen once per run (seeded); ``boost``, ``sign_scale``, ``noise_std`` parametrise the update attacks
    (:mod:`spikefed.federated.attacks`). ``defense`` one of :data:`DEFENSES` with its options (see
    :class:`RobustAggregator`); ``root_size`` is the number of training samples in FLTrust's server root set.
    """

    attack: str = "none"
    attack_fraction: float = 0.2
    boost: float = 10.0
    sign_scale: float = 1.0
    noise_std: float = 1.0
    defense: str = "none"
    trim_fraction: float = 0.1
    krum_f: int | None = None
    multikrum_m: int | None = None
    clip_norm: float | None = None
    root_size: int = 100

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; valid attacks: {', '.join(ATTACKS)}")
        if not 0.0 <= self.attack_fraction <= 1.0:
            raise ValueError(f"attack_fraction must lie in [0, 1], got {self.attack_fraction!r}")
        for name in ("boost", "sign_scale", "noise_std"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if isinstance(self.root_size, bool) or not isinstance(self.root_size, int) or self.root_size < 1:
            raise ValueError(f"root_size must be an integer >= 1, got {self.root_size!r}")
        # validates the defence and its options (also for "none")
        RobustAggregator(self.defense, self.trim_fraction, self.krum_f, self.multikrum_m, self.clip_norm)

    def aggregator(self) -> RobustAggregator | None:
        """The defence as a :class:`RobustAggregator`, or ``None`` for ``defense == "none"``."""
        if self.defense == "none":
            return None
        return RobustAggregator(self.defense, self.trim_fraction, self.krum_f, self.multikrum_m, self.clip_norm)
