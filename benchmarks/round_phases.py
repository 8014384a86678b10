"""Seconds per phase of one simulated round (the fl_round.py workload): where a round's time goes.

Phases (the stage hooks of ``Simulation.run_round``, timed with perf_counter around each group):
``configure`` (sampling, strategy instructions, stages' configure: the broadcast), ``train`` (local training),
``upload`` (the stages' client hooks: each client's delta serialized), ``receive`` (the trust boundary: parse,
validate), ``server`` (the stages' server hooks: client drift), ``aggregate`` (the weighted mean and the server
optimizer), ``row`` (the metrics row and the commit). Median over ``--rounds`` rounds after one warm-up. The table shows
the process's CPU seconds (``time.process_time``) per phase: with one torch thread they measure the work done even
on a machine shared with other jobs, where wall seconds stretch with the load (also printed).

Run: ``python benchmarks/round_phases.py --clients 100,1000 --rounds 5 [--kernel numba]`` (add ``--profile``
for a cProfile listing of one more round at the largest K, ``--ops`` for torch.profiler's table of the tensor ops
of local training at each K). Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fl_round  # noqa: E402
import torch  # noqa: E402
from fl_round import make_settings  # noqa: E402

from spikefed.experiment.runner import build_spec  # noqa: E402
from spikefed.federated.simulation import Simulation  # noqa: E402
from spikefed.runtime import configure_allocator  # noqa: E402

PHASES = ("configure", "train", "upload", "receive", "server", "aggregate", "row")


def timed_round(sim: Simulation) -> dict[str, float]:
    """One round, the same hooks in the same order as ``Simulation.run_round``, timed per phase."""
    times: dict[str, float] = {}
    t, c = time.perf_counter(), time.process_time()

    def lap(phase: str) -> None:
        nonlocal t, c
        now, cpu = time.perf_counter(), time.process_time()
        times[phase], times["cpu_" + phase] = now - t, cpu - c
        t, c = now, cpu

    ctx = sim.round_context(sim.state.round + 1)
    for s in sim.stages:
        s.begin(ctx)
    for s in sim.stages:
        s.configure(ctx)
    lap("configure")
    ctx.updates = sim.train(ctx)
    lap("train")
    for s in sim.stages:
        s.client(ctx)
    lap("upload")
    sim.receive(ctx)
    lap("receive")
    for s in sim.stages:
        s.server(ctx)
    lap("server")
    ctx.aggregated_by = next((s.key for s in sim.stages if s.aggregate(ctx)), None)
    lap("aggregate")
    sim.round_row(ctx)
    for s in sim.stages:
        s.metrics(ctx)
    sim.commit(ctx)
    lap("row")
    return times


def measure(k: int, rounds: int) -> dict[str, Any]:
    sim = Simulation(build_spec(make_settings(k)))
    timed_round(sim)  # warm-up
    runs = [timed_round(sim) for _ in range(rounds)]
    return {p: statistics.median(r[p] for r in runs) for p in runs[0]}


def train_ops(k: int, rows: int = 20) -> str:
    """The local training of one round (after a warm-up round) under ``torch.profiler``: the top ``rows`` tensor
    ops by self CPU time, grouped by input shapes (where the step's time goes: products, LIF loops, optimizer)."""
    from torch.profiler import ProfilerActivity, profile

    sim = Simulation(build_spec(make_settings(k)))
    sim.run_round()
    ctx = sim.round_context(sim.state.round + 1)
    for s in sim.stages:
        s.begin(ctx)
    for s in sim.stages:
        s.configure(ctx)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        sim.train(ctx)
    return prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows,
                                                              max_name_column_width=28, max_shapes_column_width=70)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="100,1000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--profile", action="store_true", help="cProfile one more round at the largest K")
    ap.add_argument("--ops", action="store_true",
                    help="torch.profiler on local training at each K: the tensor ops by self CPU time, with shapes")
    ap.add_argument("--kernel", default="loop", choices=("loop", "compiled", "numba", "auto"),
                    help="local.kernel of the cohort engine (as fl_round.py --kernel)")
    args = ap.parse_args(argv)
    fl_round.KERNEL = args.kernel  # read by make_settings
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    if args.rounds < 1 or not clients or min(clients) < 1:
        ap.error("--rounds and every --clients value must be >= 1")
    configure_allocator()  # as fl_round.py
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, local.kernel={args.kernel}")
    print("CPU seconds of this process per phase (load-independent with 1 thread), wall seconds in the last columns")
    print("| clients | " + " | ".join(PHASES) + " | CPU total | bookkeeping share (CPU) | wall total | load |")
    print("|---:|" + "---:|" * (len(PHASES) + 4))
    for k in clients:
        m = measure(k, args.rounds)
        cpu = sum(m["cpu_" + p] for p in PHASES)
        share = (cpu - m["cpu_train"]) / cpu
        print(f"| {k:,} | " + " | ".join(f"{m['cpu_' + p]:.4f}" for p in PHASES)
              + f" | {cpu:.4f} | {share:.0%} | {sum(m[p] for p in PHASES):.4f} | {os.getloadavg()[0]:.1f} |")
    if args.ops:
        for k in clients:
            print(f"\nlocal training at {k:,} clients, one round (torch.profiler; times include its overhead):")
            print(train_ops(k))
    if args.profile:
        sim = Simulation(build_spec(make_settings(max(clients))))
        sim.run_round()
        prof = cProfile.Profile()
        prof.enable()
        sim.run_round()
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
