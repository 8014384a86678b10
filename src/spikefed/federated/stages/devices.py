"""Devices stage: every client runs a simulated neuromorphic chip (``spec.fleet``, :mod:`spikefed.hardware.fleet`).

Client side, each client maps the latent global parameters to its device's program, trains through its device
(mismatch, quantized weights, lost steps, its own ``dt``, event frames rebinned to it) and uploads latent values
(:mod:`spikefed.federated.fleet_training`, called by :func:`train_local` in :mod:`spikefed.federated.simulation`
for any caller, the Flower node included). The stage decides the engine once (:func:`fleet_engine`: the batched
engine where it applies, else the sequential device engine, any model) and records why. Server side, evaluated
rounds report the *deployed* accuracy (the global model on every device of the fleet, ``accuracy``) beside the
ideal-hardware one (``accuracy_ideal``) and the accuracy per device profile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...seeding import Purpose, torch_generator
from ..fleet_training import fleet_engine
from ..round import RoundContext, Stage

if TYPE_CHECKING:  # pragma: no cover
    from ..simulation import Simulation

#: metrics-row keys this stage adds (null in rounds without evaluation)
FLEET_EVAL_KEYS = ("accuracy_ideal", "accuracy_by_device", "accuracy_by_client_device")


class DevicesStage(Stage):
    key = "devices"

    def __init__(self, sim: Simulation) -> None:
        spec = sim.spec
        fleet = spec.fleet
        assert fleet is not None
        if len(fleet) != sim.num_clients:
            raise ValueError(f"the fleet has {len(fleet)} devices for {sim.num_clients} clients")
        t = spec.local.num_steps
        trains_on = fleet.for_training().devices  # digital twins with devices.training_step=nominal
        rebinned = spec.local.encoder == "events" and any(d.num_steps(t) != t for d in trains_on)
        scaffold = getattr(spec.strategy, "name", None) == "scaffold"
        engine, why = fleet_engine(spec.engine, spec.model, spec.local, scaffold=scaffold,
                                   continual=spec.continual is not None, rebinned_events=rebinned,
                                   mixed=fleet.for_training().chips is not None)
        if engine != spec.engine:  # no silent fallback: the run prints and records the engine that trains
            spec.engine, spec.engine_note = engine, why
        self.fleet = fleet

    def metrics(self, ctx: RoundContext) -> None:
        if not ctx.evaluated:
            ctx.row.update(dict.fromkeys(FLEET_EVAL_KEYS))
            return
        spec = ctx.sim.spec
        gen = torch_generator(spec.seed, Purpose.EVAL, ctx.rnd)
        fe = self.fleet.evaluate(ctx.sim.state.global_params, spec.data.x_test, spec.data.y_test, spec.local, gen)
        ctx.row.update({"accuracy_ideal": ctx.row["accuracy"], "accuracy": fe.accuracy,
                        "accuracy_by_device": fe.by_profile, "accuracy_by_client_device": fe.by_device})
