"""spikefed on Flower: the deployment path (issue 6).

Fast tests run the real ServerApp/ClientApp objects in one process through :class:`LoopbackGrid` (Flower's own
``ClientApp.__call__`` with its mods; only the transport is replaced). Slow tests start real SuperLink and
SuperNode processes on 127.0.0.1 through ``spikefed flower demo`` and check that none is left behind.

References: the in-process simulator (``Simulation.run_round``) for the global model, the SecAgg+ quantization
bound for the secure aggregate, ``cryptography``'s signature check for the certificates, ``/proc`` for processes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

flwr = pytest.importorskip("flwr", reason="Flower (flwr) is not installed: pip install 'flwr>=1.40,<1.42'")

from flwr.app import Context, Error, Message, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from spikefed.experiment.config import ConfigError, RunSettings  # noqa: E402
from spikefed.experiment.runner import build_spec  # noqa: E402
from spikefed.deploy.flower import (RUN_CONFIG_DEFAULTS, DeploymentError, node_settings,  # noqa: E402
                                       server_main, settings_from_run_config)
from spikefed.deploy.processes import descendants, kill_tree, pid_alive  # noqa: E402
from spikefed.deploy.flower_launch import LaunchError, app_pyproject, run_demo  # noqa: E402
from spikefed.deploy.flower_secagg import secagg_tolerance  # noqa: E402
from spikefed.federated.serialization import decode_params  # noqa: E402
from spikefed.federated.simulation import Simulation  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"local": {"epochs": 1}, "federation": {"fraction": 1.0, "engine": "sequential"}}


def _settings(num_clients: int, rounds: int, **extra: Any) -> dict[str, Any]:
    d = json.loads(json.dumps(SMALL))
    d["partition"] = {"num_clients": num_clients}
    d["federation"]["rounds"] = rounds
    for k, v in extra.items():
        d.setdefault(k, {}).update(v)
    return d


def _simulate(settings: dict[str, Any]) -> Simulation:
    sim = Simulation(build_spec(RunSettings.model_validate(settings)))
    while sim.state.round < sim.spec.rounds:
        sim.run_round()
    return sim


class LoopbackGrid:
    """A Grid whose messages go straight to the ClientApp of in-process "nodes" (node config + state each).
    A ClientApp exception becomes an error reply, as a SuperNode sends it. Every message is recorded."""

    def __init__(self, node_configs: list[dict[str, Any]], run_config: dict[str, Any]) -> None:
        from spikefed.deploy.flower_app import client_app

        self.app = client_app
        self.nodes = {7000 + i: (cfg, RecordDict()) for i, cfg in enumerate(node_configs)}
        self.run_config = run_config
        self.sent: list[Message] = []
        self.replies: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        out = []
        for m in messages:
            cfg, state = self.nodes[m.metadata.dst_node_id]
            ctx = Context(run_id=1, node_id=m.metadata.dst_node_id, node_config=cfg, state=state,
                          run_config=self.run_config)
            self.sent.append(m)
            m = copy.deepcopy(m)  # a node gets its own copy (the wire); handlers may modify what they receive
            try:
                r = self.app(m, ctx)
            except Exception as e:  # noqa: BLE001 - what a SuperNode does with a ClientApp exception
                r = Message(Error(code=2, reason=f"<class '{type(e).__name__}'>:<'{e}'>"), reply_to=m)
            self.replies.append(r)
            out.append(r)
        return out

    # the Grid's push / pull interface (what the ServerApp's rounds use): messages are answered on push
    def push_messages(self, messages: Any) -> list[str]:
        ids = []
        for m in messages:
            self.pushed = getattr(self, "pushed", 0) + 1
            m.metadata.__dict__["_message_id"] = f"msg-{self.pushed}"  # Flower's Grid sets an id when pushing
            ids.append(m.metadata.message_id)
        self.inbox = {**getattr(self, "inbox", {}),
                      **{r.metadata.reply_to_message_id: r for r in self.send_and_receive(messages)}}
        return ids

    def pull_messages(self, message_ids: Any) -> list[Message]:
        inbox = getattr(self, "inbox", {})
        return [inbox.pop(i) for i in list(message_ids) if i in inbox]


class _Ctx:
    def __init__(self, run_config: dict[str, Any]) -> None:
        self.run_config = run_config
        self.run_id, self.node_id, self.node_config, self.series_id = 1, 0, {}, 0
        self.state = RecordDict()


@pytest.fixture
def task_identity():
    """Messages created outside a Flower process need a task identity (run / node / task id)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def _nodes(n: int) -> list[dict[str, Any]]:
    return [{"partition-id": i, "num-partitions": n} for i in range(n)]


def _loopback(settings: dict[str, Any], nodes: list[dict[str, Any]], **run: Any) -> tuple[LoopbackGrid, Any]:
    rc = {"settings": json.dumps(settings), **run}
    grid = LoopbackGrid(nodes, rc)
    ctx = _Ctx(rc)
    return grid, ctx


# -- configuration and node config -------------------------------------------------------------------------------
def test_node_config_errors_name_the_key():
    assert node_settings({"partition-id": 1, "num-partitions": 3}).partition_id == 1
    with pytest.raises(DeploymentError, match="lacks 'partition-id'"):
        node_settings({"num-partitions": 3})
    with pytest.raises(DeploymentError, match="lacks 'num-partitions'"):
        node_settings({"partition-id": 0})
    with pytest.raises(DeploymentError, match="'partition-id' must be an integer"):
        node_settings({"partition-id": "0", "num-partitions": 3})
    with pytest.raises(DeploymentError, match=r"partition-id=3 must lie in \[0, num-partitions=3\)"):
        node_settings({"partition-id": 3, "num-partitions": 3})


def test_run_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="unknown key"):
        settings_from_run_config({"settings": "", "rounds": 3})
    with pytest.raises(ConfigError, match="not valid JSON"):
        settings_from_run_config({"settings": "{bad"})
    with pytest.raises(ConfigError, match="federation.nope"):
        settings_from_run_config({"settings": json.dumps({"federation": {"nope": 1}})})
    with pytest.raises(ConfigError, match="scaffold is not supported"):
        settings_from_run_config({"set": "federation.strategy=scaffold"})
    with pytest.raises(ConfigError, match="faults"):
        settings_from_run_config({"set": "faults.dropout=0.5"})
    with pytest.raises(ConfigError, match="continual: task streams"):
        settings_from_run_config({"set": "continual.stream=class_incremental"})
    s = settings_from_run_config({"settings": json.dumps({"seed": 4}), "set": "federation.rounds=2"})
    assert (s.seed, s.federation.rounds) == (4, 2)


def test_app_definition_in_pyproject_matches_the_demo_and_validates():
    from flwr.common.config import validate_config

    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    demo = tomllib.loads(app_pyproject())
    assert root["tool"]["flwr"]["app"] == demo["tool"]["flwr"]["app"]
    assert root["tool"]["flwr"]["app"]["config"] == RUN_CONFIG_DEFAULTS
    ok, errors, _ = validate_config(root, check_module=True, project_dir=ROOT)
    assert ok, errors


def _assert_same_model(path: Path, sim: Simulation) -> None:
    dep = torch.load(path)
    for n, t in sim.state.global_params.items():
        assert torch.equal(dep[n], t), n


def _deploy_and_simulate(settings: dict[str, Any], out: Path) -> tuple[LoopbackGrid, dict[str, Any], Simulation]:
    """The same experiment through the Flower apps (loopback) and the simulator: bit-identical global models."""
    n = settings["partition"]["num_clients"]
    grid, ctx = _loopback(settings, _nodes(n), **{"out-dir": str(out)})
    summary = server_main(grid, ctx)
    sim = _simulate(settings)
    _assert_same_model(out / "global.pt", sim)
    return grid, summary, sim


# -- the round through Flower's message layer, in process ---------------------------------------------------------
def test_deployment_equals_simulation_and_messages_carry_only_parameters_and_metrics(task_identity, tmp_path):
    settings = _settings(2, 2)
    grid, summary, sim = _deploy_and_simulate(settings, tmp_path)  # the same model, bit for bit
    assert summary["total_bytes_up"] == sim.state.bytes_up
    assert summary["final_accuracy"] == sim.state.metrics[-1]["accuracy"]
    spec = build_spec(RunSettings.model_validate(settings))
    shapes = {n: tuple(p.shape) for n, p in spec.model.named_parameters()}
    samples = [spec.data.x_train[torch.as_tensor(np.asarray(p[:5]))].to(torch.float32) for p in spec.parts]
    sample_bytes = [row.numpy().tobytes() for block in samples for row in block]
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert len(train) == 4  # 2 clients x 2 rounds
    for m in grid.sent:  # server -> node: model parameters and scalar settings only
        for name, rec in m.content.array_records.items():
            assert name == "global"
            assert {k: tuple(a.shape) for k, a in rec.items()} == shapes
        for rec in m.content.config_records.values():
            assert all(isinstance(v, (int, float, str)) for v in rec.values())
    n_payload = 0
    for r in grid.replies:  # node -> server: one uint8 payload that decodes to parameter-shaped deltas + metrics
        assert not r.has_error()
        for name, rec in r.content.array_records.items():
            assert name == "update" and list(rec.keys()) == ["payload"]
            arr = rec["payload"].numpy()
            assert arr.dtype == np.uint8 and arr.ndim == 1
            decoded = decode_params(arr.tobytes())
            assert {k: tuple(v.shape) for k, v in decoded.items()} == shapes
            raw = arr.tobytes()
            assert not any(b in raw for b in sample_bytes)  # no training sample travels
            n_payload += len(raw)
        for rec in r.content.metric_records.values():
            assert set(rec) <= {"num-samples", "steps", "loss", "accuracy", "firing_rate"}
            assert all(isinstance(v, (int, float)) for v in rec.values())
        for rec in r.content.config_records.values():  # query replies: the node config and a sample count
            assert set(rec) == {"partition-id", "num-partitions", "num-samples"}
    assert n_payload == sim.state.bytes_up


def test_deployment_with_compression_keeps_error_feedback_on_the_node(task_identity, tmp_path):
    settings = _settings(2, 2, compression={"uplink": "topk", "fraction": 0.1})
    grid, summary, sim = _deploy_and_simulate(settings, tmp_path)
    assert summary["total_bytes_up"] == sim.state.bytes_up
    assert summary["final_accuracy"] == sim.state.metrics[-1]["accuracy"]
    for cfg, state in grid.nodes.values():  # the residual lives in the node's context.state, as in the simulator
        cid = cfg["partition-id"]
        saved = state.array_records["spikefed.client-state"]
        for n, t in sim.state.client_state[cid]["ef_residual"].items():
            assert torch.equal(torch.from_numpy(saved[n].numpy()), t)


def test_device_fleet_nodes_train_through_their_device_profile(task_identity, tmp_path):
    fleet = {"fleet": [{"profile": "analog20", "fraction": 0.5}, {"profile": "coarse_dt", "fraction": 0.5}]}
    settings = _settings(2, 1, devices=fleet, federation={"engine": "cohort"})  # fleets need the batched engine
    spec = build_spec(RunSettings.model_validate(settings))
    profiles = [p.name for p in spec.fleet.profiles]
    assert sorted(profiles) == ["analog20", "coarse_dt"]  # different dt: separate cohorts
    nodes = [{"partition-id": i, "num-partitions": 2, "device-profile": profiles[i]} for i in range(2)]
    grid, ctx = _loopback(settings, nodes, **{"out-dir": str(tmp_path)})
    summary = server_main(grid, ctx)
    sim = _simulate(settings)  # one client per device group: the cohort engine trains each alone here too
    _assert_same_model(tmp_path / "global.pt", sim)
    assert summary["devices"]["final_accuracy_by_device"] == sim.state.metrics[-1]["accuracy_by_device"]
    nodes[0]["device-profile"] = profiles[1]
    grid, ctx = _loopback(settings, nodes)
    with pytest.raises(DeploymentError, match=f"device-profile='{profiles[1]}' does not match .* assigns "
                                              f"'{profiles[0]}' to partition 0"):
        server_main(grid, ctx)


def test_dp_settings_apply_in_deployment_as_in_simulation(task_identity, tmp_path):
    settings = _settings(2, 2, privacy={"dp": True, "noise_multiplier": 0.5, "clip": 1.0})
    _, summary, sim = _deploy_and_simulate(settings, tmp_path)
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["dp_epsilon"] for r in rows] == [r["dp_epsilon"] for r in sim.state.metrics]
    stage = sim.stage("privacy")
    assert summary["privacy"]["epsilon"] == pytest.approx(stage.engine.summary(stage.state)["epsilon"])


def test_mismatched_node_config_and_missing_nodes_fail_with_a_clear_error(task_identity, tmp_path):
    grid, ctx = _loopback(_settings(2, 1), [{"partition-id": 0, "num-partitions": 3},
                                             {"partition-id": 1, "num-partitions": 3}])
    ctx.run_config["out-dir"] = str(tmp_path)
    with pytest.raises(DeploymentError, match="num-partitions=3 does not match the run's partition.num_clients=2"):
        server_main(grid, ctx)
    assert "num-partitions=3" in (tmp_path / "error.txt").read_text()
    grid, ctx = _loopback(_settings(2, 1), [{"num-partitions": 2}, {"partition-id": 1, "num-partitions": 2}])
    with pytest.raises(DeploymentError, match="lacks 'partition-id'"):
        server_main(grid, ctx)
    # too few nodes for federation.min_clients: a clear error after node-timeout
    grid, ctx = _loopback(_settings(2, 1, federation={"min_clients": 2}), _nodes(2)[:1], **{"node-timeout": 0.5})
    start = time.monotonic()
    with pytest.raises(DeploymentError, match=r"only 1 of the 2 SuperNodes .* fewer than federation.min_clients=2; "
                                              r"missing partition-id \[1\]"):
        server_main(grid, ctx)
    assert time.monotonic() - start < 60  # bounded (the wait is node-timeout = 0.5 s)
    grid, ctx = _loopback(_settings(2, 1), [{"partition-id": 0, "num-partitions": 2}] * 2)
    with pytest.raises(DeploymentError, match="both declare partition-id=0"):
        server_main(grid, ctx)


def test_secaggplus_aggregate_equals_the_plain_aggregate_within_the_quantization_bound(task_identity, tmp_path):
    settings = _settings(3, 1)
    grid, ctx = _loopback(settings, _nodes(3), secure="secaggplus", **{"out-dir": str(tmp_path)})
    server_main(grid, ctx)
    stages = {m.content.config_records["secaggplus_configs"]["stage"] for m in grid.sent
              if "secaggplus_configs" in m.content.config_records}
    assert stages == {"setup", "share_keys", "collect_masked_vectors", "unmask"}
    # the masked-vector replies carry no plain parameter arrays (the mod clears them)
    for r in grid.replies:
        assert all(len(rec) == 0 for rec in r.content.array_records.values())
    sim = _simulate(settings)
    init = Simulation(build_spec(RunSettings.model_validate(settings))).state.global_params
    dep = torch.load(tmp_path / "global.pt")
    tol = secagg_tolerance([len(p) for p in sim.spec.parts], 8.0, 4194304)
    for n, t in sim.state.global_params.items():
        bound = tol + 4 * 2.0 ** -23 * float(t.abs().max())  # + float32 rounding of the result
        assert float((dep[n] - t).abs().max()) <= bound, n
    moved = max(float((init[n] - t).abs().max()) for n, t in sim.state.global_params.items())
    assert moved > 100 * tol  # the round did change the model, far beyond the tolerance


# -- certificates, processes --------------------------------------------------------------------------------------
def test_certificates_chain_to_the_ca_and_cover_localhost(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

    from spikefed.deploy.flower_certs import make_certs, make_node_key

    c = make_certs(tmp_path)
    ca = x509.load_pem_x509_certificate(c.ca_cert.read_bytes())
    srv = x509.load_pem_x509_certificate(c.server_cert.read_bytes())
    ca.public_key().verify(srv.signature, srv.tbs_certificate_bytes, ec.ECDSA(srv.signature_hash_algorithm))
    assert srv.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    pub = make_node_key(tmp_path / "node0")
    key = load_ssh_private_key((tmp_path / "node0").read_bytes(), None)
    assert key.public_key().public_numbers() == load_ssh_public_key(pub.read_bytes()).public_numbers()


def test_kill_tree_stops_a_process_and_its_children():
    p = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(descendants(p.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    kids = descendants(p.pid)
    assert len(kids) == 2
    kill_tree(p.pid)
    p.wait(timeout=10)
    assert not any(pid_alive(k) for k in kids)


def test_cli_unreachable_superlink_and_mismatched_nodes_exit_nonzero_quickly(tmp_path):
    from typer.testing import CliRunner

    from spikefed.cli import app
    from spikefed.deploy.flower_launch import free_port

    runner = CliRunner()
    start = time.monotonic()
    res = runner.invoke(app, ["flower", "run", "--superlink", f"127.0.0.1:{free_port()}", "--insecure",
                              "--connect-timeout", "1"])
    assert res.exit_code == 1 and "unreachable within 1 s" in res.output
    assert time.monotonic() - start < 30
    res = runner.invoke(app, ["flower", "demo", "--nodes", "2", "--set", "partition.num_clients=3"])
    assert res.exit_code == 2 and "partition.num_clients=3 must equal --nodes 2" in res.output
    res = runner.invoke(app, ["flower", "demo", "--secure", "magic"])
    assert res.exit_code == 2 and "--secure must be one of" in res.output


# -- real processes ------------------------------------------------------------------------------------------------
def _demo(args: list[str], work: Path, timeout: float = 600) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": str(ROOT / "src")}
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "spikefed.cli", "flower", "demo", "--workdir", str(work), *args],
                         capture_output=True, text=True, timeout=timeout, env=env)
    return res, time.monotonic() - start


def _assert_nothing_left(pids: list[int], work: Path) -> None:
    assert pids, "the demo reported no PIDs"
    alive = [p for p in pids if pid_alive(p)]
    assert not alive, f"processes left behind: {alive}"
    marker = str(work)
    for entry in os.listdir("/proc"):  # nothing anywhere still runs with this demo's FLWR_HOME / files
        if entry.isdigit() and pid_alive(int(entry)):
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                env = Path(f"/proc/{entry}/environ").read_bytes().decode(errors="replace")
            except OSError:
                continue
            assert marker not in cmd and marker not in env, f"process {entry} still belongs to the demo: {cmd}"


# The plain real run (SuperLink + 3 SuperNodes, 3 rounds of FedAvg, accuracy above 0.8 and rising, every round's
# accuracy and the global model equal to the simulator's, progress streamed, no process left) is asserted by
# test_kill_9_of_the_superlink_restarts_and_resumes_with_the_uninterrupted_result in
# tests/deploy/test_flower_faults_real.py, the same run with its SuperLink killed and restarted after round 1 (one
# real federation instead of two).


@pytest.mark.slow
def test_real_tls_auth_secaggplus_run(tmp_path):
    """TLS (local CA), SuperNode authentication and SecAgg+ in one real run: the SuperLink serves HTTPS, the
    model is the simulator's within the SecAgg+ quantization bound, no process is left."""
    work = tmp_path / "secure"
    res, _ = _demo(["--nodes", "3", "--rounds", "1", "--json", "--tls", "--auth", "--secure", "secaggplus",
                    "--set", "federation.engine=sequential", "--set", "local.epochs=1"], work)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["tls"] and out["auth"] and out["secure"] == "secaggplus"
    assert "https://127.0.0.1" in (work / "superlink.log").read_text()
    _assert_nothing_left(out["pids"], work)
    sim = _simulate(_settings(3, 1))
    dep = torch.load(work / "out" / "global.pt")
    tol = secagg_tolerance([len(p) for p in sim.spec.parts], 8.0, 4194304)
    for n, t in sim.state.global_params.items():
        assert float((dep[n] - t).abs().max()) <= tol + 4 * 2.0 ** -23 * float(t.abs().max()), n


@pytest.mark.slow
def test_real_supernode_authentication_refuses_an_unregistered_key(tmp_path):
    """With --enable-supernode-auth a registered SuperNode activates; one with an unregistered key is refused."""
    from spikefed.deploy.flower_certs import make_node_key
    from spikefed.deploy.flower_launch import LocalFederation, free_port

    work = tmp_path / "auth"
    with LocalFederation(work, 1, tls=True, auth=True) as fed:
        fed.start()
        make_node_key(work / "intruder")
        intruder = fed._spawn("intruder", [
            "flower-supernode", "--root-certificates", str(fed.certs.ca_cert), "--superlink", fed.address,
            "--port", str(free_port()), "--max-retries", "2", "--max-wait-time", "20",
            "--auth-supernode-private-key", str(work / "intruder"), "--node-config", "partition-id=0 num-partitions=1"])
        assert intruder.popen.wait(timeout=120) != 0
        assert "Failed to activate SuperNode" in intruder.log.read_text()
        registered = fed.procs[1]
        deadline = time.monotonic() + 60
        while "SuperNode ID" not in registered.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert registered.popen.poll() is None and "SuperNode ID" in registered.log.read_text()
        pids = fed.stop()
    _assert_nothing_left(pids, work)


@pytest.mark.slow
def test_real_node_without_partition_id_fails_fast_and_cleans_up(tmp_path):
    work = tmp_path / "bad"
    start = time.monotonic()
    pids: list[int] = []
    with pytest.raises(LaunchError, match="lacks 'partition-id'") as info:
        run_demo(work, 2, {"settings": json.dumps(_settings(2, 1))}, timeout=300,
                 node_configs=["num-partitions=2", "partition-id=1 num-partitions=2"], record=pids)
    assert time.monotonic() - start < 300
    assert "the ServerApp failed" in str(info.value)
    _assert_nothing_left(pids, work)


@pytest.mark.slow
def test_real_demo_interrupted_with_ctrl_c_stops_every_process(tmp_path):
    import signal

    work = tmp_path / "int"
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.Popen([sys.executable, "-m", "spikefed.cli", "flower", "demo", "--nodes", "2", "--rounds", "5",
                          "--workdir", str(work)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (work / "supernode1.log").exists():
        time.sleep(0.2)
    time.sleep(3)  # the SuperNodes are up and connecting
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr[-2000:]
    assert "every process started was stopped" in stderr
    _assert_nothing_left([p.pid], work)


@pytest.mark.slow
def test_real_demo_killed_with_sigkill_leaves_nothing(tmp_path):
    """SIGKILL cannot be handled: the SuperLink, SuperNodes and flwr die with the demo (parent-death signal)."""
    from spikefed.deploy.processes import processes_with_env

    work = tmp_path / "kill"
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.Popen([sys.executable, "-m", "spikefed.cli", "flower", "demo", "--nodes", "2", "--workdir",
                          str(work)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (work / "supernode1.log").exists():
        time.sleep(0.2)
    time.sleep(5)
    assert processes_with_env("FLWR_HOME", str(work / "flwr-home"))  # the federation is running
    p.kill()
    p.wait(timeout=30)
    deadline = time.monotonic() + 60  # Flower's SuperExec notices its dead parent by polling
    while time.monotonic() < deadline and processes_with_env("FLWR_HOME", str(work / "flwr-home")):
        time.sleep(0.5)
    assert processes_with_env("FLWR_HOME", str(work / "flwr-home")) == []


def test_bound_formula_matches_hand_computation():
    # K = 2 clients of 100 and 50 samples, R = 1, Q = 4: ratios 1 and 0.5, step 2R/Q = 0.5 -> 2 * 0.5 / 1.5
    assert math.isclose(secagg_tolerance([100, 50], 1.0, 4), 2 * 0.5 / 1.5)
