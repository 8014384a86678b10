"""Uplink compression on the default federation with local SGD: accuracy vs uplink bytes over 3 seeds.

Every row runs the default ``spikefed run`` federation (digits, Dirichlet alpha = 0.5 over 20 clients, 10
sampled per round, spiking MLP 64-256-10, FedAvg, 30 rounds) with the benchmark's local optimizer: **SGD lr
0.002, no momentum, 5 epochs** (the documented setting of this benchmark; the run's default local Adam 3e-3,
4 epochs does not fit top-1% sparsification, see docs/compression.md). Within a seed every row has the same
partition and client sampling; only ``compression.*`` differs. A second table repeats dense and top-1% + EF with
the default local Adam for comparison. Downlink dense. Uplink bytes are the lengths of the payloads actually
serialized (summed over all rounds and clients).

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compression.py [--seeds 0 1 2] [--rounds 30] [--workers 2]
      [--json benchmarks/results/compression.json]
Last line:  top1_ef_accuracy_drop=<points> top1_ef_byte_ratio=<x> worst_seed=<s> worst_seed_drop=<points>
            (local SGD; drop = dense final accuracy - top-1% + EF final accuracy, mean over the seeds; ratio =
            dense uplink bytes / top-1% + EF uplink bytes, mean over the seeds; the seed with the largest drop)
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation
from spikefed.runtime import configure_allocator

SGD = ["local.optimizer=sgd", "local.lr=0.002", "local.momentum=0.0", "local.epochs=5"]
TOP1_EF = ["compression.uplink=topk", "compression.fraction=0.01"]
ROWS: list[tuple[str, list[str]]] = [
    ("dense", []),
    ("top-10%", ["compression.uplink=topk", "compression.fraction=0.1", "compression.error_feedback=false"]),
    ("top-10% + EF", ["compression.uplink=topk", "compression.fraction=0.1"]),
    ("top-1%", [*TOP1_EF, "compression.error_feedback=false"]),
    ("top-1% + EF", TOP1_EF),
    ("8-bit QSGD", ["compression.uplink=qsgd8", "compression.error_feedback=false"]),
    ("top-1% + 8-bit + EF", ["compression.uplink=topk+qsgd8", "compression.fraction=0.01"]),
]
ADAM_ROWS: list[tuple[str, list[str]]] = [("dense", []), ("top-1% + EF", TOP1_EF)]  # the run's default local Adam
GROUPS = {"sgd": (SGD, ROWS), "adam": ([], ADAM_ROWS)}
TITLES = {"sgd": "local SGD 0.002, no momentum, 5 epochs (this benchmark's setting)",
          "adam": "local Adam 3e-3, 4 epochs (the run's default), for comparison"}


def run_row(job: tuple[str, str, list[str], int, int]) -> dict:
    group, name, overrides, rounds, seed = job
    configure_allocator()
    torch.set_num_threads(1)
    settings = build_settings(RunSettings, None, [f"federation.rounds={rounds}", f"seed={seed}", *overrides])
    sim = Simulation(build_spec(settings))
    start = time.perf_counter()
    rows = [sim.run_round() for _ in range(rounds)]
    accs = [r["accuracy"] for r in rows if r["accuracy"] is not None]
    return {"group": group, "name": name, "seed": seed, "overrides": overrides, "final_accuracy": accs[-1],
            "best_accuracy": max(accs), "bytes_up": sum(r["bytes_up"] for r in rows),
            "bytes_down": sum(r["bytes_down"] for r in rows), "accuracy_curve": accs,
            "seconds": time.perf_counter() - start}


def top1_summary(results: list[dict], group: str, seeds: list[int]) -> dict:
    """Per seed and mean: drop (points) of top-1% + EF below dense, and the uplink byte ratio."""
    cell = {(r["name"], r["seed"]): r for r in results if r["group"] == group}
    drops = {s: 100.0 * (cell[("dense", s)]["final_accuracy"] - cell[("top-1% + EF", s)]["final_accuracy"])
             for s in seeds}
    ratios = {s: cell[("dense", s)]["bytes_up"] / cell[("top-1% + EF", s)]["bytes_up"] for s in seeds}
    worst = max(seeds, key=lambda s: drops[s])
    return {"drop_points_by_seed": {str(s): v for s, v in drops.items()},
            "byte_ratio_by_seed": {str(s): v for s, v in ratios.items()},
            "drop_points": sum(drops.values()) / len(seeds), "byte_ratio": sum(ratios.values()) / len(seeds),
            "worst_seed": worst, "worst_seed_drop": drops[worst]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2, help="parallel runs (each one torch thread)")
    ap.add_argument("--json", default="benchmarks/results/compression.json")
    args = ap.parse_args()
    jobs = [(g, name, base + extra, args.rounds, s) for g, (base, rows) in GROUPS.items() for s in args.seeds
            for name, extra in rows]
    start = time.perf_counter()
    results = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for r in pool.map(run_row, jobs):
            results.append(r)
            print(f"[{r['group']} seed {r['seed']}] {r['name']}: final {r['final_accuracy']:.4f} uplink "
                  f"{r['bytes_up']:,} B ({r['seconds']:.1f} s)", flush=True)
    summary = {}
    for group, (_, rows) in GROUPS.items():
        cell = {(r["name"], r["seed"]): r for r in results if r["group"] == group}
        print(f"\nDigits, Dirichlet alpha=0.5, 20 clients, 10 per round, {args.rounds} rounds, {TITLES[group]}; "
              f"final accuracy per seed {' / '.join(map(str, args.seeds))} and mean; downlink dense\n")
        print("| uplink | final accuracy per seed | mean | uplink bytes (mean) | uplink reduction (mean) |")
        print("|---|---|---:|---:|---:|")
        for name, _ in rows:
            accs = [cell[(name, s)]["final_accuracy"] for s in args.seeds]
            up = sum(cell[(name, s)]["bytes_up"] for s in args.seeds) / len(args.seeds)
            red = sum(cell[("dense", s)]["bytes_up"] / cell[(name, s)]["bytes_up"]
                      for s in args.seeds) / len(args.seeds)
            print(f"| {name} | {' / '.join(f'{a:.4f}' for a in accs)} | {sum(accs) / len(accs):.4f} | {up:,.0f} | "
                  f"{red:.1f}x |")
        summary[group] = top1_summary(results, group, args.seeds)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rounds": args.rounds, "seeds": args.seeds, "summary": summary,
                                           "results": results, "seconds": time.perf_counter() - start}, indent=2))
    for group in ("adam", "sgd"):
        s = summary[group]
        print(f"\n[{group}] top-1% + EF drop per seed: " + ", ".join(f"{k}: {v:.2f}" for k, v in
                                                                s["drop_points_by_seed"].items())
              + f"; mean {s['drop_points']:.2f} points at {s['byte_ratio']:.1f}x fewer uplink bytes")
    s = summary["sgd"]
    print(f"top1_ef_accuracy_drop={s['drop_points']:.2f} top1_ef_byte_ratio={s['byte_ratio']:.1f} "
          f"worst_seed={s['worst_seed']} worst_seed_drop={s['worst_seed_drop']:.2f}")


if __name__ == "__main__":
    main()
