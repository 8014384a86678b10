"""In-process federated simulation: many clients, one process, fast.

One round (see DESIGN.md "One round, as data flows")::

    sample clients (seeded)  ->  broadcast global params (serialized: bytes_down)
    -> local training of the cohort (one batched computation)  ->  client deltas serialized (bytes_up)
    -> server decodes, validates (names, shapes, finite, norm bound), rejects bad updates (logged)
    -> strategy aggregates (manifold-aware mean + server optimizer)  ->  evaluate the global model
    -> metrics row  ->  checkpoint

Reproducibility: every random choice draws from a generator derived from ``(seed, round, purpose, client)``
with ``numpy.random.SeedSequence``, so a run resumed from the checkpoint of round r continues exactly as the
uninterrupted run would. Communication cost is the length of the bytes actually serialized.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data.digits import DatasetSplit
from ..data.heterogeneity import REPORT_SETTINGS, client_heterogeneity
from ..hardware.energy import EnergyModel
from ..hardware.metrics import measure
from ..io import write_atomic
from ..manifold import manifold_of
from ..snn.train import TrainConfig, encode_inputs, evaluate
from .aggregation import validate_updates
from .checkpoint import encode_state, read_checkpoint
from .cohort import ClientData, ClientDevice, planned_steps, supports_cohort, train_clients, train_cohort
from .faults import FaultPlan, FaultSpec, client_speed, fednova_rescale, plan_round
from .faults import logger as fault_log
from .attacks import attack_update, choose_malicious, flip_labels
from .robust import RobustAggregator, RobustnessSpec
from .compression import CompressionSpec, client_uplink, decode_update, downlink_broadcast
from .continual import ContinualSpec, ContinualStream, build_tasks
from .privacy import PrivacyEngine, PrivacySpec
from .serialization import decode_params, encode_params
from .strategies import Strategy
from .types import ClientUpdate, ParamDict, load_params_, params_of

#: version of the state layout inside a checkpoint (2: the verified format of :mod:`.checkpoint`; 1 was a pickle)
CHECKPOINT_VERSION = 2
#: test hook, ``"<round>:<seconds>"``: sleep between writing that round's ``checkpoint.pt.tmp`` and renaming it
CHECKPOINT_PAUSE_ENV = "SPIKEFED_TEST_CHECKPOINT_PAUSE"


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (run seed, round, purpose, client id)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


(PURPOSE_SAMPLE, PURPOSE_CLIENT, PURPOSE_EVAL, PURPOSE_PARTITION, PURPOSE_INIT, PURPOSE_FEATURE, PURPOSE_FAULT,
 PURPOSE_ATTACK, PURPOSE_COMPRESS) = range(9)
SERVER_STREAM = 0xFFFFFFFF  # the "client" field of server-side streams (downlink compression)
PURPOSE_DEVICE, PURPOSE_CALIBRATION = 1001, 1002  # device mismatch draws, calibration probe noise
PURPOSE_PRIVACY, PURPOSE_SECAGG = 9, 10  # DP noise of the round (server); secure-aggregation secrets per client
PURPOSE_ROOT, PURPOSE_ROOT_TRAIN = 6001, 6002  # FLTrust: the server's root set (once), its training per round
NO_ROUND = 0xFFFFFFFF  # the "round" field of streams that do not belong to a round
#: metrics-row keys of :meth:`Simulation.evaluate` (and, with a device fleet, FLEET_EVAL_KEYS too)
EVAL_KEYS = ("accuracy", "loss", "firing_rate", "spikes", "synops", "acs", "macs", "dense_ops",
             "activation_sparsity", "energy_j")
FLEET_EVAL_KEYS = ("accuracy_ideal", "accuracy_by_device")


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
    eval_every: int = 1
    max_update_norm: float | None = None
    energy: EnergyModel = field(default_factory=EnergyModel)
    client_transforms: list[Any] | None = None  # feature skew: one transform per client
    fleet: Any | None = None  # hardware.fleet.Fleet: one simulated device per client (None: ideal hardware)
    faults: FaultSpec | None = None  # client dropout / stragglers / deadline (None: every client returns)
    robustness: RobustnessSpec | None = None  # malicious clients and robust aggregation (None: neither)
    compression: CompressionSpec | None = None  # uplink/downlink update compression (None: dense payloads)
    privacy: PrivacySpec | None = None  # DP-FedAvg and/or secure aggregation (None: plain aggregation)
    continual: ContinualSpec | None = None  # task stream + stability regulariser (None: a stationary federation)

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if len(self.parts) < 1:
            raise ValueError("a federation needs at least one client")
        if self.min_clients > len(self.parts):
            raise ValueError(f"min_clients={self.min_clients} exceeds the {len(self.parts)} clients")


@dataclass
class SimulationState:
    """What a checkpoint holds: enough to continue bit-identically."""

    round: int
    global_params: ParamDict
    strategy_state: dict[str, Any]
    controls: dict[int, ParamDict]
    metrics: list[dict[str, Any]]
    bytes_up: int = 0
    bytes_down: int = 0
    seconds: float = 0.0
    #: per-client state that lives on the client across rounds (e.g. error-feedback residuals), by client id
    client_state: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: server-side state of the round pipeline beyond the strategy (e.g. privacy accountant, adaptive clip)
    server_state: dict[str, Any] = field(default_factory=dict)


class Simulation:
    """Runs a :class:`FederationSpec` round by round; state is explicit in :attr:`state`."""

    def __init__(self, spec: FederationSpec) -> None:
        self.spec = spec
        self.num_clients = len(spec.parts)
        if spec.fleet is not None:
            if len(spec.fleet) != self.num_clients:
                raise ValueError(f"the fleet has {len(spec.fleet)} devices for {self.num_clients} clients")
            reason = supports_cohort(spec.model, spec.local)
            if reason is not None:
                raise ValueError(f"device fleets need the batched engine's model support: {reason}")
            t = spec.local.num_steps
            if spec.local.encoder == "events" and any(d.num_steps(t) != t for d in spec.fleet.devices):
                raise ValueError("event data is binned at the nominal step: every device of the fleet needs "
                                 f"dt = 1 (a device with another dt cannot run the {t} bins)")
        if spec.fleet is not None and spec.continual is not None:
            raise ValueError("continual learning is not supported on device fleets (anchors live in the latent "
                             "space, local training in device coordinates)")
        self.clients = self._build_clients()
        self._root: ClientData | None = None  # FLTrust's server root set (robustness.defense=fltrust)
        self._robust_aggregator: RobustAggregator | None = None
        self.malicious = self._setup_robustness()  # attackers (label flip applied to their data), defence
        self.stream = None if spec.continual is None else ContinualStream(spec.continual, build_tasks(
            spec.continual, self.clients, spec.data.x_test, spec.data.y_test, spec.data.num_classes, spec.seed,
            ClientData))  # continual FL: per-task client data, anchors, Fisher (spikefed.federated.continual)
        self.manifolds = {n: manifold_of(p) for n, p in spec.model.named_parameters()}
        self.state = SimulationState(0, params_of(spec.model), spec.strategy.state_dict(), {}, [])
        features = spec.data.x_train.clone()  # as the clients see them (feature skew applied)
        for c, idx in zip(self.clients, spec.parts):
            features[torch.as_tensor(np.asarray(idx), dtype=torch.int64)] = c.x
        self.heterogeneity = client_heterogeneity(
            features.numpy(), spec.data.y_train.numpy(), spec.parts, spec.data.num_classes, **REPORT_SETTINGS)

    # -- setup ---------------------------------------------------------------------------------------------
    def _build_clients(self) -> list[ClientData]:
        return [build_client(self.spec, cid) for cid in range(len(self.spec.parts))]

    def sample_clients(self, rnd: int) -> list[int]:
        """The clients of round ``rnd``: ``max(min_clients, round(fraction * N))`` without replacement."""
        m = max(self.spec.min_clients, int(round(self.spec.fraction * self.num_clients)))
        m = min(m, self.num_clients)
        rng = np.random.default_rng(derive_seed(self.spec.seed, rnd, PURPOSE_SAMPLE))
        return sorted(rng.choice(self.num_clients, size=m, replace=False).tolist())

    # -- one round ---------------------------------------------------------------------------------------------
    def run_round(self, remote: RemoteTrainer | None = None) -> dict[str, Any]:
        """One round. ``remote`` (deployment) trains the sampled clients elsewhere and returns their uploads;
        without it the clients train in this process (:meth:`_train`, :meth:`_upload`)."""
        spec, st = self.spec, self.state
        rnd = st.round + 1
        start = time.perf_counter()
        if self.stream is not None:  # continual FL: every client holds the data of its current task
            self.clients = self.stream.clients_at(rnd)
        sampled = self.sample_clients(rnd)
        fit = spec.strategy.configure_fit(rnd, st.global_params)
        # downlink: the global parameters (and SCAFFOLD's server control) as serialized bytes
        down, bytes_down = self._downlink(rnd, sampled)  # dense, or compressed (compression.downlink)
        if fit.server_control is not None:
            bytes_down += len(encode_params(fit.server_control)) * len(sampled)
        received = decode_params(down)
        plan = self._fault_plan(rnd, sampled)  # faults: dropped / late clients do not train or upload
        idle, penalties = 0, None
        if self.stream is not None:  # clients without data of their task sit out; stability terms per client
            plan, idle = self.stream.without_idle(plan, self.clients)
            penalties = self.stream.penalties(rnd, plan.trained, st.server_state.get("continual"))
            bytes_down += self.stream.penalty_downlink(rnd, plan.trained, penalties, st.client_state)
        gens = [client_generator(spec.seed, rnd, c) for c in plan.trained]
        controls = [st.controls.get(c) for c in plan.trained] if fit.server_control is not None else None
        if remote is None:
            updates = self._train(received, plan.trained, gens, fit, controls, plan.budgets, penalties)
            updates = self._attack_updates(rnd, updates, received)  # malicious clients poison before uplink
            uploads = [self._upload(rnd, u, received) for u in updates]  # dense, or compressed with EF
        else:  # deployment: the clients train on their own machines (spikefed.federated.flower)
            uploads = remote(rnd, received, plan.trained, fit, plan.budgets)
        # uplink: each client's delta (and control delta) as serialized bytes; the server decodes them
        received_updates: list[ClientUpdate] = []
        bytes_up = 0
        for u in uploads:
            bytes_up += len(u.payload)
            server_view = ClientUpdate(u.client_id, u.num_samples,
                                       decode_uplink(spec, u.payload, st.global_params, self.manifolds), u.metrics,
                                       None, u.steps)
            if u.control_payload is not None:
                bytes_up += len(u.control_payload)
                server_view.control_delta = decode_params(u.control_payload)
            received_updates.append(server_view)
        # validation (names, shapes, dtype, finite, on-manifold, norm bound): bad updates are logged, not used
        accepted, invalid = validate_updates(received_updates, st.global_params, spec.max_update_norm,
                                             self.manifolds)
        rejected = [{"client": e.client_id, "round": rnd, "reason": str(e)} for e in invalid]
        privacy_row: dict[str, Any] = {}
        if spec.privacy is not None:  # DP-FedAvg and/or secure aggregation (spikefed.federated.privacy)
            accepted, privacy_row = self._aggregate_private(rnd, sampled, accepted, rejected)
            bytes_up = privacy_row.pop("bytes_up", bytes_up)  # secure aggregation: masked vectors, keys, shares
            bytes_down += privacy_row.pop("bytes_down_extra", 0)
        elif accepted:
            self._fltrust_reference(rnd, fit)
            st.global_params = spec.strategy.aggregate_fit(rnd, st.global_params, self._normalize_work(accepted),
                                                           self.manifolds, validated=True)
            if fit.server_control is not None:
                for u in accepted:
                    prev = st.controls.get(u.client_id)
                    assert u.control_delta is not None
                    st.controls[u.client_id] = {n: (prev[n] if prev is not None else 0) + u.control_delta[n]
                                                for n in u.control_delta}
        st.strategy_state = spec.strategy.state_dict()
        row: dict[str, Any] = {
            "round": rnd,
            "clients": len(sampled),
            "accepted": len(accepted),
            "rejected": len(rejected),
            "bytes_up": bytes_up,
            "bytes_down": bytes_down,
            "train_loss": _weighted([u.metrics.get("loss", math.nan) for u in accepted],
                                    [u.num_samples for u in accepted]),
            "train_accuracy": _weighted([u.metrics.get("accuracy", math.nan) for u in accepted],
                                        [u.num_samples for u in accepted]),
        }
        if rejected:
            row["rejections"] = rejected
        row.update(privacy_row)  # dp_epsilon, dp_clip, ... / secagg_* (empty without spec.privacy)
        if spec.robustness is not None:
            row["malicious"] = sum(c in self.malicious for c in sampled)  # sampled clients that are attackers
        if plan.active:
            row.update(plan.metrics(accepted))
        evaluated = rnd % spec.eval_every == 0 or rnd == spec.rounds
        if evaluated:
            row.update(self.evaluate(rnd))
        else:  # the same keys as an evaluated round, all null (rows of one run share one schema)
            row.update(dict.fromkeys(self.eval_keys()))
        if self.stream is not None:
            row.update(self._continual_row(rnd, evaluated, accepted, idle))
            bytes_up += row["fisher_bytes"]
            row["bytes_up"] = bytes_up
        st.bytes_up += bytes_up
        st.bytes_down += bytes_down
        row["seconds"] = time.perf_counter() - start
        st.seconds += row["seconds"]
        st.round = rnd
        st.metrics.append(row)
        return row

    # -- communication (spikefed.federated.compression) --------------------------------------------------------
    def _downlink(self, rnd: int, sampled: list[int]) -> tuple[bytes, int]:
        """The broadcast of round ``rnd``: ``(payload the clients start from, downlink bytes of the sampled)``.

        Dense (no downlink compression): the global parameters, ``len(payload)`` per sampled client, as without
        compression. Compressed: the reference model every client holds after applying the compressed changes
        (:func:`~spikefed.federated.compression.downlink_broadcast`, state in ``server_state["downlink"]``); each
        client pays for the messages it missed since it last synchronised, or for the dense model. The payload
        returned is then only the simulation's hand-over of that reference (not counted).
        """
        st, spec = self.state, self.spec
        comp = spec.compression.downlink_compressor() if spec.compression is not None else None
        if comp is None:
            down = encode_params(st.global_params)
            return down, len(down) * len(sampled)
        gen = torch.Generator().manual_seed(derive_seed(spec.seed, rnd, PURPOSE_COMPRESS, SERVER_STREAM))
        reference, costs = downlink_broadcast(st.server_state.setdefault("downlink", {}), st.global_params,
                                              sampled, rnd, comp, gen)
        return encode_params(reference), sum(costs)

    def _upload(self, rnd: int, upd: ClientUpdate, received: ParamDict) -> Upload:
        """The client half of the uplink (:func:`client_upload`): a dense delta against the global model (the
        server adds it back), a lossy one against what the client received."""
        base = self.state.global_params if uplink_mode(self.spec) == "dense" else received
        return client_upload(self.spec, rnd, upd, base, self.state.client_state)

    def _uplink(self, rnd: int, upd: ClientUpdate, received: ParamDict) -> tuple[int, ParamDict]:
        """One client's delta over the wire, both halves: ``(bytes, the client's parameters as the server
        reconstructs them)`` (:meth:`_upload`, :func:`decode_uplink`)."""
        up = self._upload(rnd, upd, received)
        return len(up.payload), decode_uplink(self.spec, up.payload, self.state.global_params, self.manifolds)

    def _train(self, received: ParamDict, trained: list[int], gens: list[torch.Generator], fit: Any,
               controls: list[ParamDict | None] | None, budgets: Any, penalties: Any = None) -> list[ClientUpdate]:
        """Local training of the clients ``trained`` in this process (:func:`train_local`)."""
        return train_local(self.spec, received, [self.clients[c] for c in trained], gens, fit, controls, budgets,
                           penalties)

    def _continual_row(self, rnd: int, evaluated: bool, accepted: list[ClientUpdate], idle: int) -> dict[str, Any]:
        """Continual-FL entries of the round's row: the task, whether it ends one, the accuracy on every task's
        test set (evaluated rounds and task ends: row ``R[i, :]``), idle clients, Fisher upload bytes; at a task
        boundary the anchor (and Fisher) of the next task go into ``server_state["continual"]``."""
        spec, st, stream = self.spec, self.state, self.stream
        assert stream is not None and spec.continual is not None
        state = st.server_state.setdefault("continual", {"anchors": {}, "fisher": {}})
        weights = spec.strategy.client_weights(accepted) if accepted else None
        row: dict[str, Any] = {"task": stream.task(rnd), "task_end": spec.continual.task_end(rnd),
                               "continual_idle": idle, "task_accuracy": None}
        row.update(stream.end_of_round(rnd, state, st.global_params, accepted, self.clients, spec.model,
                                       spec.local, spec.seed, weights))
        if evaluated or row["task_end"] is not None:
            load_params_(spec.model, st.global_params)
            row["task_accuracy"] = stream.task_accuracy(rnd, spec.model, spec.local, spec.seed)
        return row

    def eval_keys(self) -> tuple[str, ...]:
        """The metrics-row keys :meth:`evaluate` fills (null in rounds without evaluation)."""
        return EVAL_KEYS + (FLEET_EVAL_KEYS if self.spec.fleet is not None else ())

    @torch.no_grad()
    def evaluate(self, rnd: int) -> dict[str, Any]:
        """Global model on the held-out test set: accuracy, loss, spikes/synops/energy per inference."""
        spec = self.spec
        model = spec.model
        load_params_(model, self.state.global_params)
        gen = torch.Generator().manual_seed(derive_seed(spec.seed, rnd, PURPOSE_EVAL))
        res = evaluate(model, spec.data.x_test, spec.data.y_test, spec.local, gen)
        out: dict[str, Any] = {"accuracy": res.accuracy, "loss": res.loss, "firing_rate": res.firing_rate}
        if spec.fleet is not None:  # deployed accuracy: the mean over every device of the fleet
            gen = torch.Generator().manual_seed(derive_seed(spec.seed, rnd, PURPOSE_EVAL))
            fe = spec.fleet.evaluate(self.state.global_params, spec.data.x_test, spec.data.y_test, spec.local, gen)
            out.update({"accuracy": fe.accuracy, "accuracy_ideal": res.accuracy, "accuracy_by_device": fe.by_profile})
        # NeuroBench-style counts of the global model on the test set (any model: see hardware.metrics)
        gen = torch.Generator().manual_seed(derive_seed(spec.seed, rnd, PURPOSE_EVAL))
        m = measure(model, encode_inputs(spec.data.x_test, spec.local, gen), spec.energy)
        per = m.per_inference()
        out.update({"spikes": per["spikes"], "synops": per["synops"], "acs": per["effective_acs"],
                    "macs": per["effective_macs"], "dense_ops": per["dense_ops"],
                    "activation_sparsity": m.activation_sparsity, "energy_j": per["energy_j"]})
        return out

    # -- privacy (see spikefed.federated.privacy and spikefed.federated.secagg) ----------------------------------
    def privacy_engine(self) -> PrivacyEngine | None:
        """The DP / secure-aggregation pipeline of ``spec.privacy`` (None without it), built once; its cohort
        size ``m`` is that of :meth:`sample_clients` (the same every round)."""
        if self.spec.privacy is None:
            return None
        engine = getattr(self, "_privacy_engine", None)
        if engine is None:
            engine = PrivacyEngine(self.spec.privacy, self.num_clients, len(self.sample_clients(1)))
            self._privacy_engine = engine
        return engine

    def _aggregate_private(self, rnd: int, sampled: list[int], accepted: list[ClientUpdate],
                           rejected: list[dict[str, Any]]) -> tuple[list[ClientUpdate], dict[str, Any]]:
        """DP-FedAvg and/or secure aggregation of the validated updates, in place of ``aggregate_fit``.

        The DP noise draws from ``(seed, rnd, PURPOSE_PRIVACY)``, client ``k``'s secure-aggregation secrets from
        ``(seed, rnd, PURPOSE_SECAGG, k)``; the clip norm and the accountant's round count live in
        ``server_state["privacy"]`` (so a resumed run continues bit-identically). Clients that withdraw (their
        update does not fit the fixed-point range) are appended to ``rejected``. Returns the updates that
        entered the aggregate and the metrics-row entries of :class:`~spikefed.federated.privacy.PrivateRound`.
        """
        spec, st = self.spec, self.state
        engine = self.privacy_engine()
        assert engine is not None
        gen = torch.Generator().manual_seed(derive_seed(spec.seed, rnd, PURPOSE_PRIVACY))
        seeds = {c: derive_seed(spec.seed, rnd, PURPOSE_SECAGG, c) for c in sampled}
        out = engine.aggregate(rnd, spec.strategy, st.global_params, self._normalize_work(accepted), sampled,
                               self.manifolds, st.server_state.get("privacy"), gen, seeds)
        st.server_state["privacy"] = out.state
        if out.params is not None:
            st.global_params = out.params
        rejected.extend(out.rejected)
        return out.survivors, out.row

    # -- faults (see spikefed.federated.faults) ------------------------------------------------------------
    def _fault_plan(self, rnd: int, sampled: list[int]) -> FaultPlan:
        """Which sampled clients train (and with how many steps) in round ``rnd``; all of them without faults.

        Seeds: a client's speed factor from ``(seed, NO_ROUND, PURPOSE_FAULT, client)`` (once per run), its
        dropout and jitter draws of the round from ``(seed, rnd, PURPOSE_FAULT, client)``.
        """
        faults, seed = self.spec.faults, self.spec.seed
        if faults is None:
            return FaultPlan.nominal(sampled)
        planned = [planned_steps(self.clients[c].num_samples, self.spec.local) for c in sampled]
        speeds = [client_speed(faults.straggler_sigma,
                               np.random.default_rng(derive_seed(seed, NO_ROUND, PURPOSE_FAULT, c))) for c in sampled]
        rngs = [np.random.default_rng(derive_seed(seed, rnd, PURPOSE_FAULT, c)) for c in sampled]
        plan = plan_round(faults, sampled, planned, speeds, rngs)
        if not plan.trained:
            fault_log.warning("round %d: none of the %d sampled clients returned an update (%d dropped, %d late); "
                              "the global model is kept", rnd, len(sampled), len(plan.dropped), len(plan.late))
        return plan

    def _normalize_work(self, updates: list[ClientUpdate]) -> list[ClientUpdate]:
        """FedNova rescaling of the updates (``faults.late_policy == "fednova"``), else the updates as they are:
        ``x'_k = x + (tau_eff / tau_k) (x_k - x)`` with ``tau_eff = sum_k p_k tau_k`` and the strategy's ``p_k``."""
        faults = self.spec.faults
        if faults is None or faults.late_policy != "fednova" or not updates:
            return updates
        return fednova_rescale(updates, self.state.global_params, self.spec.strategy.client_weights(updates),
                               self.manifolds)

    # -- robustness (see spikefed.federated.attacks and spikefed.federated.robust) ----------------------------
    def _setup_robustness(self) -> frozenset[int]:
        """Choose the malicious clients, poison their labels (``label_flip``), install the defence.

        The attackers are ``round(attack_fraction * N)`` clients drawn once per run from
        ``(seed, NO_ROUND, PURPOSE_ATTACK)``; label flipping ``y -> C - 1 - y`` rewrites their local data. The
        defence replaces the strategy's weighted mean (``Strategy.aggregator``). Without ``spec.robustness``
        nothing changes and the set is empty.
        """
        rs, spec = self.spec.robustness, self.spec
        if rs is None:
            return frozenset()
        malicious: frozenset[int] = frozenset()
        if rs.attack != "none":
            rng = np.random.default_rng(derive_seed(spec.seed, NO_ROUND, PURPOSE_ATTACK))
            malicious = frozenset(choose_malicious(self.num_clients, rs.attack_fraction, rng))
        if rs.attack == "label_flip":
            self.clients = [ClientData(c.client_id, c.x, flip_labels(c.y, spec.data.num_classes))
                            if c.client_id in malicious else c for c in self.clients]
        self._check_krum(rs)
        if rs.defense == "fltrust":
            n = int(spec.data.y_train.shape[0])
            if rs.root_size > n:
                raise ValueError(f"robustness.root_size={rs.root_size} exceeds the {n} training samples")
            rng = np.random.default_rng(derive_seed(spec.seed, NO_ROUND, PURPOSE_ROOT))
            index = torch.as_tensor(np.sort(rng.choice(n, size=rs.root_size, replace=False)), dtype=torch.int64)
            self._root = ClientData(-1, spec.data.x_train[index], spec.data.y_train[index])
        self._robust_aggregator = rs.aggregator()
        spec.strategy.aggregator = self._robust_aggregator
        return malicious

    def _check_krum(self, rs: RobustnessSpec) -> None:
        """Refuse a ``krum_f`` / ``multikrum_m`` that does not fit the nominal cohort (never clamped)."""
        if rs.defense not in ("krum", "multikrum") or (rs.krum_f is None and rs.multikrum_m is None):
            return
        k = len(self.sample_clients(1))
        if rs.krum_f is not None and k - rs.krum_f - 2 < 1:
            raise ValueError(f"robustness.krum_f={rs.krum_f} is too large for {k} clients per round: Krum needs "
                             f"K - f - 2 >= 1, so krum_f <= {k - 3}")
        m = rs.multikrum_m
        if rs.defense == "multikrum" and m is not None and m > k:
            raise ValueError(f"robustness.multikrum_m={m} exceeds the {k} clients per round")

    def _fltrust_reference(self, rnd: int, fit: Any) -> None:
        """FLTrust: the server trains the global model on its root set (the clients' local procedure, generator
        ``(seed, rnd, PURPOSE_ROOT_TRAIN, SERVER_STREAM)``) and hands the result to the round's aggregator."""
        if self._root is None or self._robust_aggregator is None:
            return
        spec, st = self.spec, self.state
        gen = torch.Generator().manual_seed(derive_seed(spec.seed, rnd, PURPOSE_ROOT_TRAIN, SERVER_STREAM))
        controls = [None] if fit.server_control is not None else None
        trained = train_clients(spec.engine, spec.model, st.global_params, [self._root], [gen], spec.local, fit,
                                controls)
        spec.strategy.aggregator = self._robust_aggregator.with_reference(trained[0].params)

    def _attack_updates(self, rnd: int, updates: list[ClientUpdate], received: ParamDict) -> list[ClientUpdate]:
        """The updates as uploaded: a malicious client's parameters replaced by the update attack's
        ``phi^-1(phi(x) + a(phi(w) - phi(x)))`` (:func:`~spikefed.federated.attacks.attack_update`), drawing
        from ``(seed, rnd, PURPOSE_ATTACK, client)``; honest clients' updates unchanged. ``x`` is the model the
        client received (the global one, or the downlink's reference under lossy downlink compression): the
        client attacks the delta it will upload, not one against a global model it never saw."""
        rs = self.spec.robustness
        if rs is None or not self.malicious:
            return updates
        out = []
        for u in updates:
            if u.client_id in self.malicious:
                gen = torch.Generator().manual_seed(derive_seed(self.spec.seed, rnd, PURPOSE_ATTACK, u.client_id))
                params = attack_update(rs.attack, received, u.params, self.manifolds, gen,
                                       boost=rs.boost, sign_scale=rs.sign_scale, noise_std=rs.noise_std)
                u = dataclasses.replace(u, params=params)
            out.append(u)
        return out

    # -- checkpoints -------------------------------------------------------------------------------------------
    def checkpoint_bytes(self, fingerprint: dict[str, Any] | None = None) -> bytes:
        """The checkpoint of the current state in the verified format of :mod:`spikefed.federated.checkpoint`
        (a JSON tree plus the wire-format tensor section under a SHA-256; no pickle)."""
        st = self.state
        return encode_state({"version": CHECKPOINT_VERSION, "round": st.round, "global_params": st.global_params,
                             "strategy_state": st.strategy_state, "controls": st.controls, "metrics": st.metrics,
                             "bytes_up": st.bytes_up, "bytes_down": st.bytes_down, "seconds": st.seconds,
                             "client_state": st.client_state, "server_state": st.server_state,
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
        write_atomic(path, self.checkpoint_bytes(fingerprint), before_replace=hold)

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
        for cid, control in data["controls"].items():
            if not 0 <= cid < self.num_clients or any(
                    n not in reference or t.shape != reference[n].shape for n, t in control.items()):
                raise ValueError(f"checkpoint {path} is corrupt: controls of client {cid} do not fit the model "
                                 f"and the {self.num_clients} clients")
        if any(not 0 <= cid < self.num_clients for cid in data["client_state"]):
            raise ValueError(f"checkpoint {path} is corrupt: client_state names a client outside "
                             f"0..{self.num_clients - 1}")
        self.spec.strategy.load_state_dict(data["strategy_state"])
        self.state = SimulationState(data["round"], gp, data["strategy_state"], data["controls"], data["metrics"],
                                     data["bytes_up"], data["bytes_down"], data["seconds"],
                                     data["client_state"], data["server_state"])


# -- the client's and the server's halves of a round, shared by the simulation and the Flower deployment ----------
@dataclass
class Upload:
    """What one client sends back after local training: its update as uplink bytes plus plain metadata."""

    client_id: int
    num_samples: int
    payload: bytes  # the serialized (possibly compressed) delta; its length is the uplink cost
    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    control_payload: bytes | None = None  # SCAFFOLD: the serialized control-variate delta


#: ``(round, received params, clients to train, fit instructions, step budgets | None) -> uploads``
RemoteTrainer = Callable[[int, ParamDict, list[int], Any, Any], list[Upload]]


def client_generator(seed: int, rnd: int, client: int) -> torch.Generator:
    """Client ``client``'s generator of round ``rnd`` (batch order, input encoding): ``(seed, rnd, PURPOSE_CLIENT, k)``."""
    return torch.Generator().manual_seed(derive_seed(seed, rnd, PURPOSE_CLIENT, client))


def build_client(spec: FederationSpec, cid: int) -> ClientData:
    """Client ``cid``'s local data: its partition of the training set, with its feature transform (feature skew)
    drawn from ``(seed, NO_ROUND, PURPOSE_FEATURE, cid)``."""
    d = spec.data
    index = torch.as_tensor(np.asarray(spec.parts[cid]), dtype=torch.int64)
    x = d.x_train[index]
    if spec.client_transforms is not None:
        # purpose-tagged with an out-of-range "round" so it never equals a per-round stream
        gen = torch.Generator().manual_seed(derive_seed(spec.seed, NO_ROUND, PURPOSE_FEATURE, cid))
        x = spec.client_transforms[cid].apply(x, gen)
        if spec.local.encoder in ("rate", "latency"):
            x = x.clamp(0.0, 1.0)  # these encoders take intensities in [0, 1]
    return ClientData(cid, x, d.y_train[index])


def train_local(spec: FederationSpec, received: ParamDict, clients: list[ClientData], gens: list[torch.Generator],
                fit: Any, controls: list[ParamDict | None] | None, budgets: Any,
                penalties: Any = None) -> list[ClientUpdate]:
    """Local training of ``clients`` from the received parameters; on a device fleet each client trains its own
    program through its device (grouped by the device's number of steps) and uploads latent values.
    ``penalties`` (optional, one per client): continual stability terms (not with a fleet)."""
    fleet = spec.fleet
    if fleet is None:
        return train_clients(spec.engine, spec.model, received, clients, gens, spec.local, fit, controls, budgets,
                             penalties)
    trained = [c.client_id for c in clients]
    groups: dict[int, list[int]] = {}
    for row, c in enumerate(trained):
        groups.setdefault(fleet.num_steps(c, spec.local.num_steps), []).append(row)
    updates: list[ClientUpdate | None] = [None] * len(trained)
    for steps, rows in groups.items():
        cfg = dataclasses.replace(spec.local, num_steps=steps)
        starts = [fleet.program(trained[r], received) for r in rows]
        devices = [ClientDevice(p, fleet.devices[trained[r]]) for r, p in zip(rows, starts)]
        group_budgets = [budgets[r] for r in rows] if budgets is not None else None
        trained_group = train_cohort(spec.model, received, [clients[r] for r in rows], [gens[r] for r in rows],
                                     cfg, fit, None, group_budgets, devices)
        for r, upd, start in zip(rows, trained_group, starts):
            upd.params = fleet.upload(trained[r], start, upd.params)
            updates[r] = upd
    return [u for u in updates if u is not None]


def uplink_mode(spec: FederationSpec) -> str:
    """How deltas travel: ``dense`` (no uplink compression, or identity with a dense downlink), ``dense-received``
    (identity uplink under lossy downlink compression) or ``compressed``."""
    comp = spec.compression
    up = comp.uplink_compressor() if comp is not None else None
    lossy_down = comp is not None and comp.downlink_compressor() is not None
    if up is None or (up.is_identity and not lossy_down):
        return "dense"
    return "dense-received" if up.is_identity else "compressed"


def client_upload(spec: FederationSpec, rnd: int, upd: ClientUpdate, base: ParamDict,
                  client_state: dict[int, dict[str, Any]]) -> Upload:
    """The client half of the uplink: ``delta = w_k - base`` serialized densely, or compressed with error
    feedback (residual in ``client_state[k]["ef_residual"]``, generator from ``(seed, rnd, PURPOSE_COMPRESS, k)``).
    ``base`` is the global model for a dense uplink (under a dense downlink the received model equals it
    exactly) and the received reference otherwise (what the client started from)."""
    delta = {n: upd.params[n] - base[n] for n in upd.params}
    if uplink_mode(spec) == "compressed":
        comp = spec.compression
        assert comp is not None
        gen = torch.Generator().manual_seed(derive_seed(spec.seed, rnd, PURPOSE_COMPRESS, upd.client_id))
        payload = client_uplink(delta, comp.uplink_compressor(), gen, client_state.setdefault(upd.client_id, {}),
                                comp.error_feedback)
    else:
        payload = encode_params(delta)
    control = encode_params(upd.control_delta) if upd.control_delta is not None else None
    return Upload(upd.client_id, upd.num_samples, payload, upd.metrics, upd.steps, control)


def decode_uplink(spec: FederationSpec, payload: bytes, global_params: ParamDict,
                  manifolds: dict[str, Any]) -> ParamDict:
    """The server half of the uplink: the client's parameters as the server reconstructs them, ``x_t + delta``;
    a decoded lossy delta (compression) is applied in the global dtype and projected back onto the manifold of
    non-euclidean parameters (it may step off it)."""
    mode = uplink_mode(spec)
    decoded = decode_update(payload) if mode == "compressed" else decode_params(payload)
    if mode == "dense":
        return {n: global_params[n] + decoded[n] for n in decoded}
    params = {n: global_params[n] + decoded[n].to(global_params[n].dtype) for n in decoded}
    for n, p in params.items():
        m = manifolds.get(n)
        if m is not None and m.kind != "euclidean":
            m.project_(p)
    return params


_CHECKPOINT_KEYS = ("round", "global_params", "strategy_state", "controls", "metrics", "bytes_up", "bytes_down",
                    "seconds", "client_state", "server_state")


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
    for key in ("controls", "client_state"):
        per_client = data[key]
        if not isinstance(per_client, dict) or not all(
                isinstance(c, int) and not isinstance(c, bool) and isinstance(v, dict) for c, v in per_client.items()):
            raise ValueError(f"checkpoint {path} is corrupt: {key} is not a dict from client ids to dicts")
    if not all(isinstance(t, torch.Tensor) for control in data["controls"].values() for t in control.values()):
        raise ValueError(f"checkpoint {path} is corrupt: controls hold something other than tensors")


def _weighted(values: list[float], weights: list[int]) -> float | None:
    if not values:
        return None
    w = np.asarray(weights, dtype=np.float64)
    return float(np.dot(np.asarray(values, dtype=np.float64), w) / w.sum())
