"""Local training on a device fleet, for any model: each client trains its device's program through the device.

Client ``k`` receives the latent global parameters ``x``, writes ``p0 = to_device_k(x)`` to its chip, trains the
program ``p`` through the device's physics (``effective_k(p)``: mismatch, quantization-aware training, lost and
jittered steps, its own number of steps ``round(T / dt)``, event frames rebinned to it) and uploads
``y_k = to_latent_k(p)``. Two engines:

- the batched cohort engine (:func:`~spikefed.federated.cohort.train_cohort` with ``devices``), for the models
  it supports, without SCAFFOLD or continual terms and without rebinned event data;
- the sequential device engine (:func:`train_on_devices`), for any model :func:`~spikefed.hardware.devices.
  supports_devices` accepts: the device is a module (:class:`OnDevice`) whose parameters are the program and
  whose forward is the model's, called with the effective values (``torch.func.functional_call``). Full BPTT
  and truncated BPTT (``local.tbptt``) run through it unchanged.

Terms that belong to the latent space are evaluated there, differentiably through ``to_latent_k``:

- SCAFFOLD: the drift correction ``c - c_k`` is the gradient of the linear term ``<c - c_k, y>`` in latent
  coordinates; the client adds ``<c - c_k, to_latent_k(p)>`` to its loss, so its program gradient gets
  ``J_k^T (c - c_k)``; the control update ``c_k^+ - c_k = (x - y_k) / (K lr) - c`` uses latent values;
- continual stability terms ``lambda/2 sum_i F_i (y_i - y*_i)^2`` are evaluated on ``y = to_latent_k(p)``;
- FedProx ``mu/2 ||p - p0||^2`` pulls towards the program written at the start of the round (as the batched
  engine does).

With ``devices.training_step=nominal`` a client whose chip has another ``dt`` trains its chip's digital twin at
the nominal step (:meth:`~spikefed.hardware.fleet.Fleet.for_training`); both engines train on that view. With
``mixed`` its loss is the twin's plus its chip's (:class:`ChipOfTwin`, sequential device engine); with
``resolutions`` every client adds the losses of its device at every other time step of the fleet (its chip at
the chip's dt, its digital twin at the others), each through a :class:`ChipOfTwin`.

On a fleet of ideal devices (``to_latent`` and ``effective`` are identities) this is exactly the sequential
engine's training without a fleet.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..data.compact import as_float_batch
from ..hardware.fleet import inputs_for
from ..manifold import manifold_of
from ..snn.train import TrainConfig, backward_batch, input_dtype, make_optimizer, predict, task_loss
from .cohort import ClientData, ClientDevice, client_schedule, scaffold_control_delta, supports_cohort, train_cohort
from .continual import StabilityPenalty
from .types import ClientUpdate, FitInstructions, ParamDict, tensor_sum

__all__ = ["OnDevice", "fleet_engine", "train_on_devices", "train_on_fleet"]


class ChipOfTwin(nn.Module):
    """The chip behind a digital twin (``devices.training_step=mixed``), or the device at another time step
    (``resolutions``): its program is derived from the trained program ``p`` as
    ``to_device_view(to_latent_train(p))`` (differentiable), run through that device."""

    def __init__(self, twin: "OnDevice", twin_calibration: Any, chip_calibration: Any, chip: Any) -> None:
        super().__init__()
        self._twin = [twin]  # not a submodule: the leaves belong to the twin
        self.twin_calibration, self.chip_calibration, self.chip = twin_calibration, chip_calibration, chip

    def forward(self, x: torch.Tensor, state: Any = None) -> Any:
        twin = self._twin[0]
        program = self.chip_calibration.to_device(self.twin_calibration.to_latent(twin.program()))
        eff = self.chip.effective(program, twin.generator)
        return functional_call(twin._base[0], eff, (x,) if state is None else (x, state))


class OnDevice(nn.Module):
    """``model`` running on ``device``: the module's parameters are the program's trainable values ``names``;
    ``forward(x, state)`` is ``model``'s with the device's effective values of the full program."""

    def __init__(self, model: nn.Module, device: Any, program: ParamDict, names: Sequence[str],
                 generator: torch.Generator | None) -> None:
        super().__init__()
        self._base = [model]  # in a list, not a submodule: its parameters are not this module's
        self.names = list(names)
        own = dict(model.named_parameters())
        self.leaves = nn.ParameterList()
        for n in self.names:
            leaf = nn.Parameter(program[n].detach().clone())
            setattr(leaf, "_spikefed_manifold", manifold_of(own[n]))
            self.leaves.append(leaf)
        self.fixed = {n: v.detach() for n, v in program.items() if n not in self.names}
        self.device, self.generator = device, generator

    def program(self) -> ParamDict:
        return {**self.fixed, **dict(zip(self.names, self.leaves))}

    def forward(self, x: torch.Tensor, state: Any = None) -> Any:
        eff = self.device.effective(self.program(), self.generator)
        return functional_call(self._base[0], eff, (x,) if state is None else (x, state))

    @torch.no_grad()
    def project_(self) -> None:
        """Keep every program value on its manifold (positive thresholds, decays in (0, 1), delays on the ring)."""
        for leaf in self.leaves:
            m = manifold_of(leaf)
            if m.kind != "euclidean":
                m.project_(leaf)


def fleet_engine(requested: str, model: nn.Module, cfg: TrainConfig, *, scaffold: bool, continual: bool,
                 rebinned_events: bool, mixed: bool = False) -> tuple[str, str | None]:
    """The engine that trains a fleet: ``(engine, why it is not the requested one or None)``."""
    if requested != "cohort":
        return requested, None
    reason = supports_cohort(model, cfg)
    if reason is None and scaffold:
        reason = "SCAFFOLD's latent control variates on a fleet train on the sequential device engine"
    if reason is None and continual:
        reason = "continual stability terms on a fleet (evaluated in latent space) train on the sequential engine"
    if reason is None and mixed:
        reason = ("devices.training_step=mixed / resolutions (losses at several time steps) trains on the "
                  "sequential device engine")
    if reason is None and rebinned_events:
        reason = "event frames rebinned to a device's dt train on the sequential device engine"
    return ("cohort", None) if reason is None else ("sequential", reason)


def train_on_devices(fleet: Any, model: nn.Module, received: ParamDict, clients: Sequence[ClientData],
                     generators: Sequence[torch.Generator], cfg: TrainConfig, fit: FitInstructions,
                     controls: Sequence[ParamDict | None] | None = None,
                     step_budgets: Sequence[int | None] | None = None,
                     penalties: Sequence[StabilityPenalty | None] | None = None) -> list[ClientUpdate]:
    """Sequential device engine: every client (``fleet`` device ``client_id``) trains its program through its
    device with ``torch.optim`` and uploads latent values (module docstring). Returns one update per client."""
    if cfg.method != "bptt":
        raise ValueError(f"device fleets train with BPTT (local.method={cfg.method} computes its eligibility "
                         "traces from the module's own parameters, not through the device's effective values)")
    fleet = fleet.for_training()  # digital twins at the nominal step with devices.training_step=nominal
    updates = []
    for i, (c, gen) in enumerate(zip(clients, generators)):
        k = c.client_id
        start = fleet.program(k, received)
        device = fleet.devices[k]
        net = OnDevice(model, device, start, fleet.trainable, gen)
        names, leaves = net.names, list(net.leaves)
        p0 = {n: start[n].detach() for n in names}
        opt = make_optimizer(leaves, cfg)
        correction = None
        if fit.server_control is not None:
            ck = controls[i] if controls is not None else None
            correction = {n: (fit.server_control[n] - (ck[n] if ck is not None else 0)).detach() for n in names}
        penalty = penalties[i] if penalties is not None else None

        def extra() -> torch.Tensor:
            prog = dict(zip(names, leaves))
            out = 0.5 * fit.prox_mu * tensor_sum(((prog[n] - p0[n]) ** 2).sum() for n in names)
            if penalty is not None or correction is not None:
                latent = fleet.upload(k, start, prog)  # differentiable: to_latent_k of the current program
                if penalty is not None:
                    out = out + penalty.value(latent)
                if correction is not None:
                    out = out + tensor_sum((correction[n] * latent[n]).sum() for n in names)
            return out

        needs_extra = bool(fit.prox_mu) or penalty is not None or correction is not None
        # devices.training_step=mixed / resolutions: the losses of the device at the fleet's other time steps
        views = [(ChipOfTwin(net, fleet.calibrations[k], cal, dev), dev)
                 for dev, cal in (fleet.step_views[k] if fleet.step_views is not None else [])]
        budget = step_budgets[i] if step_budgets is not None else None
        schedule = client_schedule(c.num_samples, cfg, gen, budget)
        loss_sum, correct, seen = 0.0, 0, 0
        for batch in schedule:
            xb, yb = as_float_batch(c.x[batch], input_dtype(model)), c.y[batch]
            xs, dcfg = fleet.device_inputs(k, xb, cfg, gen)
            xs = device.perturb_input(xs, gen)
            opt.zero_grad(set_to_none=True)
            _, out = backward_batch(net, xs, yb, dcfg, extra if needs_extra else None)
            for on_view, dev in views:  # gradients add up on the leaves
                xc, ccfg = inputs_for(dev, xb, cfg, gen)
                backward_batch(on_view, dev.perturb_input(xc, gen), yb, ccfg)
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(leaves, cfg.grad_clip)
            opt.step()
            net.project_()
            loss_sum += float(task_loss(out.output.detach(), yb, dcfg)) * len(batch)
            correct += int((predict(out.output.detach(), dcfg) == yb).sum())
            seen += len(batch)
        params = fleet.upload(k, start, {n: leaf.detach().clone() for n, leaf in zip(names, leaves)})
        params = {n: v.detach() for n, v in params.items()}
        control_delta = None
        if fit.server_control is not None:
            control_delta = scaffold_control_delta(params, {n: received[n].detach() for n in names},
                                                   fit.server_control, len(schedule), cfg.lr)
        updates.append(ClientUpdate(
            client_id=c.client_id, num_samples=c.num_samples, params=params, steps=len(schedule),
            metrics={"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "steps": len(schedule)},
            control_delta=control_delta))
    return updates


def train_on_fleet(engine: str, fleet: Any, model: nn.Module, received: ParamDict, clients: list[ClientData],
                   gens: list[torch.Generator], cfg: TrainConfig, fit: FitInstructions,
                   controls: list[ParamDict | None] | None, budgets: Any, penalties: Any = None
                   ) -> list[ClientUpdate]:
    """Local training of ``clients`` on their devices with ``engine`` (as :func:`fleet_engine` decides it for
    these clients; the devices stage has recorded the decision for the run)."""
    fleet = fleet.for_training()
    t = cfg.num_steps
    rebinned = cfg.encoder == "events" and any(fleet.num_steps(c.client_id, t) != t for c in clients)
    engine, _ = fleet_engine(engine, model, cfg, scaffold=fit.server_control is not None,
                             continual=penalties is not None and any(p is not None for p in penalties),
                             rebinned_events=rebinned, mixed=fleet.chips is not None)
    if engine != "cohort":
        return train_on_devices(fleet, model, received, clients, gens, cfg, fit, controls, budgets, penalties)
    trained = [c.client_id for c in clients]
    groups: dict[int, list[int]] = {}
    for row, c in enumerate(trained):
        groups.setdefault(fleet.num_steps(c, cfg.num_steps), []).append(row)
    updates: list[ClientUpdate | None] = [None] * len(trained)
    for steps, rows in groups.items():
        gcfg = fleet.device_config(trained[rows[0]], cfg)  # the same for every device with these steps
        starts = [fleet.program(trained[r], received) for r in rows]
        devices = [ClientDevice(p, fleet.devices[trained[r]]) for r, p in zip(rows, starts)]
        group_budgets = [budgets[r] for r in rows] if budgets is not None else None
        trained_group = train_cohort(model, received, [clients[r] for r in rows],  # type: ignore[arg-type]
                                     [gens[r] for r in rows], gcfg, fit, None, group_budgets, devices)
        for r, upd, start in zip(rows, trained_group, starts):
            upd.params = fleet.upload(trained[r], start, upd.params)
            updates[r] = upd
    return [u for u in updates if u is not None]
