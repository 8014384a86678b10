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

import io
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.digits import DatasetSplit
from ..data.heterogeneity import REPORT_SETTINGS, client_heterogeneity
from ..hardware.energy import EnergyModel, mlp_operations
from ..manifold import manifold_of
from ..snn.models import SpikingMLP
from ..snn.train import TrainConfig, encode_inputs, evaluate
from .aggregation import validate_updates
from .cohort import ClientData, train_clients
from .serialization import decode_params, encode_params
from .strategies import Strategy
from .types import ClientUpdate, ParamDict, load_params_, params_of

CHECKPOINT_VERSION = 1


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (run seed, round, purpose, client id)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


PURPOSE_SAMPLE, PURPOSE_CLIENT, PURPOSE_EVAL, PURPOSE_PARTITION, PURPOSE_INIT, PURPOSE_FEATURE = range(6)
NO_ROUND = 0xFFFFFFFF  # the "round" field of streams that do not belong to a round


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
        self.clients = self._build_clients()
        self.manifolds = {n: manifold_of(p) for n, p in spec.model.named_parameters()}
        self.state = SimulationState(0, params_of(spec.model), spec.strategy.state_dict(), {}, [])
        features = spec.data.x_train.clone()  # as the clients see them (feature skew applied)
        for c, idx in zip(self.clients, spec.parts):
            features[torch.as_tensor(np.asarray(idx), dtype=torch.int64)] = c.x
        self.heterogeneity = client_heterogeneity(
            features.numpy(), spec.data.y_train.numpy(), spec.parts, spec.data.num_classes, **REPORT_SETTINGS)

    # -- setup ---------------------------------------------------------------------------------------------
    def _build_clients(self) -> list[ClientData]:
        d, spec = self.spec.data, self.spec
        clients = []
        for cid, idx in enumerate(spec.parts):
            index = torch.as_tensor(np.asarray(idx), dtype=torch.int64)
            x = d.x_train[index]
            if spec.client_transforms is not None:
                # purpose-tagged with an out-of-range "round" so it never equals a per-round stream
                gen = torch.Generator().manual_seed(derive_seed(spec.seed, NO_ROUND, PURPOSE_FEATURE, cid))
                x = spec.client_transforms[cid].apply(x, gen)
                if spec.local.encoder in ("rate", "latency"):
                    x = x.clamp(0.0, 1.0)  # these encoders take intensities in [0, 1]
            clients.append(ClientData(cid, x, d.y_train[index]))
        return clients

    def sample_clients(self, rnd: int) -> list[int]:
        """The clients of round ``rnd``: ``max(min_clients, round(fraction * N))`` without replacement."""
        m = max(self.spec.min_clients, int(round(self.spec.fraction * self.num_clients)))
        m = min(m, self.num_clients)
        rng = np.random.default_rng(derive_seed(self.spec.seed, rnd, PURPOSE_SAMPLE))
        return sorted(rng.choice(self.num_clients, size=m, replace=False).tolist())

    # -- one round ---------------------------------------------------------------------------------------------
    def run_round(self) -> dict[str, Any]:
        spec, st = self.spec, self.state
        rnd = st.round + 1
        start = time.perf_counter()
        sampled = self.sample_clients(rnd)
        fit = spec.strategy.configure_fit(rnd, st.global_params)
        # downlink: the global parameters (and SCAFFOLD's server control) as serialized bytes
        down = encode_params(st.global_params)
        bytes_down = len(down) * len(sampled)
        if fit.server_control is not None:
            bytes_down += len(encode_params(fit.server_control)) * len(sampled)
        received = decode_params(down)
        gens = [torch.Generator().manual_seed(derive_seed(spec.seed, rnd, PURPOSE_CLIENT, c)) for c in sampled]
        controls = [st.controls.get(c) for c in sampled] if fit.server_control is not None else None
        updates = train_clients(spec.engine, spec.model, received, [self.clients[c] for c in sampled], gens,
                                spec.local, fit, controls)
        # uplink: each client's delta (and control delta) as serialized bytes; the server decodes them
        received_updates: list[ClientUpdate] = []
        bytes_up = 0
        for upd in updates:
            payload = encode_params({n: upd.params[n] - st.global_params[n] for n in upd.params})
            bytes_up += len(payload)
            decoded = decode_params(payload)
            server_view = ClientUpdate(upd.client_id, upd.num_samples,
                                       {n: st.global_params[n] + decoded[n] for n in decoded}, upd.metrics,
                                       None, upd.steps)
            if upd.control_delta is not None:
                payload_c = encode_params(upd.control_delta)
                bytes_up += len(payload_c)
                server_view.control_delta = decode_params(payload_c)
            received_updates.append(server_view)
        # validation (names, shapes, dtype, finite, on-manifold, norm bound): bad updates are logged, not used
        accepted, invalid = validate_updates(received_updates, st.global_params, spec.max_update_norm,
                                             self.manifolds)
        rejected = [{"client": e.client_id, "round": rnd, "reason": str(e)} for e in invalid]
        if accepted:
            st.global_params = spec.strategy.aggregate_fit(rnd, st.global_params, accepted, self.manifolds,
                                                           validated=True)
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
        if rnd % spec.eval_every == 0 or rnd == spec.rounds:
            row.update(self.evaluate(rnd))
        else:
            row.update({"accuracy": None, "loss": None, "spikes": None, "synops": None, "energy_j": None})
        st.bytes_up += bytes_up
        st.bytes_down += bytes_down
        row["seconds"] = time.perf_counter() - start
        st.seconds += row["seconds"]
        st.round = rnd
        st.metrics.append(row)
        return row

    @torch.no_grad()
    def evaluate(self, rnd: int) -> dict[str, Any]:
        """Global model on the held-out test set: accuracy, loss, spikes/synops/energy per inference."""
        spec = self.spec
        model = spec.model
        load_params_(model, self.state.global_params)
        gen = torch.Generator().manual_seed(derive_seed(spec.seed, rnd, PURPOSE_EVAL))
        res = evaluate(model, spec.data.x_test, spec.data.y_test, spec.local, gen)
        out: dict[str, Any] = {"accuracy": res.accuracy, "loss": res.loss, "firing_rate": res.firing_rate}
        if isinstance(model, SpikingMLP):
            gen = torch.Generator().manual_seed(derive_seed(spec.seed, rnd, PURPOSE_EVAL))
            x = encode_inputs(spec.data.x_test, spec.local, gen)
            ops = mlp_operations(model, x, model(x))
            n = spec.data.x_test.shape[0]
            out.update({"spikes": ops["spikes"] / n, "synops": ops["synops"] / n, "acs": ops["acs"] / n,
                        "macs": ops["macs"] / n,
                        "energy_j": spec.energy.energy(ops["acs"], ops["macs"], ops["spikes"]) / n})
        else:
            out.update({"spikes": res.spikes_per_sample, "synops": None, "energy_j": None})
        return out

    # -- checkpoints -------------------------------------------------------------------------------------------
    def checkpoint_bytes(self, fingerprint: dict[str, Any] | None = None) -> bytes:
        st = self.state
        buf = io.BytesIO()
        torch.save({"version": CHECKPOINT_VERSION, "round": st.round, "global_params": st.global_params,
                    "strategy_state": st.strategy_state, "controls": st.controls, "metrics": st.metrics,
                    "bytes_up": st.bytes_up, "bytes_down": st.bytes_down, "seconds": st.seconds,
                    "client_state": st.client_state, "server_state": st.server_state,
                    "fingerprint": fingerprint or {}}, buf)
        return buf.getvalue()

    def save_checkpoint(self, path: Path, fingerprint: dict[str, Any] | None = None) -> None:
        """Write the checkpoint atomically (temp file + rename)."""
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(self.checkpoint_bytes(fingerprint))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load_checkpoint(self, path: Path, fingerprint: dict[str, Any] | None = None) -> None:
        """Restore the state of a checkpoint; a corrupt or mismatched one raises ``ValueError``."""
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
            raise ValueError(f"checkpoint {path} is corrupt or unreadable: {e}") from e
        if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint {path} has an unknown format (expected version {CHECKPOINT_VERSION})")
        if fingerprint is not None and data.get("fingerprint") != fingerprint:
            raise ValueError(f"checkpoint {path} was written by a different experiment configuration")
        reference = params_of(self.spec.model)
        gp = data["global_params"]
        if set(gp) != set(reference) or any(gp[n].shape != reference[n].shape for n in reference):
            raise ValueError(f"checkpoint {path} holds parameters of a different model")
        self.spec.strategy.load_state_dict(data["strategy_state"])
        self.state = SimulationState(data["round"], gp, data["strategy_state"], data["controls"], data["metrics"],
                                     data["bytes_up"], data["bytes_down"], data["seconds"],
                                     data.get("client_state", {}), data.get("server_state", {}))


def _weighted(values: list[float], weights: list[int]) -> float | None:
    if not values:
        return None
    w = np.asarray(weights, dtype=np.float64)
    return float(np.dot(np.asarray(values, dtype=np.float64), w) / w.sum())
