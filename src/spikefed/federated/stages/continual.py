"""Continual stage: a task stream over the rounds with the seed-000 stability term on the clients.

Each round every client holds the data of its current task; a trained client gets the anchor (and, for EWC, the
Fisher weights) of its task once per task (downlink bytes); at a task boundary the server snapshots the next
anchor and (EWC) the Fisher estimate of the accepted clients (uplink bytes); evaluated rounds and task ends carry
the accuracy on every task's test set. The mechanics live in :mod:`spikefed.federated.continual`; the state
(``{"anchors": {task: params}, "fisher": {task: params}}``) is this stage's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..continual import ContinualStream, build_tasks
from ..cohort import ClientData
from ..round import RoundContext, Stage, check_int, check_params
from ..types import load_params_

if TYPE_CHECKING:  # pragma: no cover
    from ..simulation import Simulation


class ContinualStage(Stage):
    key = "continual"

    def __init__(self, sim: Simulation) -> None:
        spec = sim.spec
        assert spec.continual is not None
        self.spec = spec.continual
        self.stream = ContinualStream(spec.continual, build_tasks(
            spec.continual, sim.clients, spec.data.x_test, spec.data.y_test, spec.data.num_classes, spec.seed,
            ClientData))
        self.state: dict[str, Any] = {"anchors": {}, "fisher": {}}
        self.shapes = {n: tuple(p.shape) for n, p in spec.model.named_parameters()}
        self.idle = 0

    def begin(self, ctx: RoundContext) -> None:
        ctx.sim.clients = self.stream.clients_at(ctx.rnd)

    def configure(self, ctx: RoundContext) -> None:
        """Clients without data of their task sit out; the others train with their task's stability term."""
        sim = ctx.sim
        ctx.plan, self.idle = self.stream.without_idle(ctx.plan, sim.clients)
        ctx.penalties = self.stream.penalties(ctx.rnd, ctx.plan.trained, self.state)
        ctx.bytes_down += self.stream.penalty_downlink(ctx.rnd, ctx.plan.trained, ctx.penalties,
                                                       sim.state.client_state)

    def metrics(self, ctx: RoundContext) -> None:
        """The task, whether the round ends one, ``R[i, :]`` (evaluated rounds and task ends), idle clients,
        the Fisher upload (added to ``bytes_up``)."""
        sim, rnd = ctx.sim, ctx.rnd
        spec = sim.spec
        weights = spec.strategy.client_weights(ctx.accepted) if ctx.accepted else None
        row: dict[str, Any] = {"task": self.stream.task(rnd), "task_end": self.spec.task_end(rnd),
                               "continual_idle": self.idle, "task_accuracy": None}
        row.update(self.stream.end_of_round(rnd, self.state, sim.state.global_params, ctx.accepted, sim.clients,
                                            spec.model, spec.local, spec.seed, weights))
        if ctx.evaluated or row["task_end"] is not None:
            load_params_(spec.model, sim.state.global_params)
            row["task_accuracy"] = self.stream.task_accuracy(rnd, spec.model, spec.local, spec.seed)
        ctx.bytes_up += row["fisher_bytes"]
        ctx.row.update(row)

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Anchors and Fisher weights by task, checked against the model (``ValueError`` naming what is wrong)."""
        out: dict[str, Any] = {}
        for key in ("anchors", "fisher"):
            by_task = state.get(key, {})
            if not isinstance(by_task, dict):
                raise ValueError(f"continual state: {key} must map tasks to parameters")
            for task, params in by_task.items():
                check_int(f"continual state: a task of {key}", task)
                check_params(f"continual state: {key}[{task}]", params, self.shapes)
            out[key] = dict(by_task)
        self.state = out
