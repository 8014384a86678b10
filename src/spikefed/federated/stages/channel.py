"""Channel stage: what travels between server and clients, and its bytes (the reported communication).

Downlink: the global parameters serialized (``len(payload)`` per sampled client), or, with
``compression.downlink``, compressed changes of a reference model every client holds
(:func:`~spikefed.federated.compression.downlink_broadcast`; each client pays for the messages it missed since it
last synchronised, or for the dense model; the reference lives in this stage's state). Uplink: each client's
delta, dense (against the global model: under a dense downlink the received model equals it exactly) or
compressed with error feedback against what it received (:func:`client_upload`; the residual stays on the
client, ``client_state[k]["ef_residual"]``, a row of the compact store :mod:`spikefed.federated.client_state`;
draws from ``(seed, COMPRESS, r, k)``). The server's half, parsing
the bytes against the schema, is the trust boundary (:mod:`spikefed.federated.boundary`).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from ...seeding import SERVER_STREAM, Purpose, torch_generator
from ..compression import EF_KEY, client_uplink, decode_update, downlink_broadcast
from ..dgc import energy_kept, momentum_uplink
from ..round import RoundContext, Stage, check_int, check_params
from ..aggregation import stacked_rows
from ..serialization import decode_params, encode_params, encode_params_batch
from ..types import ClientUpdate, ParamDict, Upload

if TYPE_CHECKING:  # pragma: no cover
    from ..simulation import FederationSpec, Simulation


#: bytes of float32 deltas serialized at once by :func:`dense_uploads` (a few MiB: they stay in cache)
CHUNK_BYTES = 4 * 2**20


class ChannelStage(Stage):
    key = "channel"

    def __init__(self, sim: Simulation) -> None:
        comp = sim.spec.compression
        self.downlink = comp.downlink_compressor() if comp is not None else None
        self.mode = uplink_mode(sim.spec)
        self.reference: dict[str, Any] = {}  # compressed downlink: reference model, history, last syncs
        self.shapes = {n: tuple(p.shape) for n, p in sim.spec.model.named_parameters()}

    def configure(self, ctx: RoundContext) -> None:
        """The broadcast of the round: ``ctx.received`` (what the clients start from) and its bytes."""
        sim = ctx.sim
        if self.downlink is None:
            down = encode_params(sim.state.global_params)
            ctx.bytes_down += len(down) * len(ctx.sampled)
            ctx.bytes_down_by_client = dict.fromkeys(ctx.sampled, len(down))
        else:
            gen = torch_generator(sim.spec.seed, Purpose.COMPRESS, ctx.rnd, SERVER_STREAM)
            reference, costs = downlink_broadcast(self.reference, sim.state.global_params, ctx.sampled, ctx.rnd,
                                                  self.downlink, gen)
            down = encode_params(reference)  # the simulation's hand-over of the reference (not counted)
            ctx.bytes_down += sum(costs)
            ctx.bytes_down_by_client = {c: int(b) for c, b in zip(ctx.sampled, costs)}
        ctx.received = decode_params(down)

    def client(self, ctx: RoundContext) -> None:
        """Each client's uplink bytes: a dense delta against the global model, a lossy one against what it
        received."""
        sim = ctx.sim
        base = sim.state.global_params if self.mode == "dense" else ctx.received
        if self.mode == "dense":
            ctx.uploads = dense_uploads(ctx.updates, base)
        else:
            ctx.uploads = [client_upload(sim.spec, ctx.rnd, u, base, sim.state.client_state) for u in ctx.updates]
        comp = sim.spec.compression
        if self.mode == "compressed" and comp is not None and comp.error_feedback:
            ctx.row.update(uplink_diagnostics(ctx.uploads, ctx.updates, base, sim.state.client_state))

    def state_dict(self) -> dict[str, Any]:
        return {"downlink": self.reference} if self.reference else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """The compressed downlink's state, checked: ``{"reference": params, "synced": {client: round},
        "history": [(round, payload bytes), ...]}`` (or nothing before the first round)."""
        down = state.get("downlink", {})
        if down:
            if not isinstance(down, dict) or set(down) != {"reference", "synced", "history"}:
                raise ValueError("channel state: downlink must hold reference, synced and history")
            check_params("channel state: downlink reference", down["reference"], self.shapes)
            synced, history = down["synced"], down["history"]
            if not isinstance(synced, dict) or not isinstance(history, list):
                raise ValueError("channel state: downlink synced must be a dict and history a list")
            for client, rnd in synced.items():
                check_int("channel state: a synced client", client)
                check_int("channel state: a synced round", rnd)
            for entry in history:
                if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], bytes)):
                    raise ValueError("channel state: downlink history must be a list of (round, bytes)")
                check_int("channel state: a history round", entry[0])
        self.reference = dict(down)


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
                  client_state: MutableMapping[int, Any]) -> Upload:
    """The client half of the uplink: ``delta = w_k - base`` serialized densely, or compressed with error
    feedback (residual in ``client_state[k]["ef_residual"]``, generator from ``(seed, COMPRESS, rnd, k)``).
    ``base`` is the global model for a dense uplink and the received reference otherwise."""
    delta = {n: upd.params[n] - base[n] for n in upd.params}
    if uplink_mode(spec) == "compressed":
        comp = spec.compression
        assert comp is not None
        gen = torch_generator(spec.seed, Purpose.COMPRESS, rnd, upd.client_id)
        held = client_state.setdefault(upd.client_id, {})
        if comp.momentum_correction > 0:
            payload = momentum_uplink(delta, comp.uplink_compressor(), gen, held, comp.momentum_correction)
        else:
            payload = client_uplink(delta, comp.uplink_compressor(), gen, held, comp.error_feedback)
    else:
        payload = encode_params(delta)
    control = encode_params(upd.control_delta) if upd.control_delta is not None else None
    return Upload(upd.client_id, upd.num_samples, payload, upd.metrics, upd.steps, control)


def dense_uploads(updates: list[ClientUpdate], base: ParamDict) -> list[Upload]:
    """The dense uplink of a whole round: ``[client_upload(spec, rnd, u, base, ...) for u in updates]`` for a dense
    uplink, byte for byte, with the deltas taken and serialized as stacks ``[K, ...]`` (one subtraction and one
    serialization per parameter instead of per client and parameter). Updates that do not all hold exactly the
    names (in order) and shapes of ``base`` in floating dtypes are serialized one by one."""
    names = list(base)
    uniform = bool(updates) and all(
        list(u.params) == names and all(u.params[n].is_floating_point() and u.params[n].shape == base[n].shape
                                        for n in names) for u in updates)
    if uniform:
        stacks = {n: stacked_rows([u.params[n] for u in updates]) for n in names}
        # in chunks of clients whose deltas and payloads fit in cache (elementwise work: the same bytes)
        per_client = sum(base[n].numel() for n in names) * 4
        chunk = max(1, CHUNK_BYTES // max(per_client, 1))
        payloads = [p for lo in range(0, len(updates), chunk)
                    for p in encode_params_batch({n: stacks[n][lo:lo + chunk] - base[n] for n in names})]
    else:
        payloads = [encode_params({n: u.params[n] - base[n] for n in u.params}) for u in updates]
    return [Upload(u.client_id, u.num_samples, payload, u.metrics, u.steps,
                   encode_params(u.control_delta) if u.control_delta is not None else None)
            for u, payload in zip(updates, payloads)]


def uplink_diagnostics(uploads: list[Upload], updates: list[ClientUpdate], base: ParamDict,
                       client_state: MutableMapping[int, Any]) -> dict[str, float]:
    """Metrics-row entries of a compressed uplink with error feedback, means over the round's clients:
    ``uplink_energy_kept`` = ``||sent||^2 / (||sent||^2 + ||residual||^2)`` (the share of the compressor's input
    that was sent) and ``uplink_residual_ratio`` = ``||residual|| / ||delta||`` after the step."""
    kept, ratio = [], []
    for up, upd in zip(uploads, updates):
        residual = client_state[upd.client_id][EF_KEY]
        kept.append(energy_kept(decode_update(up.payload), residual))
        d = sum(float((upd.params[n] - base[n]).double().pow(2).sum()) for n in upd.params) ** 0.5
        r = sum(float(t.double().pow(2).sum()) for t in residual.values()) ** 0.5
        ratio.append(r / d if d > 0 else float("nan"))
    n = max(len(kept), 1)
    return {"uplink_energy_kept": sum(kept) / n, "uplink_residual_ratio": sum(ratio) / n}
