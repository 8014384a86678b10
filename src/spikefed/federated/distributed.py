"""Multi-process simulation on ``torch.distributed``: the round's trained clients split across ranks.

Every rank holds the whole federation (data, partition, stages, state) and runs the same round. Only local
training is split: the round's trained-client list (``ctx.plan.trained``, fixed by the seeded sampling and the
faults plan, identical on every rank) is cut into contiguous slices (:func:`rank_slice`), rank ``r`` trains
slice ``r`` (each client from its own generator ``client_generator(seed, rnd, client)``, so a client's
arithmetic does not depend on which rank trains it), and the updates are gathered in the fixed client order.
Then every rank runs the rest of the round identically on identical inputs: the client stages (attacks, DP
clipping, compression with error feedback), the trust boundary, the server stages, aggregation, evaluation.
After each round the ranks compare a SHA-256 of the new global parameters and stop with a clear error if they
ever differ. Only the primary rank (0) writes files.

Transport (no pickle): each rank serializes its slice with the wire format of
:mod:`spikefed.federated.serialization` (:func:`encode_block`), the ranks ``all_gather`` the lengths and then the
zero-padded ``uint8`` buffers, and every rank parses every block back (:func:`decode_block`) against the schema:
the names ``<i>/head``, ``<i>/metric/<key>``, ``<i>/param/<name>``, ``<i>/control/<name>`` for ``i = 0..n-1``,
the client ids that rank was given, the model's parameter names, shapes and float dtypes. A block that does not
parse raises :class:`ValueError` naming the rank and what is wrong.

Failure: a collective that fails (a peer's connection closed) or times out raises :class:`RankFailure`, whose
message names the rank(s) that did not answer. To find them, each survivor posts a note in the rendezvous store
and waits a short grace period for the others' notes; a rank without a note is the dead (or hung) one.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import signal
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .round import RoundContext
from .serialization import PayloadError, decode_params, encode_params
from .simulation import FederationSpec, Simulation, client_generator, train_local
from .types import ClientUpdate, ParamDict

__all__ = ["BLOCK_HEAD", "KILL_ENV", "DistributedSimulation", "RankFailure", "RankGroup", "backend_for",
           "decode_block", "encode_block", "params_digest", "rank_slice", "slice_of"]

#: the integer header of one update in a block: client id, samples, local steps, has a SCAFFOLD control delta
BLOCK_HEAD = ("client_id", "num_samples", "steps", "has_control")
#: test hook, ``"<rank>:<round>"``: that rank kills itself (SIGKILL) when it starts training that round;
#: ``"<rank>:<round>:hang"``: it stops itself (SIGSTOP) instead, a rank that hangs
KILL_ENV = "SPIKEFED_TEST_KILL_RANK"


class RankFailure(RuntimeError):
    """A collective failed or timed out: a rank died or hung. ``dead`` lists the ranks that did not answer
    (empty when they could not be told apart, e.g. the rendezvous store itself is gone)."""

    def __init__(self, message: str, dead: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.dead = list(dead)


def rank_slice(n: int, world: int, rank: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s contiguous share of ``n`` items: ``lo = rank * n // world``. Sizes differ by
    at most one; every item belongs to exactly one rank, in order."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world}")
    return rank * n // world, (rank + 1) * n // world


def slice_of(items: Sequence[Any] | None, lo: int, hi: int) -> list[Any] | None:
    """``items[lo:hi]`` as a list (``None`` stays ``None``)."""
    return None if items is None else list(items[lo:hi])


def backend_for(device: str | None) -> str:
    """The process-group backend for the run's device: ``nccl`` for a CUDA device (``cuda``, ``cuda:N``, or
    ``auto`` where CUDA is available), ``gloo`` otherwise."""
    d = (device or "cpu").strip().lower()
    if d == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asks for CUDA, which this machine does not have")
        return "nccl"
    return "gloo"


# -- the block codec ------------------------------------------------------------------------------------------
def encode_block(updates: Sequence[ClientUpdate]) -> bytes:
    """One rank's trained updates as one wire-format payload (names ``<i>/...``, see the module docstring)."""
    flat: dict[str, torch.Tensor] = {}
    for i, u in enumerate(updates):
        has_control = u.control_delta is not None
        flat[f"{i}/head"] = torch.tensor([int(u.client_id), int(u.num_samples), int(u.steps), int(has_control)],
                                         dtype=torch.int64)
        for key, value in u.metrics.items():
            flat[f"{i}/metric/{key}"] = _metric_tensor(u.client_id, key, value)
        for name, t in u.params.items():
            flat[f"{i}/param/{name}"] = t.detach()
        for name, t in (u.control_delta or {}).items():
            flat[f"{i}/control/{name}"] = t.detach()
    return encode_params(flat, dtype=None)


def _metric_tensor(client: int, key: str, value: Any) -> torch.Tensor:
    if isinstance(value, (bool, np.bool_)):
        return torch.tensor(bool(value), dtype=torch.bool)
    if isinstance(value, numbers.Integral):
        return torch.tensor(int(value), dtype=torch.int64)
    if isinstance(value, numbers.Real):
        return torch.tensor(float(value), dtype=torch.float64)
    raise ValueError(f"client {client}: metric {key!r} is a {type(value).__name__}; only int, float and bool "
                     "metrics travel between ranks")


def decode_block(data: bytes, expected: Sequence[int], reference: ParamDict, *, rank: int = 0
                 ) -> list[ClientUpdate]:
    """Parse a block from :func:`encode_block` (sent by rank ``rank``, which trained the clients ``expected`` in
    that order) against the schema: ``ValueError`` naming the rank and the entry for anything else."""
    where = f"the updates from rank {rank}"
    try:
        flat = decode_params(data)
    except PayloadError as e:
        raise ValueError(f"{where}: {e}") from None
    groups: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in flat.items():
        index, sep, rest = name.partition("/")
        if not sep or not index.isdigit() or str(int(index)) != index or int(index) >= len(expected):
            raise ValueError(f"{where}: unexpected entry {name!r} (expected updates 0..{len(expected) - 1})")
        groups.setdefault(int(index), {})[rest] = t
    if sorted(groups) != list(range(len(expected))):
        raise ValueError(f"{where}: holds updates {sorted(groups)}, expected {len(expected)} "
                         f"(clients {list(expected)})")
    return [_decode_update(groups[i], expected[i], reference, f"{where}, update {i}") for i in range(len(expected))]


def _decode_update(entries: dict[str, torch.Tensor], client: int, reference: ParamDict, where: str) -> ClientUpdate:
    head = entries.get("head")
    if head is None or head.dtype != torch.int64 or tuple(head.shape) != (len(BLOCK_HEAD),):
        raise ValueError(f"{where}: 'head' must be {len(BLOCK_HEAD)} int64 values {BLOCK_HEAD}")
    cid, samples, steps, has_control = (int(v) for v in head.tolist())
    if cid != client:
        raise ValueError(f"{where}: is client {cid}, expected client {client}")
    if samples < 0 or steps < 0 or has_control not in (0, 1):
        raise ValueError(f"{where}: head {head.tolist()} out of range (samples, steps >= 0; has_control 0/1)")
    params: ParamDict = {}
    control: ParamDict = {}
    metrics: dict[str, Any] = {}
    for name, t in entries.items():
        kind, _, key = name.partition("/")
        if kind == "head":
            continue
        if kind == "metric" and key:
            if t.dim() != 0 or t.dtype not in (torch.int64, torch.float64, torch.bool):
                raise ValueError(f"{where}: metric {key!r} must be one int64, float64 or bool value")
            metrics[key] = t.item()
        elif kind in ("param", "control") and key in reference:
            ref = reference[key]
            if t.shape != ref.shape or not t.is_floating_point():
                raise ValueError(f"{where}: {kind} {key!r} is {t.dtype} {tuple(t.shape)}, expected a float tensor "
                                 f"of shape {tuple(ref.shape)}")
            (params if kind == "param" else control)[key] = t
        else:
            raise ValueError(f"{where}: unexpected entry {name!r} (not a metric or a parameter of the model)")
    if not params:
        raise ValueError(f"{where}: holds no parameters")
    if has_control and list(control) != list(params):
        raise ValueError(f"{where}: the control delta must cover the same parameters as the update")
    if not has_control and control:
        raise ValueError(f"{where}: control entries without has_control set")
    return ClientUpdate(cid, samples, params, metrics, control if has_control else None, steps)


def params_digest(params: ParamDict) -> bytes:
    """SHA-256 of the parameters in the wire format (names, dtypes, shapes, bits)."""
    return hashlib.sha256(encode_params(params, dtype=None)).digest()


# -- the process group --------------------------------------------------------------------------------------------
@dataclass
class RankGroup:
    """This process's place in a started process group, and the few collectives the round needs. Every
    collective is numbered; a failure becomes :class:`RankFailure` naming the ranks that did not answer."""

    rank: int
    world: int
    device: torch.device
    store: Any = None  # a client of the rendezvous store (None: failures cannot name the dead rank)
    grace: float = 5.0  # seconds a survivor waits for the others' notes after a failure
    count: int = 0

    @property
    def primary(self) -> bool:
        return self.rank == 0

    def call(self, what: str, op: Callable[[], Any]) -> Any:
        """Run collective ``op`` (``what`` names it in the error)."""
        self.count += 1
        try:
            return op()
        except (RuntimeError, TimeoutError) as e:  # gloo/nccl raise RuntimeError subclasses (DistBackendError...)
            dead = self._silent(self.count)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            if dead:
                who = ", ".join(str(r) for r in dead)
                msg = f"rank {who} stopped (died or hung) during {what}; this is rank {self.rank} ({first})"
            else:
                msg = (f"a collective failed during {what} on rank {self.rank}; the dead rank could not be told "
                       f"({first})")
            raise RankFailure(msg, dead or ()) from None

    def _silent(self, n: int) -> list[int] | None:
        """The ranks that post no failure note for collective ``n`` within the grace period (None: no store)."""
        if self.store is None:
            return None
        try:
            self.store.set(f"spikefed/failed/{n}/{self.rank}", "1")
            missing = [r for r in range(self.world) if r != self.rank]
            deadline = time.monotonic() + self.grace
            while missing and time.monotonic() < deadline:
                missing = [r for r in missing if not self.store.check([f"spikefed/failed/{n}/{r}"])]
                if missing:
                    time.sleep(0.05)
            return missing
        except Exception:  # noqa: BLE001 - the store is gone too (its host died): nothing to tell
            return None

    def gather_bytes(self, data: bytes, what: str) -> list[bytes]:
        """Every rank's ``data``, in rank order (lengths first, then the zero-padded buffers)."""
        import torch.distributed as dist

        length = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        lengths = [torch.zeros(1, dtype=torch.int64, device=self.device) for _ in range(self.world)]
        self.call(f"{what} (lengths)", lambda: dist.all_gather(lengths, length))
        sizes = [int(t.item()) for t in lengths]
        if any(s < 0 for s in sizes):
            raise ValueError(f"{what}: a rank announced a negative length {sizes}")
        width = max(sizes)
        buf = torch.zeros(width, dtype=torch.uint8)
        buf[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else buf[:0]
        buf = buf.to(self.device)
        out = [torch.zeros(width, dtype=torch.uint8, device=self.device) for _ in range(self.world)]
        self.call(what, lambda: dist.all_gather(out, buf))
        return [out[r][:sizes[r]].cpu().numpy().tobytes() for r in range(self.world)]

    def broadcast_bytes(self, data: bytes | None, what: str, src: int = 0) -> bytes:
        """Rank ``src``'s ``data`` on every rank."""
        import torch.distributed as dist

        n = torch.tensor([len(data) if self.rank == src and data is not None else 0], dtype=torch.int64,
                         device=self.device)
        self.call(f"{what} (length)", lambda: dist.broadcast(n, src))
        size = int(n.item())
        if self.rank == src:
            assert data is not None
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device) if size else \
                torch.zeros(0, dtype=torch.uint8, device=self.device)
        else:
            buf = torch.zeros(size, dtype=torch.uint8, device=self.device)
        if size:
            self.call(what, lambda: dist.broadcast(buf, src))
        return buf.cpu().numpy().tobytes()

    def agree(self, ok: bool, message: str, what: str) -> None:
        """Every rank says whether its step worked; unless all did, every rank raises ``RuntimeError`` with the
        failing ranks' messages (so a rank never waits for one that gave up)."""
        notes = self.gather_bytes(b"" if ok else message.encode("utf-8", "replace")[:2000], what)
        bad = [(r, n.decode("utf-8", "replace")) for r, n in enumerate(notes) if n]
        if bad:
            raise RuntimeError("; ".join(f"rank {r}: {m}" for r, m in bad))


def start_group(backend: str, timeout: float, *, rank: int, world: int, local_rank: int, addr: str, port: int
                ) -> RankGroup:
    """Start the default process group from the torchrun environment (``env://``: ``MASTER_ADDR``,
    ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``), with collectives timing out after ``timeout`` seconds, and
    connect a second client to the rendezvous store for the failure notes."""
    import torch.distributed as dist

    delta = timedelta(seconds=timeout)
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method="env://", timeout=delta, rank=rank, world_size=world)
    try:
        store = dist.TCPStore(addr, port, is_master=False, timeout=timedelta(seconds=min(timeout, 30.0)))
    except Exception:  # noqa: BLE001 - without the store the group still works; failures name no rank
        store = None
    return RankGroup(rank, world, device, store)


def stop_group() -> None:
    """Destroy the default process group (if one is up)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# -- the simulation ------------------------------------------------------------------------------------------------
class DistributedSimulation(Simulation):
    """A :class:`Simulation` whose local training is split across the ranks of ``group``."""

    def __init__(self, spec: FederationSpec, group: RankGroup) -> None:
        super().__init__(spec)
        self.group = group
        self.reference = {n: p.detach() for n, p in spec.model.named_parameters()}

    def train(self, ctx: RoundContext) -> list[ClientUpdate]:
        """Train this rank's slice of ``ctx.plan.trained``; return every rank's updates in client order."""
        g, trained = self.group, list(ctx.plan.trained)
        _maybe_die(g.rank, ctx.rnd)
        lo, hi = rank_slice(len(trained), g.world, g.rank)
        mine = trained[lo:hi]
        gens = [client_generator(self.spec.seed, ctx.rnd, c) for c in mine]
        local = train_local(self.spec, ctx.received, [self.clients[c] for c in mine], gens, ctx.fit,
                            slice_of(ctx.controls, lo, hi), slice_of(ctx.plan.budgets, lo, hi),
                            slice_of(ctx.penalties, lo, hi))
        blocks = g.gather_bytes(encode_block(local), f"the updates of round {ctx.rnd}")
        out: list[ClientUpdate] = []
        for r, block in enumerate(blocks):
            a, b = rank_slice(len(trained), g.world, r)
            out += decode_block(block, trained[a:b], self.reference, rank=r)
        return out

    def run_round(self, remote: Any = None) -> dict[str, Any]:
        """One round (:meth:`Simulation.run_round`), then the ranks check that they hold the same model."""
        if remote is not None:
            raise ValueError("a distributed simulation trains its clients on its ranks, not remotely")
        row = super().run_round()
        digests = self.group.gather_bytes(params_digest(self.state.global_params),
                                          f"the model check of round {self.state.round}")
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise RuntimeError(f"round {self.state.round}: the global model of rank(s) {differ} differs from rank "
                               "0's (the ranks must compute the server step identically)")
        return row


def _maybe_die(rank: int, rnd: int) -> None:
    """The :data:`KILL_ENV` test hook."""
    spec = os.environ.get(KILL_ENV)
    if spec and spec in (f"{rank}:{rnd}", f"{rank}:{rnd}:hang"):
        os.kill(os.getpid(), signal.SIGSTOP if spec.endswith(":hang") else signal.SIGKILL)
