"""Seconds per round of local training on each engine, for any model: what the benchmarks time.

:func:`time_engines` trains the same clients from the same global parameters with the batched cohort engine
(:func:`~spikefed.federated.cohort.train_cohort`) and the sequential reference
(:func:`~spikefed.federated.cohort.train_sequential`), ``rounds`` times each after one warm-up round, with each
client's generator derived as in a run (``Purpose.CLIENT``, round, client), and returns the median seconds per
round of each, their ratio and the largest parameter difference between the two engines' updates (the engines
compute the same thing; a large difference means the comparison is void). Used by
``benchmarks/cohort_models.py`` and callable from any scenario benchmark.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from ..seeding import Purpose, torch_generator
from ..snn.train import TrainConfig
from .cohort import ClientData, train_cohort, train_sequential
from .types import FitInstructions, ParamDict, params_of


@dataclass
class EngineTiming:
    """Median seconds per round of local training: batched cohort engine vs sequential reference."""

    cohort_s: float
    sequential_s: float
    path: str
    max_param_diff: float

    @property
    def ratio(self) -> float:
        """How many times faster the cohort engine is (``sequential_s / cohort_s``)."""
        return self.sequential_s / self.cohort_s


def time_engines(model: torch.nn.Module, clients: Sequence[ClientData], cfg: TrainConfig, *, rounds: int = 1,
                 seed: int = 0, path: str = "auto", global_params: ParamDict | None = None,
                 engines: Sequence[str] = ("cohort", "sequential")) -> EngineTiming:
    """Time one round of local training of ``clients`` per engine (median of ``rounds`` after a warm-up).

    ``path`` is the cohort engine's forward (``auto``, ``mlp``, ``vmap``; :func:`~spikefed.snn.stacked.forward_path`).
    An engine left out of ``engines`` reports ``nan`` seconds."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not clients:
        raise ValueError("time_engines needs at least one client")
    g = global_params if global_params is not None else {
        n: p for n, p in params_of(model).items() if dict(model.named_parameters())[n].requires_grad}

    def one(engine: str, rnd: int) -> tuple[float, list[ParamDict]]:
        gens = [torch_generator(seed, Purpose.CLIENT, rnd, c.client_id) for c in clients]
        t0 = time.perf_counter()
        if engine == "cohort":
            ups = train_cohort(model, g, clients, gens, cfg, FitInstructions(rnd), path=path)
        else:
            ups = train_sequential(model, g, clients, gens, cfg, FitInstructions(rnd))
        return time.perf_counter() - t0, [u.params for u in ups]

    seconds: dict[str, float] = {}
    last: dict[str, list[ParamDict]] = {}
    for engine in engines:
        one(engine, 0)  # warm-up (first calls, allocator)
        times = []
        for rnd in range(1, rounds + 1):
            dt, last[engine] = one(engine, rnd)
            times.append(dt)
        seconds[engine] = statistics.median(times)
    diff = float("nan")
    if len(last) == 2:
        a, b = last["cohort"], last["sequential"]
        diff = max(float((pa[n] - pb[n]).abs().max()) for pa, pb in zip(a, b) for n in pa)
    from ..snn.stacked import forward_path

    return EngineTiming(seconds.get("cohort", float("nan")), seconds.get("sequential", float("nan")),
                        forward_path(model, path), diff)
