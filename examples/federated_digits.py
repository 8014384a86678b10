"""A federated experiment from Python: build it from settings, step rounds, read the metrics.

Run:  .venv/bin/python examples/federated_digits.py
"""

import os

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

settings = build_settings(RunSettings, None, [
    "partition.num_clients=10", "partition.alpha=0.3",  # 10 devices with strong label skew
    "federation.strategy=fedprox", "federation.prox_mu=0.05", f"federation.rounds={2 if SMALL else 10}",
])
sim = Simulation(build_spec(settings))
print(f"label skew (mean JSD) {sim.heterogeneity['mean_jsd']:.3f}")
for _ in range(settings.federation.rounds):
    row = sim.run_round()
    print(f"round {row['round']:2d}  accuracy {row['accuracy']:.4f}  uplink {row['bytes_up'] / 1024:.0f} KB  "
          f"energy/inference {row['energy_j'] * 1e9:.0f} nJ")
