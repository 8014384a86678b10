"""Privacy stage: DP-FedAvg (clipping + Gaussian noise, accountant) and/or secure aggregation in simulation.

It claims the round's aggregate (:meth:`Stage.aggregate`): the validated updates (FedNova-rescaled when the
faults stage says so) go to :class:`~spikefed.federated.privacy.PrivacyEngine` instead of the strategy's mean;
the DP noise draws from ``(seed, PRIVACY, r)``, client ``k``'s secure-aggregation secrets from
``(seed, SECAGG, r, k)``; the clip norm and the accountant's round count are this stage's state. Clients that
withdraw (their update does not fit the fixed-point range) are logged as rejections; under secure aggregation
the uplink bytes are the masked vectors, keys and shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...seeding import Purpose, derive_seed, torch_generator
from ..privacy import PrivacyEngine
from ..round import RoundContext, Stage

if TYPE_CHECKING:  # pragma: no cover
    from ..simulation import Simulation


class PrivacyStage(Stage):
    key = "privacy"

    def __init__(self, sim: Simulation) -> None:
        assert sim.spec.privacy is not None
        self.engine = PrivacyEngine(sim.spec.privacy, sim.num_clients, len(sim.sample_clients(1)))
        self.state: dict[str, Any] | None = None
        self.row: dict[str, Any] = {}

    def aggregate(self, ctx: RoundContext) -> bool:
        sim = ctx.sim
        spec, st = sim.spec, sim.state
        gen = torch_generator(spec.seed, Purpose.PRIVACY, ctx.rnd)
        seeds = {c: derive_seed(spec.seed, Purpose.SECAGG, ctx.rnd, c) for c in ctx.sampled}
        out = self.engine.aggregate(ctx.rnd, spec.strategy, st.global_params, ctx.accepted, ctx.sampled,
                                    sim.manifolds, self.state, gen, seeds)
        self.state = out.state
        if out.params is not None:
            st.global_params = out.params
        ctx.rejected.extend(out.rejected)
        ctx.accepted = out.survivors
        row = dict(out.row)
        ctx.bytes_up = row.pop("bytes_up", ctx.bytes_up)  # secure aggregation: masked vectors, keys, shares
        ctx.bytes_down += row.pop("bytes_down_extra", 0)
        self.row = row
        return True

    def metrics(self, ctx: RoundContext) -> None:
        ctx.row.update(self.row)  # dp_epsilon, dp_clip, ... / secagg_*

    def state_dict(self) -> dict[str, Any]:
        return dict(self.state) if self.state is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.state = self.engine.checked_state(state) if state else None  # clip > 0 finite, rounds >= 0
