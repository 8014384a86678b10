"""Continual federated learning from Python: a domain-drift stream with and without the stability term.

Three tasks of 3 rounds; task t shows the digits rotated by 45 t degrees. The same federation runs with
lambda = 0 and lambda = 10 (L2 term towards the global model at the end of the previous task); the script prints
the accuracy matrix R[i, j] and the forgetting of both.

Run:  .venv/bin/python examples/continual.py
"""

import os

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.continual import accuracy_matrix, continual_metrics
from spikefed.federated.simulation import Simulation

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

for lam in (0.0, 10.0):
    settings = build_settings(RunSettings, None, [
        "partition.method=iid", "partition.num_clients=8", "model.hidden=[64]", "local.num_steps=8",
        "local.epochs=2", "federation.rounds=9", "continual.stream=domain_drift", "continual.tasks=3",
        "continual.rotation=45", "continual.regularizer=l2", f"continual.lam={lam}"]
        + (["federation.rounds=3", "local.epochs=1"] if SMALL else []))
    sim = Simulation(build_spec(settings))
    for _ in range(settings.federation.rounds):
        row = sim.run_round()
    r = accuracy_matrix(sim.state.metrics)
    m = continual_metrics(r)
    print(f"lambda={lam:g}: drift d between tasks {[round(d, 3) for d in sim.stream.data.drift]}")
    for i, accs in enumerate(r):
        print(f"  after task {i}: " + "  ".join(f"{a:.3f}" for a in accs))
    print(f"  ACC {m['average_accuracy']:.3f}  BWT {m['backward_transfer']:.3f}  "
          f"forgetting {m['average_forgetting']:.3f}")
