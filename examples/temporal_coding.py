"""Temporal coding end to end: latency-coded input, first-to-spike loss, first-spike read-out; compared with
rate coding on spikes and energy per inference (the full comparison: benchmarks/coding.py).

Run:  .venv/bin/python examples/temporal_coding.py  (about 20 s)
"""

import os

import torch

from spikefed.data import load_digits_split
from spikefed.hardware.metrics import measure
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig, encode_inputs, evaluate, fit

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

data = load_digits_split(test_size=0.2, seed=0, scale="unit")  # latency and rate coding need x in [0, 1]
for encoder, loss in (("latency", "ce_temporal"), ("rate", "ce_count")):
    gen = torch.Generator().manual_seed(0)
    model = SpikingMLP([64, 128, 10], neuron="lif", beta=0.9, generator=gen)
    cfg = TrainConfig(epochs=1 if SMALL else 10, lr=2e-3, num_steps=16, encoder=encoder, loss=loss)
    fit(model, data.x_train, data.y_train, cfg, gen)
    acc = evaluate(model, data.x_test, data.y_test, cfg, gen).accuracy
    metrics = measure(model, encode_inputs(data.x_test, cfg, gen))
    print(f"{encoder:>7} input, {loss:>11} loss: accuracy {acc:.3f}, "
          f"{metrics.spikes / metrics.samples:.0f} spikes and {metrics.energy_j * 1e9:.1f} nJ per inference")
