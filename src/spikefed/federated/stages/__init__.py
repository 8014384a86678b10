"""The round's stages (see :mod:`spikefed.federated.round`), one module each, in the order they run.

| stage (key) | module | what it does in the round |
|---|---|---|
| ``faults`` | :mod:`.faults` | who drops out or is late, step budgets; FedNova rescaling; dropped/late counts |
| ``robustness`` | :mod:`.robustness` | malicious clients' attacks; the robust defence in place of the mean |
| ``continual`` | :mod:`.continual` | each client's task data, stability terms, anchors/Fisher, task accuracy |
| ``devices`` | :mod:`.devices` | a simulated chip per client (training through it); deployed accuracy |
| ``fairness`` | :mod:`.fairness` | q-FFL: each client's loss at the received model, sent with its update |
| ``channel`` | :mod:`.channel` | broadcast (dense or compressed downlink), uplink compression + error feedback |
| ``privacy`` | :mod:`.privacy` | DP-FedAvg clipping + noise and/or secure aggregation (claims the aggregate) |
| ``strategy`` | :mod:`.strategy` | SCAFFOLD control variates; the strategy's aggregate + server optimizer |
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..round import Stage
from .channel import ChannelStage
from .continual import ContinualStage
from .devices import DevicesStage
from .fairness import FairnessStage, needs_start_loss
from .faults import FaultStage
from .privacy import PrivacyStage
from .robustness import RobustnessStage
from .strategy import StrategyStage

if TYPE_CHECKING:  # pragma: no cover
    from ..simulation import Simulation

__all__ = ["ChannelStage", "ContinualStage", "DevicesStage", "FairnessStage", "FaultStage", "PrivacyStage",
           "RobustnessStage", "StrategyStage", "build_stages"]


def build_stages(sim: Simulation) -> list[Stage]:
    """The stages of ``sim``'s spec, in round order: only the features the spec turns on, plus the channel and
    the strategy, which every round has."""
    spec = sim.spec
    stages: list[Stage] = []
    if spec.faults is not None or spec.network is not None:
        stages.append(FaultStage(sim))
    if spec.robustness is not None:  # before continual: the task data is built from the (label-flipped) clients
        stages.append(RobustnessStage(sim))
    if spec.continual is not None:
        stages.append(ContinualStage(sim))
    if spec.fleet is not None:
        stages.append(DevicesStage(sim))
    if needs_start_loss(sim):  # before the channel: the loss travels in the upload's metrics
        stages.append(FairnessStage(sim))
    stages.append(ChannelStage(sim))
    if spec.privacy is not None:
        stages.append(PrivacyStage(sim))
    stages.append(StrategyStage(sim))
    return stages
