"""Izhikevich presets (RS, FS, CH, IB) under a step current, then the same neuron inside a trained spiking MLP.

Run:  .venv/bin/python examples/izhikevich.py     (SPIKEFED_EXAMPLE_SMALL=1: shorter training)
"""

import os

import torch

from spikefed.data.digits import load_digits_split
from spikefed.seeding import Purpose, torch_generator
from spikefed.snn.izhikevich import simulate
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig, evaluate, fit

small = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"

# 1) firing patterns: I = 10 for 1000 ms (Izhikevich 2003, Fig. 2)
for preset in ("rs", "fs", "ch", "ib"):
    times, _ = simulate(preset, current=10.0, duration_ms=1000.0)
    isi = torch.diff(times)
    print(f"{preset}: {len(times)} spikes/s, first ISIs {[round(float(i), 1) for i in isi[:6]]} ms, "
          f"last ISI {float(isi[-1]):.1f} ms")

# 2) a spiking MLP with fast-spiking Izhikevich neurons, trained with the surrogate gradient
data = load_digits_split(seed=0, scale="unit")
# hidden layer: Izhikevich neurons; output: a leaky integrator read by cross-entropy on its mean potential
model = SpikingMLP([64, 64, 10], neuron="izhikevich", readout="membrane", preset="fs", input_scale=40.0,
                   generator=torch_generator(0, Purpose.INIT))
cfg = TrainConfig(epochs=2 if small else 5, num_steps=8, loss="ce_membrane", membrane_reduction="time_mean",
                  lr=5e-3)
n = 600 if small else len(data.y_train)
fit(model, data.x_train[:n], data.y_train[:n], cfg, torch_generator(0, Purpose.ADVERSARIAL, index=0))
print(f"Izhikevich (fs) MLP test accuracy: {evaluate(model, data.x_test, data.y_test, cfg).accuracy:.3f}")
