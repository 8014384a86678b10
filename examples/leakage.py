"""Leakage of a spiking network's update: one client's one-step update on one digit gives its input back.

The closed form (first-layer weight / bias gradient ratio) is exact under direct coding; gradient matching through
the surrogate recovers a blurred digit; DP noise on the update defeats both. Full study: benchmarks/leakage.py.

Run:  .venv/bin/python examples/leakage.py     (SPIKEFED_EXAMPLE_SMALL=1, CI: 30 optimisation steps, one restart;
tests/federated/test_leakage.py checks the inversion itself)
"""

import os

import torch

from spikefed.data.digits import load_digits_split
from spikefed.federated.leakage import closed_form_input, infer_labels, invert_update, loss_gradients, psnr
from spikefed.seeding import Purpose, torch_generator
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"
data = load_digits_split(scale="unit")
x, y = data.x_train[:1], data.y_train[:1]
model = SpikingMLP([64, 128, 10], generator=torch_generator(0, Purpose.INIT))
cfg = TrainConfig(num_steps=10)
g = loss_gradients(model, x, y, cfg)  # what a one-step update reveals: -update / lr
print(f"true label {int(y)}, inferred from the output bias gradient: {int(infer_labels(g['linears.1.bias'], 1))}")
print(f"closed form:  PSNR {psnr(closed_form_input(g['linears.0.weight'], g['linears.0.bias']), x[0]):.1f} dB")
res = invert_update(model, g, y, cfg,  # given the true label (inference is a heuristic for spike-count losses)
                     torch_generator(0, Purpose.LEAKAGE, index=0), steps=30 if SMALL else 150,
                     restarts=1 if SMALL else 2)
floor = psnr(data.x_train.mean(0), x[0])
print(f"optimised:    PSNR {psnr(res.x, x):.1f} dB (guessing the mean image: {floor:.1f} dB)")
noise = torch_generator(0, Purpose.LEAKAGE, index=1)
noisy = {n: t + torch.randn(t.shape, generator=noise) * 0.5 * torch.cat([v.reshape(-1) for v in g.values()]).norm()
         for n, t in g.items()}  # DP: N(0, (z C)^2) with z = 0.5, C = ||update||
cf = closed_form_input(noisy["linears.0.weight"], noisy["linears.0.bias"]).clamp(0, 1)
print(f"with DP noise z=0.5: closed form PSNR {psnr(cf, x[0]):.1f} dB")
