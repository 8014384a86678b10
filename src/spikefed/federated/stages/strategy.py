"""Strategy stage: the strategy's aggregate and server optimizer, and SCAFFOLD's control variates.

Every round ends here unless another stage claimed the aggregate (privacy): the validated updates go to
``Strategy.aggregate_fit`` (the weighted mean, or the robust defence the robustness stage set for the round,
then the server optimizer). SCAFFOLD: the server control ``c`` travels with the broadcast (its bytes counted per
sampled client); each client's control variate ``c_k`` stays with the client (``client_state[k]
["scaffold_control"]``), is handed to its local training and moves by the control delta the server accepted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..dissimilarity import DRIFT_KEYS, client_drift
from ..round import RoundContext, Stage
from ..serialization import encode_params
from ..types import ParamDict

if TYPE_CHECKING:  # pragma: no cover
    from ..simulation import Simulation

#: key of a client's SCAFFOLD control variate in ``SimulationState.client_state[k]``
CONTROL_KEY = "scaffold_control"


class StrategyStage(Stage):
    key = "strategy"

    def __init__(self, sim: Simulation) -> None:
        self.strategy = sim.spec.strategy

    def configure(self, ctx: RoundContext) -> None:
        control = ctx.fit.server_control
        if control is None:
            return
        ctx.bytes_down += len(encode_params(control)) * len(ctx.sampled)
        state = ctx.sim.state.client_state
        ctx.controls = [state.get(c, {}).get(CONTROL_KEY) for c in ctx.plan.trained]

    def server(self, ctx: RoundContext) -> None:
        """Client drift of the round (:mod:`spikefed.federated.dissimilarity`): the accepted updates against the
        global model, weighted as the strategy weighs them; ``None`` under privacy (the server must not read
        individual updates there)."""
        sim = ctx.sim
        if sim.spec.privacy is not None or not ctx.accepted:
            ctx.row.update(dict.fromkeys(DRIFT_KEYS))
            return
        weights = self.strategy.client_weights(ctx.accepted).tolist()
        ctx.row.update(client_drift(ctx.accepted, sim.state.global_params, weights))

    def aggregate(self, ctx: RoundContext) -> bool:
        if not ctx.accepted:
            return False
        sim = ctx.sim
        st = sim.state
        st.global_params = self.strategy.aggregate_fit(ctx.rnd, st.global_params, ctx.accepted, sim.manifolds,
                                                       validated=True, aggregator=ctx.aggregator)
        if ctx.fit.server_control is not None:
            for u in ctx.accepted:
                assert u.control_delta is not None
                held = st.client_state.setdefault(u.client_id, {})
                prev: ParamDict | None = held.get(CONTROL_KEY)
                held[CONTROL_KEY] = {n: (prev[n] if prev is not None else 0) + u.control_delta[n]
                                     for n in u.control_delta}
        return True
