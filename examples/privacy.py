"""Client-level differential privacy (DP-FedAvg) and secure aggregation from Python.

Trains the same federation with noise multipliers z = 0, 0.5, 1.0 (clip norm C = 1) and prints the test
accuracy next to the privacy budget epsilon at delta = 1e-5, then one round with secure aggregation.

Run:  .venv/bin/python examples/privacy.py            (fast: 10 small clients, 5 rounds, well under a minute)
      .venv/bin/python examples/privacy.py --table    (the tables of docs/privacy.md: the default digits setup,
                                                       20 clients, 30 rounds, and the same with 100 clients)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

FAST = ["partition.num_clients=10", "model.hidden=[64]", "local.num_steps=10",
        f"federation.rounds={2 if SMALL else 5}"] + (["local.epochs=1"] if SMALL else [])
DP = ["privacy.dp=true", "privacy.clip=1.0"]


def train(overrides: list[str]) -> dict[str, float | None]:
    """Run a federation to its last round; returns final accuracy, epsilon and wall time."""
    settings = build_settings(RunSettings, None, overrides)
    sim = Simulation(build_spec(settings))
    start = time.perf_counter()
    row: dict = {}
    for _ in range(settings.federation.rounds):
        row = sim.run_round()
    return {"accuracy": row["accuracy"], "epsilon": row.get("dp_epsilon"), "seconds": time.perf_counter() - start}


def cases(table: bool) -> list[tuple[str, list[str]]]:
    """(name, overrides) of every run: a z sweep on the base setup; --table adds more settings."""
    out = [("no privacy", [])] + [(f"DP z={z} C=1", DP + [f"privacy.noise_multiplier={z}"]) for z in (0.0, 0.5, 1.0)]
    if not table:
        return out + [("secure aggregation", ["privacy.secure_aggregation=true"])]
    out += [
        ("DP z=1.0 adaptive C", DP + ["privacy.noise_multiplier=1.0", "privacy.adaptive_clip=true"]),
        ("secure aggregation", ["privacy.secure_aggregation=true"]),
        ("secagg + DP z=1.0 C=1", DP + ["privacy.noise_multiplier=1.0", "privacy.secure_aggregation=true"]),
    ]
    many = ["partition.num_clients=100", "partition.min_size=5"]  # cohort m = 50: noise on the mean z C / 50
    out += [(f"100 clients, {name}", many + o) for name, o in out[:4]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="default digits setup, 30 rounds (docs/privacy.md)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    base = [] if args.table else FAST
    results = []
    print(f"{'setting':<36} {'accuracy':>8} {'epsilon':>9} {'seconds':>8}")
    for name, extra in cases(args.table):
        res = train(base + extra)
        eps = res["epsilon"]
        shown = "-" if eps is None else ("inf" if math.isinf(eps) else f"{eps:.2f}")
        print(f"{name:<36} {res['accuracy']:>8.4f} {shown:>9} {res['seconds']:>8.1f}", flush=True)
        results.append({"setting": name, **res})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
