"""Mackey-Glass prediction with a recurrent SNN (low-pass read-out, truncated BPTT, clipping) vs persistence.

Run:  .venv/bin/python examples/mackey_glass.py     (about 20 s)
CLI:  spikefed regress --set data.horizon=5
"""

import os

import torch

from spikefed.data.mackey_glass import fixed_point, mackey_glass_split
from spikefed.snn.models import RecurrentRegressor
from spikefed.snn.regression import evaluate_regression, fit_regression
from spikefed.snn.train import TrainConfig

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

print(f"fixed point x* = (beta/gamma - 1)^(1/n) = {fixed_point():.3f} (stable only for small tau; tau=17 is chaotic)")
split = mackey_glass_split(3000, window=200, horizon=5, seed=0)  # RK4, dt 0.1, one sample per time unit
gen = torch.Generator().manual_seed(0)
model = RecurrentRegressor(1, 64, 1, neuron="rlif", readout_beta=0.8, generator=gen, beta=0.9)
cfg = TrainConfig(epochs=2 if SMALL else 40, batch_size=8, lr=3e-3, tbptt=50, grad_clip=1.0)
fit_regression(model, split.x_train, split.y_train, cfg, gen, warmup=20,
               on_epoch=lambda e, loss: print(f"epoch {e + 1:2d}  train MSE (normalised) {loss:.4f}")
               if (e + 1) % 10 == 0 else None)
m = evaluate_regression(model, split.x_test, split.y_test, warmup=20, denormalize=split.denormalize)
print(f"5-step-ahead test MSE {m.mse:.5f} (persistence {m.persistence_mse:.5f}), "
      f"sMAPE {m.smape:.2f} % (persistence {m.persistence_smape:.2f} %)")
