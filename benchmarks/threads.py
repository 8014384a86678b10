"""Seconds per round at 1, 2 and torch's default intra-op threads, on an idle machine and beside a busy core.

Workload: ``benchmarks/fl_round.py``'s (digits split IID into K clients, all train every round; spiking MLP
64-256-10, LIF, T = 25, direct input, 1 local epoch, batch 32, Adam, FedAvg), cohort engine, ``--clients``
clients per round (default 100). For each thread count the same federation runs one warm-up round and
``--rounds`` timed rounds (median reported), first with nothing else started by this script, then with
``--competitors`` CPU-bound processes (a Python busy loop each) running beside it. The script also checks that
the final global parameters are bit-identical across thread counts (so a thread policy that depends on the
machine's load cannot change a run's numbers), prints the 1-minute load average before each measurement (the
machine may be shared), and the policy ``runtime.threads=auto`` would pick at that moment.

Run
    .venv/bin/python benchmarks/threads.py                       # K = 100, 3 timed rounds
    .venv/bin/python benchmarks/threads.py --clients 10 --rounds 1
The "idle" keys mean "nothing started by this script": read them with the load averages printed beside them.
Last line: ``threads_idle_1=a threads_idle_2=b threads_idle_default=c threads_busy_1=d threads_busy_2=e
threads_busy_default=f auto_busy=g bit_identical=h`` (seconds per round; auto_busy: the thread count auto picks
beside the busy processes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fl_round import make_settings  # noqa: E402  (the fl_round workload, not a copy of it)

from spikefed.experiment.runner import build_spec  # noqa: E402
from spikefed.federated.simulation import Simulation  # noqa: E402
from spikefed.runtime import choose_threads, configure_allocator  # noqa: E402

BUSY_LOOP = "while True:\n    pass\n"


def seconds_per_round(k: int, threads: int, rounds: int) -> tuple[float, dict[str, torch.Tensor]]:
    torch.set_num_threads(threads)
    sim = Simulation(build_spec(make_settings(k, "cohort")))
    sim.run_round()  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        sim.run_round()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), sim.state.global_params


def load() -> float:
    return os.getloadavg()[0]


def measure_all(k: int, rounds: int, counts: list[int], label: str) -> dict[int, tuple[float, Any]]:
    out = {}
    for n in counts:
        before = load()
        sec, params = seconds_per_round(k, n, rounds)
        print(f"[{label}] threads={n}: {sec:.3f} s/round (load average before: {before:.2f})", flush=True)
        out[n] = (sec, params)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--competitors", type=int, default=1, help="CPU-bound processes started beside the run")
    args = ap.parse_args(argv)
    if args.clients < 1 or args.rounds < 1 or args.competitors < 0:
        ap.error("--clients and --rounds must be >= 1, --competitors >= 0")
    configure_allocator()
    default = torch.get_num_threads()
    counts = sorted({1, 2, default})
    print(f"cpus {os.cpu_count()}, torch default threads {default}, uptime load averages {os.getloadavg()}")
    idle = measure_all(args.clients, args.rounds, counts, "nothing started by this script")
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.competitors)]
    try:
        time.sleep(5.0)  # let the load average notice them (it is a 1-minute average: a lower bound)
        auto_busy = choose_threads("auto")
        busy = measure_all(args.clients, args.rounds, counts, f"{args.competitors} busy process(es)")
        auto_busy = min(auto_busy, choose_threads("auto"))
    finally:
        for p in procs:
            p.kill()
            p.wait()
    ref = idle[1][1]
    identical = all(torch.equal(ref[n], res[1][n]) for res in (*idle.values(), *busy.values()) for n in ref)
    print("\n| threads | as is s/round | beside busy s/round | busy / as is |")
    print("|---:|---:|---:|---:|")
    for n in counts:
        print(f"| {n}{' (torch default)' if n == default else ''} | {idle[n][0]:.3f} | {busy[n][0]:.3f} "
              f"| {busy[n][0] / idle[n][0]:.2f}x |")
    print(f"\nfinal parameters bit-identical across thread counts and load: {identical}")
    print(f"threads_idle_1={idle[1][0]:.3f} threads_idle_2={idle[2][0]:.3f} "
          f"threads_idle_default={idle[default][0]:.3f} threads_busy_1={busy[1][0]:.3f} "
          f"threads_busy_2={busy[2][0]:.3f} threads_busy_default={busy[default][0]:.3f} "
          f"auto_busy={auto_busy} bit_identical={identical}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
