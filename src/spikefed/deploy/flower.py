"""spikefed on Flower: the deployment path for real devices and machines (Message API of flwr 1.4x).

The ServerApp and the ClientApp run exactly the simulator's round: the server side is
:meth:`spikefed.federated.simulation.Simulation.run_round` with a ``remote`` trainer that sends the round's work
to the SuperNodes; each SuperNode runs the simulator's client half (:func:`build_client`, :func:`train_local`,
:func:`client_upload`) on its own partition. Nothing is implemented twice: strategy, validation, compression,
privacy (DP), device calibration, evaluation and metrics are the simulator's.

What travels (and nothing else; see :func:`train_content` and :func:`client_train`):

- server -> node: the global parameters (one :class:`~flwr.app.ArrayRecord` array per model parameter) and a
  :class:`~flwr.app.ConfigRecord` with the round, the client id and the FedProx ``mu``;
- node -> server: the uplink payload (one ``uint8`` array: the serialized, possibly compressed, delta; its
  length is the simulator's ``bytes_up``) and a :class:`~flwr.app.MetricRecord` (samples, steps, loss, accuracy).

Each SuperNode reads ``partition-id``, ``num-partitions`` and optionally ``virtual-clients`` (it then hosts a
batched cohort of virtual clients: :mod:`spikefed.deploy.flower_cohort`), ``device-profile``, ``data-root`` (its own
copy of a recorded data set, read with the same loaders) and ``data-partition`` from its node config and builds
its partition locally from ``(seed, partition id, number of partitions)`` with the simulator's
partitioner; its training data never leaves it. Per-client generators are the simulator's
(``(seed, CLIENT, round, client)``), so a deployment with the same config and seed produces the same
global model as ``spikefed run`` (exactly with ``federation.engine=sequential``; see docs/deployment.md).

Secure aggregation: ``secure = "secaggplus"`` in the run config runs Flower's SecAgg+ protocol
(``SecAggPlusWorkflow`` + ``secaggplus_mod``): the server only learns the weighted mean of the clients'
chart-space deltas and steps the strategy towards it (``Strategy.step_to_target``, as the simulator's private path).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from pydantic import ValidationError

from ..experiment.config import ConfigError, RunSettings, apply_overrides, format_validation_error
from ..io import write_atomic
from ..federated.simulation import (FederationSpec, Simulation, Upload, build_client, client_generator, client_upload,
                         train_local)
from ..federated.types import FitInstructions, ParamDict, params_of

log = logging.getLogger("spikefed.flower")

#: the app's run config (``[tool.flwr.app.config]``) and its defaults; every key is documented in docs/deployment.md
RUN_CONFIG_DEFAULTS: dict[str, Any] = {
    "settings": "",  # the spikefed experiment config as JSON (empty: the defaults of ``spikefed run``)
    "set": "",  # space-separated ``section.key=value`` overrides applied after ``settings``
    "out-dir": "",  # where the ServerApp writes metrics.jsonl, summary.json and global.pt (empty: nowhere)
    "secure": "none",  # none | secaggplus
    "node-timeout": 120.0,  # seconds the ServerApp waits for the SuperNodes to connect
    "round-timeout": 600.0,  # the round's deadline: seconds the ServerApp waits for the replies of one round
    "resume": False,  # continue the run in out-dir from its checkpoint.pt (after the ServerApp or SuperLink died)
    "secagg-clipping-range": 8.0,  # SecAgg+: deltas are clipped to [-r, r] before quantization
    "secagg-quantization-range": 4194304,  # SecAgg+: quantization levels (2**22)
}
SECURE_MODES = ("none", "secaggplus")
MSG_QUERY, MSG_TRAIN = "query", "train"
GLOBAL_KEY, FIT_KEY, UPDATE_KEY, METRICS_KEY, NODE_KEY = "global", "fit", "update", "metrics", "node"
STATE_KEY = "spikefed.client-state"  # the node's error-feedback residual between rounds (context.state)
#: test hook: a node whose environment has ``SPIKEFED_TEST_GARBAGE_UPLOAD=1`` replies with garbage payload bytes
GARBAGE_UPLOAD_ENV = "SPIKEFED_TEST_GARBAGE_UPLOAD"


class DeploymentError(ValueError):
    """A deployment that cannot proceed: bad node config, missing or failing SuperNodes, a mismatched config."""


# -- configuration ---------------------------------------------------------------------------------------------
def settings_from_run_config(run_config: Mapping[str, Any]) -> RunSettings:
    """The spikefed experiment of a Flower run: ``settings`` (JSON) plus the ``set`` overrides, validated."""
    unknown = sorted(set(run_config) - set(RUN_CONFIG_DEFAULTS))
    if unknown:
        raise ConfigError(f"run config: unknown key(s) {unknown}; valid keys: {', '.join(RUN_CONFIG_DEFAULTS)}")
    raw = str(run_config.get("settings", "") or "")
    try:
        data = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"run config 'settings' is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError("run config 'settings' must be a JSON object of config sections")
    data = apply_overrides(data, str(run_config.get("set", "") or "").split())
    try:
        settings = RunSettings.model_validate(data)
    except ValidationError as e:  # one line naming the keys, as for `spikefed run`
        raise ConfigError(format_validation_error(e, RunSettings)) from None
    check_deployable(settings)
    return settings


def run_option(run_config: Mapping[str, Any], key: str) -> Any:
    """A run-config value or its default (:data:`RUN_CONFIG_DEFAULTS`); ``ConfigError`` for a number that is
    not positive or an unknown ``secure`` mode."""
    value = run_config.get(key, RUN_CONFIG_DEFAULTS[key])
    default = RUN_CONFIG_DEFAULTS[key]
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"run config {key!r} must be a positive number, got {value!r}")
    if isinstance(default, bool) and not isinstance(value, bool):
        raise ConfigError(f"run config {key!r} must be true or false, got {value!r}")
    if key == "secure" and value not in SECURE_MODES:
        raise ConfigError(f"run config 'secure' must be one of {', '.join(SECURE_MODES)}, got {value!r}")
    return value


def check_deployable(settings: RunSettings) -> None:
    """Refuse what only exists in simulation (``ConfigError`` naming the key): the ``flower`` rows of the
    compatibility table (:mod:`spikefed.experiment.compat`)."""
    from ..experiment.compat import refusals

    found = refusals(settings, "flower")
    if found:
        raise ConfigError(found[0])


@dataclass(frozen=True)
class NodeSettings:
    """What a SuperNode declares in its node config (``--node-config 'partition-id=0 num-partitions=3'``)."""

    partition_id: int
    num_partitions: int
    device_profile: str | None = None
    data_root: str | None = None  # this node's own copy of the recorded data set (overrides data.root)
    data_partition: str = "assigned"  # assigned: its part of the run's partition; all: every training sample
    virtual_clients: int | None = None  # hierarchical: this node hosts clients i*V..(i+1)*V-1 (flower_cohort)
    first_client: int | None = None  # a stated block instead: clients first..first+V-1 (nodes of unequal size)

    def hosted_clients(self) -> list[int]:
        """The client ids this node serves: its partition, or its block of ``virtual-clients``."""
        if self.virtual_clients is None:
            return [self.partition_id]
        v = self.virtual_clients
        first = self.partition_id * v if self.first_client is None else self.first_client
        return list(range(first, first + v))


#: ``data-partition`` values: the node trains on its part of the run's partition of the files in its data root
#: (``assigned``), or on every training sample there (``all``: the root holds only this node's recordings)
DATA_PARTITIONS = ("assigned", "all")


def node_settings(node_config: Mapping[str, Any]) -> NodeSettings:
    """Parse and check a node config; ``DeploymentError`` naming the missing or bad key."""
    hint = "start the SuperNode with --node-config 'partition-id=K num-partitions=N'"
    values = {}
    for key in ("partition-id", "num-partitions"):
        if key not in node_config:
            raise DeploymentError(f"node config lacks {key!r} ({hint})")
        v = node_config[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise DeploymentError(f"node config {key!r} must be an integer, got {v!r}")
        values[key] = v
    if values["num-partitions"] < 1 or not 0 <= values["partition-id"] < values["num-partitions"]:
        raise DeploymentError(f"node config partition-id={values['partition-id']} must lie in "
                              f"[0, num-partitions={values['num-partitions']})")
    profile = node_config.get("device-profile")
    if profile is not None and not isinstance(profile, str):
        raise DeploymentError(f"node config 'device-profile' must be a string, got {profile!r}")
    root = node_config.get("data-root")
    if root is not None and (not isinstance(root, str) or not Path(root).is_dir()):
        raise DeploymentError(f"node config 'data-root' must name an existing folder on this node, got {root!r}")
    part = node_config.get("data-partition", "assigned")
    if part not in DATA_PARTITIONS:
        raise DeploymentError(f"node config 'data-partition' must be one of {', '.join(DATA_PARTITIONS)}, "
                              f"got {part!r}")
    if part == "all" and root is None:
        raise DeploymentError("node config data-partition=all needs data-root (the folder of this node's own "
                              "recordings)")
    virtual = node_config.get("virtual-clients")
    if virtual is not None:
        if isinstance(virtual, bool) or not isinstance(virtual, int) or virtual < 1:
            raise DeploymentError(f"node config 'virtual-clients' must be an integer >= 1, got {virtual!r}")
        if profile is not None:
            raise DeploymentError("node config 'device-profile' cannot be combined with 'virtual-clients': each "
                                  "virtual client trains through the profile devices.fleet assigns to it")
        if part == "all":
            raise DeploymentError("node config data-partition=all cannot be combined with 'virtual-clients': the "
                                  "node's virtual clients share the run's partition of its files")
    first = node_config.get("first-client")
    if first is not None:
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise DeploymentError(f"node config 'first-client' must be an integer >= 0, got {first!r}")
        if virtual is None:
            raise DeploymentError("node config 'first-client' needs 'virtual-clients' (the node hosts clients "
                                  "first-client .. first-client + virtual-clients - 1)")
    return NodeSettings(values["partition-id"], values["num-partitions"], profile or None, root or None, part,
                        virtual, first)


def check_node(node: NodeSettings, settings: RunSettings, spec: FederationSpec) -> None:
    """The node config must match the run's config: same number of partitions, same device profile."""
    n = settings.partition.num_clients
    if node.first_client is not None:  # a stated block: it must lie among the run's clients
        last = node.hosted_clients()[-1]
        if last >= n:
            raise DeploymentError(f"node config first-client={node.first_client} virtual-clients="
                                  f"{node.virtual_clients} names clients up to {last}, beyond the run's "
                                  f"partition.num_clients={n}")
        return
    if node.virtual_clients is not None:
        v = node.virtual_clients
        if node.num_partitions * v != n:
            raise DeploymentError(f"node config num-partitions={node.num_partitions} x virtual-clients={v} = "
                                  f"{node.num_partitions * v} clients do not cover the run's partition.num_clients="
                                  f"{n} (every node must host the same number V of clients and N x V must equal "
                                  "partition.num_clients)")
        return
    if node.num_partitions != n:
        raise DeploymentError(f"node config num-partitions={node.num_partitions} does not match the run's "
                              f"partition.num_clients={n}")
    if node.device_profile is not None:
        assigned = spec.fleet.profiles[node.partition_id].name if spec.fleet is not None else "ideal"
        if node.device_profile != assigned:
            raise DeploymentError(f"node config device-profile={node.device_profile!r} does not match the run's "
                                  f"devices.fleet, which assigns {assigned!r} to partition {node.partition_id}")


# -- records ---------------------------------------------------------------------------------------------------
def params_to_record(params: ParamDict) -> Any:
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({n: Array(t.detach().cpu().contiguous().numpy()) for n, t in params.items()})


def record_to_params(record: Any, reference: ParamDict) -> ParamDict:
    """Parameters from an ArrayRecord, checked against the reference names, shapes and dtypes."""
    names = list(record.keys())
    if set(names) != set(reference):
        raise DeploymentError(f"received parameters {sorted(names)} differ from the model's {sorted(reference)}")
    out: ParamDict = {}
    for n, ref in reference.items():
        t = torch.from_numpy(np.array(record[n].numpy(), copy=True))
        if t.shape != ref.shape or t.dtype != ref.dtype:
            raise DeploymentError(f"received parameter {n!r} has shape {tuple(t.shape)} / {t.dtype}, expected "
                                  f"{tuple(ref.shape)} / {ref.dtype}")
        out[n] = t
    return out


def _state_to_record(state: dict[str, Any]) -> Any:
    from flwr.app import ArrayRecord

    residual = state.get("ef_residual")
    return params_to_record(residual) if residual is not None else ArrayRecord()


def train_content(rnd: int, client: int, received: ParamDict, fit: FitInstructions) -> Any:
    """The server's TRAIN message to one node: the global parameters and the round's plain settings."""
    from flwr.app import ConfigRecord, RecordDict

    return RecordDict({GLOBAL_KEY: params_to_record(received),
                       FIT_KEY: ConfigRecord({"round": rnd, "client": client, "prox-mu": float(fit.prox_mu)})})


# -- client side -------------------------------------------------------------------------------------------------
def client_setup(run_config: Mapping[str, Any], node_config: Mapping[str, Any]
                  ) -> tuple[RunSettings, FederationSpec, NodeSettings]:
    from ..experiment.runner import build_spec

    node = node_settings(node_config)
    settings = settings_from_run_config(run_config)
    spec = build_spec(node_data_settings(settings, node))
    if node.data_partition == "all":  # every training sample in this node's root is its own
        mine = np.arange(int(spec.data.y_train.shape[0]), dtype=np.int64)
        spec = replace(spec, parts=[mine if k == node.partition_id else p for k, p in enumerate(spec.parts)])
    check_node(node, settings, spec)
    return settings, spec, node


def node_data_settings(settings: RunSettings, node: NodeSettings) -> RunSettings:
    """The run's settings as this node loads its data: its own ``data-root``; with ``data-partition=all`` an
    iid split of its files (the node keeps all of them, see :func:`client_setup`)."""
    if node.data_root is None:
        return settings
    if settings.data.root is None:
        raise DeploymentError(f"node config data-root={node.data_root!r}, but data.name={settings.data.name} "
                              "reads no files")
    update: dict[str, Any] = {"data": settings.data.model_copy(update={"root": node.data_root})}
    if node.data_partition == "all":
        update["partition"] = settings.partition.model_copy(update={"method": "iid", "min_size": 1})
    return settings.model_copy(update=update)


def client_query(run_config: Mapping[str, Any], node_config: Mapping[str, Any]) -> Any:
    """The node's answer to the server's QUERY: its node config, checked against the run's config."""
    from flwr.app import ConfigRecord, RecordDict

    _, spec, node = client_setup(run_config, node_config)
    if node.virtual_clients is not None:  # a cohort node: the clients it hosts (spikefed.deploy.flower_cohort)
        hosted = node.hosted_clients()
        return RecordDict({NODE_KEY: ConfigRecord({"partition-id": node.partition_id,
                                                   "num-partitions": node.num_partitions, "clients": hosted,
                                                   "num-samples": int(sum(len(spec.parts[c]) for c in hosted))})})
    return RecordDict({NODE_KEY: ConfigRecord({"partition-id": node.partition_id,
                                               "num-partitions": node.num_partitions,
                                               "num-samples": int(len(spec.parts[node.partition_id]))})})


def client_train(content: Any, run_config: Mapping[str, Any], node_config: Mapping[str, Any], state: Any) -> Any:
    """One round of local training on this node: the simulator's client half (build the partition, train with
    the client's generator of the round, upload the delta, compressed with error feedback if configured).

    ``state`` is the node's persistent :class:`~flwr.app.RecordDict` (``context.state``): the error-feedback
    residual lives there between rounds, as ``client_state[k]`` does in the simulator.
    """
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

    _, spec, node = client_setup(run_config, node_config)
    fit_cfg = content[FIT_KEY]
    rnd, cid = int(fit_cfg["round"]), int(fit_cfg["client"])
    if node.virtual_clients is not None:
        raise DeploymentError("this node hosts virtual clients (node config 'virtual-clients'), but the server sent "
                              "a one-client message")
    if cid != node.partition_id:
        raise DeploymentError(f"the server addressed client {cid} but this node holds partition {node.partition_id}")
    reference = params_of(spec.model)
    received = record_to_params(content[GLOBAL_KEY], reference)
    fit = FitInstructions(round=rnd, prox_mu=float(fit_cfg["prox-mu"]))
    upd = train_local(spec, received, [build_client(spec, cid)], [client_generator(spec.seed, rnd, cid)], fit,
                      None, None)[0]
    client_state: dict[int, dict[str, Any]] = {}
    saved = state.array_records.get(STATE_KEY) if STATE_KEY in state.array_records else None
    if saved is not None and len(saved) > 0:
        client_state[cid] = {"ef_residual": record_to_params(saved, reference)}
    up = client_upload(spec, rnd, upd, received, client_state)
    if os.environ.get(GARBAGE_UPLOAD_ENV) == "1":  # test hook: a well-formed reply with garbage content
        up.payload = random.Random(f"garbage:{rnd}:{cid}").randbytes(len(up.payload))
    if cid in client_state:
        state.array_records[STATE_KEY] = _state_to_record(client_state[cid])
    metrics = {"num-samples": int(up.num_samples), "steps": int(up.steps),
               **{k: float(v) for k, v in up.metrics.items() if isinstance(v, (int, float))}}
    return RecordDict({UPDATE_KEY: ArrayRecord({"payload": Array(np.frombuffer(up.payload, dtype=np.uint8).copy())}),
                       METRICS_KEY: MetricRecord(metrics)})


def upload_from_reply(client: int, content: Any) -> Upload:
    """The server's view of a node's reply: the simulator's :class:`Upload`, taken as it came (the trust boundary,
    :mod:`spikefed.federated.boundary`, checks every field). A reply without the expected records, or whose
    payload is not a 1-D ``uint8`` array, becomes an upload that carries the reason and is rejected."""
    try:
        array = content[UPDATE_KEY]["payload"].numpy()
        if array.dtype != np.uint8 or array.ndim != 1:
            raise ValueError(f"payload must be a 1-D uint8 array, got {array.dtype} with shape {array.shape}")
        m = dict(content[METRICS_KEY])
        n, steps = m.pop("num-samples"), m.pop("steps")
    except Exception as e:  # noqa: BLE001 - anything a node sends is data; a bad reply is one rejection
        return Upload(client, 0, b"", error=f"malformed reply: {type(e).__name__}: {e}")
    return Upload(client, _whole(n), array.tobytes(), m, _whole(steps))


def _whole(value: Any) -> Any:
    """A MetricRecord may carry a count as a float: a whole finite float becomes the int; anything else is left
    for the boundary to refuse."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# -- server side -------------------------------------------------------------------------------------------------
def error_text(msg: Any) -> str:
    """The reason of an error reply (Flower formats a ClientApp exception as ``<class 'X'>:<'message'>``: the
    message is kept)."""
    reason = str(msg.error.reason)
    if ":<" in reason and reason.endswith(">"):
        reason = reason.split(":<", 1)[1][:-1].strip("'\"")
    return reason


def no_uploads(rnd: int, received: ParamDict, trained: list[int], fit: Any, budgets: Any) -> list[Upload]:
    """The remote trainer of a round whose aggregate stage talks to the nodes itself (SecAgg+)."""
    return []


def progress_line(row: Mapping[str, Any], rounds: int) -> str:
    acc = row.get("accuracy")
    return (f"spikefed round {row['round']}/{rounds}: clients {row['clients']} accepted {row['accepted']}"
            + (f" accuracy {acc:.4f}" if acc is not None else "")
            + (f" bytes_up {row['bytes_up']}" if row.get("bytes_up") is not None else ""))


def server_main(grid: Any, context: Any) -> dict[str, Any]:
    """The ServerApp: the simulator's rounds with the clients on the SuperNodes.

    With ``out-dir`` it is a run directory as ``spikefed run`` writes it (:class:`~spikefed.experiment.runner.Run`):
    ``config.yaml``, the verified ``checkpoint.pt`` after every round, ``metrics.jsonl``, ``summary.json``,
    ``report.html``, plus ``global.pt``; with ``resume = true`` the run continues from that checkpoint (after the
    ServerApp or the SuperLink died). Rounds go on when nodes die, hang or come back
    (:mod:`spikefed.deploy.flower_nodes`)."""
    from ..experiment.runner import Run, build_spec, summarize
    from .flower_nodes import FlowerTrainer, NodeFaultStage, NodeRoster

    run_config = context.run_config
    started = time.perf_counter()
    out = str(run_config.get("out-dir", "") or "")
    out_dir = Path(out) if out else None
    try:
        settings = settings_from_run_config(run_config)
        secure = run_option(run_config, "secure")
        resume = run_option(run_config, "resume")
        if secure == "secaggplus" and settings.privacy.dp:
            raise ConfigError("privacy.dp with secure=secaggplus: central DP needs the plain updates (clip + "
                              "noise on the server); use one of them")
        if resume and out_dir is None:
            raise ConfigError("run config 'resume' needs 'out-dir': the run directory that holds checkpoint.pt")
        job = Run(settings, out_dir, resume=bool(resume)) if out_dir is not None else None
        sim = job.sim if job is not None else Simulation(build_spec(settings))
        spec = sim.spec
        node_timeout = float(run_option(run_config, "node-timeout"))
        round_timeout = float(run_option(run_config, "round-timeout"))
        roster = NodeRoster(grid, sim.num_clients)
        roster.discover(node_timeout, max(spec.min_clients, 2 if secure == "secaggplus" else 1))
        if secure == "secaggplus" and roster.cohort:
            raise DeploymentError("secure=secaggplus needs one client per SuperNode; SuperNodes "
                                  f"{sorted(roster.cohort)} host virtual clients (node config 'virtual-clients')")
        hosts = len(set(roster.nodes.values()))
        print(f"spikefed: {hosts} SuperNodes"
              + (f" hosting {len(roster.nodes)} virtual clients" if roster.cohort else "")
              + f", {settings.federation.strategy}, {spec.rounds} rounds"
              + (", SecAgg+" if secure == "secaggplus" else "")
              + (f"; resumed after round {sim.state.round}" if resume else ""), flush=True)
        trainer: Any = FlowerTrainer(grid, roster, round_timeout)
        if secure == "secaggplus":  # SecAgg+ is the round's aggregate stage; it sends the TRAIN messages itself
            from .flower_secagg import SecAggPlusStage

            sim.stages.insert(len(sim.stages) - 1, SecAggPlusStage(grid, context, roster.nodes))
            trainer = no_uploads
        else:
            sim.stages.insert(0, NodeFaultStage(roster, trainer, spec.min_clients, min(round_timeout, node_timeout),
                                                _node_state_note(settings)))
        while sim.state.round < spec.rounds:
            row = job.step(trainer) if job is not None else sim.run_round(remote=trainer)
            print(progress_line(row, spec.rounds), flush=True)
        extra = {"nodes": len(set(roster.nodes.values())), "secure": secure}
        if job is not None:  # global.pt first: summary.json tells a waiting launcher that the run is complete
            torch.save(sim.state.global_params, job.dir / "global.pt")
            summary = job.finish(extra)
        else:
            summary = {**summarize(sim, settings, time.perf_counter() - started), **extra}
        print(f"spikefed: done, final accuracy {summary['final_accuracy']}", flush=True)
        return summary
    except Exception as e:
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(out_dir / "error.txt", f"{e}\n")
        raise


def _node_state_note(settings: RunSettings) -> str | None:
    """What a node that joins on a new SuperNode (a restart, or any node after a resumed ServerApp) starts without:
    Flower keeps ``context.state`` per run in the SuperNode's memory."""
    if settings.compression.uplink != "none" and settings.compression.error_feedback:
        return "their error-feedback residuals restart from zero (node state lives in the SuperNode's memory)"
    return None


__all__ = ["DeploymentError", "NodeSettings", "RUN_CONFIG_DEFAULTS", "check_deployable",
           "check_node", "client_query", "client_train", "error_text", "node_settings", "server_main",
           "settings_from_run_config"]
