"""q-FFL: q-fair federated learning (Li, Sanjabi, Beirami, Smith, ICLR 2020, "Fair Resource Allocation in
Federated Learning"), the q-FedAvg server step.

q-FFL minimises ``f_q(w) = sum_k p_k F_k(w)^(q+1) / (q+1)``: for ``q > 0`` clients with a high loss weigh more,
pushing the accuracy distribution towards uniformity; ``q = 0`` is the plain (uniform) FedAvg objective. One round
(the paper's Algorithm 2, q-FedAvg) over the accepted clients ``k`` with local models ``w_k`` trained from ``w``::

    F_k      = client k's loss at the global model w, on its own data (before local training)
    Delta_k  = L (w - w_k)                                        (a gradient estimate, L = 1/local lr)
    h_k      = q F_k^(q-1) ||Delta_k||^2 + L F_k^q                (an upper bound of the local Lipschitz constant)
    w'       = w - sum_k F_k^q Delta_k / sum_k h_k

With ``q = 0`` this is ``w' = mean_k w_k`` (unweighted). ``L`` (``lipschitz``) is the inverse of the step size the
paper runs the clients with. Every difference is taken in the parameters' manifold charts (log for positive
values, logit for the unit interval, the wrapped arc for circular ones), as the other strategies do, and the
result is projected back onto the manifolds. ``F_k`` travels in the update's metrics as ``start_loss`` (the
fairness stage, :mod:`spikefed.federated.stages.fairness`, measures it on the client's data at the model the
client received); an update without it is refused.

q-FFL needs every client's own update and loss: it cannot step to an aggregate made elsewhere (DP noised mean,
secure sum) nor take a robust defence in place of its step (the config refuses those pairs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from spikefed.federated.aggregation import InvalidUpdate, chart_difference, from_chart, to_chart
from spikefed.federated.strategies import Strategy
from spikefed.federated.types import ClientUpdate, ParamDict
from spikefed.manifold import EUCLIDEAN, Manifold

__all__ = ["LOSS_FLOOR", "QFFL", "START_LOSS", "qffl_step"]

#: metrics key of ``F_k``: a client's loss at the model it received, before local training
START_LOSS = "start_loss"
#: losses are floored at this value before ``F^q`` / ``F^(q-1)`` (a zero loss would divide by zero for q < 1)
LOSS_FLOOR = 1e-10


def qffl_step(global_params: ParamDict, client_params: Sequence[ParamDict], losses: Sequence[float], q: float,
              lipschitz: float, manifolds: Mapping[str, Manifold] | None = None) -> ParamDict:
    """The q-FedAvg server step (module docstring) in float64 chart coordinates; new tensors in the global
    parameters' dtypes, projected onto their manifolds."""
    if not client_params or len(client_params) != len(losses):
        raise ValueError(f"qffl_step needs one loss per client, got {len(client_params)} clients and "
                         f"{len(losses)} losses")
    manifolds = dict(manifolds or {})
    f = torch.tensor([max(float(v), LOSS_FLOOR) for v in losses], dtype=torch.float64)
    fq = f ** q
    deltas = [{n: lipschitz * chart_difference(x.double(), w[n].to(x.device).double(),
                                               manifolds.get(n, EUCLIDEAN)) for n, x in global_params.items()}
              for w in client_params]
    sq_norms = torch.stack([sum((d * d).sum() for d in delta.values()) for delta in deltas])  # type: ignore[misc]
    h = q * f ** (q - 1) * sq_norms + lipschitz * fq
    denom = h.sum()
    out: ParamDict = {}
    for n, x in global_params.items():
        m = manifolds.get(n, EUCLIDEAN)
        step = sum(fq[k] * deltas[k][n] for k in range(len(deltas))) / denom
        y = to_chart(x.double(), m) - step
        out[n] = m.project_(from_chart(y, m).to(x.dtype))
    return out


class QFFL(Strategy):
    """q-FFL (q-FedAvg) server: ``w <- w - sum_k F_k^q Delta_k / sum_k h_k`` (see the module docstring)."""

    name = "qffl"
    #: the fairness stage measures each client's ``start_loss`` for it
    needs_start_loss = True

    def __init__(self, q: float = 1.0, lipschitz: float = 10.0) -> None:
        super().__init__()
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q) or q < 0:
            raise ValueError(f"q must be a finite number >= 0, got {q!r}")
        if isinstance(lipschitz, bool) or not isinstance(lipschitz, (int, float)) or not math.isfinite(
                lipschitz) or lipschitz <= 0:
            raise ValueError(f"lipschitz must be a finite number > 0, got {lipschitz!r}")
        self.q, self.lipschitz = float(q), float(lipschitz)

    def config(self) -> dict[str, float | int | bool]:
        return {"q": self.q, "lipschitz": self.lipschitz}

    def aggregate_fit(
        self,
        rnd: int,
        global_params: ParamDict,
        updates: Sequence[ClientUpdate],
        manifolds: Mapping[str, Manifold] | None = None,
        validated: bool = False,
        aggregator: Callable[[ParamDict, Sequence[ParamDict], torch.Tensor, Mapping[str, Manifold]], ParamDict]
        | None = None,
    ) -> ParamDict:
        """One q-FedAvg step; each update must carry ``metrics["start_loss"]`` (a finite number >= 0)."""
        if aggregator is not None or self.aggregator is not None:
            raise ValueError("q-FFL takes no robust aggregator in place of its step")
        manifolds = dict(manifolds or {})
        self._check_round(rnd, global_params, updates, manifolds, validated)
        losses = [start_loss(u) for u in updates]
        new = qffl_step(global_params, [u.params for u in updates], losses, self.q, self.lipschitz, manifolds)
        for n, t in new.items():
            if not torch.isfinite(t).all():
                raise ValueError(f"round {rnd}: the qffl server step produced non-finite values for parameter "
                                 f"{n!r} (strategy state left unchanged)")
        self.rounds_aggregated += 1
        self.last_round = int(rnd)
        return new

    def step_to_target(self, rnd: int, global_params: ParamDict, target: ParamDict,
                       manifolds: Mapping[str, Manifold] | None = None) -> ParamDict:
        """Not available: q-FFL weighs each client by its own loss and update norm."""
        raise ValueError("q-FFL cannot step to an externally aggregated target (it needs each client's update and "
                         "loss); differential privacy and secure aggregation do not support it")


def start_loss(update: ClientUpdate) -> float:
    """``F_k`` of an update (:data:`START_LOSS` in its metrics), or :class:`InvalidUpdate` naming the client."""
    v: Any = update.metrics.get(START_LOSS)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise InvalidUpdate(update.client_id, f"q-FFL needs metrics[{START_LOSS!r}] (the client's loss at the "
                                              f"received model) as a finite number >= 0, got {v!r}")
    return float(v)
