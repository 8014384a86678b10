"""Uplink compression on the default federation: accuracy vs uplink bytes (top-k, error feedback, 8-bit QSGD).

Every row runs the default ``spikefed run`` federation (digits, Dirichlet alpha = 0.5 over 20 clients, 10
sampled per round, spiking MLP 64-256-10, FedAvg, 4 local epochs of Adam 3e-3) with the same seed, the same
partition and the same client sampling; only ``compression.*`` differs. A second table repeats the key rows with
local SGD (lr 0.002, no momentum, 5 epochs), whose updates top-k compresses much better than Adam's. The
downlink stays dense unless a row says otherwise. Uplink bytes are the lengths of the payloads actually
serialized (summed over all rounds and clients).

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compression.py [--rounds 30] [--seed 0] [--quick]
      [--json benchmarks/results/compression.json]
Last line:  top1_ef_accuracy_drop=<points> top1_ef_byte_ratio=<x> sgd_top1_ef_accuracy_drop=<points>
            sgd_top1_ef_byte_ratio=<x>   (drop = dense final accuracy - compressed final accuracy, in points)
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
    ("dense", []),
    ("top-10%", ["compression.uplink=topk", "compression.fraction=0.1", "compression.error_feedback=false"]),
    ("top-10% + EF", ["compression.uplink=topk", "compression.fraction=0.1"]),
    ("top-1%", ["compression.uplink=topk", "compression.fraction=0.01", "compression.error_feedback=false"]),
    ("top-1% + EF", ["compression.uplink=topk", "compression.fraction=0.01"]),
    ("8-bit QSGD", ["compression.uplink=qsgd8", "compression.error_feedback=false"]),
    ("top-1% + 8-bit + EF", ["compression.uplink=topk+qsgd8", "compression.fraction=0.01"]),
]
EXTRA_ROWS: list[tuple[str, list[str]]] = [  # further options, same federation
    ("top-1% + EF, fp16 values", ["compression.uplink=topk", "compression.fraction=0.01", "compression.values=fp16"]),
    ("scaled sign + EF", ["compression.uplink=sign"]),
    ("4-bit QSGD", ["compression.uplink=qsgd4", "compression.error_feedback=false"]),
    ("top-1% + EF, downlink top-10%", ["compression.uplink=topk", "compression.fraction=0.01",
                                       "compression.downlink=topk", "compression.downlink_fraction=0.1"]),
]

SGD = ["local.optimizer=sgd", "local.lr=0.002", "local.momentum=0.0", "local.epochs=5"]
SGD_ROWS: list[tuple[str, list[str]]] = [
    ("dense", SGD),
    ("top-1%", SGD + ["compression.uplink=topk", "compression.fraction=0.01", "compression.error_feedback=false"]),
    ("top-1% + EF", SGD + ["compression.uplink=topk", "compression.fraction=0.01"]),
    ("top-1% + 8-bit + EF", SGD + ["compression.uplink=topk+qsgd8", "compression.fraction=0.01"]),
]


def run_row(overrides: list[str], rounds: int, seed: int) -> dict:
    settings = build_settings(RunSettings, None, [f"federation.rounds={rounds}", f"seed={seed}", *overrides])
    sim = Simulation(build_spec(settings))
    start = time.perf_counter()
    rows = [sim.run_round() for _ in range(rounds)]
    accs = [r["accuracy"] for r in rows if r["accuracy"] is not None]
    return {"overrides": overrides, "final_accuracy": accs[-1], "best_accuracy": max(accs),
            "bytes_up": sum(r["bytes_up"] for r in rows), "bytes_down": sum(r["bytes_down"] for r in rows),
            "accuracy_curve": accs, "seconds": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="skip the extra rows (fp16, sign, 4-bit, downlink)")
    ap.add_argument("--json", default="benchmarks/results/compression.json")
    args = ap.parse_args()
    configure_allocator()
    tables: dict[str, list[dict]] = {}
    groups = [("adam", ROWS + ([] if args.quick else EXTRA_ROWS)), ("sgd", SGD_ROWS)]
    for group, rows in groups:
        tables[group] = []
        for name, overrides in rows:
            r = {"name": name, **run_row(overrides, args.rounds, args.seed)}
            tables[group].append(r)
            print(f"[{group}] {name}: final {r['final_accuracy']:.4f} uplink {r['bytes_up']:,} B "
                  f"({r['seconds']:.1f} s)", flush=True)
    summary = {}
    for group, title in (("adam", "local Adam 3e-3, 4 epochs (the default)"),
                         ("sgd", "local SGD 0.002, no momentum, 5 epochs")):
        results = tables[group]
        dense = results[0]
        print(f"\nDigits, Dirichlet alpha=0.5, 20 clients, 10 per round, {args.rounds} rounds, seed {args.seed}, "
              f"{title}; downlink dense unless stated\n")
        print("| uplink | final accuracy | best accuracy | uplink bytes | uplink reduction | downlink bytes |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in results:
            print(f"| {r['name']} | {r['final_accuracy']:.4f} | {r['best_accuracy']:.4f} | {r['bytes_up']:,} | "
                  f"{dense['bytes_up'] / r['bytes_up']:.1f}x | {r['bytes_down']:,} |")
        top1 = next(r for r in results if r["name"] == "top-1% + EF")
        drop = 100 * (dense["final_accuracy"] - top1["final_accuracy"])
        summary[group] = (drop, dense["bytes_up"] / top1["bytes_up"])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rounds": args.rounds, "seed": args.seed, "tables": tables}, indent=2))
    (drop, ratio), (sgd_drop, sgd_ratio) = summary["adam"], summary["sgd"]
    print(f"top1_ef_accuracy_drop={drop:.2f} top1_ef_byte_ratio={ratio:.1f} "
          f"sgd_top1_ef_accuracy_drop={sgd_drop:.2f} sgd_top1_ef_byte_ratio={sgd_ratio:.1f}")


if __name__ == "__main__":
    main()
