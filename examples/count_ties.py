"""Few time steps: how often spike counts tie, and the first-spike tie-break of the count read-out.

A spiking MLP trained on the bundled digits with T = 3 steps (as a chip with dt = 2 runs a 6-step recording)
counts 0-3 output spikes per class, so many test samples tie for the top count. ``ties="lowest"`` (the default)
gives them to the lowest class index; ``ties="first_spike"`` (config ``local.count_ties=first_spike``) to the
tied class that spiked first. Training is the same; only the prediction differs.

Run:  .venv/bin/python examples/count_ties.py
"""

import os

import torch

from spikefed.data import load_digits_split
from spikefed.snn import SpikingMLP, TrainConfig, fit
from spikefed.snn.decoding import predict_count, spike_count
from spikefed.snn.train import encode_inputs

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code
data = load_digits_split(test_size=0.2, seed=0, scale="standard")
gen = torch.Generator().manual_seed(0)
model = SpikingMLP([64, 128, 10], neuron="lif", beta=0.9, generator=gen)
cfg = TrainConfig(epochs=2 if SMALL else 10, batch_size=32, lr=2e-3, num_steps=3, encoder="direct")
fit(model, data.x_train, data.y_train, cfg, gen)

with torch.no_grad():
    spikes = model(encode_inputs(data.x_test, cfg, None)).output  # [T, B, 10]
counts = spike_count(spikes)
tied = (counts == counts.amax(1, keepdim=True)).sum(1) > 1
print(f"{int(tied.sum())} of {len(tied)} test samples tie for the top spike count ({cfg.num_steps} steps)")
for ties in ("lowest", "first_spike"):
    accuracy = (predict_count(spikes, ties) == data.y_test).float().mean()
    print(f"ties={ties:<12} test accuracy {float(accuracy):.4f}")
