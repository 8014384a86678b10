"""One federated round as data (:class:`RoundContext`) flowing through stages (:class:`Stage`).

A round (``Simulation.run_round``; the Flower ServerApp runs the same one)::

    begin      every stage, at the round's start          (continual: the clients hold their task's data)
    configure  every stage, server side, before training  (faults: who trains and how long; continual: stability
                                                            terms; channel: the broadcast and its bytes; SCAFFOLD)
    train      in this process, or on the clients' own machines (deployment)
    client     every stage, client side, in this process  (attacks; channel: compression + error feedback -> bytes)
    receive    the trust boundary: every upload parsed against the schema, validated, accepted or rejected
    server     every stage, on the accepted updates        (faults: FedNova; robustness: FLTrust reference)
    aggregate  the first stage that claims the round        (privacy: DP / secure sum; otherwise the strategy)
    metrics    every stage adds its entries to the row      (faults, continual, attacks, privacy, devices)

A stage is a small object with these hooks (all optional) and its own state (:meth:`Stage.state_dict`, saved in
the checkpoint under :attr:`Stage.key`). Client-side state that lives on the client between rounds (error-feedback
residuals, SCAFFOLD control variates) is kept per client in ``SimulationState.client_state[k]`` (a compact
:class:`~spikefed.federated.client_state.ClientStateStore`: one row per client and kind, in memory or in files):
on a Flower node it is the node's own state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import torch

from ..manifold import Manifold
from .faults import FaultPlan
from .types import ClientUpdate, FitInstructions, ParamDict, Upload

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .simulation import Simulation

#: a robust replacement of the weighted mean: ``(global, client params, weights, manifolds) -> target``
Aggregator = Callable[[ParamDict, Sequence[ParamDict], Any, Mapping[str, Manifold]], ParamDict]


@dataclass
class RoundContext:
    """What one round knows, filled in as it flows through the stages."""

    sim: Simulation
    rnd: int
    sampled: list[int]
    fit: FitInstructions
    start: float
    plan: FaultPlan = field(init=False)
    received: ParamDict = field(default_factory=dict)  # the model the clients start from (the broadcast)
    penalties: list[Any] | None = None  # continual stability terms, one per trained client
    controls: list[ParamDict | None] | None = None  # SCAFFOLD: each trained client's control variate
    updates: list[ClientUpdate] = field(default_factory=list)  # in-process local training, before upload
    uploads: list[Upload] = field(default_factory=list)  # what the clients sent (bytes + plain metadata)
    accepted: list[ClientUpdate] = field(default_factory=list)  # parsed, validated updates
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"client", "round", "reason"}
    aggregator: Aggregator | None = None  # robust defence in place of the strategy's weighted mean
    aggregated_by: str | None = None  # the key of the stage that made the round's aggregate
    bytes_up: int = 0
    bytes_down: int = 0
    bytes_down_by_client: dict[int, int] = field(default_factory=dict)  # the broadcast each sampled client got
    evaluated: bool = False
    row: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.plan = FaultPlan.nominal(self.sampled)

    def reject(self, client: int, reason: str) -> None:
        """Log one rejected upload (it never enters the aggregate)."""
        self.rejected.append({"client": int(client), "round": self.rnd, "reason": reason})


class Stage:
    """A feature of the round: hooks called in stage order (see the module docstring); all default to no-ops."""

    #: the stage's name: its state's key in the checkpoint, and how logs and docs call it
    key: ClassVar[str] = "stage"

    def begin(self, ctx: RoundContext) -> None:
        """Round start, before any planning."""

    def configure(self, ctx: RoundContext) -> None:
        """Server side, before the clients train: plan, broadcast, instructions."""

    def client(self, ctx: RoundContext) -> None:
        """Client side in this process, after local training (``ctx.updates``), before and while uploading."""

    def server(self, ctx: RoundContext) -> None:
        """Server side, on the parsed and validated updates (``ctx.accepted``), before aggregation."""

    def aggregate(self, ctx: RoundContext) -> bool:
        """Make the round's aggregate (update ``sim.state.global_params``) and return True, or return False."""
        return False

    def metrics(self, ctx: RoundContext) -> None:
        """Add this stage's entries to ``ctx.row``."""

    def state_dict(self) -> dict[str, Any]:
        """Server-side state that must survive a checkpoint (plain values and tensors)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


def check_params(what: str, value: Any, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """``ValueError`` unless ``value`` is a ``name -> float tensor`` dict with exactly the model's names and shapes
    (for stage state read back from a checkpoint)."""
    if not isinstance(value, dict) or list(value) != list(shapes):
        raise ValueError(f"{what} does not hold the model's parameters")
    for name, t in value.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or tuple(t.shape) != tuple(shapes[name]):
            raise ValueError(f"{what}[{name!r}] is not a float tensor of shape {tuple(shapes[name])}")


def check_int(what: str, value: Any, low: int = 0) -> int:
    """``value`` as an int ``>= low``, or ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
    return value


#: ``(round, received params, clients to train, fit instructions, step budgets | None) -> uploads``
RemoteTrainer = Callable[[int, ParamDict, list[int], FitInstructions, Any], list[Upload]]
