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

#: metrics-row keys written by :func:`client_drift`
DRIFT_KEYS = ("client_drift_cosine", "client_drift_norm")


def flat_delta(params: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``params - base`` over all tensors, flattened into one float64 vector (names of ``base``, in order)."""
    missing = [n for n in base if n not in params]
    if missing:
        raise ValueError(f"update lacks parameters {missing}")
    return torch.cat([(params[n].detach().double() - base[n].detach().double()).flatten() for n in base])


def update_dissimilarity(deltas: Sequence[torch.Tensor] | torch.Tensor, weights: Sequence[float]
                         ) -> tuple[float, float]:
    """``(D_cos, D_norm)`` of flat updates ``deltas`` (a list of vectors, or their stack ``[K, P]``) with weights
    ``weights`` (normalised to sum 1; see the module docstring). ``ValueError`` for no update, mismatched lengths
    or shapes, or weights that are negative, non-finite or all zero."""
    if len(deltas) == 0 or len(deltas) != len(weights):
        raise ValueError(f"need one weight per update and at least one update, got {len(deltas)} updates and "
                         f"{len(weights)} weights")
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all zero, got {list(weights)}")
    w = w / w.sum()
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
    mean_sq = float(mean.dot(mean))
    norms = d.norm(dim=1)
    sq = float((w * norms**2).sum())
    if mean_sq == 0.0:
        return 1.0, math.nan if sq == 0.0 else math.inf
    denom = norms * math.sqrt(mean_sq)
    cos = torch.where(denom > 0, (d @ mean) / torch.where(denom > 0, denom, 1.0), torch.zeros_like(denom))
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
    # row k is flat_delta(params[k], base); per parameter on the stack of the clients' tensors
    sizes = [base[n].numel() for n in base]
    deltas = torch.empty((len(params), sum(sizes)), dtype=torch.float64)
    for n, part in zip(base, deltas.split(sizes, dim=1)):
        part.copy_(stacked_rows([p[n] for p in params]).reshape(len(params), -1))
        part.sub_(base[n].detach().double().reshape(1, -1))
    cos, norm = update_dissimilarity(deltas, weights)
    return dict(zip(DRIFT_KEYS, (cos, norm)))
