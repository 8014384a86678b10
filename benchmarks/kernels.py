"""LIF kernel per step: the loop kernel (reference fast path) vs the compiled one, and a whole round with each.

What is measured (perf_counter, one process, one run; median of ``--iters`` after 3 warm-ups)
    1. ``lif fwd+bwd``  one hidden LIF layer, ``lif_fused`` forward + backward (reset by subtraction, atan
                        surrogate) on ``x [T, K, B, N]`` = ``[25, --clients-per-chunk, 32, 256]`` float32, with
                        ``kernel="loop"`` and ``kernel="compiled"`` alternating call by call; the first compiled
                        call's seconds (the compile, or a load from inductor's on-disk cache) are reported apart.
    2. ``round``        ``benchmarks/fl_round.py``'s workload (digits, IID, ``--clients`` clients all training,
                        64-256-10 LIF MLP, T = 25, 1 local epoch, batch 32, Adam, FedAvg) with
                        ``local.kernel`` = loop and = compiled: one warm-up round each, then ``--rounds``
                        alternating round by round (median).
    Values are checked first: spikes equal and membranes within 1e-5 between the two kernels.

Run
    .venv/bin/python benchmarks/kernels.py                  # 100 clients, 3 rounds
    .venv/bin/python benchmarks/kernels.py --clients 10 --rounds 1 --iters 5
Last line: ``compiled_vs_loop_step=X compiled_vs_loop_round=Y compile_seconds=Z`` (X, Y: loop time / compiled
time, > 1 means the compiled kernel is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fl_round import make_settings  # noqa: E402  (the same workload)

from spikefed.experiment.config import RunSettings  # noqa: E402
from spikefed.experiment.runner import build_spec  # noqa: E402
from spikefed.federated.simulation import Simulation  # noqa: E402
from spikefed.runtime import configure_allocator  # noqa: E402
from spikefed.snn.kernels import lif_fused  # noqa: E402
from spikefed.snn.surrogate import get_surrogate  # noqa: E402


def lif_step_times(x: torch.Tensor, iters: int) -> tuple[dict[str, float], float]:
    """Median seconds of one forward + backward per kernel, the kernels alternating call by call (so a change in
    the machine's load hits both alike), and the first compiled call's seconds."""
    sur = get_surrogate("atan")
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))

    def once(kernel: str) -> float:
        xi = x.detach().requires_grad_(True)
        t0 = time.perf_counter()
        s, u = lif_fused(xi, None, 0.9, 1.0, 0.0, "subtract", True, sur, kernel=kernel)
        ((s * w).sum() + (u * w).sum()).backward()
        return time.perf_counter() - t0

    first = once("compiled")
    for _ in range(2):
        once("loop"), once("compiled")
    times: dict[str, list[float]] = {"loop": [], "compiled": []}
    for _ in range(iters):
        for kernel in ("loop", "compiled"):
            times[kernel].append(once(kernel))
    return {k: statistics.median(v) for k, v in times.items()}, first


def round_times(k: int, rounds: int) -> dict[str, float]:
    """Median seconds per round with each kernel, the two federations alternating round by round."""
    sims = {}
    for kernel in ("loop", "compiled"):
        d = make_settings(k, "cohort").model_dump()
        d["local"]["kernel"] = kernel
        sims[kernel] = Simulation(build_spec(RunSettings.model_validate(d)))
        sims[kernel].run_round()  # warm-up (and the compile)
    times: dict[str, list[float]] = {"loop": [], "compiled": []}
    for _ in range(rounds):
        for kernel, sim in sims.items():
            t0 = time.perf_counter()
            sim.run_round()
            times[kernel].append(time.perf_counter() - t0)
    a, b = sims["loop"].state.global_params, sims["compiled"].state.global_params
    diff = max(float((a[n] - b[n]).abs().max()) for n in a)
    print(f"max |w_loop - w_compiled| after {rounds + 1} rounds (float32; rounding differences, amplified where a "
          f"spike flips): {diff:.2e}")
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--clients-per-chunk", type=int, default=16, help="K of the kernel measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if min(args.clients, args.clients_per_chunk, args.rounds, args.iters) < 1:
        ap.error("every count must be >= 1")
    configure_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(25, args.clients_per_chunk, 32, 256, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.3
    s1, u1 = lif_fused(x, None, 0.9, 1.0, kernel="loop")
    t0 = time.perf_counter()
    s2, u2 = lif_fused(x, None, 0.9, 1.0, kernel="compiled")  # the first compiled call: compiles (or loads)
    first = time.perf_counter() - t0
    ok = torch.equal(s1, s2) and torch.allclose(u1, u2, atol=1e-5, rtol=1e-5)
    print(f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, load averages {os.getloadavg()}; "
          f"loop and compiled agree: {ok}", flush=True)
    if not ok:
        return 1
    steps, _ = lif_step_times(x, args.iters)
    loop_step, comp_step = steps["loop"], steps["compiled"]
    print(f"lif fwd+bwd {tuple(x.shape)}, median of {args.iters}, alternating: loop {loop_step * 1e3:.2f} ms, "
          f"compiled {comp_step * 1e3:.2f} ms "
          f"(first compiled call {first:.1f} s)", flush=True)
    rounds = round_times(args.clients, args.rounds)
    loop_round, comp_round = rounds["loop"], rounds["compiled"]
    print(f"round, {args.clients} clients: loop {loop_round:.3f} s, compiled {comp_round:.3f} s "
          f"(load averages after: {os.getloadavg()})")
    print(f"compiled_vs_loop_step={loop_step / comp_step:.2f} compiled_vs_loop_round={loop_round / comp_round:.2f} "
          f"compile_seconds={first:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
