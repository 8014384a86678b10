"""Faults stage: client dropout, stragglers against a deadline, FedNova rescaling of partial work; with a network
model, the transfer times of each client's measured bytes.

Seeds (:mod:`spikefed.seeding`): a client's speed factor from ``(seed, FAULT, client)`` (once per run), its
dropout and jitter draws of round ``r`` from ``(seed, FAULT, r, client)``; its link from
``(seed, NETWORK, client)`` (once per run); the plan of a round is therefore the same in a resumed run. The
formulas live in :mod:`spikefed.federated.faults` and :mod:`spikefed.federated.network`.

With a network model the deadline is applied after the uploads are measured (the upload's size, and so its
transfer time, is only known once the client has trained and compressed): every non-dropped client trains, then
a client whose ``download + compute + upload`` finish time passes the deadline is late and its upload is cut off
(``late_policy = "drop"``; FedNova's partial work is planned before training and is refused with a network model).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ...seeding import Purpose, numpy_rng
from ..cohort import planned_steps
from ..faults import FaultPlan, FaultSpec, client_speed, fednova_rescale, logger, plan_round
from ..network import Link, client_seconds, draw_link, round_timing
from ..round import RoundContext, Stage

if TYPE_CHECKING:  # pragma: no cover
    from ..simulation import Simulation

class FaultStage(Stage):
    key = "faults"

    def __init__(self, sim: Simulation) -> None:
        assert sim.spec.faults is not None or sim.spec.network is not None
        self.spec, self.seed = sim.spec.faults or FaultSpec(), sim.spec.seed
        self.network = sim.spec.network
        self.links: dict[int, Link] = {}
        self.sim_seconds: float | None = None
        if self.network is not None and self.spec.late_policy != "drop":
            raise ValueError("a network model needs faults.late_policy=drop (FedNova plans partial work before "
                             "the upload's size, and so its transfer time, is known)")

    def plan(self, ctx: RoundContext) -> FaultPlan:
        """Which sampled clients train in ``ctx.rnd`` and with how many steps (with a network model the deadline
        waits for the measured bytes: :meth:`network_cutoff`)."""
        sim, seed = ctx.sim, self.seed
        planned = [planned_steps(n, sim.spec.local) for n in sim.client_sizes(ctx.sampled)]
        speeds = [client_speed(self.spec.straggler_sigma, numpy_rng(seed, Purpose.FAULT, client=c))
                  for c in ctx.sampled]
        rngs = [numpy_rng(seed, Purpose.FAULT, ctx.rnd, c) for c in ctx.sampled]
        spec = self.spec if self.network is None else replace(self.spec, deadline=None)
        return plan_round(spec, ctx.sampled, planned, speeds, rngs)

    def configure(self, ctx: RoundContext) -> None:
        ctx.plan = self.plan(ctx)
        if not ctx.plan.trained:
            logger.warning("round %d: none of the %d sampled clients returned an update (%d dropped, %d late); "
                           "the global model is kept", ctx.rnd, len(ctx.sampled), len(ctx.plan.dropped),
                           len(ctx.plan.late))

    def link(self, client: int) -> Link:
        """Client ``client``'s link (drawn once per run)."""
        assert self.network is not None
        if client not in self.links:
            self.links[client] = draw_link(self.network, numpy_rng(self.seed, Purpose.NETWORK, client=client))
        return self.links[client]

    def network_cutoff(self, ctx: RoundContext) -> None:
        """Finish times from the measured bytes; late clients' uploads are cut off; the round's sim seconds."""
        net = self.network
        assert net is not None
        up = {u.client_id: len(u.payload) + (len(u.control_payload) if u.control_payload is not None else 0)
              for u in ctx.uploads}
        finish = {c: client_seconds(self.link(c), ctx.bytes_down_by_client.get(c, 0), up.get(c, 0),
                                    ctx.plan.completion[c] * net.step_ms / 1000.0)
                  for c in ctx.plan.trained}
        deadline_s = None if self.spec.deadline is None else self.spec.deadline * net.step_ms / 1000.0
        late, self.sim_seconds = round_timing(finish, deadline_s)
        if late:
            ctx.plan.late = sorted(set(ctx.plan.late) | set(late))
            ctx.accepted = [u for u in ctx.accepted if u.client_id not in late]

    def server(self, ctx: RoundContext) -> None:
        """The network cutoff (with a network model), then FedNova (``late_policy == "fednova"``):
        ``x'_k = x + (tau_eff / tau_k) (x_k - x)`` with ``tau_eff = sum_k p_k tau_k`` and the strategy's weights
        ``p_k``."""
        if self.network is not None:
            self.network_cutoff(ctx)
        if self.spec.late_policy != "fednova" or not ctx.accepted:
            return
        sim = ctx.sim
        ctx.accepted = fednova_rescale(ctx.accepted, sim.state.global_params,
                                       sim.spec.strategy.client_weights(ctx.accepted), sim.manifolds)

    def metrics(self, ctx: RoundContext) -> None:
        ctx.row.update(ctx.plan.metrics(ctx.accepted))
        if self.network is not None:
            ctx.row["sim_seconds"] = self.sim_seconds
