"""Client drift of a round: how far the clients' updates disagree with their weighted average.

With client deltas ``d_k = w_k - x`` (all tensors flattened into one vector) and aggregation weights ``p_k``
(``sum p_k = 1``), the average is ``dbar = sum_k p_k d_k`` and

    cosine dissimilarity  D_cos  = sum_k p_k (1 - cos(d_k, dbar))           in [0, 2]; 0 iff all point along dbar
    norm dissimilarity    D_norm = sum_k p_k ||d_k||^2 / ||dbar||^2          >= 1;     1 iff all d_k are equal

``D_norm`` is the B^2 of the bounded-dissimilarity assumption of FedProx (Li et al. 2020), measured on the round's
updates instead of gradients (``sum p_k ||d_k - dbar||^2 = (D_norm - 1) ||dbar||^2``). Both are computed in
float64. A zero update (or a zero average) makes the cosine undefined: such terms count as 1 (orthogonal) and a
zero average gives ``D_norm = inf`` (or ``nan`` when every update is zero).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .aggregation import stacked_rows
from .stack_ops import drift_sums

#: metrics-row keys written by :func:`client_drift`
DRIFT_KEYS = ("client_drift_cosine", "client_drift_norm")


def flat_delta(params: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``params - base`` over all tensors, flattened into one float64 vector (names of ``base``, in order)."""
    missing = [n for n in base if n not in params]
    if missing:
        raise ValueError(f"update lacks parameters {missing}")
    return torch.cat([(params[n].detach().double() - base[n].detach().double()).flatten() for n in base])


def _weights(weights: Sequence[float]) -> torch.Tensor:
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all zero, got {list(weights)}")
    return w / w.sum()


def update_dissimilarity(deltas: Sequence[torch.Tensor] | torch.Tensor, weights: Sequence[float]
                         ) -> tuple[float, float]:
    """``(D_cos, D_norm)`` of flat updates ``deltas`` (a list of vectors, or their stack ``[K, P]``) with weights
    ``weights`` (normalised to sum 1; see the module docstring). ``ValueError`` for no update, mismatched lengths
    or shapes, or weights that are negative, non-finite or all zero."""
    if len(deltas) == 0 or len(deltas) != len(weights):
        raise ValueError(f"need one weight per update and at least one update, got {len(deltas)} updates and "
                         f"{len(weights)} weights")
    w = _weights(weights)
    if isinstance(deltas, torch.Tensor):
        if deltas.dim() != 2:
            raise ValueError("updates must be flat vectors of one length (a stack [K, P])")
        d = deltas.double()
    else:
        shape = deltas[0].shape
        if any(x.shape != shape or x.dim() != 1 for x in deltas):
            raise ValueError("updates must be flat vectors of one length")
        d = torch.stack([x.double() for x in deltas])
    mean = (w[:, None] * d).sum(0)
    return dissimilarity_from_sums(w, float(mean.dot(mean)), (d * d).sum(1), d @ mean)


def dissimilarity_from_sums(w: torch.Tensor, mean_sq: float, norm_sq: torch.Tensor, dots: torch.Tensor
                            ) -> tuple[float, float]:
    """``(D_cos, D_norm)`` from normalised float64 weights ``w [K]``, ``||dbar||^2``, ``||d_k||^2 [K]`` and
    ``d_k . dbar [K]`` (module docstring; zero updates or a zero average as described there)."""
    sq = float((w * norm_sq).sum())
    if mean_sq == 0.0:
        return 1.0, math.nan if sq == 0.0 else math.inf
    denom = norm_sq.sqrt() * math.sqrt(mean_sq)
    cos = torch.where(denom > 0, dots / torch.where(denom > 0, denom, 1.0), torch.zeros_like(denom))
    return float((w * (1.0 - cos)).sum()), sq / mean_sq


def client_drift(updates: Sequence[object], base: Mapping[str, torch.Tensor], weights: Sequence[float]
                 ) -> dict[str, float | None]:
    """The metrics-row entries :data:`DRIFT_KEYS` for ``updates`` (objects with ``.params``) against the model
    ``base`` they started from; ``None`` for both when the round accepted no update."""
    if not updates:
        return dict.fromkeys(DRIFT_KEYS)
    params = [u.params for u in updates]  # type: ignore[attr-defined]
    for p in params:
        missing = [n for n in base if n not in p]
        if missing:
            raise ValueError(f"update lacks parameters {missing}")
    # row k is flat_delta(params[k], base): its sums read per parameter from the stack of the clients' tensors,
    # in blocks of rows (no [K, P] float64 matrix; spikefed.federated.stack_ops)
    w = _weights(weights)
    stacks = {n: stacked_rows([p[n] for p in params]) for n in base}
    if len(params) != w.shape[0]:
        raise ValueError(f"need one weight per update, got {len(params)} updates and {w.shape[0]} weights")
    mean_sq, norm_sq, dots = drift_sums(stacks, base, w)
    cos, norm = dissimilarity_from_sums(w, mean_sq, norm_sq, dots)
    return dict(zip(DRIFT_KEYS, (cos, norm)))
