"""Rounds that go on when SuperNodes die, hang or come back (the ServerApp's view of its nodes).

Three pieces, all driven by the simulator's round (:meth:`spikefed.federated.simulation.Simulation.run_round`):

- :class:`NodeRoster`: partition id -> SuperNode id, kept current. Before every round it asks every SuperNode it
  has not seen yet for its node config (a restarted SuperNode connects with a new node id); the newest node that
  declares a partition serves it from then on, so a restarted node rejoins at the next round.
- :class:`FlowerTrainer`: the round's remote trainer. It pushes one TRAIN message per client, or per node that
  hosts a cohort of virtual clients (:mod:`spikefed.deploy.flower_cohort`; all its sampled clients in one message,
  and a node that goes away takes all of them with it: each is *dropped* or *late*) (time to live: the
  round's deadline, so a node that wakes up later never trains on a stale round), then pulls replies until every
  client answered, its node went offline, or the deadline passed. A reply is used only if it answers a message of
  *this* round (``reply_to_message_id`` among this round's message ids, ``group_id`` the round, sent by the
  addressed node): a late reply of an earlier round is discarded, never averaged in.
- :class:`NodeFaultStage`: the round's ``faults`` stage in a deployment. It records what happened with the
  simulator's vocabulary (:class:`~spikefed.federated.faults.FaultPlan`): a sampled client whose node is not
  online at the round's start, or goes offline during it, is *dropped*; one whose node is online but has not
  replied by the deadline is *late* (its work is discarded, as ``late_policy = "drop"``); a node that replies
  with an error (the ClientApp raised) is a *rejection* with the reason, like a bad upload. The metrics row gets
  the same ``dropped`` / ``late`` / ``partial`` / ``mean_tau`` entries as a simulated run (plus the ids, under
  ``fault_clients``). A round in which fewer than ``federation.min_clients`` updates were accepted is skipped:
  the global model is kept, the row says why (``skipped``).

Liveness is Flower's: a SuperNode sends a heartbeat every 17.5-22.5 s ((0.8 +- 0.1) x (30 s - 5 s)) and the
SuperLink lists it offline about 60 s after the last one (flwr 1.41: ``HEARTBEAT_DEFAULT_INTERVAL`` = 30 s,
patience 2). A node that was killed is therefore *late* in the rounds whose deadline passes before Flower
notices, and *dropped* from then on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..federated.faults import FaultPlan
from ..federated.round import RoundContext, Stage
from ..federated.types import ParamDict, Upload
from .flower import (MSG_QUERY, MSG_TRAIN, NODE_KEY, DeploymentError, error_text, train_content,
                     upload_from_reply)

log = logging.getLogger("spikefed.flower")

#: seconds between two polls of the SuperLink while a round waits for replies
POLL_S = 0.5
#: Flower's error codes for a message whose node is gone (``flwr.common.constant.ErrorCode``)
NODE_UNAVAILABLE, REPLY_UNAVAILABLE, MESSAGE_UNAVAILABLE = 5, 4, 3


def _online(grid: Any) -> set[int]:
    return {int(n) for n in grid.get_node_ids()}


def _declared_clients(record: Any, num_clients: int) -> list[int] | None:
    """The clients a node's QUERY answer declares: ``None`` for a one-client node (its ``partition-id``), the
    list of virtual clients for a cohort node; ``ValueError`` for an id out of range or named twice."""
    if "clients" not in record:
        pid = int(record["partition-id"])
        if not 0 <= pid < num_clients:
            raise ValueError(f"partition-id {pid} outside [0, {num_clients})")
        return None
    clients = record["clients"]
    if not isinstance(clients, list) or not clients or not all(isinstance(c, int) for c in clients):
        raise ValueError(f"'clients' must be a non-empty list of integers, got {clients!r}")
    bad = sorted(c for c in clients if not 0 <= c < num_clients)
    if bad:
        raise ValueError(f"virtual client(s) {bad[:5]} outside [0, {num_clients}) (partition.num_clients)")
    if len(set(clients)) != len(clients):
        raise ValueError("a virtual client is declared twice")
    return [int(c) for c in clients]


def _short(ids: list[int], shown: int = 10) -> str:
    """A list of client ids for a log line: all of them, or the first ``shown`` and how many there are."""
    return str(ids) if len(ids) <= shown else f"{ids[:shown]}... ({len(ids)} in all)"


def _error_code(msg: Any) -> int | None:
    try:
        return int(msg.error.code)
    except (AttributeError, TypeError, ValueError):
        return None


@dataclass
class NodeRoster:
    """Which SuperNode serves which partition; ``nodes`` is updated in place (other stages may hold it)."""

    grid: Any
    num_partitions: int
    nodes: dict[int, int] = field(default_factory=dict)  # partition id -> node id
    asked: set[int] = field(default_factory=set)  # node ids asked for their node config
    pending: dict[str, int] = field(default_factory=dict)  # query message id -> node id
    refused: dict[int, str] = field(default_factory=dict)  # node id -> why it serves nothing
    rejoined: list[int] = field(default_factory=list)  # partitions whose node changed at the last refresh
    cohort: set[int] = field(default_factory=set)  # node ids that host a cohort of virtual clients

    def online(self) -> set[int]:
        return _online(self.grid)

    def available(self) -> dict[int, int]:
        """The partitions whose node is online now: partition id -> node id."""
        online = self.online()
        return {p: n for p, n in self.nodes.items() if n in online}

    def ask_new(self, online: set[int]) -> None:
        """Send the node-config QUERY to every online node not asked yet."""
        from flwr.app import ConfigRecord, Message, RecordDict

        new = sorted(online - self.asked)
        if not new:
            return
        self.asked.update(new)
        msgs = [Message(RecordDict({NODE_KEY: ConfigRecord({"ask": "node-config"})}), dst_node_id=nid,
                        message_type=MSG_QUERY) for nid in new]
        for nid, mid in zip(new, self.grid.push_messages(msgs)):
            if mid:
                self.pending[str(mid)] = nid

    def collect(self, strict: bool) -> None:
        """Read the answers to pending queries (no waiting). ``strict`` (the first discovery): a node that
        fails or two online nodes declaring one partition end the run with ``DeploymentError``; later a bad
        node is logged and ignored, and the newest node that declares a partition serves it."""
        if not self.pending:
            return
        found: dict[int, int] = {}
        for r in self.grid.pull_messages(list(self.pending)):
            nid = self.pending.pop(str(r.metadata.reply_to_message_id), None)
            if nid is None:
                continue
            if r.has_error():
                reason = (f"SuperNode {nid} went offline before it answered" if _error_code(r) in
                          (NODE_UNAVAILABLE, REPLY_UNAVAILABLE, MESSAGE_UNAVAILABLE) else
                          f"SuperNode {nid}: {error_text(r)}")
                if strict:
                    raise DeploymentError(reason)
                self.refused[nid] = reason
                log.warning("spikefed: %s; it serves no partition", reason)
                continue
            try:
                hosted = _declared_clients(r.content[NODE_KEY], self.num_partitions)
            except Exception as e:  # noqa: BLE001 - a node's answer is data
                reason = f"SuperNode {nid} sent a malformed node config: {e}"
                if strict:
                    raise DeploymentError(reason) from None
                self.refused[nid] = reason
                continue
            if hosted is None:  # one client: its partition
                pid = int(r.content[NODE_KEY]["partition-id"])
                clients = [pid]
            else:
                clients = hosted
                self.cohort.add(nid)
            for pid in clients:
                earlier = self.nodes.get(pid) if hosted is not None else None  # a cohort node of an earlier poll
                if strict and earlier is not None and earlier != nid:
                    raise DeploymentError(f"SuperNodes {earlier} and {nid} both declare virtual client {pid}")
                if strict and pid in found:
                    raise DeploymentError(f"SuperNodes {found[pid]} and {nid} both declare "
                                          + (f"partition-id={pid}" if hosted is None else f"virtual client {pid}"))
                found[pid] = nid
        moved: dict[tuple[int, int], list[int]] = {}
        for pid, nid in found.items():
            old = self.nodes.get(pid)
            if old is not None and old != nid:
                self.rejoined.append(pid)
                moved.setdefault((nid, old), []).append(pid)
            self.nodes[pid] = nid
        for (nid, old), pids in moved.items():
            what = f"partition {pids[0]}" if len(pids) == 1 else f"clients {pids[0]}..{pids[-1]} ({len(pids)})"
            print(f"spikefed: {what} rejoined on SuperNode {nid} (was {old})", flush=True)

    def discover(self, timeout: float, min_clients: int) -> dict[int, int]:
        """The first discovery: wait (at most ``timeout`` s) until every partition has a node, then go on with
        those that came if at least ``min_clients`` did; ``DeploymentError`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            online = self.online()
            self.ask_new(online)
            self.collect(strict=True)
            if len(self.nodes) == self.num_partitions and not self.pending:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        missing = sorted(set(range(self.num_partitions)) - set(self.nodes))
        if self.cohort:  # nodes that host virtual clients: count clients, not nodes
            hosts = len(set(self.nodes.values()))
            if len(self.nodes) < min_clients:
                raise DeploymentError(f"the {hosts} SuperNodes that connected within node-timeout={timeout:g} s "
                                      f"host {len(self.nodes)} of the {self.num_partitions} clients "
                                      f"(partition.num_clients), fewer than federation.min_clients={min_clients}")
            if missing:
                print(f"spikefed: {hosts} SuperNodes host {len(self.nodes)} of {self.num_partitions} clients; "
                      f"clients {_short(missing)} are dropped until a node that hosts them connects", flush=True)
            self.rejoined.clear()
            return self.nodes
        if len(self.nodes) < min_clients or not self.nodes:
            raise DeploymentError(f"only {len(self.nodes)} of the {self.num_partitions} SuperNodes "
                                  f"(partition.num_clients) connected within node-timeout={timeout:g} s, fewer "
                                  f"than federation.min_clients={min_clients}; missing partition-id {missing}")
        if missing:
            print(f"spikefed: {len(self.nodes)} of {self.num_partitions} SuperNodes connected within "
                  f"node-timeout={timeout:g} s; partitions {missing} are dropped until their node connects",
                  flush=True)
        self.rejoined.clear()
        return self.nodes

    def refresh(self, wait: float) -> None:
        """Before a round: ask nodes that connected since the last round for their node config and wait (at
        most ``wait`` s) for their answers, so a restarted node serves its partition in this round."""
        self.rejoined.clear()
        deadline = time.monotonic() + wait
        self.ask_new(self.online())
        while True:
            self.collect(strict=False)
            if not self.pending or time.monotonic() > deadline:
                break
            online = self.online()
            for mid, nid in list(self.pending.items()):  # a node that went away will not answer
                if nid not in online:
                    self.pending.pop(mid)
                    self.asked.discard(nid)
            time.sleep(POLL_S)


@dataclass
class RoundOutcome:
    """What the remote half of one round saw: clients whose node went away, and clients still silent at the
    deadline, and how long the round waited."""

    dropped: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)
    stale: int = 0  # replies discarded because they did not answer this round's messages
    waited: float = 0.0


class FlowerTrainer:
    """The ``remote`` of :meth:`Simulation.run_round`: one TRAIN message per client, replies until the round's
    deadline, uploads in the order of ``trained`` (the simulator's order, so the aggregate is bit-identical).
    What it did not receive is in :attr:`outcomes` (read by :class:`NodeFaultStage`)."""

    def __init__(self, grid: Any, nodes: Mapping[int, int] | NodeRoster, timeout: float) -> None:
        self.grid, self.timeout = grid, timeout
        self.nodes: dict[int, int] = nodes.nodes if isinstance(nodes, NodeRoster) else dict(nodes)
        self.cohort: set[int] = nodes.cohort if isinstance(nodes, NodeRoster) else set()
        self.outcomes: dict[int, RoundOutcome] = {}

    def messages(self, rnd: int, received: ParamDict, trained: list[int], fit: Any) -> list[tuple[list[int], Any]]:
        """The round's TRAIN messages, each with the clients it asks for: one per client of a one-client node,
        one per cohort node with all its sampled virtual clients (:mod:`spikefed.deploy.flower_cohort`)."""
        from flwr.app import Message

        from .flower_cohort import cohort_train_content

        groups: dict[int, list[int]] = {}
        out: list[tuple[list[int], Any]] = []
        for c in trained:
            nid = self.nodes[c]
            if nid in self.cohort:
                groups.setdefault(nid, []).append(c)
            else:
                out.append(([c], Message(train_content(rnd, c, received, fit), dst_node_id=nid,
                                         message_type=MSG_TRAIN, group_id=str(rnd), ttl=self.timeout)))
        for nid, clients in groups.items():
            out.append((clients, Message(cohort_train_content(rnd, clients, received, fit), dst_node_id=nid,
                                         message_type=MSG_TRAIN, group_id=str(rnd), ttl=self.timeout)))
        return out

    def __call__(self, rnd: int, received: ParamDict, trained: list[int], fit: Any, budgets: Any) -> list[Upload]:
        from .flower_cohort import uploads_from_cohort_reply

        started = time.monotonic()
        outcome = self.outcomes[rnd] = RoundOutcome()
        targets = {c: self.nodes[c] for c in trained}
        batch = self.messages(rnd, received, trained, fit)
        waiting: dict[str, list[int]] = {}
        for (clients, _), mid in zip(batch, self.grid.push_messages([m for _, m in batch]) if batch else []):
            if mid:
                waiting[str(mid)] = clients
            else:  # the SuperLink did not take the message
                outcome.dropped.extend(clients)
        replies: dict[int, Upload] = {}
        deadline = started + self.timeout
        while waiting:
            for r in self.grid.pull_messages(list(waiting)):
                got = waiting.get(str(r.metadata.reply_to_message_id))
                if got is None or str(r.metadata.group_id) != str(rnd):
                    outcome.stale += 1  # not an answer to this round's messages: never used
                    continue
                nid = targets[got[0]]
                if r.has_error() and _error_code(r) in (NODE_UNAVAILABLE, REPLY_UNAVAILABLE, MESSAGE_UNAVAILABLE):
                    outcome.dropped.extend(got)  # Flower says the node is gone
                elif not r.has_error() and int(r.metadata.src_node_id) != nid:
                    outcome.stale += 1
                    continue
                elif r.has_error():  # one failing node: a rejection for each of its clients; the round goes on
                    replies.update({c: Upload(c, 0, b"", error=f"client failed on SuperNode {nid}: "
                                                                f"{error_text(r)}") for c in got})
                elif nid in self.cohort:
                    replies.update(uploads_from_cohort_reply(got, r.content))
                else:
                    replies[got[0]] = upload_from_reply(got[0], r.content)
                waiting.pop(str(r.metadata.reply_to_message_id))
            if not waiting or time.monotonic() >= deadline:
                break
            online = _online(self.grid)
            for mid, clients in list(waiting.items()):
                if targets[clients[0]] not in online:  # offline (heartbeats stopped): it will not answer
                    outcome.dropped.extend(clients)
                    waiting.pop(mid)
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        outcome.late = sorted(c for clients in waiting.values() for c in clients)
        outcome.dropped.sort()
        outcome.waited = time.monotonic() - started
        return [replies[c] for c in trained if c in replies]  # the simulator's order: the same aggregate


class NodeFaultStage(Stage):
    """The ``faults`` stage of a deployment: who was there, who was late (see the module docstring)."""

    key = "faults"

    def __init__(self, roster: NodeRoster, trainer: FlowerTrainer, min_clients: int, join_wait: float,
                 resets: str | None = None) -> None:
        self.roster, self.trainer, self.min_clients, self.join_wait = roster, trainer, min_clients, join_wait
        self.resets = resets  # what a node that rejoins starts without (None: nothing)

    def configure(self, ctx: RoundContext) -> None:
        self.roster.refresh(self.join_wait)
        available = self.roster.available()
        trained = [c for c in ctx.sampled if c in available]
        ctx.plan = FaultPlan(list(ctx.sampled), trained, None, [c for c in ctx.sampled if c not in available],
                             active=True)
        if self.roster.rejoined and self.resets:
            print(f"spikefed: round {ctx.rnd}: partitions {_short(sorted(self.roster.rejoined))} rejoined on new "
                  f"SuperNodes; {self.resets}", flush=True)

    def server(self, ctx: RoundContext) -> None:
        out = self.trainer.outcomes.pop(ctx.rnd, RoundOutcome())
        gone = set(out.dropped) | set(out.late)
        plan = ctx.plan
        plan.dropped = sorted(set(plan.dropped) | set(out.dropped))
        plan.late = list(out.late)
        plan.trained = [c for c in plan.trained if c not in gone]
        ctx.row["fault_clients"] = {"dropped": plan.dropped, "late": plan.late, "waited_s": round(out.waited, 3)}
        if out.stale:
            ctx.row["fault_clients"]["stale_replies"] = out.stale
        if self.roster.rejoined:
            ctx.row["fault_clients"]["rejoined"] = sorted(self.roster.rejoined)
        if len(ctx.accepted) < self.min_clients:
            reason = (f"{len(ctx.accepted)} of {len(ctx.sampled)} sampled clients sent an accepted update, fewer "
                      f"than federation.min_clients={self.min_clients}; the global model is kept")
            print(f"spikefed: round {ctx.rnd} skipped: {reason}", flush=True)
            ctx.row["skipped"] = reason
            ctx.accepted = []
        if plan.dropped or plan.late:
            print(f"spikefed: round {ctx.rnd}: dropped {plan.dropped} late {plan.late} (waited {out.waited:.1f} s)",
                  flush=True)

    def metrics(self, ctx: RoundContext) -> None:
        ctx.row.update(ctx.plan.metrics(ctx.accepted))


__all__ = ["FlowerTrainer", "NodeFaultStage", "NodeRoster", "RoundOutcome"]
