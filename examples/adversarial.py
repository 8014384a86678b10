"""FGSM / PGD attacks on a spiking MLP through the surrogate gradient, and adversarial + IB training against them.

Run:  .venv/bin/python examples/adversarial.py     (SPIKEFED_EXAMPLE_SMALL=1: fewer samples and epochs)
The full comparison is benchmarks/adversarial.py; the same training is local.adversarial / local.ib_weight in
spikefed train / spikefed run.
"""

import os

from spikefed.data.digits import load_digits_split
from spikefed.seeding import Purpose, torch_generator
from spikefed.snn.adversarial import attacked_accuracy
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig, fit

small = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"
data = load_digits_split(seed=0, scale="unit")  # pixels in [0, 1]: eps is in pixel units
n = 400 if small else len(data.y_train)
eps = 0.1

for robust in (False, True):
    model = SpikingMLP([64, 128, 10], neuron="lif", beta=0.9, generator=torch_generator(0, Purpose.INIT))
    cfg = TrainConfig(epochs=2 if small else 15, num_steps=8, loss="ce_count", lr=5e-3,
                      adversarial="pgd" if robust else "none", adv_eps=eps, adv_steps=3,
                      ib_weight=0.05 if robust else 0.0)
    fit(model, data.x_train[:n], data.y_train[:n], cfg, torch_generator(0, Purpose.ADVERSARIAL, index=0))
    gen = torch_generator(0, Purpose.ADVERSARIAL, index=1)
    accs = {kind: attacked_accuracy(model, data.x_test, data.y_test, cfg, kind, eps, 10, gen)
            for kind in ("none", "fgsm", "pgd")}
    name = "PGD training + IB" if robust else "standard training"
    print(f"{name:18s} clean {accs['none']:.3f}  FGSM {accs['fgsm']:.3f}  PGD {accs['pgd']:.3f}  (eps={eps})")
