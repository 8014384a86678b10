"""Strong label skew (Dirichlet alpha = 0.1): FedAvg vs FedProx vs SCAFFOLD (and server optimizers), one run.

Every strategy runs the same federation (Adam lr 2e-3 unless a row sets SGD) (digits, 20 clients, 10 sampled per
round, spiking MLP 64-256-10, same seed, same partition) through the in-process simulator; the table reports final
and best test accuracy, uplink bytes and wall time. Local training is E = 1 epoch unless a row says otherwise.

Run:  .venv/bin/python benchmarks/noniid.py [--rounds 30] [--seed 0] [--json benchmarks/results/noniid.json]
Last line:  fedavg=<acc> best_drift_corrected=<name>:<acc>
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation
from spikefed.runtime import configure_allocator

ROWS: list[tuple[str, list[str]]] = [
    ("FedAvg (E=1)", ["federation.strategy=fedavg", "local.epochs=1"]),
    ("FedAvg (E=3)", ["federation.strategy=fedavg", "local.epochs=3"]),
    ("FedProx mu=0.1 (E=3)", ["federation.strategy=fedprox", "federation.prox_mu=0.1", "local.epochs=3"]),
    ("FedProx mu=0.01 (E=3)", ["federation.strategy=fedprox", "federation.prox_mu=0.01", "local.epochs=3"]),
    ("FedAvg (E=5, SGD)", ["federation.strategy=fedavg", "local.epochs=5", "local.optimizer=sgd",
                           "local.lr=0.002", "local.momentum=0.0"]),
    ("SCAFFOLD (E=5, SGD)", ["federation.strategy=scaffold", "local.epochs=5", "local.optimizer=sgd",
                             "local.lr=0.002", "local.momentum=0.0"]),
    ("FedAvgM (E=1)", ["federation.strategy=fedavgm", "local.epochs=1", "federation.server_lr=1.0",
                       "federation.momentum=0.5"]),
    ("FedAdam (E=1)", ["federation.strategy=fedadam", "local.epochs=1", "federation.server_lr=0.01"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="benchmarks/results/noniid.json")
    args = ap.parse_args()
    configure_allocator()
    base = [f"partition.alpha={args.alpha}", f"federation.rounds={args.rounds}", f"seed={args.seed}", "local.lr=0.002"]
    results = []
    for name, overrides in ROWS:
        settings = build_settings(RunSettings, None, base + overrides)
        sim = Simulation(build_spec(settings))
        start = time.perf_counter()
        rows = [sim.run_round() for _ in range(args.rounds)]
        accs = [r["accuracy"] for r in rows if r["accuracy"] is not None]
        results.append({"name": name, "overrides": overrides, "final_accuracy": accs[-1], "best_accuracy": max(accs),
                        "bytes_up": sum(r["bytes_up"] for r in rows), "seconds": time.perf_counter() - start,
                        "mean_jsd": sim.heterogeneity["mean_jsd"]})
        print(f"{name}: final {accs[-1]:.4f} best {max(accs):.4f} ({results[-1]['seconds']:.1f} s)", flush=True)
    print(f"\nDirichlet alpha={args.alpha}, 20 clients, 10 per round, {args.rounds} rounds, seed {args.seed}, "
          f"mean label JSD {results[0]['mean_jsd']:.3f}\n")
    print("| strategy | final accuracy | best accuracy | uplink MB | wall s |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['name']} | {r['final_accuracy']:.4f} | {r['best_accuracy']:.4f} | "
              f"{r['bytes_up'] / 2**20:.1f} | {r['seconds']:.1f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"alpha": args.alpha, "rounds": args.rounds, "seed": args.seed,
                                           "results": results}, indent=2))
    fedavg = results[0]["final_accuracy"]
    best = max((r for r in results if r["name"].startswith(("FedProx", "SCAFFOLD"))), key=lambda r: r["final_accuracy"])
    print(f"fedavg={fedavg:.4f} best_drift_corrected={best['name'].split()[0]}:{best['final_accuracy']:.4f}")


if __name__ == "__main__":
    main()
