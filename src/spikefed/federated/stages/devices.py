"""Devices stage: every client runs a simulated neuromorphic chip (``spec.fleet``, :mod:`spikefed.hardware.fleet`).

Client side, each client maps the latent global parameters to its device's program, trains through its device
(mismatch, quantized weights, lost steps, its own ``dt``) and uploads latent values (:func:`train_local` in
:mod:`spikefed.federated.simulation` does this for any caller, the Flower node included). Server side, evaluated
rounds report the *deployed* accuracy (the global model on every device of the fleet, ``accuracy``) beside the
ideal-hardware one (``accuracy_ideal``) and the accuracy per device profile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...seeding import Purpose, torch_generator
from ..cohort import supports_cohort
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
        reason = supports_cohort(spec.model, spec.local)
        if reason is not None:
            raise ValueError(f"device fleets need the batched engine's model support: {reason}")
        t = spec.local.num_steps
        if spec.local.encoder == "events" and any(d.num_steps(t) != t for d in fleet.devices):
            raise ValueError("event data is binned at the nominal step: every device of the fleet needs "
                             f"dt = 1 (a device with another dt cannot run the {t} bins)")
        if spec.continual is not None:
            raise ValueError("continual learning is not supported on device fleets (anchors live in the latent "
                             "space, local training in device coordinates)")
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
