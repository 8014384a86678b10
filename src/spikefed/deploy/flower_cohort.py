"""Hierarchical deployment: one SuperNode hosts a batched cohort of virtual clients.

A SuperNode started with ``--node-config 'partition-id=i num-partitions=N virtual-clients=V'`` hosts the virtual
clients ``i*V .. (i+1)*V - 1`` of a run whose ``partition.num_clients`` is ``N*V`` (see
:func:`spikefed.deploy.flower.node_settings`). The server samples from all ``N*V`` clients exactly as the
simulator does; each round it sends a hosting node **one** TRAIN message naming the sampled clients it hosts
(:func:`cohort_train_content`). The node trains them together with the simulator's cohort engine
(:func:`~spikefed.federated.simulation.train_local`: the same batched local training, each client with its own
generator of the round) and answers with **one** message that carries every virtual client's upload separately
(:func:`pack_cohort_reply`): its own payload bytes (exactly what the simulator counts as ``bytes_up``) and its own
metrics. Nothing is pre-aggregated on the node, so the server's trust boundary parses and validates every virtual
client's update on its own (a bad one is one rejection), and robust aggregation, DP clipping and the norm bounds act
on each client as in the simulator.

The reply (node -> server)::

    "cohort":        ConfigRecord  {"clients": [c1, c2, ...]}       the virtual clients answered, in order
    "update":        ArrayRecord   {"c1": uint8[...], "c2": ...}    one payload per virtual client
    "metrics.<c>":   MetricRecord  num-samples, steps, loss, ...     one per virtual client

:func:`uploads_from_cohort_reply` reads it on the server against the clients the message asked for. What a node
cannot do: speak for a client it was not asked for (it may belong to another node), name a client twice, or send
a payload array that no listed client owns; any of these makes the whole reply untrustworthy, so every client of
that message is rejected with the reason. A client that is asked for but missing from the reply is rejected alone;
a client whose payload is truncated or otherwise malformed is rejected alone by the trust boundary
(:mod:`spikefed.federated.boundary`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..federated.simulation import build_client, client_generator, client_upload, train_local
from ..federated.types import FitInstructions, ParamDict, Upload, params_of
from .flower import (FIT_KEY, GLOBAL_KEY, METRICS_KEY, STATE_KEY, UPDATE_KEY, DeploymentError, client_setup,
                     params_to_record, record_to_params, upload_from_reply)

#: the reply's record that lists the virtual clients it answers
COHORT_KEY = "cohort"
#: prefix of the per-client MetricRecords of a cohort reply (``metrics.<client id>``)
CLIENT_METRICS_PREFIX = "metrics."


def is_cohort_message(content: Any) -> bool:
    """Whether a TRAIN message asks for a cohort of virtual clients (its ``fit`` record names ``clients``)."""
    try:
        return "clients" in content[FIT_KEY]
    except (KeyError, TypeError):
        return False


def cohort_train_content(rnd: int, clients: list[int], received: ParamDict, fit: FitInstructions) -> Any:
    """The server's TRAIN message to a cohort node: the global parameters once, and the virtual clients to train."""
    from flwr.app import ConfigRecord, RecordDict

    return RecordDict({GLOBAL_KEY: params_to_record(received),
                       FIT_KEY: ConfigRecord({"round": rnd, "clients": [int(c) for c in clients],
                                              "prox-mu": float(fit.prox_mu)})})


def _state_key(client: int) -> str:
    return f"{STATE_KEY}.{client}"


def client_cohort_train(content: Any, run_config: Mapping[str, Any], node_config: Mapping[str, Any],
                        state: Any) -> Any:
    """One round on a cohort node: train the asked virtual clients as one batched cohort (the simulator's
    :func:`train_local`), compress each client's delta with its own error-feedback residual (kept per client in
    ``context.state``) and pack the uploads (:func:`pack_cohort_reply`). ``DeploymentError`` (an error reply:
    every client of the message is rejected) when the message names a client this node does not host or names
    one twice."""
    _, spec, node = client_setup(run_config, node_config)
    hosted = node.hosted_clients()
    fit_cfg = content[FIT_KEY]
    rnd = int(fit_cfg["round"])
    clients = [int(c) for c in fit_cfg["clients"]]
    foreign = sorted(set(clients) - set(hosted))
    if foreign:
        raise DeploymentError(f"the server asked for virtual client(s) {foreign}, but this node (partition-id="
                              f"{node.partition_id}) hosts clients {hosted[0]}..{hosted[-1]}")
    if len(set(clients)) != len(clients):
        raise DeploymentError(f"the server asked for a virtual client twice: {clients}")
    reference = params_of(spec.model)
    received = record_to_params(content[GLOBAL_KEY], reference)
    fit = FitInstructions(round=rnd, prox_mu=float(fit_cfg["prox-mu"]))
    updates = train_local(spec, received, [build_client(spec, c) for c in clients],
                          [client_generator(spec.seed, rnd, c) for c in clients], fit, None, None)
    uploads = []
    for cid, upd in zip(clients, updates):
        client_state: dict[int, dict[str, Any]] = {}
        saved = state.array_records.get(_state_key(cid)) if _state_key(cid) in state.array_records else None
        if saved is not None and len(saved) > 0:
            client_state[cid] = {"ef_residual": record_to_params(saved, reference)}
        uploads.append(client_upload(spec, rnd, upd, received, client_state))
        residual = client_state.get(cid, {}).get("ef_residual")
        if residual is not None:
            state.array_records[_state_key(cid)] = params_to_record(residual)
    return pack_cohort_reply(uploads)


def pack_cohort_reply(uploads: list[Upload]) -> Any:
    """One reply carrying every virtual client's upload separately (payload bytes and metrics of each)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

    records: dict[str, Any] = {COHORT_KEY: ConfigRecord({"clients": [int(u.client_id) for u in uploads]}),
                               UPDATE_KEY: ArrayRecord({str(u.client_id): Array(np.frombuffer(u.payload,
                                                                                              dtype=np.uint8).copy())
                                                        for u in uploads})}
    for u in uploads:
        records[f"{CLIENT_METRICS_PREFIX}{u.client_id}"] = MetricRecord(
            {"num-samples": int(u.num_samples), "steps": int(u.steps),
             **{k: float(v) for k, v in u.metrics.items() if isinstance(v, (int, float))}})
    return RecordDict(records)


def _rejected(clients: list[int], reason: str) -> dict[int, Upload]:
    return {c: Upload(c, 0, b"", error=reason) for c in clients}


def uploads_from_cohort_reply(asked: list[int], content: Any) -> dict[int, Upload]:
    """The server's view of a cohort node's reply to a message that asked for ``asked``: one :class:`Upload` per
    asked client (a rejection carrying the reason where the reply has nothing usable for it). Each upload is taken
    as it came; the trust boundary checks its payload, counts and metrics."""
    try:
        listed_raw = content[COHORT_KEY]["clients"]
        if not isinstance(listed_raw, list) or not all(isinstance(c, int) and not isinstance(c, bool)
                                                       for c in listed_raw):
            raise ValueError(f"'clients' must be a list of integers, got {listed_raw!r}")
        listed = [int(c) for c in listed_raw]
        arrays = content[UPDATE_KEY]
        names = set(arrays.keys())
    except Exception as e:  # noqa: BLE001 - anything a node sends is data; a bad reply rejects its clients
        return _rejected(asked, f"malformed cohort reply: {type(e).__name__}: {e}")
    foreign = sorted(set(listed) - set(asked))
    if foreign:
        return _rejected(asked, f"malformed cohort reply: it names client(s) {foreign}, which this message did not "
                                f"ask its SuperNode for")
    if len(set(listed)) != len(listed):
        twice = sorted({c for c in listed if listed.count(c) > 1})
        return _rejected(asked, f"malformed cohort reply: it names client(s) {twice} more than once")
    stray = sorted(names - {str(c) for c in listed})
    if stray:
        return _rejected(asked, f"malformed cohort reply: payload array(s) {stray} belong to no listed client")
    out: dict[int, Upload] = {}
    for c in asked:
        if c not in listed:
            out[c] = Upload(c, 0, b"", error=f"the SuperNode's cohort reply has no upload for client {c} "
                                            f"({len(listed)} of the {len(asked)} clients asked)")
            continue
        try:
            view = {UPDATE_KEY: {"payload": arrays[str(c)]},
                    METRICS_KEY: content[f"{CLIENT_METRICS_PREFIX}{c}"]}
        except Exception as e:  # noqa: BLE001 - a missing record is this client's rejection
            out[c] = Upload(c, 0, b"", error=f"malformed reply: {type(e).__name__}: {e}")
            continue
        out[c] = upload_from_reply(c, view)
    return out


__all__ = ["COHORT_KEY", "client_cohort_train", "cohort_train_content", "is_cohort_message", "pack_cohort_reply",
           "uploads_from_cohort_reply"]
