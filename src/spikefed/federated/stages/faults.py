"""Faults stage: client dropout, stragglers against a deadline, FedNova rescaling of partial work.

Seeds (:mod:`spikefed.seeding`): a client's speed factor from ``(seed, FAULT, client)`` (once per run), its
dropout and jitter draws of round ``r`` from ``(seed, FAULT, r, client)``; the plan of a round is therefore the
same in a resumed run. The formulas live in :mod:`spikefed.federated.faults`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...seeding import Purpose, numpy_rng
from ..cohort import planned_steps
from ..faults import FaultPlan, client_speed, fednova_rescale, logger, plan_round
from ..round import RoundContext, Stage

if TYPE_CHECKING:  # pragma: no cover
    from ..simulation import Simulation

class FaultStage(Stage):
    key = "faults"

    def __init__(self, sim: Simulation) -> None:
        assert sim.spec.faults is not None
        self.spec, self.seed = sim.spec.faults, sim.spec.seed

    def plan(self, ctx: RoundContext) -> FaultPlan:
        """Which sampled clients train in ``ctx.rnd`` and with how many steps."""
        sim, seed = ctx.sim, self.seed
        planned = [planned_steps(sim.clients[c].num_samples, sim.spec.local) for c in ctx.sampled]
        speeds = [client_speed(self.spec.straggler_sigma, numpy_rng(seed, Purpose.FAULT, client=c))
                  for c in ctx.sampled]
        rngs = [numpy_rng(seed, Purpose.FAULT, ctx.rnd, c) for c in ctx.sampled]
        return plan_round(self.spec, ctx.sampled, planned, speeds, rngs)

    def configure(self, ctx: RoundContext) -> None:
        ctx.plan = self.plan(ctx)
        if not ctx.plan.trained:
            logger.warning("round %d: none of the %d sampled clients returned an update (%d dropped, %d late); "
                           "the global model is kept", ctx.rnd, len(ctx.sampled), len(ctx.plan.dropped),
                           len(ctx.plan.late))

    def server(self, ctx: RoundContext) -> None:
        """FedNova (``late_policy == "fednova"``): ``x'_k = x + (tau_eff / tau_k) (x_k - x)`` with
        ``tau_eff = sum_k p_k tau_k`` and the strategy's weights ``p_k``."""
        if self.spec.late_policy != "fednova" or not ctx.accepted:
            return
        sim = ctx.sim
        ctx.accepted = fednova_rescale(ctx.accepted, sim.state.global_params,
                                       sim.spec.strategy.client_weights(ctx.accepted), sim.manifolds)

    def metrics(self, ctx: RoundContext) -> None:
        ctx.row.update(ctx.plan.metrics(ctx.accepted))
