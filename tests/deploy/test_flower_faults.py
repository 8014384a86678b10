"""Rounds that go on in a deployment (issue 20), in one process: the real ServerApp (``server_main``) and
ClientApp behind a scripted Grid whose nodes go offline, hang, come back, or hand over stale replies.

References: the FedAvg formula (sample-weighted mean of the client models that replied, trained here with the
simulator's client half), the simulator's own run (``Simulation.run_round``, bit for bit, for rounds where every
node answers and for a resumed run), hand counts of the scripted faults.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

pytest.importorskip("flwr", reason="Flower (flwr) is not installed")

from flwr.app import Context, Error, Message, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from spikefed.deploy.flower import DeploymentError, server_main  # noqa: E402
from spikefed.deploy.flower_nodes import FlowerTrainer, NodeRoster  # noqa: E402
from spikefed.experiment.config import RunSettings  # noqa: E402
from spikefed.experiment.runner import build_spec  # noqa: E402
from spikefed.federated.simulation import Simulation, build_client, client_generator, train_local  # noqa: E402
from spikefed.federated.types import FitInstructions  # noqa: E402


def _settings(rounds: int, **federation: Any) -> dict[str, Any]:
    return {"partition": {"num_clients": 3}, "local": {"epochs": 1, "local_steps": 3},  # short: fast tests
            "federation": {"fraction": 1.0, "engine": "sequential", "rounds": rounds, **federation}}


class ScriptedGrid:
    """Flower's Grid (push / pull / node ids) over in-process ClientApps. ``script(round, grid)`` runs right after
    the TRAIN messages of a round were pushed (those already answered, except by hung nodes): it may take nodes
    offline, add nodes, hang or release them. ``leak``: pulls hand over every reply held, asked for or not (a
    link that delivers stale replies)."""

    def __init__(self, settings: dict[str, Any], script: Callable[[int, "ScriptedGrid"], None] | None = None,
                 leak: bool = False, **run: Any) -> None:
        from spikefed.deploy.flower_app import client_app

        self.app = client_app
        self.run_config = {"settings": json.dumps(settings), **run}
        self.nodes: dict[int, tuple[dict[str, Any], RecordDict]] = {}
        self.offline: set[int] = set()
        self.hung: set[int] = set()
        self.inbox: dict[str, Message] = {}
        self.withheld: dict[str, Message] = {}
        self.script, self.leak, self.count = script, leak, 0
        self.train_pushed: list[tuple[int, int]] = []  # (round, node id) of every TRAIN message
        for i in range(3):
            self.add_node(7000 + i, i)

    def add_node(self, nid: int, partition: int) -> None:
        self.nodes[nid] = ({"partition-id": partition, "num-partitions": 3}, RecordDict())

    def get_node_ids(self) -> list[int]:
        return [n for n in self.nodes if n not in self.offline]

    def push_messages(self, messages: Any) -> list[str]:
        ids, rounds = [], set()
        for m in messages:
            self.count += 1
            m.metadata.__dict__["_message_id"] = f"msg-{self.count}"
            ids.append(m.metadata.message_id)
            nid = m.metadata.dst_node_id
            if m.metadata.message_type == "train":
                rnd = int(m.content["fit"]["round"])
                rounds.add(rnd)
                self.train_pushed.append((rnd, nid))
            if nid in self.offline:
                continue  # delivered to nobody
            cfg, state = self.nodes[nid]
            ctx = Context(run_id=1, node_id=nid, node_config=cfg, state=state, run_config=self.run_config)
            m = copy.deepcopy(m)
            try:
                r = self.app(m, ctx)
            except Exception as e:  # noqa: BLE001 - what a SuperNode does with a ClientApp exception
                r = Message(Error(code=2, reason=f"<class '{type(e).__name__}'>:<'{e}'>"), reply_to=m)
            held = nid in self.hung and m.metadata.message_type == "train"  # a hung node's training never ends
            (self.withheld if held else self.inbox)[r.metadata.reply_to_message_id] = r
        for rnd in sorted(rounds):
            if self.script is not None:
                self.script(rnd, self)
        return ids

    def release(self) -> None:
        """Hung nodes wake up: their held replies reach the SuperLink."""
        self.inbox.update(self.withheld)
        self.withheld.clear()
        self.hung.clear()

    def pull_messages(self, message_ids: Any) -> list[Message]:
        wanted = list(self.inbox) if self.leak else [i for i in message_ids if i in self.inbox]
        return [self.inbox.pop(i) for i in wanted]


class _Ctx:
    def __init__(self, run_config: dict[str, Any]) -> None:
        self.run_config = run_config
        self.run_id, self.node_id, self.node_config, self.series_id = 1, 0, {}, 0
        self.state = RecordDict()


@pytest.fixture(autouse=True)
def task_identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def _run(grid: ScriptedGrid, out: Path, **run: Any) -> dict[str, Any]:
    ctx = _Ctx({**grid.run_config, "out-dir": str(out), **run})
    return server_main(grid, ctx)


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def _simulate(settings: dict[str, Any], rounds: int) -> Simulation:
    sim = Simulation(build_spec(RunSettings.model_validate(settings)))
    while sim.state.round < rounds:
        sim.run_round()
    return sim


def test_a_node_that_goes_away_is_dropped_and_the_round_averages_the_others(tmp_path):
    settings = _settings(2)
    grid = ScriptedGrid(settings, lambda rnd, g: g.offline.add(7001) if rnd == 1 else None)  # dies after round 1
    summary = _run(grid, tmp_path)
    rows = _rows(tmp_path)
    assert [(r["clients"], r["accepted"], r["dropped"], r["late"]) for r in rows] == [(3, 3, 0, 0), (3, 2, 1, 0)]
    assert rows[1]["fault_clients"]["dropped"] == [1]
    assert (1, 7001) in grid.train_pushed and (2, 7001) not in grid.train_pushed  # nothing sent to a dead node
    assert (summary["dropped"], summary["late"]) == (1, 0)  # the summary sums the rows
    assert json.loads((tmp_path / "summary.json").read_text())["dropped"] == 1
    assert "dropped" in (tmp_path / "report.html").read_text()
    # round 1: everybody answered -> the simulator's round 1, bit for bit
    sim = _simulate(settings, 1)
    after1 = sim.state.global_params
    # round 2: the FedAvg formula (sample-weighted mean) over the two clients that replied, trained here with
    # the simulator's client half
    spec = sim.spec
    fit = FitInstructions(round=2, prox_mu=0.0)
    models = {c: train_local(spec, after1, [build_client(spec, c)], [client_generator(spec.seed, 2, c)], fit, None,
                             None)[0].params for c in (0, 2)}
    n = {c: len(spec.parts[c]) for c in (0, 2)}
    got = torch.load(tmp_path / "global.pt")
    for k in after1:
        want = (n[0] * models[0][k].double() + n[2] * models[2][k].double()) / (n[0] + n[2])
        assert torch.allclose(got[k].double(), want, atol=1e-6), k


def test_a_restarted_node_rejoins_at_the_next_round(tmp_path):
    def script(rnd: int, grid: ScriptedGrid) -> None:
        if rnd == 1:
            grid.offline.add(7001)  # the SuperNode of partition 1 dies after round 1 ...
        if rnd == 2:
            grid.add_node(8001, 1)  # ... and is restarted (Flower gives it a new node id) during round 2

    grid = ScriptedGrid(_settings(3), script)
    _run(grid, tmp_path)
    rows = _rows(tmp_path)
    assert [(r["accepted"], r["dropped"]) for r in rows] == [(3, 0), (2, 1), (3, 0)]
    assert rows[2]["fault_clients"]["rejoined"] == [1]
    assert [n for r, n in grid.train_pushed if r == 3] == [7000, 8001, 7002]


def test_a_hung_node_ends_the_round_at_its_deadline_and_its_late_reply_is_never_averaged_in(tmp_path):
    settings = _settings(2)
    deadline = 1.5
    grid = ScriptedGrid(settings, leak=True)
    grid.hung.add(7002)  # hung in round 1; wakes up in round 2, when its round-1 reply reaches the SuperLink
    grid.script = lambda rnd, g: g.release() if rnd == 2 else None
    _run(grid, tmp_path / "leak", **{"round-timeout": deadline})
    rows = _rows(tmp_path / "leak")
    assert [(r["accepted"], r["dropped"], r["late"]) for r in rows] == [(2, 0, 1), (3, 0, 0)]
    assert rows[0]["fault_clients"]["late"] == [2]
    assert deadline <= rows[0]["fault_clients"]["waited_s"] < deadline + 30  # it waited for its deadline
    assert rows[1]["fault_clients"]["stale_replies"] == 1  # round 1's late reply came in round 2: discarded
    # reference: the same run where the late reply never arrives at all
    ref = ScriptedGrid(settings)
    ref.hung.add(7002)
    ref.script = lambda rnd, g: (g.withheld.clear(), g.hung.clear()) if rnd == 1 else None
    _run(ref, tmp_path / "ref", **{"round-timeout": deadline})
    got, want = torch.load(tmp_path / "leak" / "global.pt"), torch.load(tmp_path / "ref" / "global.pt")
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_round_with_fewer_replies_than_min_clients_is_skipped_and_keeps_the_model(tmp_path):
    settings = _settings(2, min_clients=2)
    grid = ScriptedGrid(settings, lambda rnd, g: g.offline.update({7001, 7002}) if rnd == 1 else None)
    _run(grid, tmp_path)
    rows = _rows(tmp_path)
    assert "skipped" not in rows[0] and "min_clients=2" in rows[1]["skipped"]
    assert (rows[1]["accepted"], rows[1]["dropped"]) == (0, 2)
    sim = _simulate(settings, 1)  # round 2 kept round 1's model
    got = torch.load(tmp_path / "global.pt")
    assert all(torch.equal(got[k], t) for k, t in sim.state.global_params.items())
    assert json.loads((tmp_path / "summary.json").read_text())["skipped_rounds"] == 1


class _Death(RuntimeError):
    pass


def test_a_server_that_dies_resumes_from_its_checkpoint_with_the_uninterrupted_result(tmp_path):
    settings = _settings(3)

    def die(rnd: int, grid: ScriptedGrid) -> None:
        if rnd == 3:
            raise _Death("the ServerApp process was killed")

    with pytest.raises(_Death):
        _run(ScriptedGrid(settings, die), tmp_path)
    assert len(_rows(tmp_path)) == 2  # rounds 1-2 are in the checkpoint
    fresh = ScriptedGrid(settings)  # new SuperLink state: the nodes reconnect (same node ids are not needed)
    summary = _run(fresh, tmp_path, resume=True)
    assert [r["round"] for r in _rows(tmp_path)] == [1, 2, 3]
    assert {r for r, _ in fresh.train_pushed} == {3}  # only the missing round ran again
    sim = _simulate(settings, 3)
    got = torch.load(tmp_path / "global.pt")
    assert all(torch.equal(got[k], t) for k, t in sim.state.global_params.items())
    assert summary["final_accuracy"] == sim.state.metrics[-1]["accuracy"]
    with pytest.raises(Exception, match="resume.*needs 'out-dir'"):
        server_main(ScriptedGrid(settings), _Ctx({**fresh.run_config, "resume": True}))


def test_the_trainer_uses_only_replies_to_this_rounds_messages_from_the_addressed_node():
    """A reply to another round's message, or from another node than the one addressed, is discarded."""
    settings = _settings(1)
    grid = ScriptedGrid(settings, leak=True)
    roster = NodeRoster(grid, 3)
    roster.discover(5.0, 1)
    trainer = FlowerTrainer(grid, roster, timeout=2.0)
    sim = Simulation(build_spec(RunSettings.model_validate(settings)))
    fit = FitInstructions(round=1, prox_mu=0.0)
    roster.nodes[1] = 7002  # partition 1 addressed to the node that holds partition 2: it refuses (error reply)
    uploads = trainer(1, sim.state.global_params, [0, 1], fit, None)
    assert [u.client_id for u in uploads] == [0, 1]
    assert uploads[1].error is not None and "holds partition 2" in uploads[1].error  # a failure is a rejection
    out = trainer.outcomes[1]
    assert (out.dropped, out.late) == ([], [])


def test_bad_node_configs_after_the_start_are_ignored_and_a_duplicate_at_the_start_is_an_error():
    settings = _settings(1)
    grid = ScriptedGrid(settings)
    grid.add_node(7003, 0)
    with pytest.raises(DeploymentError, match="both declare partition-id=0"):
        NodeRoster(grid, 3).discover(5.0, 1)
    grid = ScriptedGrid(settings)
    roster = NodeRoster(grid, 3)
    roster.discover(5.0, 1)
    grid.nodes[7009] = ({"partition-id": 1, "num-partitions": 5}, RecordDict())  # a misconfigured newcomer
    roster.refresh(5.0)
    assert roster.nodes == {0: 7000, 1: 7001, 2: 7002} and "num-partitions=5" in roster.refused[7009]


def test_resume_options_fail_clearly(tmp_path):
    from typer.testing import CliRunner

    from spikefed.cli import app
    from spikefed.deploy.flower import run_option
    from spikefed.experiment.config import ConfigError

    with pytest.raises(ConfigError, match="'resume' must be true or false"):
        run_option({"resume": "yes"}, "resume")
    res = CliRunner().invoke(app, ["flower", "demo", "--resume"])
    assert res.exit_code == 2 and "--resume needs --workdir" in res.output
    res = CliRunner().invoke(app, ["flower", "demo", "--resume", "--workdir", str(tmp_path)])
    assert res.exit_code == 2 and "checkpoint.pt" in res.output


def test_simulated_faults_are_summed_under_the_same_names(tmp_path):
    from spikefed.experiment.runner import run_experiment

    settings = RunSettings.model_validate({**_settings(3), "faults": {"dropout": 0.4}})
    summary = run_experiment(settings, tmp_path)
    rows = _rows(tmp_path)
    assert summary["dropped"] == sum(r["dropped"] for r in rows) > 0
    assert (summary["late"], summary["partial"]) == (0, 0) and "skipped_rounds" not in summary
    plain = run_experiment(RunSettings.model_validate(_settings(1)), tmp_path / "plain")
    assert "dropped" not in plain  # a run without fault records keeps its summary as it was
