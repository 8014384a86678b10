"""Fairness stage: each trained client measures its loss at the model it received (``F_k`` of q-FFL).

Client side, after local training and before the uplink (so the number travels in the upload's metrics and
passes the trust boundary like every other metric): client ``k`` evaluates the received parameters on its own
training data (:func:`spikefed.snn.train.evaluate`, input encoding drawn from ``(seed, CLIENT_LOSS, round, k)``)
and reports the mean loss as ``metrics["start_loss"]``. It costs one forward pass over the client's data. Built
only when the strategy needs it (:attr:`spikefed.federated.qffl.QFFL.needs_start_loss`). The loss is that of the
ideal-hardware model (on a device fleet the client's chip is not simulated for this pass).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...seeding import Purpose, torch_generator
from ...snn.train import evaluate
from ..qffl import START_LOSS
from ..round import RoundContext, Stage
from ..types import ParamDict, load_params_

if TYPE_CHECKING:  # pragma: no cover
    from ..simulation import Simulation


def needs_start_loss(sim: Simulation) -> bool:
    """Whether the run's strategy needs each client's loss at the received model."""
    return bool(getattr(sim.spec.strategy, "needs_start_loss", False))


class FairnessStage(Stage):
    key = "fairness"

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def client(self, ctx: RoundContext) -> None:
        losses = client_losses(self.sim, ctx.received, [u.client_id for u in ctx.updates], ctx.rnd)
        for upd, loss in zip(ctx.updates, losses):
            upd.metrics[START_LOSS] = loss


@torch.no_grad()
def client_losses(sim: Simulation, params: ParamDict, clients: list[int], rnd: int) -> list[float]:
    """Each client's mean loss of ``params`` on its own training data (what it would report; input encoding
    from ``(seed, CLIENT_LOSS, rnd, k)``). Used by q-FFL (``F_k``) and power-of-choice selection."""
    model = sim.spec.model
    load_params_(model, params)
    out = []
    for k in clients:
        c = sim.clients[k]
        gen = torch_generator(sim.spec.seed, Purpose.CLIENT_LOSS, rnd, k)
        out.append(float(evaluate(model, c.x, c.y, sim.spec.local, gen).loss))
    return out
