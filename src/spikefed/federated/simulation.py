"""In-process federated simulation: many clients, one process, fast.

One round (:meth:`Simulation.run_round`) is a short loop over stages (:mod:`spikefed.federated.round`,
:mod:`spikefed.federated.stages`): begin -> configure (faults plan, continual task, broadcast) -> local training
(here, or on the clients' machines) -> client side (attacks, uplink compression) -> the trust boundary (every
upload parsed against the schema and validated, :mod:`spikefed.federated.boundary`) -> server side (FedNova,
FLTrust) -> aggregate (privacy, or the strategy) -> evaluation -> metrics row. The Flower deployment runs the same
round with a remote trainer.

Reproducibility: every random choice draws from a generator named by ``(seed, purpose, round, client)``
(:mod:`spikefed.seeding`), so a run resumed from the checkpoint of round r continues exactly as the uninterrupted
run would. Communication cost is the length of the bytes actually serialized.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, MutableMapping, Sequence

import numpy as np
import torch

from ..data.compact import as_float_batch
from ..data.digits import DatasetSplit
from ..data.heterogeneity import REPORT_SETTINGS, client_heterogeneity
from ..data.partition import label_distribution
from ..hardware.energy import EnergyModel
from ..hardware.metrics import measure
from ..io import write_atomic
from ..manifold import manifold_of
from ..seeding import Purpose, numpy_rng, torch_generator
from ..snn.train import TrainConfig, encode_inputs, evaluate, input_dtype
from .aggregation import validate_updates
from .boundary import parse_uploads
from .checkpoint import encode_state, read_checkpoint
from .client_state import TENSOR_KINDS, ClientStateStore
from .lazy_clients import LazyClients
from .cohort import ClientData, train_clients
from .compression import CompressionSpec
from .continual import ContinualSpec
from .fairness import FAIRNESS_KEYS, fairness_metrics
from .fleet_training import train_on_fleet
from .faults import FaultSpec
from .network import NetworkSpec
from .privacy import PrivacySpec
from .robust import RobustnessSpec
from .round import RemoteTrainer, RoundContext, Stage
from .selection import SelectionSpec, select
from .stages import build_stages
from .stages.channel import client_upload, uplink_mode
from .stages.devices import FLEET_EVAL_KEYS
from .stages.fairness import client_losses
from .strategies import Strategy
from .types import ClientUpdate, ParamDict, Upload, load_params_, params_of

__all__ = ["EVAL_KEYS", "FLEET_EVAL_KEYS", "FederationSpec", "RemoteTrainer", "Simulation", "SimulationState",
           "Upload", "build_client", "client_generator", "client_upload", "train_local", "uplink_mode"]

#: version of the state layout inside a checkpoint (2: the verified format of :mod:`.checkpoint`; 1 was a pickle)
CHECKPOINT_VERSION = 2
#: test hook, ``"<round>:<seconds>"``: sleep between writing that round's ``checkpoint.pt.tmp`` and renaming it
CHECKPOINT_PAUSE_ENV = "SPIKEFED_TEST_CHECKPOINT_PAUSE"
#: metrics-row keys of :meth:`Simulation.evaluate` (a device fleet adds FLEET_EVAL_KEYS)
EVAL_KEYS = ("accuracy", "loss", "firing_rate", "spikes", "synops", "acs", "macs", "dense_ops",
             "activation_sparsity", "energy_j", "confusion", "client_accuracy") + FAIRNESS_KEYS
#: default of ``norm_bound``: an update whose norm exceeds this many times the round's median is rejected
DEFAULT_NORM_BOUND = 10.0


@dataclass
class FederationSpec:
    """Everything that defines a federated experiment (built from the config by :mod:`spikefed.experiment`)."""

    data: DatasetSplit
    parts: list[np.ndarray]
    model: torch.nn.Module
    strategy: Strategy
    local: TrainConfig
    rounds: int
    fraction: float = 0.5
    min_clients: int = 1
    seed: int = 0
    engine: str = "cohort"
    engine_note: str | None = None  # why the engine is not the one the config asked for (None: it is)
    eval_every: int = 1
    max_update_norm: float | None = None  # absolute bound on ||w_k - x||_2 (None: none)
    norm_bound: float | None = DEFAULT_NORM_BOUND  # relative bound: times the round's median norm (None: none)
    energy: EnergyModel = field(default_factory=EnergyModel)
    client_transforms: list[Any] | None = None  # feature skew: one transform per client
    fleet: Any | None = None  # hardware.fleet.Fleet: one simulated device per client (None: ideal hardware)
    faults: FaultSpec | None = None  # client dropout / stragglers / deadline (None: every client returns)
    robustness: RobustnessSpec | None = None  # malicious clients and robust aggregation (None: neither)
    compression: CompressionSpec | None = None  # uplink/downlink update compression (None: dense payloads)
    privacy: PrivacySpec | None = None  # DP-FedAvg and/or secure aggregation (None: plain aggregation)
    continual: ContinualSpec | None = None  # task stream + stability regulariser (None: a stationary federation)
    network: NetworkSpec | None = None  # device links: bytes -> seconds, against the deadline (None: no model)
    selection: SelectionSpec | None = None  # client selection (None: uniform)
    device: str = "cpu"  # where local training and evaluation run (runtime.device resolved; federated.placement)

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if len(self.parts) < 1:
            raise ValueError("a federation needs at least one client")
        if self.min_clients > len(self.parts):
            raise ValueError(f"min_clients={self.min_clients} exceeds the {len(self.parts)} clients")
        if self.norm_bound is not None and not (math.isfinite(self.norm_bound) and self.norm_bound >= 1):
            raise ValueError(f"norm_bound must be a finite number >= 1 or None, got {self.norm_bound}")
        if self.local.batch_width == 0:  # the federation's widest batch: cohort-independent client updates
            widest = min(self.local.batch_size, max(len(p) for p in self.parts))
            self.local = dataclasses.replace(self.local, batch_width=widest)


@dataclass
class SimulationState:
    """What a checkpoint holds: enough to continue bit-identically."""

    round: int
    global_params: ParamDict
    strategy_state: dict[str, Any]
    metrics: list[dict[str, Any]]
    bytes_up: int = 0
    bytes_down: int = 0
    seconds: float = 0.0
    #: per-client state that lives on the client across rounds (error-feedback residuals, SCAFFOLD control
    #: variates, the continual task it holds), by client id: a compact :class:`ClientStateStore` in a simulation
    client_state: MutableMapping[int, Any] = field(default_factory=dict)
    #: the stages' server-side state (``{stage key: stage.state_dict()}``)
    server_state: dict[str, Any] = field(default_factory=dict)


class Simulation:
    """Runs a :class:`FederationSpec` round by round; state is explicit in :attr:`state`."""

    def __init__(self, spec: FederationSpec) -> None:
        self.spec = spec
        self.num_clients = len(spec.parts)
        # built on demand (no per-client object): the same values on every access
        self.clients: Sequence[ClientData] = LazyClients(self.num_clients, lambda k: build_client(spec, k))
        untouched = self.clients
        self.manifolds = {n: manifold_of(p) for n, p in spec.model.named_parameters()}
        self.stages: list[Stage] = build_stages(self)  # may rewrite self.clients (label flips, task data)
        self.state = SimulationState(0, params_of(spec.model), spec.strategy.state_dict(), [],
                                     client_state=ClientStateStore(self.num_clients, self.layout))
        features = spec.data.x_train.clone()  # as the clients see them (feature skew applied)
        plain = self.clients is untouched and spec.client_transforms is None  # then features = x_train already
        for c, idx in zip(() if plain else self.clients, spec.parts):
            if c.x.dtype != features.dtype:  # a transform made a compact store's client float
                features = as_float_batch(features, c.x.dtype)
            features[torch.as_tensor(np.asarray(idx), dtype=torch.int64)] = c.x
        self.heterogeneity = client_heterogeneity(
            features.numpy(), spec.data.y_train.numpy(), spec.parts, spec.data.num_classes, **REPORT_SETTINGS)
        self.label_counts = label_distribution(spec.data.y_train.numpy(), spec.parts, spec.data.num_classes)

    def stage(self, key: str) -> Stage | None:
        """The stage named ``key`` (``faults``, ``continual``, ``devices``, ``robustness``, ``channel``,
        ``privacy``, ``strategy``), or ``None`` when the spec does not use it."""
        return next((s for s in self.stages if s.key == key), None)

    @property
    def malicious(self) -> frozenset[int]:
        """The malicious clients (empty without an attack)."""
        return getattr(self.stage("robustness"), "malicious", frozenset())

    @property
    def stream(self) -> Any:
        """The continual task stream (``None`` for a stationary federation)."""
        return getattr(self.stage("continual"), "stream", None)

    def sample_clients(self, rnd: int) -> list[int]:
        """The clients of round ``rnd``: ``max(min_clients, round(fraction * N))`` without replacement
        (uniformly, or by ``spec.selection``: :meth:`select_clients`)."""
        m = max(self.spec.min_clients, int(round(self.spec.fraction * self.num_clients)))
        m = min(m, self.num_clients)
        if self.spec.selection is not None and self.spec.selection.method != "uniform":
            return self.select_clients(rnd, m)
        rng = numpy_rng(self.spec.seed, Purpose.SAMPLE, rnd)
        return sorted(rng.choice(self.num_clients, size=m, replace=False).tolist())

    def select_clients(self, rnd: int, m: int) -> list[int]:
        """Client selection (:mod:`spikefed.federated.selection`): the round's clients; the strategy gets the
        method's aggregation factors for the round (``Strategy.weight_factors``, ``None`` when it needs none).
        Power-of-choice candidates report their loss at the current global model."""
        assert self.spec.selection is not None
        sizes = self.client_sizes(range(self.num_clients))
        sel = select(self.spec.selection, self.spec.seed, rnd, sizes, m,
                     lambda cand: client_losses(self, self.state.global_params, cand, rnd))
        self.spec.strategy.weight_factors = sel.factors
        return sel.clients

    def client_sizes(self, clients: Iterable[int]) -> list[int]:
        """The training-sample counts of ``clients``: read from the partition while the clients' data is the
        partition's (:class:`LazyClients`: nothing is built), else from the clients a stage put in place."""
        if isinstance(self.clients, LazyClients):
            return [len(self.spec.parts[c]) for c in clients]
        return [self.clients[c].num_samples for c in clients]

    # -- one round ---------------------------------------------------------------------------------------------
    def run_round(self, remote: RemoteTrainer | None = None) -> dict[str, Any]:
        """One round through the stages. ``remote`` (deployment) trains the sampled clients on their own
        machines and returns their uploads; without it they train in this process."""
        ctx = self.round_context(self.state.round + 1)
        for s in self.stages:
            s.begin(ctx)
        for s in self.stages:
            s.configure(ctx)
        if remote is None:
            ctx.updates = self.train(ctx)
            for s in self.stages:
                s.client(ctx)  # attacks, then the uplink bytes
        else:
            ctx.uploads = remote(ctx.rnd, ctx.received, ctx.plan.trained, ctx.fit, ctx.plan.budgets)
        self.receive(ctx)  # the trust boundary
        for s in self.stages:
            s.server(ctx)
        ctx.aggregated_by = next((s.key for s in self.stages if s.aggregate(ctx)), None)
        self.round_row(ctx)
        for s in self.stages:
            s.metrics(ctx)
        return self.commit(ctx)

    def round_context(self, rnd: int) -> RoundContext:
        """A fresh context for round ``rnd``: its sampled clients and the strategy's instructions."""
        return RoundContext(self, rnd, self.sample_clients(rnd),
                            self.spec.strategy.configure_fit(rnd, self.state.global_params), time.perf_counter())

    def train(self, ctx: RoundContext) -> list[ClientUpdate]:
        """Local training of the round's clients in this process (:func:`train_local`)."""
        if self.device.type != "cpu":  # data moved once, training on the device, one transfer back per tensor
            return self.train_placed(ctx)
        gens = [client_generator(self.spec.seed, ctx.rnd, c) for c in ctx.plan.trained]
        return train_local(self.spec, ctx.received, [self.clients[c] for c in ctx.plan.trained], gens, ctx.fit,
                           ctx.controls, ctx.plan.budgets, ctx.penalties)

    @property
    def device(self) -> torch.device:
        return torch.device(self.spec.device)

    def train_placed(self, ctx: RoundContext) -> list[ClientUpdate]:
        """:meth:`train` on ``spec.device`` (:mod:`spikefed.federated.placement`): the clients' data and a copy of
        the model live there, the received parameters go there once, the trained ones come back stacked."""
        from dataclasses import replace

        from .placement import DeviceData, model_on, params_to, updates_to_host

        dev = self.device
        if getattr(self, "_placed", None) is None:
            self._placed = (DeviceData(dev), model_on(self.spec.model, dev))
        data, model = self._placed
        clients = [data.get(self.clients[c]) for c in ctx.plan.trained]
        gens = [client_generator(self.spec.seed, ctx.rnd, c, device=dev) for c in ctx.plan.trained]
        fit = ctx.fit
        if fit.server_control is not None:
            fit = replace(fit, server_control=params_to(fit.server_control, dev))
        controls = None if ctx.controls is None else [None if c is None else params_to(c, dev) for c in ctx.controls]
        updates = train_clients(self.spec.engine, model, params_to(ctx.received, dev), clients, gens, self.spec.local,
                                fit, controls, ctx.plan.budgets, ctx.penalties)
        return updates_to_host(updates)

    def receive(self, ctx: RoundContext) -> None:
        """The trust boundary: each upload is parsed against the model's schema (:func:`parse_uploads`: what
        :func:`~spikefed.federated.boundary.parse_upload` does for each in turn, batched), then the
        round's updates are validated together (on the manifold, the absolute and the relative norm bound).
        Every failure is one rejection with its reason; nothing rejected is used."""
        spec, st = self.spec, self.state
        ctx.bytes_up += sum(_length(up.payload) + _length(up.control_payload) for up in ctx.uploads)
        parsed, refused = parse_uploads(ctx.uploads, uplink_mode(spec), st.global_params, ctx.received,
                                        self.manifolds, set(ctx.plan.trained))
        for e in refused:
            ctx.reject(e.client_id, e.reason)
        relative = spec.norm_bound if spec.privacy is None else None  # DP clips; secure sums hide norms
        ctx.accepted, invalid = validate_updates(parsed, st.global_params, spec.max_update_norm, self.manifolds,
                                                 relative)
        for bad in invalid:
            ctx.reject(bad.client_id, bad.reason)

    def round_row(self, ctx: RoundContext) -> None:
        """The round's own entries of the metrics row, and the evaluation of the global model."""
        weights = [u.num_samples for u in ctx.accepted]
        ctx.row.update({"round": ctx.rnd, "clients": len(ctx.sampled), "accepted": len(ctx.accepted),
                        "rejected": len(ctx.rejected),
                        "train_loss": _weighted([u.metrics.get("loss", math.nan) for u in ctx.accepted], weights),
                        "train_accuracy": _weighted([u.metrics.get("accuracy", math.nan) for u in ctx.accepted],
                                                    weights)})
        if ctx.rejected:
            ctx.row["rejections"] = ctx.rejected
        ctx.evaluated = ctx.rnd % self.spec.eval_every == 0 or ctx.rnd == self.spec.rounds
        ctx.row.update(self.evaluate(ctx.rnd) if ctx.evaluated else dict.fromkeys(EVAL_KEYS))

    def commit(self, ctx: RoundContext) -> dict[str, Any]:
        """Close the round: bytes, time, the stages' state; the row is appended to the metrics."""
        st, row = self.state, ctx.row
        row["rejected"] = len(ctx.rejected)  # stages may withdraw clients while aggregating
        row.setdefault("bytes_up", ctx.bytes_up)  # a stage may say it cannot count them (None)
        row.setdefault("bytes_down", ctx.bytes_down)
        row.setdefault("sim_seconds", None)  # simulated round wall-clock time (the network model sets it)
        st.strategy_state = self.spec.strategy.state_dict()
        st.server_state = {s.key: s.state_dict() for s in self.stages if s.state_dict()}
        st.bytes_up += ctx.bytes_up
        st.bytes_down += ctx.bytes_down
        row["participation"] = participation(ctx, self.malicious)
        row["seconds"] = time.perf_counter() - ctx.start
        st.seconds += row["seconds"]
        st.round = ctx.rnd
        st.metrics.append(row)
        return row

    def load_stage_states(self, server_state: dict[str, Any], path: Path | str = "checkpoint") -> None:
        """Hand each stage its part of ``server_state`` (read from a checkpoint): all of them or none (a stage
        that refuses its state leaves every stage as it was, and raises ``ValueError`` naming the file)."""
        unknown = sorted(set(server_state) - {s.key for s in self.stages})
        if unknown:
            raise ValueError(f"checkpoint {path} holds state of stages this run does not have: {unknown}")
        previous = {s.key: s.state_dict() for s in self.stages}
        try:
            for s in self.stages:
                s.load_state_dict(server_state.get(s.key, {}))
        except (ValueError, TypeError, KeyError) as e:
            for s in self.stages:
                s.load_state_dict(previous[s.key])
            raise ValueError(f"checkpoint {path} is corrupt: {e}") from None

    def eval_keys(self) -> tuple[str, ...]:
        """The metrics-row keys of an evaluation (null in rounds without one)."""
        return EVAL_KEYS + (FLEET_EVAL_KEYS if self.spec.fleet is not None else ())

    @torch.no_grad()
    def evaluate(self, rnd: int) -> dict[str, Any]:
        """Global model on the held-out test set (ideal hardware): accuracy, loss, spikes/synops/energy per
        inference. The devices stage adds the deployed accuracy on a fleet."""
        spec = self.spec
        model = spec.model
        load_params_(model, self.state.global_params)
        if self.device.type == "cpu":
            res = evaluate(model, spec.data.x_test, spec.data.y_test, spec.local,
                           torch_generator(spec.seed, Purpose.EVAL, rnd))
        else:
            res = self.evaluate_placed(rnd)
        confusion = padded_confusion(res.confusion, spec.data.num_classes)
        out: dict[str, Any] = {"accuracy": res.accuracy, "loss": res.loss, "firing_rate": res.firing_rate,
                               "confusion": confusion.tolist(),
                               "client_accuracy": client_accuracy(confusion, self.label_counts).tolist()}
        out.update(fairness_metrics(out["client_accuracy"]))  # mean / worst 10 % / Jain index over the clients
        # NeuroBench-style counts of the global model on the test set (any model: see hardware.metrics)
        # the whole test set in one call: a compact store is made float here (4 N_test T F bytes while measuring)
        x = encode_inputs(as_float_batch(spec.data.x_test, input_dtype(model)), spec.local,
                          torch_generator(spec.seed, Purpose.EVAL, rnd))
        m = measure(model, x, spec.energy)
        per = m.per_inference()
        out.update({"spikes": per["spikes"], "synops": per["synops"], "acs": per["effective_acs"],
                    "macs": per["effective_macs"], "dense_ops": per["dense_ops"],
                    "activation_sparsity": m.activation_sparsity, "energy_j": per["energy_j"]})
        return out

    def evaluate_placed(self, rnd: int) -> Any:
        """The test-set evaluation on ``spec.device`` (test set moved once; the NeuroBench-style counts of
        :meth:`evaluate` stay on the CPU model)."""
        from .placement import DeviceData, model_on, params_to

        dev = self.device
        if getattr(self, "_placed", None) is None:
            self._placed = (DeviceData(dev), model_on(self.spec.model, dev))
        if getattr(self, "_test_on_device", None) is None:
            self._test_on_device = (self.spec.data.x_test.to(dev), self.spec.data.y_test.to(dev))
        model = self._placed[1]
        load_params_(model, params_to(self.state.global_params, dev))
        x, y = self._test_on_device
        return evaluate(model, x, y, self.spec.local, torch_generator(self.spec.seed, Purpose.EVAL, rnd, device=dev))

    # -- checkpoints -------------------------------------------------------------------------------------------
    @property
    def layout(self) -> dict[str, tuple[int, ...]]:
        """The model's parameter names and shapes (the rows of the per-client state)."""
        return {n: tuple(p.shape) for n, p in self.spec.model.named_parameters()}

    def checkpoint_bytes(self, fingerprint: dict[str, Any] | None = None, folder: Path | None = None) -> bytes:
        """The checkpoint of the current state in the verified format of :mod:`spikefed.federated.checkpoint`
        (a JSON tree plus the wire-format tensor section under a SHA-256; no pickle). ``folder``: where the
        checkpoint goes (per-client state kept in files there is referenced, not copied)."""
        st = self.state
        held = st.client_state
        client_state = held.checkpoint_tree(folder) if isinstance(held, ClientStateStore) else held
        return encode_state({"version": CHECKPOINT_VERSION, "round": st.round, "global_params": st.global_params,
                             "strategy_state": st.strategy_state, "metrics": st.metrics,
                             "bytes_up": st.bytes_up, "bytes_down": st.bytes_down, "seconds": st.seconds,
                             "client_state": client_state, "server_state": st.server_state,
                             "fingerprint": fingerprint or {}})

    def save_checkpoint(self, path: Path, fingerprint: dict[str, Any] | None = None) -> None:
        """Write the checkpoint atomically (:func:`spikefed.io.write_atomic`: ``<name>.tmp``, ``fsync``, rename):
        a reader (or a resumed run after a crash) sees either the previous checkpoint or the new one, never a
        partial file; a stale ``.tmp`` left by a crash is simply overwritten. Test hook: with
        ``SPIKEFED_TEST_CHECKPOINT_PAUSE=<round>:<seconds>`` in the environment, writing the checkpoint of that
        round creates ``<name>.paused`` and sleeps between writing the temp file and the rename, so a test can
        kill the process inside that window deterministically."""
        path = Path(path)
        pause = os.environ.get(CHECKPOINT_PAUSE_ENV)
        hold = None
        if pause:
            rnd, _, seconds = pause.partition(":")
            if int(rnd) == self.state.round:
                def hold(_tmp: Path) -> None:  # tell the test the temp file is complete, then hold
                    path.with_name(path.name + ".paused").touch()
                    time.sleep(float(seconds))
        write_atomic(path, self.checkpoint_bytes(fingerprint, path.parent), before_replace=hold)
        if isinstance(self.state.client_state, ClientStateStore):
            self.state.client_state.committed()  # rows superseded before this checkpoint are free now

    def load_checkpoint(self, path: Path, fingerprint: dict[str, Any] | None = None) -> None:
        """Restore the state of a checkpoint; a corrupt or mismatched one raises ``ValueError``
        (:class:`~spikefed.federated.checkpoint.CheckpointError` when the file itself is malformed, damaged or
        holds a non-finite tensor). Nothing is changed unless every check passes."""
        data = read_checkpoint(path)
        if data.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint {path} has an unknown format (expected version {CHECKPOINT_VERSION})")
        if fingerprint is not None and data.get("fingerprint") != fingerprint:
            raise ValueError(f"checkpoint {path} was written by a different experiment configuration")
        _check_checkpoint_structure(path, data)
        reference = params_of(self.spec.model)
        gp = data["global_params"]
        if list(gp) != list(reference) or any(gp[n].shape != reference[n].shape or gp[n].dtype != reference[n].dtype
                                              for n in reference):
            raise ValueError(f"checkpoint {path} holds parameters of a different model")
        previous = self.state.client_state
        limit = previous.memory_limit if isinstance(previous, ClientStateStore) else None
        try:
            store = ClientStateStore.from_tree(data["client_state"], self.num_clients, self.layout, Path(path).parent,
                                               **({"memory_limit": limit} if limit is not None else {}))
        except ValueError as e:
            raise ValueError(f"checkpoint {path} is corrupt: {e}") from None
        try:
            self.load_stage_states(data["server_state"], path)
        except ValueError:
            store.close()
            raise
        if isinstance(previous, ClientStateStore):
            previous.close()
        self.spec.strategy.load_state_dict(data["strategy_state"])
        self.state = SimulationState(data["round"], gp, data["strategy_state"], data["metrics"],
                                     data["bytes_up"], data["bytes_down"], data["seconds"],
                                     store, data["server_state"])



def participation(ctx: RoundContext, malicious: frozenset[int]) -> dict[str, list[int]]:
    """Who took part in the round, by client id: sampled, accepted into the aggregate, dropped, late, malicious
    (among the sampled); rejected clients are in the row's ``rejections``."""
    return {"sampled": list(ctx.sampled), "accepted": sorted(int(u.client_id) for u in ctx.accepted),
            "dropped": sorted(ctx.plan.dropped), "late": sorted(ctx.plan.late),
            "malicious": sorted(c for c in ctx.sampled if c in malicious)}


def padded_confusion(confusion: list[list[int]], num_classes: int) -> np.ndarray:
    """The test confusion matrix as ``[C, C]`` counts (``C = max(num_classes, its own size)``)."""
    m = np.asarray(confusion, dtype=np.int64).reshape(len(confusion), -1) if confusion else np.zeros((0, 0), int)
    c = max(num_classes, m.shape[0])
    out = np.zeros((c, c), dtype=np.int64)
    out[:m.shape[0], :m.shape[1]] = m
    return out


def client_accuracy(confusion: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Accuracy of the global model on each client's label mix: ``sum_c p_k(c) acc(c)``.

    ``acc(c)`` is the test recall of class ``c`` (from ``confusion``), ``p_k`` client ``k``'s training label
    distribution (``label_counts[k] / sum``) renormalised over the classes the test set holds. This is the expected
    accuracy on a held-out set drawn like client ``k``'s data (label skew); it costs no extra forward pass. A client
    whose classes are all absent from the test set gets NaN (null in the metrics row).
    """
    support = confusion.sum(axis=1).astype(np.float64)
    recall = np.divide(np.diag(confusion), support, out=np.zeros_like(support), where=support > 0)
    counts = np.asarray(label_counts, dtype=np.float64)[:, :len(support)] * (support > 0)
    total = counts.sum(axis=1)
    return np.divide(counts @ recall, total, out=np.full(len(total), np.nan), where=total > 0)


# -- the client's half of a round, shared by the simulation and the Flower deployment ------------------------------
def client_generator(seed: int, rnd: int, client: int, device: torch.device | str | None = None) -> torch.Generator:
    """Client ``client``'s generator of round ``rnd`` (batch order, input encoding): ``(seed, CLIENT, rnd, k)``,
    on ``device`` (default CPU; a CUDA generator draws another stream from the same seed)."""
    return torch_generator(seed, Purpose.CLIENT, rnd, client, device=device)


def build_client(spec: FederationSpec, cid: int) -> ClientData:
    """Client ``cid``'s local data: its partition of the training set, with its feature transform (feature skew)
    drawn from ``(seed, FEATURE, cid)``."""
    d = spec.data
    index = torch.as_tensor(np.asarray(spec.parts[cid]), dtype=torch.int64)
    x = d.x_train[index]
    if spec.client_transforms is not None:
        # purpose-tagged with an out-of-range "round" so it never equals a per-round stream
        gen = torch_generator(spec.seed, Purpose.FEATURE, client=cid)
        x = spec.client_transforms[cid].apply(as_float_batch(x, input_dtype(spec.model)), gen)
        if spec.local.encoder in ("rate", "latency"):
            x = x.clamp(0.0, 1.0)  # these encoders take intensities in [0, 1]
    return ClientData(cid, x, d.y_train[index])


def train_local(spec: FederationSpec, received: ParamDict, clients: list[ClientData], gens: list[torch.Generator],
                fit: Any, controls: list[ParamDict | None] | None, budgets: Any,
                penalties: Any = None) -> list[ClientUpdate]:
    """Local training of ``clients`` from the received parameters; on a device fleet each client trains its own
    program through its device and uploads latent values (:mod:`spikefed.federated.fleet_training`).
    ``penalties`` (optional, one per client): continual stability terms."""
    if spec.fleet is None:
        return train_clients(spec.engine, spec.model, received, clients, gens, spec.local, fit, controls, budgets,
                             penalties)
    return train_on_fleet(spec.engine, spec.fleet, spec.model, received, clients, gens, spec.local, fit, controls,
                          budgets, penalties)



_CHECKPOINT_KEYS = ("round", "global_params", "strategy_state", "metrics", "bytes_up", "bytes_down", "seconds",
                    "client_state", "server_state")
#: per-client state entries that hold one tensor per model parameter
CLIENT_TENSOR_STATE = TENSOR_KINDS


def _check_checkpoint_structure(path: Path, data: dict[str, Any]) -> None:
    """``ValueError`` unless the checkpoint has every key with the right kind of value (tensors for parameters,
    client ids as integer keys, counters as non-negative integers), and exactly one metrics row per completed
    round (rows ``1..round`` in order), so metrics and state cannot disagree after a resume."""
    missing = [k for k in _CHECKPOINT_KEYS if k not in data]
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete: missing {missing}")
    rnd, rows, gp = data["round"], data["metrics"], data["global_params"]
    if not isinstance(gp, dict) or not all(isinstance(t, torch.Tensor) for t in gp.values()):
        raise ValueError(f"checkpoint {path} is corrupt: global_params is not a dict of tensors")
    if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0 or not isinstance(rows, list) or len(rows) != rnd \
            or [r.get("round") if isinstance(r, dict) else None for r in rows] != list(range(1, rnd + 1)):
        raise ValueError(f"checkpoint {path} is inconsistent: round {rnd!r} does not match its metrics rows")
    for key in ("bytes_up", "bytes_down"):
        v = data[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"checkpoint {path} is corrupt: {key} must be an integer >= 0, got {v!r}")
    seconds = data["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise ValueError(f"checkpoint {path} is corrupt: seconds must be a finite number, got {seconds!r}")
    for key in ("strategy_state", "server_state"):
        if not isinstance(data[key], dict):
            raise ValueError(f"checkpoint {path} is corrupt: {key} is not a dict")
    if not isinstance(data["client_state"], dict):  # its contents: ClientStateStore.from_tree
        raise ValueError(f"checkpoint {path} is corrupt: client_state is not a dict")


def _weighted(values: list[float], weights: list[int]) -> float | None:
    if not values:
        return None
    w = np.asarray(weights, dtype=np.float64)
    return float(np.dot(np.asarray(values, dtype=np.float64), w) / w.sum())


def _length(payload: Any) -> int:
    """Bytes of a payload as it arrived (0 for something that is not bytes: it is rejected by the boundary)."""
    return len(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else 0
