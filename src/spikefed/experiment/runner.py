"""``spikefed run``: config -> federation -> rounds -> run directory (metrics, summary, checkpoint, report).

Run directory::

    config.yaml        fully resolved settings
    partition.json     per-client sizes, label distribution, heterogeneity (JSD, Hellinger)
    metrics.jsonl      one JSON row per round (whole; memory and the checkpoint keep compact rows: metrics_rows)
    summary.json       final/best accuracy, rounds, bytes, wall time, heterogeneity
    checkpoint.pt      everything needed to resume (written atomically every round)
    report.html        plots (accuracy/loss, accuracy vs bytes, label heatmap, firing rates)
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data.digits import DatasetSplit
from ..events.datasets import EVENT_DATASETS
from ..data.partition import feature_transforms, label_distribution, partition as split_clients
from ..federated.simulation import FederationSpec, RemoteTrainer, Simulation
from ..federated.checkpoint import read_checkpoint
from ..runtime import resolve_device
from ..federated.client_state import STATE_DIR
from ..seeding import Purpose, derive_seed, numpy_rng, torch_generator
from ..federated.faults import FaultSpec
from ..federated.robust import RobustnessSpec
from ..federated.fairness import FAIRNESS_KEYS
from ..federated.selection import SelectionSpec
from ..federated.strategies import make_strategy
from ..hardware.energy import EnergyModel
from ..io import json_safe, write_atomic, write_json_atomic
from .centralized import build_model, load_dataset
from .compat import engine_for
from .config import ConfigError, FaultSettings, RunSettings, TrainSettings, dump_yaml
from .metrics_rows import compact_row, restore_rows, row_line


def load_data(settings: RunSettings) -> DatasetSplit:
    """The configured dataset: static digits, or event data (``data.name`` event_digits / event_mnist5k, binned
    into ``data.bins`` frames; the config has set ``local.encoder = events`` and ``local.num_steps = bins``)."""
    return load_dataset(settings.data, settings.seed)


def make_partition(settings: RunSettings, data: DatasetSplit) -> tuple[list[np.ndarray], list[Any] | None]:
    """Client index sets (and per-client feature transforms for feature skew), seeded by ``settings.seed``."""
    p = settings.partition
    n = int(data.y_train.shape[0])
    if p.num_clients > n:
        raise ConfigError(f"partition.num_clients={p.num_clients} exceeds the {n} training samples")
    if p.method in ("dirichlet", "quantity") and p.num_clients * p.min_size > n:
        raise ConfigError(f"partition.min_size={p.min_size} x num_clients={p.num_clients} exceeds the {n} "
                          "training samples; lower one of them")
    rng = numpy_rng(settings.seed, Purpose.PARTITION)
    kwargs: dict[str, Any] = {}
    if p.method == "dirichlet":
        kwargs = {"alpha": p.alpha, "min_size": p.min_size}
    elif p.method == "shards":
        kwargs = {"shards_per_client": p.shards_per_client}
    elif p.method == "quantity":
        kwargs = {"exponent": p.exponent, "min_size": p.min_size}
    try:
        parts = split_clients(data.y_train.numpy(), p.num_clients, p.method, rng, **kwargs)
    except ValueError as e:
        raise ConfigError(f"partition: {e}") from None
    transforms = None
    if p.method == "feature":
        if p.scale_low > p.scale_high:
            raise ConfigError("partition.scale_low must be <= partition.scale_high")
        transforms = feature_transforms(p.num_clients, rng, noise_std=p.noise_std,
                                                     scale_range=(p.scale_low, p.scale_high), shift_std=p.shift_std)
    return parts, transforms


#: federation keys added after the first release (issue 18): out of the fingerprint while at their defaults
LATER_FEDERATION_KEYS = ("weights", "qffl_q", "qffl_lipschitz", "selection", "selection_candidates",
                         "availability_period", "availability_low", "availability_high")


#: model and local keys added with every model kind (issue 13): out of the fingerprint while at their defaults
LATER_MODEL_KEYS = ("channels", "kernel", "stride", "padding", "pooling", "pool", "residual", "delays",
                    "learn_reset", "graded", "refractory")
LATER_LOCAL_KEYS = ("reg_membrane_l1", "reg_membrane_l2", "kernel")


def strategy_kwargs(settings: RunSettings) -> dict[str, Any]:
    f = settings.federation
    kw: dict[str, Any] = {}
    if f.server_lr is not None:
        kw["server_lr"] = f.server_lr
    if f.strategy == "fedprox":
        kw["mu"] = f.prox_mu
    elif f.strategy == "fedavgm":
        kw["momentum"] = f.momentum
    elif f.strategy in ("fedadam", "fedyogi", "fedadagrad"):
        kw.update(beta1=f.beta1, tau=f.tau)
        if f.strategy != "fedadagrad":
            kw["beta2"] = f.beta2
    elif f.strategy == "scaffold":
        kw["num_clients"] = settings.partition.num_clients
    elif f.strategy == "qffl":
        kw.update(q=f.qffl_q, lipschitz=f.qffl_lipschitz if f.qffl_lipschitz is not None else 1.0 / settings.local.lr)
    from ..federated.strategies import STRATEGIES

    if f.strategy not in STRATEGIES:  # registered (spikefed.register_strategy): server_lr and strategy_args only
        kw = {k: v for k, v in kw.items() if k == "server_lr"}
    kw.update(f.strategy_args)
    return kw


#: partition methods that give clients whole natural groups of recorded event data
NATURAL_PARTITIONS = ("subject", "speaker", "session")


def prepare_data(settings: RunSettings, *, frame_store: str = "compact"
                 ) -> tuple[DatasetSplit, list[np.ndarray], list[Any] | None, dict[str, Any]]:
    """Data, client index sets, feature transforms and a heterogeneity report of event statistics (event data:
    natural partitions, per-client sensors with ``partition.method=feature``; see experiment.eventdata; frames
    held as ``frame_store``, eventdata.FRAME_STORES)."""
    if settings.data.name not in EVENT_DATASETS:
        data = load_data(settings)
        parts, transforms = make_partition(settings, data)
        return data, parts, transforms, {}
    from .eventdata import (apply_sensor_skew, client_sensors, event_statistics_report, load_event_data,
                            natural_parts)

    ev = load_event_data(settings.data, settings.seed, store=frame_store)
    p = settings.partition
    if p.method in NATURAL_PARTITIONS:
        parts = natural_parts(p.method, ev.train, p.num_clients)
        return ev.split, parts, None, {"events": event_statistics_report(ev, parts)}
    parts, _ = make_partition(settings, ev.split)  # method=feature: an iid split; the skew is the sensors'
    if p.method == "feature":
        report = apply_sensor_skew(ev, parts, client_sensors(p.sensors, len(parts)), settings.seed)
        return ev.split, parts, None, {"events": report}
    return ev.split, parts, None, {}


def build_spec(settings: RunSettings, *, data: DatasetSplit | None = None, model: torch.nn.Module | None = None,
               strategy: Any = None) -> FederationSpec:
    """Config -> data, partition, model, strategy (every random choice seeded by ``settings.seed``). ``data``,
    ``model``, ``strategy`` (Python API, :mod:`spikefed.experiment.api`): your own, used instead of the config's."""
    return build_spec_and_report(settings, data=data, model=model, strategy=strategy)[0]


def build_spec_and_report(settings: RunSettings, *, frame_store: str = "compact", data: DatasetSplit | None = None,
                          model: torch.nn.Module | None = None, strategy: Any = None
                          ) -> tuple[FederationSpec, dict[str, Any]]:
    """:func:`build_spec` and the event-statistics report of :func:`prepare_data` (``{}`` for your own ``data``)."""
    if data is None:
        data, parts, transforms, report = prepare_data(settings, frame_store=frame_store)
    else:
        (parts, transforms), report = make_partition(settings, data), {}
    gen = torch_generator(settings.seed, Purpose.INIT)
    if model is None:
        model = build_model(TrainSettings(seed=settings.seed, data=settings.data, model=settings.model,
                                          train=settings.local), data.step_features, data.num_classes, gen,
                            tuple(data.feature_shape[1:] if data.sequence else data.feature_shape))
    if strategy is None:
        strategy = make_strategy(settings.federation.strategy, **strategy_kwargs(settings))
    strategy.set_weighting(settings.federation.weights)
    f = settings.federation
    local = settings.local.to_train_config()
    engine, why = engine_for(f.engine, model, local)  # printed and recorded in summary.json
    e = settings.energy
    return FederationSpec(data=data, parts=parts, model=model, strategy=strategy,
                          local=local, rounds=f.rounds, fraction=f.fraction, min_clients=f.min_clients,
                          seed=settings.seed, engine=engine, engine_note=why, eval_every=f.eval_every,
                          max_update_norm=f.max_update_norm, norm_bound=f.norm_bound,
                          energy=EnergyModel(e.e_ac, e.e_mac, e.e_spike),
                          client_transforms=transforms, faults=fault_spec(settings),
                          robustness=robustness_spec(settings), compression=settings.compression.to_spec(),
                          fleet=build_fleet(settings, model, len(parts)), privacy=settings.privacy.to_spec(),
                          continual=settings.continual.to_spec(f.rounds),
                          network=settings.network.to_spec(),
                          selection=selection_spec(settings),
                          device=str(resolve_device(settings.runtime.device))), report


def selection_spec(settings: RunSettings) -> SelectionSpec | None:
    """The client selection of ``federation.selection`` (``None``: uniform)."""
    f = settings.federation
    if f.selection == "uniform":
        return None
    if f.availability_low > f.availability_high:
        raise ConfigError("federation.availability_low must be <= federation.availability_high")
    return SelectionSpec(f.selection, f.selection_candidates, f.availability_period, f.availability_low,
                         f.availability_high)


def build_fleet(settings: RunSettings, model: torch.nn.Module, num_clients: int) -> Any:
    """The clients' devices (``devices.fleet``), or ``None`` for ideal hardware; seeded by ``settings.seed``."""
    d = settings.devices
    if not d.fleet:
        return None
    from ..hardware.devices import assign_fleet, supports_devices
    from ..hardware.fleet import Fleet

    reason = supports_devices(model)  # the config's refusals are in experiment.compat; this guards the model
    if reason is not None:
        raise ConfigError(f"devices.fleet: {reason}")
    rng = numpy_rng(settings.seed, Purpose.FLEET)
    profiles = assign_fleet(num_clients, [(e.to_profile(), e.fraction) for e in d.fleet], rng)
    return Fleet(model, profiles, d.aggregation,
                 [derive_seed(settings.seed, Purpose.DEVICE, client=c) for c in range(num_clients)],
                 [derive_seed(settings.seed, Purpose.CALIBRATION, client=c) for c in range(num_clients)],
                 probe_repeats=d.probe_repeats, training_step=d.training_step)


def fault_spec(settings: RunSettings) -> FaultSpec | None:
    """The ``faults`` section as a :class:`FaultSpec`; ``None`` when it holds only defaults (no faults: the
    simulation runs exactly as without the section)."""
    s = settings.faults
    if s == FaultSettings():
        return None
    return FaultSpec(dropout=s.dropout, deadline=s.deadline, straggler_sigma=s.straggler_sigma,
                     jitter_sigma=s.jitter_sigma, late_policy=s.late_policy)


def robustness_spec(settings: RunSettings) -> RobustnessSpec | None:
    """The ``robustness`` section as a :class:`RobustnessSpec`; ``None`` when there is neither an attack nor a
    defence (the simulation then runs exactly as without the section)."""
    s = settings.robustness
    if s.attack == "none" and s.defense == "none":
        return None
    return RobustnessSpec(attack=s.attack, attack_fraction=s.attack_fraction, boost=s.boost, sign_scale=s.sign_scale,
                          noise_std=s.noise_std, defense=s.defense, trim_fraction=s.trim_fraction, krum_f=s.krum_f,
                          multikrum_m=s.multikrum_m, clip_norm=s.clip_norm, root_size=s.root_size)


def fingerprint(settings: RunSettings) -> dict[str, Any]:
    """What must match for a resume: every setting except the number of rounds."""
    d = settings.model_dump(mode="json")
    d["federation"].pop("rounds")
    d["federation"].pop("client_state_memory_mb")  # where per-client state lives changes no result
    if settings.data.name not in EVENT_DATASETS:  # static-data runs keep the fingerprint they had before
        for key in ("bins", "frame_mode", "downsample", "noise_rate"):
            d["data"].pop(key)
    for key in ("root", "window_ms", "crop", "limit", "cache_dir"):  # keys added later: left out while unset
        if d["data"][key] is None:
            d["data"].pop(key)
    if not settings.partition.sensors:
        d["partition"].pop("sensors")
    # sections added after the first release: left out while at their defaults, so runs that do not use them
    # keep the fingerprint (and their checkpoints stay resumable)
    defaults = RunSettings()
    for section in ("faults", "devices", "robustness", "compression", "privacy", "continual", "network"):
        if getattr(settings, section) == getattr(defaults, section):
            d.pop(section)
    for key in LATER_FEDERATION_KEYS:  # federation keys added later: likewise, while at their defaults
        if getattr(settings.federation, key) == getattr(defaults.federation, key):
            d["federation"].pop(key)
    if "robustness" in d and settings.robustness.defense != "fltrust":  # keys added later, used only by fltrust
        d["robustness"].pop("root_size")
    for key in LATER_MODEL_KEYS:  # model keys added later (issue 13): likewise, while at their defaults
        if getattr(settings.model, key) == getattr(defaults.model, key):
            d["model"].pop(key)
    for key in LATER_LOCAL_KEYS:
        if getattr(settings.local, key) == getattr(defaults.local, key):
            d["local"].pop(key)
    if not settings.federation.strategy_args:  # added with the Python API's strategy registry
        d["federation"].pop("strategy_args")
    d["runtime"].pop("threads")  # threads change no number; a device other than the CPU draws other streams
    if settings.runtime.device == "cpu":
        d.pop("runtime")
    return {"sha256": hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()}


def summarize(sim: Simulation, settings: RunSettings, wall: float) -> dict[str, Any]:
    rows = sim.state.metrics
    accs = [r["accuracy"] for r in rows if r.get("accuracy") is not None]
    last_eval = next((r for r in reversed(rows) if r.get("accuracy") is not None), {})
    het = sim.heterogeneity
    return json_safe({
        "final_accuracy": accs[-1] if accs else None,
        "best_accuracy": max(accs) if accs else None,
        "final_loss": last_eval.get("loss"),
        "rounds": sim.state.round,
        "clients": sim.num_clients,
        "strategy": settings.federation.strategy,
        "engine": sim.spec.engine,
        "engine_note": sim.spec.engine_note,
        "partition": settings.partition.method,
        "total_bytes_up": sim.state.bytes_up,
        "total_bytes_down": sim.state.bytes_down,
        "wall_seconds": wall,
        "train_seconds": sim.state.seconds,
        "spikes_per_inference": last_eval.get("spikes"),
        "synops_per_inference": last_eval.get("synops"),
        "energy_per_inference_j": last_eval.get("energy_j"),
        "rejected_updates": sum(r.get("rejected", 0) for r in rows),
        **client_fates(rows),
        "heterogeneity": {k: het[k] for k in ("mean_jsd", "max_jsd", "mean_hellinger", "max_hellinger",
                                               "jsd", "hellinger", "sizes", "events") if k in het},
        "label_distribution": label_distribution(sim.spec.data.y_train.numpy(), sim.spec.parts,
                                                 sim.spec.data.num_classes).tolist(),
        "seed": settings.seed,
        **({"devices": {**sim.spec.fleet.describe(), "final_accuracy_ideal": last_eval.get("accuracy_ideal"),
                        "final_accuracy_by_device": last_eval.get("accuracy_by_device")}}
           if sim.spec.fleet is not None else {}),
        **_privacy_summary(sim),
        **_continual_summary(sim),
        **_faults_summary(rows),
        **_network_summary(rows),
        **fairness_summary(last_eval),
    })


def fairness_summary(last_eval: dict[str, Any]) -> dict[str, Any]:
    """The fairness of the last evaluated global model across clients (``federated.fairness``): mean, worst 10 %
    and Jain index of the per-client accuracy (null when no round was evaluated)."""
    return {"fairness": {k: last_eval.get(k) for k in FAIRNESS_KEYS}}


def client_fates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the rounds for ``summary.json``: sampled clients, and (when the run has an attack) attackers
    among the sampled. Dropped and late clients: :func:`_faults_summary`."""
    out: dict[str, Any] = {"sampled_clients": sum(int(r.get("clients") or 0) for r in rows)}
    if any("malicious" in r for r in rows):
        out["malicious_sampled"] = sum(int(r.get("malicious") or 0) for r in rows)
    return out


def elapsed_before(rows: list[dict[str, Any]]) -> tuple[float, int]:
    """(wall seconds spent by earlier sessions of this run up to their last checkpointed round, sessions so far),
    from the checkpoint's rows (``elapsed_seconds``, ``session``; rows of older runs: summed round seconds)."""
    if not rows:
        return 0.0, 0
    last = rows[-1]
    elapsed = last.get("elapsed_seconds")
    if not isinstance(elapsed, (int, float)):
        elapsed = sum(float(r.get("seconds") or 0.0) for r in rows)
    session = last.get("session")
    return float(elapsed), int(session) if isinstance(session, int) else 1


def _faults_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Client-rounds lost to faults, summed over the rows that record them (a run with ``faults`` or a Flower
    deployment): ``dropped``, ``late``, ``partial`` as in the rows, and ``skipped_rounds`` when a deployment
    skipped any; ``{}`` for a run without fault records."""
    recorded = [r for r in rows if "dropped" in r]
    if not recorded:
        return {}
    out: dict[str, Any] = {k: sum(int(r.get(k) or 0) for r in recorded) for k in ("dropped", "late", "partial")}
    skipped = sum(1 for r in rows if r.get("skipped"))
    if skipped:
        out["skipped_rounds"] = skipped
    return out


def _network_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``sim_seconds``: the simulated wall-clock time of all rounds (network model), ``None`` without one."""
    secs = [r.get("sim_seconds") for r in rows]
    return {"sim_seconds": sum(secs) if secs and all(isinstance(s, (int, float)) for s in secs) else None}


def _privacy_summary(sim: Simulation) -> dict[str, Any]:
    """``{"privacy": settings and spent budget}`` (epsilon at delta, rounds composed, clip ...), or ``{}``."""
    stage = sim.stage("privacy")
    if stage is None:
        return {}
    return {"privacy": stage.engine.summary(stage.state)}  # type: ignore[attr-defined]


def _continual_summary(sim: Simulation) -> dict[str, Any]:
    """``{"continual": accuracy matrix R, ACC, BWT, forgetting, drift between consecutive tasks ...}``, or ``{}``."""
    from ..federated.continual import accuracy_matrix, continual_metrics

    c = sim.spec.continual
    if c is None or sim.stream is None:
        return {}
    r = accuracy_matrix(sim.state.metrics)
    out: dict[str, Any] = {"stream": c.stream, "tasks": c.tasks, "rounds_per_task": c.rounds_per_task,
                           "regularizer": c.regularizer, "lam": c.lam, "drift": sim.stream.data.drift,
                           "accuracy_matrix": r}
    out.update(continual_metrics(r) if r else {})
    return {"continual": out}


class Run:
    """A run directory plus its simulation: create fresh or resume, step rounds, write files."""

    def __init__(self, settings: RunSettings, out_dir: Path, resume: bool = False,
                 spec: FederationSpec | None = None, custom: dict[str, Any] | None = None, *,
                 simulation: Callable[[FederationSpec], Simulation] = Simulation, writer: bool = True,
                 checkpoint_source: Path | None = None) -> None:
        """``spec``/``custom`` (Python API): a spec holding your own data, model or strategy, and a description of
        them (written to ``custom.json`` and matched on resume, as the config is).

        Distributed runs (:mod:`spikefed.experiment.distributed`): ``simulation`` builds the simulation from the
        spec; ``writer=False`` (every rank but 0) writes nothing to ``out_dir``; ``checkpoint_source`` is the
        file a resume loads (default ``out_dir/checkpoint.pt``; a rank's private copy of rank 0's)."""
        self.settings = settings
        self.dir = Path(out_dir)
        self.checkpoint = self.dir / "checkpoint.pt"
        self.writer = writer
        source = checkpoint_source or self.checkpoint
        if resume:
            if not source.is_file():
                raise ConfigError(f"--resume {self.dir}: no checkpoint.pt there")
            read_checkpoint(source)  # fail fast: the file verified (hash, schema, finite) before any work
        if spec is None:
            self.spec, report = build_spec_and_report(settings)
        else:
            self.spec, report = spec, {}
        self.sim = simulation(self.spec)
        self.sim.heterogeneity.update(report)  # event data: divergence of the clients' event statistics
        self.started = time.perf_counter()
        self.elapsed_before, self.session = 0.0, 1
        self.fingerprint = fingerprint(settings) if not custom else {**fingerprint(settings), "custom": custom}
        if resume:  # nothing in the directory is written before the checkpoint has loaded and matched
            self.sim.load_checkpoint(source, self.fingerprint)
            if self.sim.state.round > settings.federation.rounds:
                raise ConfigError(f"checkpoint is at round {self.sim.state.round}, beyond federation.rounds="
                                  f"{settings.federation.rounds}")
        elif writer:
            if (self.dir / "checkpoint.pt").exists() or (self.dir / "metrics.jsonl").exists():
                raise ConfigError(f"{self.dir} already holds a run; continue it with --resume {self.dir} "
                                  "or choose another --out")
            self.dir.mkdir(parents=True, exist_ok=True)
        if writer:  # per-client state above the memory limit: files here (other torchrun ranks keep it in memory:
            # two processes must not write one file; see docs/distributed.md)
            self.sim.state.client_state.set_directory(
                self.dir / STATE_DIR, int(settings.federation.client_state_memory_mb * 2**20))
            self._write_start(resume, custom)
        if resume:
            before, sessions = elapsed_before(self.sim.state.metrics)
            self.elapsed_before, self.session = before, sessions + 1
        self._compact_rows()  # the last row is whole in the checkpoint; in metrics.jsonl now

    def _write_start(self, resume: bool, custom: dict[str, Any] | None) -> None:
        """The files a run writes when it starts (or resumes): config, partition, round-0 checkpoint, metrics."""
        write_atomic(self.dir / "config.yaml", dump_yaml(self.settings))
        if custom:
            write_json_atomic(self.dir / "custom.json", custom, indent=2)
        het = self.sim.heterogeneity
        write_json_atomic(self.dir / "partition.json", {
            "sizes": [len(p) for p in self.spec.parts], "heterogeneity": het,
            "label_distribution": label_distribution(self.spec.data.y_train.numpy(), self.spec.parts,
                                                     self.spec.data.num_classes).tolist()})
        if not resume:  # the round-0 checkpoint: a run killed during its first round can be resumed too
            self.sim.save_checkpoint(self.checkpoint, self.fingerprint)
        self._rewrite_metrics()  # on resume: exactly the checkpoint's rows (drops rows of an unfinished round)

    @property
    def elapsed(self) -> float:
        """Wall seconds of the whole run: earlier sessions (up to their last checkpoint) plus this one."""
        return self.elapsed_before + time.perf_counter() - self.started

    @property
    def done(self) -> bool:
        return self.sim.state.round >= self.settings.federation.rounds

    def _rewrite_metrics(self) -> None:
        """``metrics.jsonl`` = the checkpoint's rows, the earlier rounds' per-client lists taken from the file
        (:func:`~spikefed.experiment.metrics_rows.restore_rows`)."""
        path = self.dir / "metrics.jsonl"
        text, missing = restore_rows(path, self.sim.state.metrics)
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            warnings.warn(f"{path}: rows of round(s) {shown} were not in the file; they are rewritten from the "
                          "checkpoint without their per-client lists (participation, client_accuracy)",
                          stacklevel=2)
        write_atomic(path, text)

    def _compact_rows(self) -> None:
        """Drop the per-client lists of every row but the ones ``metrics.jsonl`` does not hold yet: memory and
        checkpoint size stay flat over the rounds."""
        rows = self.sim.state.metrics
        for i, row in enumerate(rows):
            rows[i] = compact_row(row)

    def step(self, remote: RemoteTrainer | None = None) -> dict[str, Any]:
        """One round (``remote``: the clients train elsewhere, as in a Flower deployment); writes the checkpoint
        (atomically), then appends the round's metrics row.

        Checkpoint first: every row in ``metrics.jsonl`` is also in ``checkpoint.pt``. A process killed between
        the two leaves the row missing (never a row the checkpoint lacks); ``--resume`` rewrites the file from
        the checkpoint's rows, so no row is missing or duplicated after a resume.
        """
        row = self.sim.run_round(remote)
        row["elapsed_seconds"], row["session"] = self.elapsed, self.session  # stored in the checkpoint too
        if self.writer:  # the checkpoint holds this row whole (the file may miss it after a kill) ...
            self.sim.save_checkpoint(self.checkpoint, self.fingerprint)
            with open(self.dir / "metrics.jsonl", "a") as f:
                f.write(row_line(row))
        self.sim.state.metrics[-1] = compact_row(row)  # ... and the next one holds it compact
        return row

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``summary.json`` (with ``extra`` entries on top) and the report; returns the summary."""
        summary = {**summarize(self.sim, self.settings, self.elapsed), "sessions": self.session, **(extra or {})}
        if not self.writer:
            return summary
        write_json_atomic(self.dir / "summary.json", summary, indent=2)
        write_run_report(self)
        return summary


def write_run_report(run: Run) -> Path:
    """``report.html`` of the run, with the activity (raster, firing rates, energy per layer) of its final global
    model measured in place (no reload)."""
    from .report import write_report
    from .report.activity import activity_on_test

    spec = run.sim.spec
    try:
        activity = activity_on_test(spec.model, spec.data.x_test, spec.local, spec.seed, spec.energy,
                                    run.sim.state.global_params)
    except (ValueError, TypeError) as e:  # a model the counters cannot measure: the report says so
        activity = {"error": f"{type(spec.model).__name__}: {e}"}
    return write_report(run.dir, activity=activity)


def default_run_dir(root: str | Path = "runs") -> Path:
    """``runs/<timestamp>``, with a numeric suffix if that directory exists already."""
    base = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def run_experiment(settings: RunSettings, out_dir: Path, resume: bool = False,
                   on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) to ``federation.rounds``; returns the summary."""
    run = Run(settings, out_dir, resume)
    while not run.done:
        row = run.step()
        if on_round is not None:
            on_round(row)
    return run.finish()
