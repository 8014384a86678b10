"""Memory at scale: 1,000 clients x 100 rounds through the ``spikefed run`` code path, RSS sampled every round.

Workload: digits (1,437 training samples) split IID into 1,000 clients (1 or 2 samples each), 5% sampled per
round (50 clients), spiking MLP 64-256-10 (LIF, T = 25, direct input), the federated local defaults (4 epochs,
Adam 3e-3, batch 32: 4 local steps per client), FedAvg, evaluation every 10 rounds and at the last. Faults on
by default (``--no-faults`` turns them off): dropout 0.1, deadline 4 step-times, straggler sigma 0.5, jitter
0.2, late work kept FedNova-style, so the fault path runs at scale too.

What runs: :class:`spikefed.experiment.runner.Run` in a temporary run directory, exactly as ``spikefed run``
(the allocator setting of the command, the checkpoint written atomically every round, one metrics row appended
per round), without the HTML report at the end.

Memory: resident set size read from ``/proc/self/statm`` (field 2, pages x page size; ``psutil`` is not a
dependency) after setup and after every round. Reported:

- ``rss_growth_mb`` = RSS after the last round - RSS after round 10 (rounds 1-10 are warm-up: allocator
  pools, autograd and kernel caches, first-use imports fill up there);
- ``slope_mb_per_100_rounds``: least-squares slope of RSS over rounds 10..last, times 100 (robust to a single
  late allocation spike; a leak shows as a steady positive slope).

Run
    .venv/bin/python benchmarks/scale.py                                # 1,000 clients x 100 rounds
    .venv/bin/python benchmarks/scale.py --clients 200 --rounds 30 --json /tmp/scale.json
Prints progress, a Markdown table and, last, the line ``rss_growth_mb=<x>`` (target < 50).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from spikefed.experiment.config import RunSettings
from spikefed.experiment.runner import Run
from spikefed.runtime import configure_allocator

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "scale.json"
WARMUP = 10
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident set size of this process in MiB (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).mallinfo2 if name else None
    except (OSError, AttributeError):
        return None
    if fn is not None:
        fn.restype = _MallInfo2
    return fn


_MALLINFO = _mallinfo2()


def heap_mb() -> tuple[float, float] | None:
    """glibc heap (all arenas, ``mallinfo2``): bytes in use by live allocations (``uordblks + hblkhd``) and
    bytes free but kept by the allocator (``fordblks``), in MiB; ``None`` where glibc's ``mallinfo2`` is
    missing. RSS growth with flat in-use bytes is allocator retention / fragmentation, not a leak."""
    if _MALLINFO is None:
        return None
    m = _MALLINFO()
    return (m.uordblks + m.hblkhd) / 2**20, m.fordblks / 2**20


def make_settings(clients: int, rounds: int, fraction: float, seed: int, faults: bool) -> RunSettings:
    data: dict[str, Any] = {
        "seed": seed,
        "partition": {"method": "iid", "num_clients": clients},
        "model": {"hidden": [256]},
        "local": {"num_steps": 25},
        "federation": {"rounds": rounds, "fraction": fraction, "eval_every": 10},
    }
    if faults:
        data["faults"] = {"dropout": 0.1, "deadline": 4.0, "straggler_sigma": 0.5, "jitter_sigma": 0.2,
                          "late_policy": "fednova"}
    return RunSettings.model_validate(data)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope ``cov(x, y) / var(x)``."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-faults", action="store_true", help="run without dropout / stragglers")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--tracemalloc", action="store_true",
                    help="also trace Python allocations from the end of warm-up and print the largest growth")
    args = ap.parse_args()
    if args.rounds <= WARMUP:
        ap.error(f"--rounds must exceed the {WARMUP} warm-up rounds")
    configure_allocator()  # as the spikefed command does
    settings = make_settings(args.clients, args.rounds, args.fraction, args.seed, not args.no_faults)
    rss_start = rss_mb()
    with tempfile.TemporaryDirectory(prefix="spikefed-scale-") as tmp:
        t0 = time.perf_counter()
        run = Run(settings, Path(tmp) / "run")
        setup_s = time.perf_counter() - t0
        rss_setup = rss_mb()
        print(f"setup: {setup_s:.1f} s, RSS {rss_start:.1f} -> {rss_setup:.1f} MiB "
              f"({args.clients} clients, {settings.partition.method})", flush=True)
        rss: list[float] = []
        heap_used: list[float] = []
        heap_free: list[float] = []
        trained: list[int] = []
        seconds: list[float] = []
        dropped = late = 0
        while not run.done:
            t = time.perf_counter()
            row = run.step()
            seconds.append(time.perf_counter() - t)
            rss.append(rss_mb())
            heap = heap_mb()
            if heap is not None:
                heap_used.append(heap[0])
                heap_free.append(heap[1])
            trained.append(int(row["accepted"]) + int(row["rejected"]))
            dropped += row.get("dropped", 0)
            late += row.get("late", 0)
            r = row["round"]
            if args.tracemalloc and r == WARMUP:
                tracemalloc.start()
                baseline = tracemalloc.take_snapshot()
            if r == 1 or r % 10 == 0:
                acc = row.get("accuracy")
                print(f"round {r:4d}: {seconds[-1]:.3f} s/round, RSS {rss[-1]:.1f} MiB"
                      + (f" (heap in use {heap_used[-1]:.1f}, free {heap_free[-1]:.1f})" if heap_used else "")
                      + (f", accuracy {acc:.4f}" if acc is not None else ""), flush=True)
        ckpt_bytes = run.checkpoint.stat().st_size
        traced: list[str] = []
        if args.tracemalloc:
            diff = tracemalloc.take_snapshot().compare_to(baseline, "lineno")
            traced = [str(d) for d in diff[:8]]
            tracemalloc.stop()
        final = run.sim.state.metrics[-1]
    rounds = list(range(1, len(rss) + 1))
    growth = rss[-1] - rss[WARMUP - 1]
    per100 = 100 * slope(rounds[WARMUP - 1:], rss[WARMUP - 1:])
    marks = sorted({1, WARMUP, 25, 50, 75, len(rss)} & set(rounds))
    print(f"\n{args.clients} clients, {args.fraction:g} sampled per round, {len(rss)} rounds, "
          f"faults {'off' if args.no_faults else 'on'}; final accuracy {final.get('accuracy')}")
    print("| after round | RSS MiB | heap in use MiB | heap free (kept) MiB | s/round (median of the last 10) |")
    print("|---:|---:|---:|---:|---:|")
    for m in marks:
        window = seconds[max(0, m - 10):m]
        used = f"{heap_used[m - 1]:.1f}" if heap_used else "-"
        free = f"{heap_free[m - 1]:.1f}" if heap_free else "-"
        print(f"| {m} | {rss[m - 1]:.1f} | {used} | {free} | {float(np.median(window)):.3f} |")
    heap_growth = heap_used[-1] - heap_used[WARMUP - 1] if heap_used else float("nan")
    print(f"\nRSS after setup {rss_setup:.1f} MiB; max {max(rss):.1f} MiB; growth after warm-up (round {WARMUP} -> "
          f"{len(rss)}): {growth:+.1f} MiB; least-squares slope {per100:+.2f} MiB per 100 rounds; "
          f"checkpoint {ckpt_bytes / 1e6:.2f} MB; dropped {dropped}, late {late} client-rounds; "
          f"heap in use after warm-up: {heap_growth:+.2f} MiB")
    if traced:
        print(f"Python allocations, growth since round {WARMUP} (tracemalloc):")
        print("\n".join(f"  {line}" for line in traced))
    result = {
        "clients": args.clients, "rounds": len(rss), "fraction": args.fraction, "seed": args.seed,
        "faults": not args.no_faults, "settings": settings.model_dump(mode="json"),
        "rss_start_mb": rss_start, "rss_setup_mb": rss_setup, "rss_mb": rss, "seconds": seconds,
        "heap_in_use_mb": heap_used, "heap_free_mb": heap_free, "heap_in_use_growth_mb": heap_growth,
        "clients_trained": trained,
        "setup_s": setup_s, "rss_growth_mb": growth, "slope_mb_per_100_rounds": per100,
        "checkpoint_bytes": ckpt_bytes, "final_accuracy": final.get("accuracy"),
        "dropped": dropped, "late": late, "tracemalloc_top": traced,
        "machine": {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
                    "threads": torch.get_num_threads()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"rss_growth_mb={growth:.1f}")


if __name__ == "__main__":
    main()
