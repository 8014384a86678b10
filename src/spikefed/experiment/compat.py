"""Which features combine: one table, as data, of the combinations that cannot work, each with its reason.

Every row is a :class:`Refusal`: where it applies (``run``: every federated run, simulated or deployed;
``flower``: only a Flower deployment), a predicate on the resolved :class:`~spikefed.experiment.config.RunSettings`
and the message, which names the keys and says why. The table is consulted by config validation (so a refused
combination exits 2 with one line before any data loads), by the Flower ServerApp and launcher
(:func:`check` with ``where="flower"``), and printed by ``spikefed config show`` (:func:`describe`).

Everything not in the table combines. Which engine trains is not a refusal: :func:`engine_for` decides it from
the model once, before training, and the run prints and records it (no silent fallback).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..events.datasets import EVENT_DATASETS, NATURAL_GROUPS

__all__ = ["REFUSALS", "Refusal", "check", "describe", "engine_for", "refusals"]


@dataclass(frozen=True)
class Refusal:
    """One combination that cannot work."""

    name: str
    where: str  # "run" (every federated run) or "flower" (deployment only)
    keys: tuple[str, ...]  # the settings involved
    applies: Callable[[Any], bool]
    reason: Callable[[Any], str]  # the message for these settings (names the keys, says why)


def _private(s: Any) -> bool:
    return bool(s.privacy.dp or s.privacy.secure_aggregation)


def _private_name(s: Any) -> str:
    return "privacy.dp" if s.privacy.dp else "privacy.secure_aggregation"


def _continual(s: Any) -> bool:
    return s.continual.stream != "none"


def _event(s: Any) -> bool:
    return s.data.name in EVENT_DATASETS


def _differs(s: Any, section: str) -> bool:
    from .config import RunSettings  # the defaults of a section

    return bool(getattr(s, section) != getattr(RunSettings.model_construct(), section))


REFUSALS: tuple[Refusal, ...] = (
    Refusal("private-scaffold", "run", ("privacy.dp", "privacy.secure_aggregation", "federation.strategy"),
            lambda s: _private(s) and s.federation.strategy == "scaffold",
            lambda s: f"{_private_name(s)} does not support federation.strategy=scaffold (its control variates "
                      "would need the same protection); choose another strategy"),
    Refusal("private-defence", "run", ("privacy.dp", "privacy.secure_aggregation", "robustness.defense"),
            lambda s: _private(s) and s.robustness.defense != "none",
            lambda s: f"{_private_name(s)} replaces the aggregation, so robustness.defense={s.robustness.defense} "
                      "would be ignored (secure aggregation hides single updates; DP's clipping already bounds "
                      "them); set robustness.defense=none"),
    Refusal("private-qffl", "run", ("privacy.dp", "privacy.secure_aggregation", "federation.strategy"),
            lambda s: _private(s) and s.federation.strategy == "qffl",
            lambda s: f"{_private_name(s)} does not support federation.strategy=qffl: q-FFL weighs each client by "
                      "its own loss F_k^q and update norm, which DP's clipped noisy mean and the secure sum hide "
                      "from the server; choose another strategy"),
    Refusal("qffl-defence", "run", ("federation.strategy", "robustness.defense"),
            lambda s: s.federation.strategy == "qffl" and s.robustness.defense != "none",
            lambda s: f"federation.strategy=qffl makes its own step (sum F_k^q Delta_k / sum h_k), so "
                      f"robustness.defense={s.robustness.defense} would be ignored; set robustness.defense=none"),
    Refusal("qffl-weights", "run", ("federation.strategy", "federation.weights"),
            lambda s: s.federation.strategy == "qffl" and s.federation.weights != "samples",
            lambda s: "federation.strategy=qffl weighs the clients by F_k^q (their losses), not by "
                      f"federation.weights={s.federation.weights}; leave federation.weights=samples"),
    Refusal("secagg-uniform-weights", "run", ("privacy.secure_aggregation", "privacy.dp", "federation.weights"),
            lambda s: s.privacy.secure_aggregation and not s.privacy.dp and s.federation.weights == "uniform",
            lambda s: "privacy.secure_aggregation without DP sums n_k-weighted deltas and the sample count inside "
                      "the masked vector (a sample-weighted mean); federation.weights=uniform is not supported "
                      "there (with privacy.dp the mean is already uniform)"),
    Refusal("private-selection", "run", ("privacy.dp", "privacy.secure_aggregation", "federation.selection"),
            lambda s: _private(s) and s.federation.selection != "uniform",
            lambda s: f"{_private_name(s)} needs federation.selection=uniform (got {s.federation.selection}): the "
                      "DP accountant's privacy amplification assumes m of N clients sampled uniformly, and the "
                      "secure sum cannot apply per-client selection corrections or hide which clients were chosen "
                      "by their loss"),
    Refusal("qffl-size", "run", ("federation.strategy", "federation.selection"),
            lambda s: s.federation.strategy == "qffl" and s.federation.selection == "size",
            lambda s: "federation.selection=size corrects the aggregation weights for its sampling, but "
                      "federation.strategy=qffl weighs the clients by F_k^q only; choose another selection"),
    Refusal("secagg-compression", "run", ("privacy.secure_aggregation", "compression.uplink"),
            lambda s: s.privacy.secure_aggregation and s.compression.uplink != "none",
            lambda s: "privacy.secure_aggregation masks uplink vectors with uniform noise, which cannot be "
                      f"compressed; set compression.uplink=none (got {s.compression.uplink})"),
    Refusal("momentum-correction-ef", "run", ("compression.momentum_correction", "compression.error_feedback",
                                               "compression.uplink"),
            lambda s: s.compression.momentum_correction > 0 and (not s.compression.error_feedback
                                                                 or s.compression.uplink == "none"),
            lambda s: "compression.momentum_correction accumulates the velocity in the error-feedback residual "
                      "of a compressed uplink (what is not sent waits there); it needs compression.error_feedback="
                      "true and a compression.uplink other than none"),
    Refusal("continual-event-drift", "run", ("continual.stream", "continual.rotation", "data.name"),
            lambda s: _continual(s) and s.continual.stream != "class_incremental" and _event(s)
            and s.continual.rotation != 0,
            lambda s: f"continual.stream={s.continual.stream} on event data (data.name={s.data.name}) drifts the "
                      "sensor (background spikes with probability task * continual.noise per frame cell); binned "
                      "frames have no image plane to rotate: set continual.rotation=0 and continual.noise > 0"),
    Refusal("ewc-private", "run", ("continual.regularizer", "privacy.dp", "privacy.secure_aggregation"),
            lambda s: _continual(s) and s.continual.regularizer == "ewc" and _private(s),
            lambda s: "continual.regularizer=ewc uploads per-client Fisher diagonals outside the private "
                      "pipeline; use regularizer=l2 with privacy"),
    Refusal("natural-partition-data", "run", ("partition.method", "data.name"),
            lambda s: s.partition.method in ("subject", "speaker", "session")
            and s.partition.method not in NATURAL_GROUPS.get(s.data.name, ()),
            lambda s: f"partition.method={s.partition.method} gives clients whole {s.partition.method} groups, "
                      f"which data.name={s.data.name} does not record (groups by data set: "
                      + "; ".join(f"{k}: {', '.join(v) or 'none'}" for k, v in NATURAL_GROUPS.items()) + ")"),
    Refusal("conv-channels", "run", ("model.kind", "data.name"),
            lambda s: s.model.kind == "conv" and s.data.name in ("shd", "ssc"),
            lambda s: f"model.kind=conv convolves a 2-D image plane, but data.name={s.data.name} records a 1-D "
                      "array of cochlea channels; use model.kind=mlp or recurrent"),
    Refusal("eprop-conv", "run", ("local.method", "model.kind"),
            lambda s: s.local.method == "eprop" and s.model.kind == "conv",
            lambda s: "local.method=eprop with model.kind=conv: e-prop's eligibility traces are derived for fully "
                      "connected (optionally recurrent) LIF layers, e_ji = psi_j * low-pass(x_i); a shared conv "
                      "kernel would need the trace summed over every position it is applied at; use "
                      "local.method=bptt or model.kind=mlp/recurrent"),
    Refusal("eprop-delays", "run", ("local.method", "model.delays"),
            lambda s: s.local.method == "eprop" and s.model.delays > 0,
            lambda s: f"local.method=eprop with model.delays={s.model.delays}: e-prop's eligibility traces assume "
                      "each spike reaches the next layer in the same step (a delay d would need the trace d steps "
                      "back, and a gradient for d itself, which e-prop does not define); set model.delays=0 or "
                      "local.method=bptt"),
    Refusal("fleet-eprop", "run", ("devices.fleet", "local.method"),
            lambda s: bool(s.devices.fleet) and s.local.method != "bptt",
            lambda s: f"devices.fleet: local.method={s.local.method} is not supported on a fleet: e-prop's "
                      "eligibility traces e = dh/dW are derived from the neuron equations with the module's own "
                      "parameters, but a device trains its program p through effective values g Q(p) (mismatch, "
                      "straight-through quantization, rebinned time), whose Jacobian the traces do not contain; "
                      "use local.method=bptt (full or truncated) on a fleet"),
    Refusal("fleet-naive-twin", "run", ("devices.aggregation", "devices.training_step"),
            lambda s: bool(s.devices.fleet) and s.devices.aggregation == "naive" and s.devices.training_step
            != "device",
            lambda s: f"devices.training_step={s.devices.training_step} trains each coarse-step chip's digital "
                      "twin, which is built from the chip's calibration (its measured gains, thresholds, time "
                      "constants and delays); devices.aggregation=naive measures nothing, so there is no twin to "
                      "train: use devices.aggregation=calibrated or devices.training_step=device"),
    Refusal("fleet-blocks", "run", ("devices.fleet", "model.norm", "model.dropout", "model.residual"),
            lambda s: bool(s.devices.fleet) and bool(s.model.blocks()),
            lambda s: "devices.fleet: a device runs Linear -> LIF/IF layers (its mismatch and calibration model "
                      "that core); model.norm, model.dropout and model.residual add layers it has no circuit for"),
    Refusal("fleet-robust-training", "run", ("devices.fleet", "local.adversarial", "local.ib_weight",
                                              "local.distill"),
            lambda s: bool(s.devices.fleet) and bool(s.local.adversarial != "none" or s.local.ib_weight
                                                     or s.local.distill),
            lambda s: "devices.fleet: devices train the batched engine's plain objective; local.adversarial, "
                      "local.ib_weight and local.distill change the objective per batch (attacks, teacher) and "
                      "train on the sequential engine only"),
    Refusal("network-fednova", "run", ("network.enabled", "faults.late_policy"),
            lambda s: s.network.enabled and s.faults.late_policy != "drop",
            lambda s: "network.enabled decides lateness after the upload is measured (its transfer time depends on "
                      "the compressed size), but faults.late_policy=fednova plans partial work before training; "
                      "set faults.late_policy=drop"),
    Refusal("network-secagg", "run", ("network.enabled", "privacy.secure_aggregation"),
            lambda s: s.network.enabled and s.privacy.secure_aggregation,
            lambda s: "network.enabled times each client's measured upload, but privacy.secure_aggregation "
                      "replaces uploads with masked vectors and key shares whose per-client bytes the round does "
                      "not record; disable one of them"),
    Refusal("flower-scaffold", "flower", ("federation.strategy",),
            lambda s: s.federation.strategy == "scaffold",
            lambda s: "federation.strategy=scaffold is not supported on Flower (its per-client control variates "
                      "live on the simulated server); choose another strategy"),
    Refusal("flower-qffl", "flower", ("federation.strategy",),
            lambda s: s.federation.strategy == "qffl",
            lambda s: "federation.strategy=qffl is not supported on Flower yet (the nodes do not report their loss "
                      "at the received model, q-FFL's F_k); choose another strategy"),
    Refusal("flower-selection", "flower", ("federation.selection",),
            lambda s: s.federation.selection != "uniform",
            lambda s: f"federation.selection={s.federation.selection} is not supported on Flower yet (the server "
                      "would need the nodes' losses, sizes or availability before the round); set it to uniform"),
    Refusal("flower-faults", "flower", ("faults",),
            lambda s: _differs(s, "faults"),
            lambda s: "faults: simulated dropouts/stragglers do not apply to a deployment (real nodes fail on "
                      "their own); remove the faults section"),
    Refusal("flower-network", "flower", ("network.enabled",),
            lambda s: s.network.enabled,
            lambda s: "network.enabled simulates device links; a deployment runs over real ones (its rows time "
                      "the real round); set network.enabled=false"),
    Refusal("flower-attack", "flower", ("robustness.attack",),
            lambda s: s.robustness.attack != "none",
            lambda s: "robustness.attack: simulated attackers do not apply to a deployment; set it to none "
                      "(robustness.defense is supported)"),
    Refusal("flower-secagg-sim", "flower", ("privacy.secure_aggregation",),
            lambda s: s.privacy.secure_aggregation,
            lambda s: "privacy.secure_aggregation simulates the protocol in one process; on Flower use the run "
                      "config secure=\"secaggplus\" (Flower's SecAgg+) instead"),
    Refusal("flower-continual", "flower", ("continual",),
            lambda s: _differs(s, "continual"),
            lambda s: "continual: task streams and stability terms are not supported on Flower yet (the anchors "
                      "and Fisher live on the simulated server); remove the continual section"),
    Refusal("flower-momentum-correction", "flower", ("compression.momentum_correction",),
            lambda s: s.compression.momentum_correction > 0,
            lambda s: "compression.momentum_correction is not supported on Flower yet (a node carries only its "
                      "error-feedback residual between rounds, not the DGC velocity); set it to 0"),
    Refusal("flower-downlink", "flower", ("compression.downlink",),
            lambda s: s.compression.downlink != "none",
            lambda s: "compression.downlink is not supported on Flower yet (the nodes receive dense parameters); "
                      "set it to none"),
    Refusal("device-fleet", "run", ("runtime.device", "devices.fleet"),
            lambda s: _on_accelerator(s) and bool(s.devices.fleet),
            lambda s: f"runtime.device={s.runtime.device} does not support devices.fleet yet (each simulated "
                      "chip's physics, calibration probes and quantizers run on CPU tensors; auto may pick cuda); "
                      "use runtime.device=cpu"),
    Refusal("device-continual", "run", ("runtime.device", "continual.regularizer"),
            lambda s: _on_accelerator(s) and s.continual.regularizer != "none",
            lambda s: f"runtime.device={s.runtime.device} does not support continual.regularizer yet (the "
                      "stability anchors and Fisher diagonals live on the CPU server; auto may pick cuda); "
                      "use runtime.device=cpu"),
    Refusal("device-numba", "run", ("runtime.device", "local.kernel"),
            lambda s: _on_accelerator(s) and s.local.kernel == "numba",
            lambda s: f"runtime.device={s.runtime.device} cannot run local.kernel=numba (a CPU kernel: numba "
                      "compiles the LIF time loops to machine code that reads the tensors' host memory; auto may "
                      "pick cuda); use runtime.device=cpu, or local.kernel=loop or auto (compiled on CUDA, loop "
                      "on CPU)"),
)


def _on_accelerator(s: Any) -> bool:
    """``runtime.device`` may name an accelerator: anything but ``cpu`` (``auto`` too, so that whether a config
    is refused does not depend on the machine that validates it)."""
    return bool(s.runtime.device != "cpu")


def refusals(settings: Any, where: str = "run") -> list[str]:
    """The messages of every row of the table that refuses ``settings`` (``where``: run, or flower = run + the
    deployment's own rows)."""
    scopes = ("run",) if where == "run" else ("run", "flower")
    return [r.reason(settings) for r in REFUSALS if r.where in scopes and r.applies(settings)]


def check(settings: Any, where: str = "run") -> None:
    """``ValueError`` with the first refusal's message, if any."""
    found = refusals(settings, where)
    if found:
        raise ValueError(found[0])


def describe() -> list[str]:
    """One line per row of the table: where, the keys involved, the name (for ``spikefed config show``)."""
    return [f"{r.where:6s} {r.name:22s} {', '.join(r.keys)}" for r in REFUSALS]


def engine_for(requested: str, model: Any, cfg: Any) -> tuple[str, str | None]:
    """The engine that trains: ``(engine, why it is not the requested one or None)``. The batched cohort engine
    covers the models :func:`~spikefed.federated.cohort.supports_cohort` accepts (any model whose forward runs
    under ``torch.func.vmap``, trained by full BPTT); anything else (truncated BPTT, e-prop, BatchNorm/Dropout)
    trains on the sequential engine, and the run says so."""
    from ..federated.cohort import supports_cohort

    if requested != "cohort":
        return requested, None
    reason = supports_cohort(model, cfg)
    return ("cohort", None) if reason is None else ("sequential", reason)

