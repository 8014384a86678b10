"""Fairness and client selection on strong label skew (Dirichlet alpha = 0.1): FedAvg vs q-FFL, and
power-of-choice vs uniform selection (rounds to a target accuracy).

Part 1 (fairness): the same federation (digits, 20 clients, 10 sampled per round, spiking MLP 64-256-10, Adam
lr 2e-3, E = 1) under FedAvg (sample weights), FedAvg with uniform 1/N weights and q-FFL (q = 1 with L = 1,
and with the paper's L = 1/lr, which assumes local SGD); per seed the final test accuracy and the fairness of
the final global model across the 20 clients (mean, worst 10 %, Jain index of the per-client accuracy); the
table gives the mean and standard deviation over the seeds.

Part 2 (selection): 4 of 20 clients per round, uniform vs power-of-choice (d = 10 candidates, the 4 with the
highest loss at the global model train) vs size-proportional draws vs diurnal availability; rounds until the
test accuracy first reaches the target (``--target``), and the final accuracy.

Run:  .venv/bin/python benchmarks/fairness.py [--rounds 30] [--seeds 0 1 2] [--json benchmarks/results/fairness.json]
Last line:  fedavg_worst10=<> qffl_worst10=<> fedavg_jain=<> qffl_jain=<> rounds_to_target_uniform=<s0/s1/s2>
            rounds_to_target_poc=<s0/s1/s2>   (one line)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation
from spikefed.runtime import configure_allocator

FAIRNESS_ROWS: list[tuple[str, list[str]]] = [
    ("FedAvg (sample weights)", ["federation.strategy=fedavg"]),
    ("FedAvg (uniform 1/N weights)", ["federation.strategy=fedavg", "federation.weights=uniform"]),
    ("q-FFL q=1 L=1", ["federation.strategy=qffl", "federation.qffl_q=1", "federation.qffl_lipschitz=1"]),
    ("q-FFL q=1 L=1/lr=500 (paper's choice for SGD)", ["federation.strategy=qffl", "federation.qffl_q=1"]),
]
SELECTION_ROWS: list[tuple[str, list[str]]] = [
    ("uniform", ["federation.selection=uniform"]),
    ("power-of-choice d=10", ["federation.selection=power_of_choice", "federation.selection_candidates=0.5"]),
    ("size-proportional", ["federation.selection=size"]),
    ("availability (diurnal, 24 rounds/day)", ["federation.selection=availability"]),
]
KEYS = ("accuracy", "client_accuracy_mean", "client_accuracy_worst10", "client_accuracy_jain")


def run(overrides: list[str], rounds: int) -> tuple[list[dict[str, Any]], float]:
    settings = build_settings(RunSettings, None, overrides)
    sim = Simulation(build_spec(settings))
    start = time.perf_counter()
    rows = [sim.run_round() for _ in range(rounds)]
    return rows, time.perf_counter() - start


def rounds_to(rows: list[dict[str, Any]], target: float) -> int | None:
    return next((r["round"] for r in rows if r["accuracy"] is not None and r["accuracy"] >= target), None)


def ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--target", type=float, default=0.7)
    ap.add_argument("--json", default="benchmarks/results/fairness.json")
    ap.add_argument("--part", choices=("both", "fairness", "selection"), default="both",
                    help="run only one part (the JSON and the last line then hold that part)")
    ap.add_argument("--selections", nargs="+", default=None,
                    help="selection rows to run, by the first word of their name (default: all)")
    ap.add_argument("--fairness-rows", type=int, nargs="+", default=None,
                    help="indices of the fairness rows to run (default: all)")
    ap.add_argument("--paper-seeds", type=int, default=None,
                    help="seeds for the q-FFL L=1/lr row (default: all of --seeds; it learns slowly)")
    args = ap.parse_args()
    configure_allocator()
    base = [f"partition.alpha={args.alpha}", f"federation.rounds={args.rounds}", "local.lr=0.002", "local.epochs=1"]
    fairness: list[dict[str, Any]] = []
    fair_rows = [] if args.part == "selection" else [FAIRNESS_ROWS[i] for i in (args.fairness_rows or
                                                                              range(len(FAIRNESS_ROWS)))]
    for name, overrides in fair_rows:
        per_seed = []
        seeds = args.seeds[:args.paper_seeds] if "paper" in name and args.paper_seeds else args.seeds
        for seed in seeds:
            rows, secs = run(base + [f"seed={seed}"] + overrides, args.rounds)
            per_seed.append({"seed": seed, "seconds": secs, **{k: rows[-1][k] for k in KEYS}})
            print(f"{name} seed {seed}: " + " ".join(f"{k}={rows[-1][k]:.4f}" for k in KEYS) + f" ({secs:.1f} s)",
                  flush=True)
        fairness.append({"name": name, "overrides": overrides, "seeds": per_seed})
    selection: list[dict[str, Any]] = []
    sel_rows = [] if args.part == "fairness" else [
        r for r in SELECTION_ROWS if args.selections is None or r[0].split()[0] in args.selections]
    for name, overrides in sel_rows:
        per_seed = []
        for seed in args.seeds:
            rows, secs = run(base + [f"seed={seed}", "federation.fraction=0.2"] + overrides, args.rounds)
            per_seed.append({"seed": seed, "seconds": secs, "rounds_to_target": rounds_to(rows, args.target),
                             "final_accuracy": rows[-1]["accuracy"],
                             "accuracy": [r["accuracy"] for r in rows],
                             "worst10": rows[-1]["client_accuracy_worst10"]})
            print(f"{name} seed {seed}: rounds to {args.target}: {per_seed[-1]['rounds_to_target']} final "
                  f"{rows[-1]['accuracy']:.4f} ({secs:.1f} s)", flush=True)
        selection.append({"name": name, "overrides": overrides, "seeds": per_seed})

    print(f"\nDirichlet alpha={args.alpha}, 20 clients, {args.rounds} rounds, seeds {args.seeds} (mean ± std)\n")
    print("| strategy (10 of 20 per round) | test accuracy | client mean | client worst 10% | Jain index |")
    print("|---|---:|---:|---:|---:|")
    for f in fairness:
        print(f"| {f['name']} | " + " | ".join(ms([s[k] for s in f["seeds"]]) for k in KEYS) + " |")
    print(f"\n| selection (4 of 20 per round) | rounds to accuracy {args.target} (per seed) | final accuracy | "
          "client worst 10% |")
    print("|---|---|---:|---:|")
    for s in selection:
        reach = ", ".join(str(x["rounds_to_target"]) if x["rounds_to_target"] else f">{args.rounds}"
                          for x in s["seeds"])
        print(f"| {s['name']} | {reach} | {ms([x['final_accuracy'] for x in s['seeds']])} | "
              f"{ms([x['worst10'] for x in s['seeds']])} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"alpha": args.alpha, "rounds": args.rounds, "seeds": args.seeds,
                                           "target": args.target, "fairness": fairness, "selection": selection},
                                          indent=2))

    def mean_of(name: str, key: str) -> str:
        row = next((r for r in fairness if r["name"] == name), None)
        return f"{statistics.mean(s[key] for s in row['seeds']):.4f}" if row else "-"

    def reach(name: str) -> str:
        row = next((r for r in selection if r["name"] == name), None)
        vals = [s["rounds_to_target"] for s in row["seeds"]] if row else []
        return "/".join(str(v) if v else f">{args.rounds}" for v in vals) or "-"

    print(f"fedavg_worst10={mean_of('FedAvg (sample weights)', 'client_accuracy_worst10')} "
          f"qffl_worst10={mean_of('q-FFL q=1 L=1', 'client_accuracy_worst10')} "
          f"fedavg_jain={mean_of('FedAvg (sample weights)', 'client_accuracy_jain')} "
          f"qffl_jain={mean_of('q-FFL q=1 L=1', 'client_accuracy_jain')} "
          f"rounds_to_target_uniform={reach('uniform')} rounds_to_target_poc={reach('power-of-choice d=10')}")


if __name__ == "__main__":
    main()
