"""Continual FL (seed 000): forgetting for lambda in {0, 0.1, 1, 10} x three drift levels, one run.

Seed 000 claims that the forgetting of a round is bounded in proportion to the drift d(P_r, P_{r-1}) between
consecutive task distributions and inversely in the stability weight lambda of the client term
``lambda/2 ||theta - theta*||^2``: forgetting should grow with the drift and shrink as lambda grows. This
benchmark measures both on a domain-drift stream (digits, 10 IID clients, 5 sampled per round, spiking MLP
64-64-10, Adam lr 3e-3, 2 local epochs; 3 tasks of 4 rounds, task t rotated by t x {15, 45, 90} degrees) with
the L2 regulariser (anchor: the global model at the end of the previous task). Every (drift, lambda) cell is
the mean over the seeds; forgetting is the average forgetting of the accuracy matrix R (Chaudhry et al. 2018).

Run:  .venv/bin/python benchmarks/continual.py [--seeds 0 1 2] [--json benchmarks/results/continual.json]
Also: the same lambda grid with the Fisher-weighted (EWC) term at 45 degrees, and with L2 on a class-incremental
stream (digits 0-3, 4-6, 7-9), 3 seeds each.

Last line:  forgetting_monotone_in_lambda=<true|false>
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.continual import accuracy_matrix, continual_metrics
from spikefed.federated.simulation import Simulation
from spikefed.runtime import configure_allocator

LAMBDAS = (0.0, 0.1, 1.0, 10.0)
ROTATIONS = (15.0, 45.0, 90.0)  # degrees added per task: low, medium, high drift
BASE = ["partition.method=iid", "partition.num_clients=10", "federation.fraction=0.5", "model.hidden=[64]",
        "local.num_steps=8", "local.epochs=2", "local.lr=0.003", "continual.stream=domain_drift",
        "continual.tasks=3", "continual.regularizer=l2", "federation.rounds=12"]


def one_run(rotation: float | None, lam: float, seed: int, extra: tuple[str, ...] = ()) -> dict:
    """One federation; ``rotation=None`` keeps the stream of ``extra`` (e.g. class_incremental)."""
    over = BASE + list(extra) + [f"continual.lam={lam}", f"seed={seed}"]
    if rotation is not None:
        over.append(f"continual.rotation={rotation}")
    settings = build_settings(RunSettings, None, over)
    sim = Simulation(build_spec(settings))
    for _ in range(settings.federation.rounds):
        sim.run_round()
    r = accuracy_matrix(sim.state.metrics)
    assert sim.stream is not None
    return {"matrix": r, "drift": sim.stream.data.drift, **continual_metrics(r)}


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks; no ties in continuous data)."""
    rx, ry = np.argsort(np.argsort(x)).astype(float), np.argsort(np.argsort(y)).astype(float)
    return float(np.corrcoef(rx, ry)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", default="benchmarks/results/continual.json")
    args = ap.parse_args()
    configure_allocator()
    start = time.perf_counter()
    cells = []
    for rot in ROTATIONS:
        for lam in LAMBDAS:
            runs = [one_run(rot, lam, s) for s in args.seeds]
            cell = {"rotation": rot, "lam": lam,
                    "drift": float(np.mean([np.mean(r["drift"]) for r in runs])),
                    "forgetting": float(np.mean([r["average_forgetting"] for r in runs])),
                    "forgetting_by_seed": [r["average_forgetting"] for r in runs],
                    "average_accuracy": float(np.mean([r["average_accuracy"] for r in runs])),
                    "backward_transfer": float(np.mean([r["backward_transfer"] for r in runs])),
                    "last_task_accuracy": float(np.mean([r["matrix"][-1][-1] for r in runs])),
                    "matrices": [r["matrix"] for r in runs],
                    "pair_drift": [d for r in runs for d in r["drift"]],
                    "pair_forgetting": [f for r in runs for f in r["step_forgetting"]]}
            cells.append(cell)
            print(f"rotation {rot:g}/task (d={cell['drift']:.3f}) lambda {lam:g}: forgetting {cell['forgetting']:.4f} "
                  f"ACC {cell['average_accuracy']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    table = {(c["rotation"], c["lam"]): c["forgetting"] for c in cells}
    mono_lam = all(table[(rot, a)] >= table[(rot, b)] for rot in ROTATIONS for a, b in zip(LAMBDAS, LAMBDAS[1:]))
    drift = {c["rotation"]: c["drift"] for c in cells}
    by_d = sorted(ROTATIONS, key=lambda rot: drift[rot])  # the seed's claim is about the measured drift d
    grows_drift = all(table[(a, lam)] <= table[(b, lam)] for lam in LAMBDAS for a, b in zip(by_d, by_d[1:]))
    print(f"\nseeds {args.seeds}; average forgetting (mean over seeds), drift d = mean W2 distance between "
          "consecutive tasks\n")
    print("| rotation / task | d | " + " | ".join(f"lambda={lam:g}" for lam in LAMBDAS) + " |")
    print("|---:|---:|" + "---:|" * len(LAMBDAS))
    for rot in ROTATIONS:
        d = next(c["drift"] for c in cells if c["rotation"] == rot)
        print(f"| {rot:g} deg | {d:.3f} | " + " | ".join(f"{table[(rot, lam)]:.4f}" for lam in LAMBDAS) + " |")
    print("\n| rotation / task | " + " | ".join(f"ACC lambda={lam:g}" for lam in LAMBDAS) + " |")
    print("|---:|" + "---:|" * len(LAMBDAS))
    for rot in ROTATIONS:
        print(f"| {rot:g} deg | " + " | ".join(f"{c['average_accuracy']:.4f}" for c in cells if c["rotation"] == rot)
              + " |")
    # the same grid with the Fisher-weighted term (45 degrees) and on a class-incremental stream (L2)
    variants = {"ewc_rotation_45": (45.0, ("continual.regularizer=ewc", "continual.fisher_samples=32")),
                "l2_class_incremental": (None, ("continual.stream=class_incremental",))}
    extra_rows = {}
    for key, (rot, extra) in variants.items():
        extra_rows[key] = []
        for lam in LAMBDAS:
            runs = [one_run(rot, lam, s, extra) for s in args.seeds]
            extra_rows[key].append({"lam": lam, "forgetting": float(np.mean([r["average_forgetting"] for r in runs])),
                                    "average_accuracy": float(np.mean([r["average_accuracy"] for r in runs])),
                                    "last_task_accuracy": float(np.mean([r["matrix"][-1][-1] for r in runs])),
                                    "drift": float(np.mean([np.mean(r["drift"]) for r in runs])),
                                    "matrices": [r["matrix"] for r in runs]})
            print(f"{key} lambda {lam:g}: forgetting {extra_rows[key][-1]['forgetting']:.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    # the seed's bound is per round: forgetting of task i-1 while learning task i against d(P_i, P_{i-1}), pair by pair
    rho = {}
    for lam in LAMBDAS:
        pairs = [(d, f) for c in cells if c["lam"] == lam for d, f in zip(c["pair_drift"], c["pair_forgetting"])]
        rho[lam] = spearman([p[0] for p in pairs], [p[1] for p in pairs])
    print("\nper task pair (all rotations and seeds): Spearman rho(step forgetting, d) "
          + ", ".join(f"lambda={lam:g}: {rho[lam]:.3f}" for lam in LAMBDAS))
    print("\n| rotation / task | " + " | ".join(f"last-task acc lambda={lam:g}" for lam in LAMBDAS) + " |")
    print("|---:|" + "---:|" * len(LAMBDAS))
    for rot in ROTATIONS:
        print(f"| {rot:g} deg | " + " | ".join(f"{c['last_task_accuracy']:.4f}" for c in cells
                                           if c["rotation"] == rot) + " |")
    print("\n| variant | " + " | ".join(f"forgetting / ACC lambda={lam:g}" for lam in LAMBDAS) + " |")
    print("|---|" + "---:|" * len(LAMBDAS))
    l2_45 = [c for c in cells if c["rotation"] == 45.0]
    for key, rows in [("l2_rotation_45", l2_45), *extra_rows.items()]:
        print(f"| {key} | " + " | ".join(f"{r['forgetting']:.4f} / {r['average_accuracy']:.4f}" for r in rows) + " |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"seeds": args.seeds, "base": BASE, "cells": cells,
                                           "forgetting_monotone_in_lambda": mono_lam, "variants": extra_rows,
                                           "forgetting_grows_with_drift": grows_drift,
                                           "spearman_step_forgetting_vs_drift": {str(k): v for k, v in rho.items()},
                                           "seconds": time.perf_counter() - start}, indent=1))
    print(f"\nforgetting_grows_with_drift={str(grows_drift).lower()} ({time.perf_counter() - start:.0f} s)")
    print(f"forgetting_monotone_in_lambda={str(mono_lam).lower()}")


if __name__ == "__main__":
    main()
