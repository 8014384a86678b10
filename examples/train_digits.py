"""Train a spiking MLP on the bundled digits data with the library API (no CLI).

Run:  .venv/bin/python examples/train_digits.py
"""

import os

import torch

from spikefed.data import load_digits_split
from spikefed.snn import SpikingMLP, TrainConfig, evaluate, fit

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

data = load_digits_split(test_size=0.2, seed=0, scale="standard")
gen = torch.Generator().manual_seed(0)  # every random choice (init, shuffling, encoders) comes from here
model = SpikingMLP([64, 256, 10], neuron="lif", beta=0.9, threshold=1.0, surrogate="atan", generator=gen)
cfg = TrainConfig(epochs=2 if SMALL else 30, batch_size=32, lr=2e-3, num_steps=25, encoder="direct", loss="mse_count")

fit(model, data.x_train, data.y_train, cfg, gen,
    on_epoch=lambda e, row: print(f"epoch {e + 1:2d}  loss {row['train_loss']:.3f}  acc {row['train_accuracy']:.3f}"))
result = evaluate(model, data.x_test, data.y_test, cfg)
print(f"test accuracy {result.accuracy:.4f}  hidden firing rate {result.firing_rate[0]:.3f} spikes/neuron/step")
