"""Local learning rules: the STDP window, each rule training a spiking MLP on digits, and a rule as the clients'
local method in a federated run.

Run:  .venv/bin/python examples/learning_rules.py      (about a minute; SPIKEFED_EXAMPLE_SMALL=1: seconds)
"""

import os

import torch

from spikefed.data import load_digits_split
from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation
from spikefed.snn import SpikingMLP, TrainConfig, evaluate, fit
from spikefed.snn.stdp import STDPParams, bptt_weight_change, pair_weight_change, stdp_window

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

# 1. the STDP window of the implemented (trace) rule against its closed form, and BPTT's causal half (seed 004)
params = STDPParams(a_plus=1.0, a_minus=1.0, tau_plus=5.0, tau_minus=5.0)
print(" dt   STDP rule   closed form   BPTT (beta=0.9)")
for dt in (-8, -4, -1, 0, 1, 4, 8):
    print(f"{dt:3d}   {pair_weight_change(dt, params):+.4f}     {float(stdp_window(dt, params)):+.4f}       "
          f"{bptt_weight_change(dt, 0.9):+.4f}")

# 2. each rule trains the same network centrally (a leaky read-out and a per-step cross-entropy for all)
data = load_digits_split(seed=0)
n = 300 if SMALL else len(data.y_train)
for method in ("bptt", "stdp", "decolle", "fa", "dfa", "drtp"):
    gen = torch.Generator().manual_seed(0)
    model = SpikingMLP([64, 48, 10], readout="membrane", generator=gen)
    cfg = TrainConfig(epochs=1 if SMALL else 3, num_steps=8, method=method, loss="ce_membrane",
                      membrane_reduction="time_mean", lr=1e-2)
    fit(model, data.x_train[:n], data.y_train[:n], cfg, gen)
    print(f"{method:8s} test accuracy {evaluate(model, data.x_test, data.y_test, cfg).accuracy:.3f}")

# 3. DECOLLE as the clients' local method: 10 clients, Dirichlet(0.5) label skew
settings = build_settings(RunSettings, None, [
    "partition.num_clients=10", "partition.alpha=0.5", "federation.fraction=1",
    f"federation.rounds={2 if SMALL else 5}", "model.hidden=[48]", "model.readout=membrane",
    "local.method=decolle", "local.loss=ce_membrane", "local.membrane_reduction=time_mean",
    "local.local_steps=5", "local.num_steps=8", "local.lr=0.01"])
sim = Simulation(build_spec(settings))
for _ in range(settings.federation.rounds):
    row = sim.run_round()
    print(f"round {row['round']}: global accuracy {row['accuracy']:.3f}")
