"""Client faults in the simulated federation: dropout, stragglers against a round deadline, partial work.

Three things can happen to a client sampled in round ``r`` (decided before it trains, from seeded draws):

1. **Dropout.** With probability ``dropout`` the client fails and never returns an update (it received the
   broadcast, so it counts in ``bytes_down``, but uploads nothing). Independent across clients and rounds:
   ``u ~ U[0, 1)`` from the client's fault generator of the round, dropped iff ``u < dropout``.
2. **Straggling.** Every client ``k`` has a speed factor drawn once per run, ``s_k = exp(sigma_s z_k)``
   (log-normal with median 1; ``sigma_s`` = ``straggler_sigma``), and each round a jitter
   ``j_{k,r} = exp(sigma_j z_{k,r})`` (``sigma_j`` = ``jitter_sigma``). One local step takes
   ``t_{k,r} = s_k j_{k,r}`` time units (a unit is the time of one local step on a nominal device), so the
   client's planned work of ``tau_k`` steps (:func:`spikefed.federated.cohort.planned_steps`: epochs x batches,
   capped by ``local_steps``) completes at ``T_{k,r} = tau_k t_{k,r}``.
3. **Deadline.** With a round deadline ``D`` the client is *late* iff ``T_{k,r} > D``. A late client's work is

   - ``late_policy = "drop"``: discarded (it is cut off and uploads nothing);
   - ``late_policy = "fednova"``: kept partially. The client trains only the steps that fit,
     ``tau'_k = min(floor(D / t_{k,r}), tau_k - 1)``, and returns that; a client that fits no step at all
     (``tau'_k = 0``) has nothing to return and is discarded. Because a client's batch order and stochastic
     encoding are drawn before it trains, its ``tau'_k`` steps are exactly the first ``tau'_k`` steps of the
     full schedule.

FedNova (Wang et al. 2020, "Tackling the Objective Inconsistency Problem in Heterogeneous Federated
Optimization"). Clients that ran different numbers of local steps would otherwise pull the average toward the
objectives of those that ran more. With ``d_k = x_k - x`` (client parameters minus the global ones, in chart
coordinates of the parameter's manifold), ``tau_k`` the steps client ``k`` ran and ``p_k`` the strategy's
aggregation weights (``n_k / sum n`` for FedAvg)::

    tau_eff = sum_k p_k tau_k
    x_new   = x + tau_eff * sum_k p_k d_k / tau_k

This equals the ``p``-weighted mean of the *rescaled* client parameters ``x'_k = x + (tau_eff / tau_k) d_k``,
which is how it is implemented (:func:`fednova_rescale`): the updates are rescaled, then the strategy
aggregates them as usual (for euclidean, positive and unit-interval parameters the chart mean is exactly the
formula above; circular parameters, averaged as phasors, get the phasor mean of the rescaled values, which
agrees with the formula to first order in the arcs ``d_k``), so FedNova composes with every server optimizer
(FedAvg with ``server_lr = 1`` gives the formula above exactly; FedAvgM / FedAdam / ... step on FedNova's
normalized pseudo-gradient). With equal ``tau_k`` every scale is 1 and the updates are passed through untouched
(bit-identical to FedAvg). With
``late_policy = "fednova"`` the normalization applies to every round and every client (clients also differ in
``tau_k`` through their data sizes), not only to rounds with late clients.

Everything here is a pure function of its inputs; :class:`~spikefed.federated.simulation.Simulation` supplies
the seeded generators (purpose ``Purpose.FAULT``) so the plan of a round is the same in a resumed run.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .aggregation import chart_difference, from_chart, to_chart
from .types import ClientUpdate, ParamDict
from ..manifold import EUCLIDEAN, Manifold

__all__ = [
    "LATE_POLICIES",
    "FaultPlan",
    "FaultSpec",
    "client_speed",
    "fednova_rescale",
    "fednova_scales",
    "plan_round",
]

LATE_POLICIES: tuple[str, ...] = ("drop", "fednova")

#: Warnings about rounds in which no client update reached the server (the global model is kept).
logger = logging.getLogger(__name__)


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(float(value)) and float(value) >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class FaultSpec:
    """How clients fail (see the module docstring for the model).

    Attributes:
        dropout: probability that a sampled client returns nothing this round.
        deadline: round deadline in nominal local-step times (``None``: no deadline, nobody is late).
        straggler_sigma: ``sigma_s`` of the per-client log-normal speed factor (0: all clients nominal).
        jitter_sigma: ``sigma_j`` of the per-round log-normal jitter of a client's step time (0: none).
        late_policy: ``"drop"`` (late work is discarded) or ``"fednova"`` (late clients return the steps that
            fit before the deadline; the server normalizes all updates FedNova-style).
    """

    dropout: float = 0.0
    deadline: float | None = None
    straggler_sigma: float = 0.0
    jitter_sigma: float = 0.0
    late_policy: str = "drop"

    def __post_init__(self) -> None:
        _probability("dropout", self.dropout)
        if self.deadline is not None and not (
                isinstance(self.deadline, numbers.Real) and not isinstance(self.deadline, bool)
                and math.isfinite(float(self.deadline)) and float(self.deadline) > 0):
            raise ValueError(f"deadline must be a finite number > 0 or None, got {self.deadline!r}")
        _non_negative("straggler_sigma", self.straggler_sigma)
        _non_negative("jitter_sigma", self.jitter_sigma)
        if self.late_policy not in LATE_POLICIES:
            raise ValueError(f"unknown late_policy {self.late_policy!r}; valid: {', '.join(LATE_POLICIES)}")


@dataclass
class FaultPlan:
    """What the faults of one round do to its sampled clients.

    Attributes:
        sampled: the sampled clients (ascending ids).
        trained: the clients that train and upload (a subsequence of ``sampled``).
        budgets: the step budget of each client in ``trained`` (``None``: everyone runs its full schedule).
        dropped: clients that failed (dropout).
        late: clients that missed the deadline (discarded, or partially kept under ``fednova``).
        partial: late clients whose partial work is used (``fednova`` only; a subset of ``late``).
        completion: simulated completion time ``T_{k,r}`` of every non-dropped sampled client.
        active: whether a :class:`FaultSpec` produced the plan (``False``: the fault-free plan).
    """

    sampled: list[int]
    trained: list[int]
    budgets: list[int] | None = None
    dropped: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)
    partial: list[int] = field(default_factory=list)
    completion: dict[int, float] = field(default_factory=dict)
    active: bool = False

    @classmethod
    def nominal(cls, sampled: Sequence[int]) -> "FaultPlan":
        """The plan without faults: every sampled client trains its full schedule."""
        return cls(list(sampled), list(sampled))

    def metrics(self, aggregated: Sequence[ClientUpdate]) -> dict[str, Any]:
        """Metrics-row entries: counts of dropped / late / partial clients and the mean ``tau`` of the
        updates that entered the aggregate (``None`` when none did)."""
        steps = [u.steps for u in aggregated]
        return {"dropped": len(self.dropped), "late": len(self.late), "partial": len(self.partial),
                "mean_tau": float(np.mean(steps)) if steps else None}


def client_speed(sigma: float, rng: np.random.Generator) -> float:
    """A client's speed factor ``s = exp(sigma z)``, ``z ~ N(0, 1)`` drawn from ``rng`` (larger: slower).

    ``z`` is always drawn, so the same generator gives the same ``z`` whatever ``sigma`` is: raising sigma
    makes slow clients slower and fast clients faster, it does not reshuffle who is slow.
    """
    return float(math.exp(sigma * float(rng.standard_normal())))


def plan_round(spec: FaultSpec, sampled: Sequence[int], planned: Sequence[int], speeds: Sequence[float],
               rngs: Sequence[np.random.Generator]) -> FaultPlan:
    """Decide the fate of each sampled client of one round.

    ``planned[i]``: full local steps ``tau_k`` of ``sampled[i]``; ``speeds[i]``: its speed factor ``s_k``;
    ``rngs[i]``: its fault generator for this round, from which exactly two numbers are drawn in this order,
    ``u ~ U[0, 1)`` (dropped iff ``u < dropout``) and ``z ~ N(0, 1)`` (jitter ``exp(jitter_sigma z)``), so
    the dropout decisions do not depend on the straggler settings. Step time ``t = s_k exp(jitter_sigma z)``,
    completion ``T = tau_k t``, late iff ``deadline`` is set and ``T > deadline``.
    """
    if not len(sampled) == len(planned) == len(speeds) == len(rngs):
        raise ValueError("plan_round needs one planned step count, speed and generator per sampled client")
    plan = FaultPlan(list(sampled), [], [], active=True)
    budgets: list[int] = []
    for cid, tau, speed, rng in zip(sampled, planned, speeds, rngs):
        u = float(rng.random())
        z = float(rng.standard_normal())
        if int(tau) < 1:
            raise ValueError(f"client {cid}: planned local steps must be >= 1, got {tau}")
        if u < spec.dropout:
            plan.dropped.append(cid)
            continue
        step_time = float(speed) * math.exp(spec.jitter_sigma * z)
        done = int(tau) * step_time
        plan.completion[cid] = done
        budget = int(tau)
        if spec.deadline is not None and done > spec.deadline:
            plan.late.append(cid)
            if spec.late_policy == "drop":
                continue
            # floor(D / t) < tau in exact arithmetic since tau t > D; the min guards against rounding
            budget = min(int(math.floor(spec.deadline / step_time)), int(tau) - 1)
            if budget < 1:
                continue
            plan.partial.append(cid)
        plan.trained.append(cid)
        budgets.append(budget)
    plan.budgets = budgets
    return plan


def fednova_scales(steps: Sequence[int], weights: Sequence[float] | torch.Tensor) -> tuple[list[float], float]:
    """FedNova scales ``tau_eff / tau_k`` and ``tau_eff = sum_k p_k tau_k`` (``p`` normalized to sum 1)."""
    p = np.asarray(weights.tolist() if isinstance(weights, torch.Tensor) else list(weights), dtype=np.float64)
    taus = np.asarray(list(steps), dtype=np.float64)
    if p.shape != taus.shape or p.size == 0:
        raise ValueError(f"fednova_scales needs one weight per update, got {p.size} weights for {taus.size} updates")
    if np.any(taus < 1):
        raise ValueError(f"FedNova needs every update to report >= 1 local step, got {taus.astype(int).tolist()}")
    if not (np.all(np.isfinite(p)) and np.all(p >= 0) and p.sum() > 0):
        raise ValueError(f"FedNova weights must be finite, non-negative and not all zero, got {p.tolist()}")
    p = p / p.sum()
    tau_eff = float(np.dot(p, taus))
    return [tau_eff / float(t) for t in taus], tau_eff


def fednova_rescale(updates: Sequence[ClientUpdate], global_params: ParamDict,
                    weights: Sequence[float] | torch.Tensor,
                    manifolds: Mapping[str, Manifold] | None = None) -> list[ClientUpdate]:
    """Updates whose parameters are ``x'_k = phi^-1(phi(x) + (tau_eff / tau_k) (phi(x_k) - phi(x)))``.

    The ``p``-weighted manifold mean of the ``x'_k`` is FedNova's ``x + tau_eff sum_k p_k d_k / tau_k``
    (module docstring; exact in the log/logit/identity charts, to first order for circular parameters).
    ``tau_k`` is each update's ``steps``; ``weights`` are the ``p_k`` the strategy will aggregate with
    (``strategy.client_weights(updates)``). The arithmetic is done in float64 and cast back;
    circular parameters use the wrapped difference, and the result is projected onto the manifold. An update
    whose scale is exactly 1 is returned as is. Inputs are not mutated.
    """
    manifolds = manifolds or {}
    scales, _ = fednova_scales([u.steps for u in updates], weights)
    out: list[ClientUpdate] = []
    for u, s in zip(updates, scales):
        if s == 1.0:
            out.append(u)
            continue
        params: ParamDict = {}
        for name, xk in u.params.items():
            x = global_params[name]
            m = manifolds.get(name, EUCLIDEAN)
            x64, xk64 = x.detach().double(), xk.detach().double()
            y = to_chart(x64, m) + s * chart_difference(xk64, x64, m)
            params[name] = m.project_(from_chart(y, m).to(dtype=xk.dtype))
        out.append(replace(u, params=params))
    return out
