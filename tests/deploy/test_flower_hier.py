"""Hierarchical Flower deployment (issue 15): a SuperNode hosts a batched cohort of virtual clients.

Fast tests: the node config, the multi-client reply (packing, and every malformed shape a node could send), and the
real ServerApp/ClientApp in one process behind a loopback Grid (Flower's own ``ClientApp.__call__``; only the
transport is replaced). One slow test starts a real SuperLink and 3 SuperNodes x 50 virtual clients.

References: payload bytes written in the test (``encode_params`` of hand-made tensors), the in-process simulator
(``Simulation.run_round``) on the same partitions and seed, hand counts of the clients a node hosts
(``i*V .. (i+1)*V-1``) and of the sampled clients it takes with it when it goes away, ``/proc`` for processes.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="Flower (flwr) is not installed: pip install 'flwr>=1.40,<1.42'")

from flwr.app import Array, ConfigRecord, Context, Error, Message, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from spikefed.deploy.flower import DeploymentError, check_node, node_settings, server_main  # noqa: E402
from spikefed.deploy.flower_cohort import (COHORT_KEY, pack_cohort_reply,  # noqa: E402
                                           uploads_from_cohort_reply)
from spikefed.deploy.flower_nodes import NodeRoster  # noqa: E402
from spikefed.deploy.processes import pid_alive  # noqa: E402
from spikefed.experiment.config import RunSettings  # noqa: E402
from spikefed.experiment.runner import build_spec  # noqa: E402
from spikefed.federated.aggregation import InvalidUpdate  # noqa: E402
from spikefed.federated.boundary import check_metadata  # noqa: E402
from spikefed.federated.serialization import decode_params, encode_params  # noqa: E402
from spikefed.federated.simulation import Simulation  # noqa: E402
from spikefed.federated.types import Upload  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
#: stated tolerance of "equal to the simulator" with the batched cohort engine: a node trains its sampled clients
#: as a cohort of its own (say 10 of the round's 30), and float32 batched reductions over a different number of
#: clients differ in the last bit (measured: at most 3e-8 per parameter after one round); spiking thresholds
#: amplify that over rounds (measured 1.6e-5 after 3 rounds of 3 x 50 clients). With engine=sequential the run is
#: bit-identical (tested below).
PARAM_TOL = 1e-4
#: accuracy may differ by at most this many test samples (digits test split: 360 samples)
ACC_TOL = 2 / 360


def _settings(nodes: int, virtual: int, rounds: int, fraction: float, **local: Any) -> dict[str, Any]:
    return {"partition": {"num_clients": nodes * virtual, "method": "iid", "min_size": 5},
            "local": {"epochs": 1, **local}, "model": {"hidden": [32]},
            "federation": {"fraction": fraction, "rounds": rounds, "engine": "cohort"}}


def _node_cfgs(nodes: int, virtual: int) -> list[dict[str, Any]]:
    return [{"partition-id": i, "num-partitions": nodes, "virtual-clients": virtual} for i in range(nodes)]


@pytest.fixture
def task_identity():
    """Messages created outside a Flower process need a task identity (run / node / task id)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


class LoopbackGrid:
    """Flower's Grid (push / pull / node ids) over in-process ClientApps, one per node config. ``offline``: node
    ids that are gone; ``tamper(reply)``: rewrites a TRAIN reply before the server sees it."""

    def __init__(self, node_configs: list[dict[str, Any]], run_config: dict[str, Any], tamper: Any = None) -> None:
        from spikefed.deploy.flower_app import client_app

        self.app, self.run_config, self.tamper = client_app, run_config, tamper
        self.nodes = {7000 + i: (cfg, RecordDict()) for i, cfg in enumerate(node_configs)}
        self.offline: set[int] = set()
        self.inbox: dict[str, Message] = {}
        self.count = 0
        self.train_sent: list[Message] = []
        self.train_replies: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return [n for n in self.nodes if n not in self.offline]

    def push_messages(self, messages: Any) -> list[str]:
        ids = []
        for m in messages:
            self.count += 1
            m.metadata.__dict__["_message_id"] = f"msg-{self.count}"
            ids.append(m.metadata.message_id)
            nid = m.metadata.dst_node_id
            if m.metadata.message_type == "train":
                self.train_sent.append(m)
            if nid in self.offline:
                continue
            cfg, state = self.nodes[nid]
            ctx = Context(run_id=1, node_id=nid, node_config=cfg, state=state, run_config=self.run_config)
            m = copy.deepcopy(m)
            try:
                r = self.app(m, ctx)
            except Exception as e:  # noqa: BLE001 - what a SuperNode does with a ClientApp exception
                r = Message(Error(code=2, reason=f"<class '{type(e).__name__}'>:<'{e}'>"), reply_to=m)
            if m.metadata.message_type == "train":
                if self.tamper is not None and not r.has_error():
                    r = Message(self.tamper(r.content), reply_to=m)
                self.train_replies.append(r)
            self.inbox[r.metadata.reply_to_message_id] = r
        return ids

    def pull_messages(self, message_ids: Any) -> list[Message]:
        return [self.inbox.pop(i) for i in list(message_ids) if i in self.inbox]


class _Ctx:
    def __init__(self, run_config: dict[str, Any]) -> None:
        self.run_config = run_config
        self.run_id, self.node_id, self.node_config, self.series_id = 1, 0, {}, 0
        self.state = RecordDict()


def _simulate(settings: dict[str, Any]) -> Simulation:
    sim = Simulation(build_spec(RunSettings.model_validate(settings)))
    while sim.state.round < sim.spec.rounds:
        sim.run_round()
    return sim


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[n].double() - b[n].double()).abs().max()) for n in a)


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


# -- node config ---------------------------------------------------------------------------------------------------
def test_virtual_clients_node_config_hosts_a_block_and_bad_values_name_the_key():
    node = node_settings({"partition-id": 2, "num-partitions": 3, "virtual-clients": 4})
    assert node.hosted_clients() == [8, 9, 10, 11]  # i*V .. (i+1)*V - 1
    assert node_settings({"partition-id": 2, "num-partitions": 3}).hosted_clients() == [2]
    for bad in (0, -3, True, "5", 2.5):
        with pytest.raises(DeploymentError, match="'virtual-clients' must be an integer >= 1"):
            node_settings({"partition-id": 0, "num-partitions": 3, "virtual-clients": bad})
    with pytest.raises(DeploymentError, match=r"partition-id=3 must lie in \[0, num-partitions=3\)"):
        node_settings({"partition-id": 3, "num-partitions": 3, "virtual-clients": 5})
    with pytest.raises(DeploymentError, match="'device-profile' cannot be combined with 'virtual-clients'"):
        node_settings({"partition-id": 0, "num-partitions": 3, "virtual-clients": 5, "device-profile": "loihi"})


def test_a_stated_first_client_block_and_its_errors():
    node = node_settings({"partition-id": 1, "num-partitions": 2, "virtual-clients": 3, "first-client": 7})
    assert node.hosted_clients() == [7, 8, 9]
    with pytest.raises(DeploymentError, match="'first-client' must be an integer >= 0"):
        node_settings({"partition-id": 1, "num-partitions": 2, "virtual-clients": 3, "first-client": -1})
    with pytest.raises(DeploymentError, match="'first-client' needs 'virtual-clients'"):
        node_settings({"partition-id": 1, "num-partitions": 2, "first-client": 4})
    settings = RunSettings.model_validate(_settings(2, 5, 1, 0.5))  # 10 clients
    with pytest.raises(DeploymentError, match="names clients up to 10, beyond the run's partition.num_clients=10"):
        check_node(node_settings({"partition-id": 1, "num-partitions": 2, "virtual-clients": 3, "first-client": 8}),
                   settings, build_spec(settings))


def test_a_node_block_that_does_not_cover_the_run_is_refused():
    settings = RunSettings.model_validate(_settings(3, 5, 1, 0.5))  # 15 clients
    spec = build_spec(settings)
    check_node(node_settings({"partition-id": 1, "num-partitions": 3, "virtual-clients": 5}), settings, spec)
    with pytest.raises(DeploymentError, match=r"num-partitions=3 x virtual-clients=4 = 12 clients do not cover "
                                              r"the run's partition.num_clients=15"):
        check_node(node_settings({"partition-id": 1, "num-partitions": 3, "virtual-clients": 4}), settings, spec)


# -- the multi-client reply ------------------------------------------------------------------------------------------
def _payload(value: float) -> bytes:
    return encode_params({"w": torch.full((3,), value), "b": torch.tensor([value, -value])})


def _uploads(clients: list[int]) -> list[Upload]:
    return [Upload(c, 10 + c, _payload(float(c)), {"loss": 0.25 * c, "accuracy": 0.5}, 2 + c) for c in clients]


def test_a_cohort_reply_carries_each_clients_own_bytes_counts_and_metrics():
    reply = pack_cohort_reply(_uploads([7, 3, 5]))
    got = uploads_from_cohort_reply([3, 5, 7], reply)
    assert list(got) == [3, 5, 7]  # the asked order
    for c, up in got.items():
        assert up.error is None and up.client_id == c
        assert up.payload == _payload(float(c))  # byte for byte the client's own payload
        assert (up.num_samples, up.steps) == (10 + c, 2 + c)
        assert up.metrics == {"loss": 0.25 * c, "accuracy": 0.5}
        assert torch.equal(decode_params(up.payload)["w"], torch.full((3,), float(c)))
        check_metadata(up, {3, 5, 7})  # the boundary's metadata check passes


def _rejection(up: Upload, word: str, expected: set[int]) -> None:
    assert up.error is not None and word in up.error, up.error
    with pytest.raises(InvalidUpdate) as e:
        check_metadata(up, expected)
    assert e.value.client_id == up.client_id


def test_a_reply_missing_an_asked_client_rejects_only_that_client():
    got = uploads_from_cohort_reply([1, 2, 4], pack_cohort_reply(_uploads([1, 4])))  # wrong count: 2 of 3
    assert got[1].error is None and got[4].error is None
    _rejection(got[2], "has no upload for client 2 (2 of the 3 clients asked)", {1, 2, 4})


@pytest.mark.parametrize("clients, word", [
    ([1, 2, 9], "names client(s) [9], which this message did not ask"),  # a client the node was not asked for
    ([1, 2, 2], "names client(s) [2] more than once"),  # a duplicated client
])
def test_a_reply_that_speaks_for_other_or_duplicated_clients_rejects_the_whole_message(clients, word):
    reply = pack_cohort_reply(_uploads(sorted(set(clients))))
    reply[COHORT_KEY] = ConfigRecord({"clients": clients})
    got = uploads_from_cohort_reply([1, 2], reply)
    assert sorted(got) == [1, 2]  # a rejection for every asked client, none for the foreign one
    for up in got.values():
        _rejection(up, word, {1, 2})


@pytest.mark.parametrize("mutate, word", [
    (lambda r: r.pop(COHORT_KEY), "malformed cohort reply"),
    (lambda r: r.__setitem__(COHORT_KEY, ConfigRecord({"clients": "1,2"})), "list of integers"),
    (lambda r: r["update"].__setitem__("8", Array(np.zeros(3, dtype=np.uint8))), "belong to no listed client"),
])
def test_malformed_cohort_replies_reject_every_client_of_the_message(mutate, word):
    reply = pack_cohort_reply(_uploads([1, 2]))
    mutate(reply)
    got = uploads_from_cohort_reply([1, 2], reply)
    for up in got.values():
        _rejection(up, word, {1, 2})


def test_a_truncated_or_missing_payload_is_that_clients_rejection_alone():
    reply = pack_cohort_reply(_uploads([1, 2, 3]))
    arr = reply["update"]["2"].numpy()
    reply["update"]["2"] = Array(arr[: len(arr) // 2].copy())  # truncated payload of client 2
    reply.pop("metrics.3")  # client 3's metrics are missing
    got = uploads_from_cohort_reply([1, 2, 3], reply)
    assert got[1].error is None and got[1].payload == _payload(1.0)
    assert got[2].error is None and len(got[2].payload) == len(_payload(2.0)) // 2  # parsed by the boundary next
    with pytest.raises(Exception):
        decode_params(got[2].payload)  # the boundary's parser refuses the truncated bytes
    _rejection(got[3], "malformed reply", {1, 2, 3})


def test_two_cohort_nodes_that_declare_the_same_client_fail_at_discovery(task_identity):
    settings = _settings(2, 3, 1, 1.0)
    nodes = [{"partition-id": 0, "num-partitions": 2, "virtual-clients": 3},
             {"partition-id": 0, "num-partitions": 2, "virtual-clients": 3}]
    grid = LoopbackGrid(nodes, {"settings": json.dumps(settings)})
    with pytest.raises(DeploymentError, match="SuperNodes 7000 and 7001 both declare virtual client 0"):
        NodeRoster(grid, 6).discover(5.0, 1)


# -- rounds through Flower's message layer, in process ------------------------------------------------------------
@pytest.mark.parametrize("engine", ["cohort", "sequential"])
def test_cohort_nodes_equal_the_simulator_and_send_one_message_per_node(task_identity, tmp_path, engine):
    settings = _settings(3, 5, 2, 0.4, local_steps=3)  # 15 clients, 6 sampled per round
    settings["federation"]["engine"] = engine
    grid = LoopbackGrid(_node_cfgs(3, 5), {"settings": json.dumps(settings)})
    summary = server_main(grid, _Ctx({**grid.run_config, "out-dir": str(tmp_path)}))
    sim = _simulate(settings)
    deployed = torch.load(tmp_path / "global.pt")
    if engine == "sequential":  # every client trains alone either way: bit for bit
        assert all(torch.equal(deployed[n], t) for n, t in sim.state.global_params.items())
    assert _max_diff(deployed, sim.state.global_params) <= PARAM_TOL
    assert summary["final_accuracy"] == pytest.approx(sim.state.metrics[-1]["accuracy"], abs=ACC_TOL)
    assert summary["total_bytes_up"] == sim.state.bytes_up
    for rnd in (1, 2):
        sampled = sim.sample_clients(rnd)
        sent = [m for m in grid.train_sent if int(m.content["fit"]["round"]) == rnd]
        by_node = {7000 + c // 5: [] for c in sampled}
        for c in sampled:
            by_node[7000 + c // 5].append(c)
        assert {m.metadata.dst_node_id: list(m.content["fit"]["clients"]) for m in sent} == by_node
    for r in grid.train_replies:  # every virtual client's payload separately, each decodable
        clients = list(r.content[COHORT_KEY]["clients"])
        assert sorted(r.content["update"].keys()) == sorted(str(c) for c in clients)
        for c in clients:
            assert r.content[f"metrics.{c}"]["num-samples"] == len(sim.spec.parts[c])
    assert sum(len(a.numpy()) for r in grid.train_replies for a in r.content["update"].values()) == sim.state.bytes_up


def test_each_virtual_client_keeps_its_own_error_feedback_residual_on_its_node(task_identity, tmp_path):
    settings = _settings(2, 3, 3, 0.5, local_steps=2)  # 6 clients, 3 per round: residuals carried across rounds
    settings["federation"]["engine"] = "sequential"
    settings["compression"] = {"uplink": "topk", "fraction": 0.1}
    grid = LoopbackGrid(_node_cfgs(2, 3), {"settings": json.dumps(settings)})
    summary = server_main(grid, _Ctx({**grid.run_config, "out-dir": str(tmp_path)}))
    sim = _simulate(settings)
    assert summary["total_bytes_up"] == sim.state.bytes_up
    deployed = torch.load(tmp_path / "global.pt")
    assert all(torch.equal(deployed[n], t) for n, t in sim.state.global_params.items())
    held = 0
    for nid, (cfg, state) in grid.nodes.items():
        for c in range(cfg["partition-id"] * 3, cfg["partition-id"] * 3 + 3):
            key = f"spikefed.client-state.{c}"
            if c not in sim.state.client_state:
                assert key not in state.array_records
                continue
            held += 1
            for n, t in sim.state.client_state[c]["ef_residual"].items():
                assert torch.equal(torch.from_numpy(state.array_records[key][n].numpy()), t)
    assert held == len(sim.state.client_state) > 3  # more clients than one round's


def test_a_node_asked_for_a_client_it_does_not_host_refuses(task_identity):
    from spikefed.deploy.flower_cohort import client_cohort_train, cohort_train_content
    from spikefed.federated.types import FitInstructions, params_of

    settings = _settings(2, 3, 1, 1.0)
    spec = build_spec(RunSettings.model_validate(settings))
    run_config = {"settings": json.dumps(settings)}
    node = {"partition-id": 1, "num-partitions": 2, "virtual-clients": 3}  # hosts 3, 4, 5
    for clients, word in (([3, 2], r"virtual client\(s\) \[2\], but this node"), ([4, 4], "twice")):
        content = cohort_train_content(1, clients, params_of(spec.model), FitInstructions(round=1))
        with pytest.raises(DeploymentError, match=word):
            client_cohort_train(content, run_config, node, RecordDict())


def test_nodes_of_unequal_size_equal_the_simulator_and_an_unhosted_client_is_dropped(task_identity, tmp_path):
    settings = _settings(3, 2, 2, 1.0, local_steps=2)  # 6 clients, all sampled
    settings["federation"]["engine"] = "sequential"
    nodes = [{"partition-id": 0, "num-partitions": 2, "virtual-clients": 3, "first-client": 0},  # clients 0, 1, 2
             {"partition-id": 1, "num-partitions": 2, "virtual-clients": 2, "first-client": 3}]  # clients 3, 4
    grid = LoopbackGrid(nodes, {"settings": json.dumps(settings)})
    server_main(grid, _Ctx({**grid.run_config, "out-dir": str(tmp_path), "node-timeout": 1.0}))
    rows = _rows(tmp_path)
    for row in rows:  # client 5 has no node: dropped every round, never silently left out
        assert row["fault_clients"]["dropped"] == [5] and (row["clients"], row["accepted"]) == (6, 5)
    # reference: the FedAvg formula over the 5 hosted clients, trained with the simulator's client half
    spec = build_spec(RunSettings.model_validate(settings))
    from spikefed.federated.simulation import build_client, client_generator, train_local
    from spikefed.federated.types import FitInstructions, params_of

    params = params_of(spec.model)
    for rnd in (1, 2):
        ups = train_local(spec, params, [build_client(spec, c) for c in range(5)],
                          [client_generator(spec.seed, rnd, c) for c in range(5)], FitInstructions(round=rnd), None,
                          None)
        total = sum(u.num_samples for u in ups)
        params = {n: sum(u.params[n].double() * u.num_samples for u in ups) / total for n in params}
        params = {n: t.float() for n, t in params.items()}
    deployed = torch.load(tmp_path / "global.pt")
    assert _max_diff(deployed, params) <= 1e-6


def test_a_tampered_virtual_client_is_rejected_alone(task_identity, tmp_path):
    settings = _settings(2, 3, 1, 1.0, local_steps=2)  # 6 clients, all sampled

    def truncate_client_4(content: RecordDict) -> RecordDict:
        if "4" in content["update"]:
            arr = content["update"]["4"].numpy()
            content["update"]["4"] = Array(arr[:-7].copy())
        return content

    grid = LoopbackGrid(_node_cfgs(2, 3), {"settings": json.dumps(settings)}, tamper=truncate_client_4)
    server_main(grid, _Ctx({**grid.run_config, "out-dir": str(tmp_path)}))
    row = _rows(tmp_path)[0]
    assert (row["clients"], row["accepted"], row["rejected"]) == (6, 5, 1)
    assert [r["client"] for r in row["rejections"]] == [4]


def test_a_node_that_goes_away_takes_its_sampled_virtual_clients_with_it_as_dropped(task_identity, tmp_path):
    settings = _settings(3, 4, 2, 0.5, local_steps=2)  # 12 clients, 6 sampled per round
    grid = LoopbackGrid(_node_cfgs(3, 4), {"settings": json.dumps(settings)})
    real_push = grid.push_messages

    def push(messages: Any) -> list[str]:  # node 7001 (clients 4..7) goes offline when round 2 is sent
        if any(m.metadata.message_type == "train" and int(m.content["fit"]["round"]) == 2 for m in messages):
            grid.offline.add(7001)
        return real_push(messages)

    grid.push_messages = push  # type: ignore[method-assign]
    server_main(grid, _Ctx({**grid.run_config, "out-dir": str(tmp_path), "round-timeout": 5.0}))
    sim = Simulation(build_spec(RunSettings.model_validate(settings)))
    rows = _rows(tmp_path)
    assert rows[0]["dropped"] == 0 and rows[0]["accepted"] == len(sim.sample_clients(1))
    gone = [c for c in sim.sample_clients(2) if 4 <= c <= 7]
    assert gone, "the seed must sample a client of node 7001 in round 2"
    assert rows[1]["fault_clients"]["dropped"] == gone
    assert rows[1]["dropped"] == len(gone)
    assert rows[1]["accepted"] == len(sim.sample_clients(2)) - len(gone)


def test_cli_refuses_bad_virtual_client_values_quickly(tmp_path):
    from typer.testing import CliRunner

    from spikefed.cli import app

    cases = [(["--virtual-clients", "0"], "--virtual-clients must be >= 1"),
             (["--virtual-clients", "5", "--set", "partition.num_clients=7"],
              "must equal --nodes 3 x --virtual-clients 5 = 15"),
             (["--virtual-clients", "5", "--secure", "secaggplus"], "needs one client per SuperNode")]
    for args, word in cases:
        res = CliRunner().invoke(app, ["flower", "demo", "--nodes", "3", *args, "--workdir", str(tmp_path / "w")])
        assert res.exit_code != 0 and word in " ".join(res.output.split()), res.output[-2000:]
    assert not (tmp_path / "w").exists()  # refused before anything started


# -- real processes -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_superlink_three_supernodes_hosting_fifty_virtual_clients_each_equal_the_simulator(tmp_path):
    """CI: a SuperLink and 3 SuperNodes x 50 virtual clients on localhost, 2 rounds, 10% of the 150 clients per
    round (several nodes train each round); the global model equals the simulator's within PARAM_TOL; every
    process started is stopped."""
    from spikefed.deploy.flower_launch import run_demo

    settings = _settings(3, 50, 2, 0.1, local_steps=4)
    cfgs = [" ".join(f"{k}={v}" for k, v in c.items()) for c in _node_cfgs(3, 50)]
    pids: list[int] = []
    summary = run_demo(tmp_path / "demo", 3, {"settings": json.dumps(settings)}, timeout=240.0, node_configs=cfgs,
                       record=pids)
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if pid_alive(p)]
    sim = _simulate(settings)
    rows = _rows(tmp_path / "demo" / "out")
    for rnd, row in enumerate(rows, 1):
        sampled = sim.sample_clients(rnd)
        assert row["clients"] == row["accepted"] == len(sampled) == 15
        assert len({c // 50 for c in sampled}) >= 2  # several nodes train in this round
    assert _max_diff(torch.load(tmp_path / "demo" / "out" / "global.pt"), sim.state.global_params) <= PARAM_TOL
    assert summary["final_accuracy"] == pytest.approx(sim.state.metrics[-1]["accuracy"], abs=ACC_TOL)
    assert summary["total_bytes_up"] == sim.state.bytes_up
