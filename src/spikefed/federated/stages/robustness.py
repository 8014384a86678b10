"""Robustness stage: malicious clients (attacks) and the server's defence (robust aggregation).

Set-up: ``round(attack_fraction * N)`` attackers drawn once per run from ``(seed, ATTACKERS)``; ``label_flip``
rewrites their labels ``y -> C - 1 - y``. Client side, a malicious client's update becomes the update attack's
``phi^-1(phi(x) + a(phi(w) - phi(x)))`` (:func:`~spikefed.federated.attacks.attack_update`, draws from
``(seed, ATTACK, r, client)``), where ``x`` is the model the client received. Server side, the defence
(:class:`~spikefed.federated.robust.RobustAggregator`) replaces the strategy's weighted mean for the round
(``ctx.aggregator``); FLTrust first trains the global model on the server's root set (drawn once from
``(seed, ROOT)``, trained with ``(seed, ROOT_TRAIN, r)``). The row counts the sampled attackers (``malicious``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from ...seeding import Purpose, numpy_rng, torch_generator
from ..attacks import attack_update, choose_malicious, flip_labels
from ..cohort import ClientData, train_clients
from ..robust import RobustAggregator, RobustnessSpec
from ..round import RoundContext, Stage
from ..types import ClientUpdate

if TYPE_CHECKING:  # pragma: no cover
    from ..simulation import Simulation


class RobustnessStage(Stage):
    key = "robustness"

    def __init__(self, sim: Simulation) -> None:
        spec = sim.spec
        rs = spec.robustness
        assert rs is not None
        self.spec = rs
        self.malicious: frozenset[int] = frozenset()
        if rs.attack != "none":
            self.malicious = frozenset(choose_malicious(sim.num_clients, rs.attack_fraction,
                                                        numpy_rng(spec.seed, Purpose.ATTACKERS)))
        if rs.attack == "label_flip":
            sim.clients = [ClientData(c.client_id, c.x, flip_labels(c.y, spec.data.num_classes))
                           if c.client_id in self.malicious else c for c in sim.clients]
        check_krum(rs, len(sim.sample_clients(1)))
        self.root: ClientData | None = None
        if rs.defense == "fltrust":
            n = int(spec.data.y_train.shape[0])
            if rs.root_size > n:
                raise ValueError(f"robustness.root_size={rs.root_size} exceeds the {n} training samples")
            rng = numpy_rng(spec.seed, Purpose.ROOT)
            index = torch.as_tensor(sorted(rng.choice(n, size=rs.root_size, replace=False).tolist()),
                                    dtype=torch.int64)
            self.root = ClientData(-1, spec.data.x_train[index], spec.data.y_train[index])
        self.aggregator: RobustAggregator | None = rs.aggregator()

    def client(self, ctx: RoundContext) -> None:
        """Malicious clients poison their update before it is uploaded; honest ones are unchanged."""
        if not self.malicious:
            return
        ctx.updates = [self.attack(ctx, u) if u.client_id in self.malicious else u for u in ctx.updates]

    def attack(self, ctx: RoundContext, u: ClientUpdate) -> ClientUpdate:
        """The update client ``u.client_id`` uploads when malicious (``x``: the model it received)."""
        rs, sim = self.spec, ctx.sim
        gen = torch_generator(sim.spec.seed, Purpose.ATTACK, ctx.rnd, u.client_id)
        params = attack_update(rs.attack, ctx.received, u.params, sim.manifolds, gen,
                               boost=rs.boost, sign_scale=rs.sign_scale, noise_std=rs.noise_std)
        return dataclasses.replace(u, params=params)

    def server(self, ctx: RoundContext) -> None:
        """The round's defence; FLTrust's reference is the global model trained on the root set."""
        if self.aggregator is None or not ctx.accepted:
            return
        if self.root is None:
            ctx.aggregator = self.aggregator
            return
        sim = ctx.sim
        spec = sim.spec
        gen = torch_generator(spec.seed, Purpose.ROOT_TRAIN, ctx.rnd)
        controls = [None] if ctx.fit.server_control is not None else None
        trained = train_clients(spec.engine, spec.model, sim.state.global_params, [self.root], [gen], spec.local,
                                ctx.fit, controls)
        ctx.aggregator = self.aggregator.with_reference(trained[0].params)

    def metrics(self, ctx: RoundContext) -> None:
        ctx.row["malicious"] = sum(c in self.malicious for c in ctx.sampled)


def check_krum(rs: RobustnessSpec, k: int) -> None:
    """Refuse a ``krum_f`` / ``multikrum_m`` that does not fit the nominal cohort of ``k`` (never clamped)."""
    if rs.defense not in ("krum", "multikrum") or (rs.krum_f is None and rs.multikrum_m is None):
        return
    if rs.krum_f is not None and k - rs.krum_f - 2 < 1:
        raise ValueError(f"robustness.krum_f={rs.krum_f} is too large for {k} clients per round: Krum needs "
                         f"K - f - 2 >= 1, so krum_f <= {k - 3}")
    m = rs.multikrum_m
    if rs.defense == "multikrum" and m is not None and m > k:
        raise ValueError(f"robustness.multikrum_m={m} exceeds the {k} clients per round")
