"""LIF kernel per step and a whole round with each kernel: loop (the reference fast path) vs numba (vs compiled).

What is measured (one process, one run; every kernel in the same run, alternating call by call / round by round,
so a change in the machine's load hits all alike)
    1. ``lif fwd+bwd``  one hidden LIF layer, ``lif_fused`` forward + backward (reset by subtraction, atan
                        surrogate, spikes feed a random linear read-out) on ``x [T, K, B, N]`` =
                        ``[25, --clients-per-chunk, 15, 256]`` float32 (the 100-client round's hidden layer:
                        14-15 samples per client), median of ``--iters`` after 2 warm-ups; wall seconds and the
                        process's CPU seconds (steadier on a shared machine).
    2. ``round``        ``benchmarks/fl_round.py``'s workload (digits, IID, all clients train, 64-256-10 LIF MLP,
                        T = 25, 1 local epoch, batch 32, Adam, FedAvg) at each ``--clients`` with
                        ``local.kernel`` = each kernel: one warm-up round each, then ``--rounds`` alternating
                        (median), and the largest weight difference to the loop's federation after them.
    Values are checked first: spikes equal and membranes within 1e-5 of the loop kernel. The first call of a
    non-loop kernel (numba: load or compile its machine code; compiled: inductor) is reported apart.

Run
    .venv/bin/python benchmarks/kernels.py                                   # loop vs numba, 100 and 1,000 clients
    .venv/bin/python benchmarks/kernels.py --kernels loop,numba,compiled --clients 100 --rounds 3
    .venv/bin/python benchmarks/kernels.py --clients 10 --rounds 1 --iters 3 --json /tmp/k.json
Writes ``--json`` (default benchmarks/results/kernels.json). Last line, for each non-loop kernel ``k``:
``k_vs_loop_step=X k_vs_loop_round_<clients>=Y ...`` (loop time / k time, > 1 means k is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fl_round import make_settings  # noqa: E402  (the same workload)

from spikefed.experiment.config import RunSettings  # noqa: E402
from spikefed.experiment.runner import build_spec  # noqa: E402
from spikefed.federated.simulation import Simulation  # noqa: E402
from spikefed.runtime import configure_allocator  # noqa: E402
from spikefed.snn.kernels import lif_fused  # noqa: E402
from spikefed.snn.surrogate import get_surrogate  # noqa: E402

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "kernels.json"


def alternate(kernels: list[str], call: Callable[[str], tuple[float, float]], repeats: int
              ) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds of ``call(kernel)`` per kernel, the kernels alternating call by call."""
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in kernels}
    for _ in range(repeats):
        for k in kernels:
            times[k].append(call(k))
    return {k: {"wall_s": statistics.median(w for w, _ in v), "cpu_s": statistics.median(c for _, c in v)}
            for k, v in times.items()}


def lif_step_times(x: torch.Tensor, kernels: list[str], iters: int) -> dict[str, dict[str, float]]:
    """Forward + backward of one LIF layer per kernel (wall and CPU seconds, median of ``iters``)."""
    sur = get_surrogate("atan")
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))

    def once(kernel: str) -> tuple[float, float]:
        xi = x.detach().requires_grad_(True)
        t0, c0 = time.perf_counter(), time.process_time()
        s, _ = lif_fused(xi, None, 0.9, 1.0, 0.0, "subtract", True, sur, kernel=kernel)
        torch.autograd.backward(s, w)
        return time.perf_counter() - t0, time.process_time() - c0

    alternate(kernels, once, 2)  # warm-up
    return alternate(kernels, once, iters)


def round_times(k: int, kernels: list[str], rounds: int) -> dict[str, Any]:
    """Median seconds per round with each kernel, the federations alternating round by round."""
    sims = {}
    for kernel in kernels:
        d = make_settings(k, "cohort").model_dump()
        d["local"]["kernel"] = kernel
        sims[kernel] = Simulation(build_spec(RunSettings.model_validate(d)))
        sims[kernel].run_round()  # warm-up (and a compile)

    def once(kernel: str) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        sims[kernel].run_round()
        return time.perf_counter() - t0, time.process_time() - c0

    out: dict[str, Any] = alternate(kernels, once, rounds)
    ref = sims[kernels[0]].state.global_params
    for kernel in kernels[1:]:
        other = sims[kernel].state.global_params
        out[kernel]["max_abs_diff_vs_loop"] = max(float((ref[n] - other[n]).abs().max()) for n in ref)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", default="loop,numba", help="comma-separated; loop first (the reference)")
    ap.add_argument("--clients", default="100,1000", help="comma-separated clients per round")
    ap.add_argument("--clients-per-chunk", type=int, default=100, help="K of the kernel measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)
    kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    if kernels[:1] != ["loop"] or len(kernels) < 2 or len(set(kernels)) != len(kernels):
        ap.error("--kernels: loop first, then at least one other kernel, no repeats")
    if not clients or min(*clients, args.clients_per_chunk, args.rounds, args.iters) < 1:
        ap.error("every count must be >= 1")
    configure_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    x = torch.randn(25, args.clients_per_chunk, 15, 256, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.3
    s_ref, u_ref = lif_fused(x, None, 0.9, 1.0, kernel="loop")
    first: dict[str, float] = {}
    for kernel in kernels[1:]:
        t0 = time.perf_counter()
        s, u = lif_fused(x, None, 0.9, 1.0, kernel=kernel)  # the first call: compiles or loads
        first[kernel] = time.perf_counter() - t0
        if not (torch.equal(s, s_ref) and torch.allclose(u, u_ref, atol=1e-5, rtol=1e-5)):
            print(f"{kernel} disagrees with the loop kernel", file=sys.stderr)
            return 1
    print(f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, load averages {load_start}; kernels "
          f"agree with loop; first call: " + ", ".join(f"{k} {s:.1f} s" for k, s in first.items()), flush=True)
    steps = lif_step_times(x, kernels, args.iters)
    print(f"lif fwd+bwd {tuple(x.shape)} float32, median of {args.iters}, alternating: "
          + ", ".join(f"{k} {v['wall_s'] * 1e3:.1f} ms ({v['cpu_s'] * 1e3:.1f} CPU ms)" for k, v in steps.items()),
          flush=True)
    rounds: dict[int, dict[str, Any]] = {}
    for k in clients:
        rounds[k] = round_times(k, kernels, args.rounds)
        print(f"round, {k:,} clients, median of {args.rounds}: "
              + ", ".join(f"{kern} {v['wall_s']:.3f} s ({v['cpu_s']:.3f} CPU s)" for kern, v in rounds[k].items())
              + "; max |w_loop - w_k| after the rounds: "
              + ", ".join(f"{kern} {v['max_abs_diff_vs_loop']:.1e}" for kern, v in rounds[k].items()
                          if "max_abs_diff_vs_loop" in v), flush=True)
    load_end = os.getloadavg()
    print(f"load averages at the end: {load_end}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "meta": {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
                 "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_start": load_start,
                 "load_end": load_end, "step_shape": list(x.shape), "first_call_s": first},
        "step": steps, "rounds": {str(k): v for k, v in rounds.items()}}, indent=2) + "\n")
    parts = []
    for kernel in kernels[1:]:
        parts.append(f"{kernel}_vs_loop_step={steps['loop']['wall_s'] / steps[kernel]['wall_s']:.2f}")
        parts += [f"{kernel}_vs_loop_round_{k}={r['loop']['wall_s'] / r[kernel]['wall_s']:.2f}"
                  for k, r in rounds.items()]
    print(" ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
