"""A fleet: one simulated device per client, its calibration, and evaluation of a latent model on every device.

Aggregation modes (``devices.aggregation``):

- ``calibrated`` (seed 000): client k receives the latent global model, programs its device with
  ``to_device_k(latent)``, trains the program through its device's physics, and uploads
  ``to_latent_k(program)``. The server averages latent parameters only (each on its manifold).
- ``naive``: every client writes the global values to its chip as they are and uploads its raw program: the
  server averages device parameters that mean different things on different devices.

The deployed accuracy of a global model is its mean accuracy over every device of the fleet, each device
running the program its client would write (``to_device_k(global)`` or the raw global values).

Training step (``devices.training_step``, calibrated fleets): ``device`` (default) trains every client through
its chip at the chip's own step ``dt`` (``round(T / dt)`` steps on rebinned inputs); ``nominal`` lets a client
whose chip has ``dt != 1`` train the chip's *digital twin* at the nominal step instead
(:func:`~spikefed.hardware.calibration.digital_twin`: its calibrated mismatch, its bits and delay buffer, ``T``
steps on the nominal inputs) and map the program with the twin's ``dt = 1`` calibration. Deployment and the
deployed accuracy are unchanged: the chip runs its own ``dt`` through the dt map. :meth:`Fleet.for_training`
is the fleet the clients train on. ``mixed``: such a client's loss is the twin's (nominal step) plus its chip's
(own step, program ``to_device_k(to_latent_twin(p))``), one optimiser step on the sum (sequential device engine).
``resolutions``: as ``mixed``, and every client also trains at every other time step the fleet has: its loss is
the sum over the fleet's ``dt`` values of its device simulated at that step (its chip at the chip's own ``dt``,
its digital twin at the others; each with program ``to_device_{k,dt}(to_latent_train(p))`` and its event frames
rebinned to ``round(T / dt)`` bins), so the shared model is trained for every clock it will be deployed on.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from torch import nn
from torch.func import functional_call

from ..data.compact import as_float_batch
from ..snn.models import SpikingMLP, as_model_output
from ..snn.stacked import cohort_forward, predict_cohort
from ..snn.train import TrainConfig, encode_inputs, input_dtype, predict
from .calibration import Calibration, calibrate, digital_twin
from .devices import Device, DeviceProfile, full_program, rebin_time, supports_devices

AGGREGATION_MODES = ("calibrated", "naive")
TRAINING_STEPS = ("device", "nominal", "mixed", "resolutions")


def inputs_for(device: Device, x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator | None
               ) -> tuple[torch.Tensor, TrainConfig]:
    """Encode ``x [B, ...]`` for ``device``: ``(inputs [T_k, B, ...], cfg with T_k = round(T / dt))``; event
    frames are encoded at the nominal ``T`` and rebinned (:meth:`Fleet.device_inputs`)."""
    steps = device.num_steps(cfg.num_steps)
    dcfg = cfg if steps == cfg.num_steps else replace(cfg, num_steps=steps)
    if cfg.encoder == "events" and steps != cfg.num_steps:
        return rebin_time(encode_inputs(x, cfg, generator), steps), dcfg
    return encode_inputs(x, dcfg, generator), dcfg


@dataclass
class FleetEval:
    accuracy: float
    by_profile: dict[str, float]
    by_device: list[float] = field(default_factory=list)  # device k = client k's device, in client order


class Fleet:
    """Devices of all clients (``profiles[k]`` for client k), built from per-client seeds.

    ``device_seeds[k]`` draws client k's mismatch; ``calibration_seeds[k]`` its probe read-out noise.
    """

    def __init__(self, model: nn.Module, profiles: list[DeviceProfile], mode: str, device_seeds: list[int],
                 calibration_seeds: list[int], probe_repeats: int = 16, training_step: str = "device") -> None:
        reason = supports_devices(model)
        if reason is not None:
            raise ValueError(reason)
        if mode not in AGGREGATION_MODES:
            raise ValueError(f"unknown device aggregation {mode!r}; valid: {', '.join(AGGREGATION_MODES)}")
        if training_step not in TRAINING_STEPS:
            raise ValueError(f"unknown training step {training_step!r}; valid: {', '.join(TRAINING_STEPS)}")
        if training_step != "device" and mode != "calibrated":
            raise ValueError(f"training_step={training_step!r} trains a digital twin built from the device's "
                             "calibration; naive aggregation has no calibration (use training_step='device')")
        if not len(profiles) == len(device_seeds) == len(calibration_seeds):
            raise ValueError("a fleet needs one profile, device seed and calibration seed per client")
        self.model, self.profiles, self.mode, self.training_step = model, profiles, mode, training_step
        self.devices = [Device(p, model, s) for p, s in zip(profiles, device_seeds)]
        if mode == "calibrated":
            self.calibrations = [calibrate(d, torch.Generator().manual_seed(s), repeats=probe_repeats)
                                 for d, s in zip(self.devices, calibration_seeds)]
        else:
            identity = Calibration.identity(model)
            self.calibrations = [identity] * len(profiles)
        self.trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        # the stacked forward of the batched engine covers spiking MLPs with LIF/IF neurons; any other model is
        # evaluated device by device through torch.func.functional_call
        self._stacked = isinstance(model, SpikingMLP) and all(
            u.neuron in ("lif", "if", "integrator") and u.recurrent is None for u in self.devices[0].layers) \
            and not any(getattr(n, "refractory", 0) for n in model.neurons)

        self._training: Fleet | None = None
        self.chips: Fleet | None = None  # on a mixed / resolutions training view: the fleet of the real chips
        # on such a view: per client, the (device, calibration) pairs at the other time steps whose losses are
        # added to the trained device's (mixed: the coarse chip; resolutions: one per other dt of the fleet)
        self.step_views: list[list[tuple[Device, Calibration]]] | None = None

    def for_training(self) -> "Fleet":
        """The fleet the clients train on: this one, or with ``training_step`` nominal / mixed a view in which
        every device with ``dt != 1`` is its digital twin at the nominal step (calibration with ``dt = 1``; mixed:
        ``view.chips`` is this fleet, ``view.step_views`` the extra views per client; resolutions: as mixed, plus a
        digital twin at every other dt of the fleet for every client). Built once; shares everything else."""
        if self.training_step == "device" or all(p.dt == 1.0 for p in self.profiles):
            return self
        if self._training is None:
            view = copy.copy(self)
            view.devices, view.calibrations = list(self.devices), list(self.calibrations)
            for k, (dev, cal) in enumerate(zip(self.devices, self.calibrations)):
                if dev.profile.dt != 1.0:
                    view.devices[k] = digital_twin(dev, cal, 1.0)
                    view.calibrations[k] = replace(cal, dt=1.0)
            view.training_step = "device"  # the view trains on its (twin) devices as they are
            extra = self.training_step in ("mixed", "resolutions")
            view.chips = self if extra else None  # mixed / resolutions: the chips' loss as well
            view.step_views = [self._step_views(k) for k in range(len(self.devices))] if extra else None
            self._training = view
        return self._training

    def _step_views(self, client: int) -> list[tuple[Device, Calibration]]:
        """The (device, calibration) pairs whose losses a ``mixed`` / ``resolutions`` client adds to its trained
        device's: its chip if the chip's ``dt != 1``; with ``resolutions`` also, for every other ``dt != 1`` of
        the fleet, the chip's digital twin at that step with the calibration's map for that step."""
        chip, cal = self.devices[client], self.calibrations[client]
        steps = sorted({p.dt for p in self.profiles} - {1.0}) if self.training_step == "resolutions" else \
            ([chip.profile.dt] if chip.profile.dt != 1.0 else [])
        return [(chip, cal) if dt == chip.profile.dt else (digital_twin(chip, cal, dt), replace(cal, dt=dt))
                for dt in steps]

    def __len__(self) -> int:
        return len(self.devices)

    def composition(self) -> dict[str, int]:
        return dict(Counter(p.name for p in self.profiles))

    def num_steps(self, client: int, nominal: int) -> int:
        # a device simulates round(T / dt) steps whatever the aggregation mode (naive clients only skip the
        # dt conversion of decays and input scale)
        return self.devices[client].num_steps(nominal)

    def program(self, client: int, latent: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What client ``client`` writes to its device for the latent (trainable) values ``latent``."""
        full = full_program(self.model, latent)
        return self.calibrations[client].to_device(full) if self.mode == "calibrated" else full

    def upload(self, client: int, start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
        """The trainable latent values client ``client`` uploads: ``trained`` (program values) completed by its
        round's starting program ``start`` (fixed thresholds / decays), mapped back with ``to_latent``."""
        full = {**start, **trained}
        latent = self.calibrations[client].to_latent(full) if self.mode == "calibrated" else full
        return {n: latent[n] for n in self.trainable}

    def device_config(self, client: int, cfg: TrainConfig) -> TrainConfig:
        """The training configuration of client ``client``'s device: ``T_k = round(T / dt)`` steps, the rest as
        configured (``mse_count`` targets ``rate * T_k``: counts in the device's own steps; targets in nominal
        time, ``min(rate T, T_k)``, deployed worse on the seeds' scenario, see docs/hardware.md)."""
        steps = self.num_steps(client, cfg.num_steps)
        return cfg if steps == cfg.num_steps else replace(cfg, num_steps=steps)

    def device_inputs(self, client: int, x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator | None
                      ) -> tuple[torch.Tensor, TrainConfig]:
        """Encode ``x [B, ...]`` for client ``client``'s device: ``(inputs [T_k, B, ...], cfg with T_k)``.

        Event frames are binned at the nominal step, so they are encoded with the nominal ``T`` and rebinned to
        the device's ``T_k = round(T / dt)`` bins (:func:`~spikefed.hardware.devices.rebin_time`); other encoders
        encode ``T_k`` steps directly."""
        return inputs_for(self.devices[client], x, cfg, generator)

    def forward(self, client: int, program: dict[str, torch.Tensor], x: torch.Tensor,
                generator: torch.Generator | None) -> torch.Tensor:
        """Output of client ``client``'s device running ``program`` on encoded inputs ``x [T, B, ...]`` (lost /
        jittered steps applied): any model, through ``torch.func.functional_call``."""
        device = self.devices[client]
        eff = device.effective(program, generator)
        out = functional_call(self.model, eff, (device.perturb_input(x, generator),))
        return as_model_output(out, self.model).output

    @torch.no_grad()
    def evaluate(self, latent: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                 generator: torch.Generator, chunk: int = 8, batch: int = 512) -> FleetEval:
        """Mean accuracy of the latent model ``latent`` deployed on every device (and per profile name)."""
        correct: list[float] = [0.0] * len(self.devices)
        groups: dict[int, list[int]] = {}
        for k in range(len(self.devices)):
            groups.setdefault(self.num_steps(k, cfg.num_steps), []).append(k)
        x = as_float_batch(x, input_dtype(self.model))  # a compact test store: float for this evaluation
        for steps, members in groups.items():
            if self._stacked:
                xs, gcfg = self.device_inputs(members[0], x, cfg, generator)  # [T, B, F]
                for start in range(0, len(members), chunk):
                    part = members[start:start + chunk]
                    eff = [self.devices[k].effective(self.program(k, latent), generator) for k in part]
                    stacked = {n: torch.stack([e[n] for e in eff]) for n in eff[0]}
                    inputs = [self.devices[k].perturb_input(xs, generator) for k in part]
                    xk = torch.stack(inputs, dim=1)  # [T, K, B, F]
                    assert isinstance(self.model, SpikingMLP)  # what self._stacked checked
                    out, _ = cohort_forward(self.model, stacked, xk)
                    pred = predict_cohort(out, gcfg)  # [K, B]
                    for row, k in enumerate(part):
                        correct[k] = float((pred[row] == y).double().mean())
                continue
            hits = {k: 0 for k in members}
            for start in range(0, len(y), batch):
                xs, gcfg = self.device_inputs(members[0], x[start:start + batch], cfg, generator)
                for k in members:
                    out = self.forward(k, self.program(k, latent), xs, generator)
                    hits[k] += int((predict(out, gcfg) == y[start:start + batch]).sum())
            for k in members:
                correct[k] = hits[k] / max(len(y), 1)
        by: dict[str, list[float]] = {}
        for k, acc in enumerate(correct):
            by.setdefault(self.profiles[k].name, []).append(acc)
        return FleetEval(sum(correct) / len(correct), {n: sum(v) / len(v) for n, v in by.items()}, correct)

    def describe(self) -> dict[str, Any]:
        return {"aggregation": self.mode, "training_step": self.training_step, "composition": self.composition(),
                "client_profiles": [p.name for p in self.profiles]}
