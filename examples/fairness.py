"""Fairness across clients, q-FFL, uniform weights and client selection from Python.

Trains one small label-skewed federation (Dirichlet alpha = 0.1, 10 clients) with FedAvg, FedAvg with uniform
1/N weights, q-FFL and power-of-choice selection, and prints the test accuracy beside the fairness of the final
global model across the clients (mean, worst 10 %, Jain index of the per-client accuracy).

Run:  .venv/bin/python examples/fairness.py      (about a minute on a laptop; SPIKEFED_EXAMPLE_SMALL=1, CI: 2 rounds)
The same from the command line:  spikefed run --set partition.alpha=0.1 --set federation.strategy=qffl \\
                                     --set federation.qffl_lipschitz=1
"""

from __future__ import annotations

import os

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation

BASE = ["partition.num_clients=10", "partition.alpha=0.1", "model.hidden=[64]", "local.num_steps=10",
        "local.epochs=1", f"federation.rounds={2 if os.environ.get('SPIKEFED_EXAMPLE_SMALL') == '1' else 8}",
        "local.lr=0.002"]
CASES = [
    ("FedAvg", []),
    ("FedAvg, uniform 1/N weights", ["federation.weights=uniform"]),
    ("q-FFL q=1, L=1", ["federation.strategy=qffl", "federation.qffl_q=1", "federation.qffl_lipschitz=1"]),
    ("FedAvg, power-of-choice selection", ["federation.selection=power_of_choice", "federation.fraction=0.3",
                                           "federation.selection_candidates=0.6"]),
]


def main() -> None:
    print("| run | test accuracy | client mean | client worst 10% | Jain index |")
    print("|---|---:|---:|---:|---:|")
    for name, overrides in CASES:
        settings = build_settings(RunSettings, None, BASE + overrides)
        sim = Simulation(build_spec(settings))
        row: dict = {}
        for _ in range(settings.federation.rounds):
            row = sim.run_round()
        print(f"| {name} | {row['accuracy']:.4f} | {row['client_accuracy_mean']:.4f} | "
              f"{row['client_accuracy_worst10']:.4f} | {row['client_accuracy_jain']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
