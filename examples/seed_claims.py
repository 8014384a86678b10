"""The measurements behind docs/seed_claims.md on a small scale: client drift in the metrics rows, the uplink
energy a top-1% compressor keeps (plain error feedback vs DGC momentum correction), and the feature- and
model-space drift between two rotated digit tasks.

Run:  .venv/bin/python examples/seed_claims.py      (the full benchmark: benchmarks/seed_claims.py)
"""

import dataclasses
import os


from spikefed.data import load_digits_split
from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.continual import input_drift, rotate_images
from spikefed.federated.simulation import Simulation
from spikefed.federated.task_drift import feature_drift, model_drift, task_optimum
from spikefed.federated.types import params_of

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code
ROUNDS = 3 if SMALL else 10
BASE = ["partition.num_clients=10", f"federation.rounds={ROUNDS}"] + (["model.hidden=[64]", "local.epochs=1"]
                                                                        if SMALL else [])

# 1. client drift and the uplink's kept energy, per round, with local Adam and top-1% + error feedback
for label, extra in [("plain EF", []), ("DGC m=0.9", ["compression.momentum_correction=0.9"])]:
    over = [*BASE, "compression.uplink=topk", "compression.fraction=0.01", *extra]
    sim = Simulation(build_spec(build_settings(RunSettings, None, over)))
    print(f"\ntop-1% + {label}: round, accuracy, client drift (cosine, norm), energy kept, residual / delta")
    for _ in range(ROUNDS):
        r = sim.run_round()
        print(f"  {r['round']:2d}  {r['accuracy']:.3f}  {r['client_drift_cosine']:.3f}  {r['client_drift_norm']:6.2f}"
              f"  {r['uplink_energy_kept']:.3f}  {r['uplink_residual_ratio']:.2f}")

# 2. drift between the digits and the same digits rotated, seen by the input, by a model and by task optima
d = load_digits_split(seed=0)
spec = build_spec(build_settings(RunSettings, None, BASE))
model, cfg = spec.model, dataclasses.replace(spec.local, epochs=1)
start = params_of(model)
task0 = task_optimum(model, start, d.x_train, d.y_train, cfg, seed=0)
print("\nrotation  input W2  feature W2  model drift")
for angle in (0, 45, 90, 180):
    xr = rotate_images(d.x_train, angle)
    optimum = task_optimum(model, start, xr, d.y_train, cfg, seed=0)
    print(f"{angle:8d}  {input_drift(d.x_test, rotate_images(d.x_test, angle)):8.2f}  "
          f"{feature_drift(model, task0, d.x_test, rotate_images(d.x_test, angle), cfg):10.2f}  "
          f"{model_drift(task0, optimum):11.3f}")
