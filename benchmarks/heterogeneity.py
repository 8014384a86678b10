"""Device heterogeneity: naive averaging of device parameters vs calibrated latent aggregation vs ideal hardware.

The fleet: every device has 20% analog mismatch (threshold, leak and synaptic-gain CV 0.2, drawn once per
device); half store weights in 8 bits, half in 4 bits (per-tensor scale, quantization-aware local training).
Digits, Dirichlet alpha = 0.5, 20 clients, 10 per round, FedAvg, spiking MLP 64-256-10, same seeds for all
three rows. Accuracy is the *deployed* accuracy: the global model written to every device of the fleet (with
the client's own map for calibrated aggregation, as raw values for naive) and averaged over the devices; the
ideal row's fleet has no mismatch and float32 weights.

Run:  .venv/bin/python benchmarks/heterogeneity.py [--rounds 30] [--seeds 0 1 2] [--json ...]
Last line:  calibrated_minus_naive=<points> ideal_minus_calibrated=<points>
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation
from spikefed.runtime import configure_allocator

FLEET = "[{profile: analog20_8bit, fraction: 0.5}, {profile: analog20_4bit, fraction: 0.5}]"
ROWS: list[tuple[str, list[str]]] = [
    ("naive", [f"devices.fleet={FLEET}", "devices.aggregation=naive"]),
    ("calibrated", [f"devices.fleet={FLEET}", "devices.aggregation=calibrated"]),
    ("ideal", ["devices.fleet=[{profile: ideal}]"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--json", default="benchmarks/results/heterogeneity.json")
    args = ap.parse_args()
    configure_allocator()
    results = []
    for name, overrides in ROWS:
        per_seed = []
        for seed in args.seeds:
            settings = build_settings(RunSettings, None, [f"partition.alpha={args.alpha}",
                                                          f"federation.rounds={args.rounds}", f"seed={seed}",
                                                          *overrides])
            sim = Simulation(build_spec(settings))
            start = time.perf_counter()
            rows = [sim.run_round() for _ in range(args.rounds)]
            last = rows[-1]
            per_seed.append({"seed": seed, "deployed_accuracy": last["accuracy"],
                             "ideal_hardware_accuracy": last["accuracy_ideal"],
                             "by_device": last["accuracy_by_device"], "seconds": time.perf_counter() - start})
            print(f"{name} seed {seed}: deployed {last['accuracy']:.4f} (on ideal hardware "
                  f"{last['accuracy_ideal']:.4f}; {last['accuracy_by_device']}) {per_seed[-1]['seconds']:.1f} s",
                  flush=True)
        results.append({"name": name, "overrides": overrides, "runs": per_seed,
                        "mean_deployed_accuracy": statistics.fmean(r["deployed_accuracy"] for r in per_seed),
                        "mean_ideal_hardware_accuracy": statistics.fmean(r["ideal_hardware_accuracy"]
                                                                         for r in per_seed)})
    print(f"\ndigits, Dirichlet alpha={args.alpha}, 20 clients, 10 per round, {args.rounds} rounds, "
          f"seeds {args.seeds}\n")
    print("| aggregation | fleet | deployed accuracy (mean over devices) | same model on ideal hardware |")
    print("|---|---|---|---|")
    for r in results:
        fleet = "ideal" if r["name"] == "ideal" else "20% mismatch, 8/4-bit"
        print(f"| {r['name']} | {fleet} | {r['mean_deployed_accuracy']:.4f} "
              f"| {r['mean_ideal_hardware_accuracy']:.4f} |")
    acc = {r["name"]: r["mean_deployed_accuracy"] for r in results}
    c_minus_n = 100 * (acc["calibrated"] - acc["naive"])
    i_minus_c = 100 * (acc["ideal"] - acc["calibrated"])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rounds": args.rounds, "alpha": args.alpha, "seeds": args.seeds,
                                           "rows": results, "calibrated_minus_naive": c_minus_n,
                                           "ideal_minus_calibrated": i_minus_c}, indent=2))
    print(f"calibrated_minus_naive={c_minus_n:.2f} ideal_minus_calibrated={i_minus_c:.2f}")


if __name__ == "__main__":
    main()
