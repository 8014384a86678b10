"""Online learning with e-prop: the gradient check, centralized training, and e-prop as the federated local trainer.

Run:  .venv/bin/python examples/eprop.py      (about 30 s)
"""

import os

import torch

from spikefed.data import load_digits_split
from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation
from spikefed.snn import SpikingMLP, TrainConfig, evaluate, fit
from spikefed.snn.losses import ce_membrane_loss
from spikefed.snn.online import eprop_backward

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

data = load_digits_split(seed=0)

# 1. one batch: e-prop vs BPTT gradients (equal for a non-recurrent layer with detached reset; not for rlif)
x = data.x_train[:16].double().unsqueeze(0).expand(25, 16, 64)
y = data.y_train[:16]
for neuron in ("lif", "rlif"):
    model = SpikingMLP([64, 32, 10], neuron=neuron, readout="membrane",
                       generator=torch.Generator().manual_seed(0)).double()
    bptt = torch.autograd.grad(ce_membrane_loss(model(x).output, y, "time_mean"), model.linears[0].weight)[0]
    eprop_backward(model, x, y, "time_mean")  # fills .grad, one forward pass, no graph over time
    gap = float((model.linears[0].weight.grad - bptt).norm() / bptt.norm())
    print(f"{neuron}: relative gap e-prop vs BPTT (input weights) = {gap:.2e}")

# 2. centralized: a recurrent ALIF network (LSNN) trained with e-prop (spikes feed the threshold's eligibility)
cfg = TrainConfig(epochs=1 if SMALL else 5, lr=5e-3, num_steps=25, loss="ce_membrane", membrane_reduction="time_mean",
                  method="eprop")
gen = torch.Generator().manual_seed(0)
model = SpikingMLP([64, 64, 10], neuron="ralif", readout="membrane", detach_reset=False, generator=gen)
fit(model, data.x_train, data.y_train, cfg, gen)
print(f"recurrent ALIF, e-prop, 5 epochs: test accuracy {evaluate(model, data.x_test, data.y_test, cfg).accuracy:.3f}")

# 3. federated: every client trains locally with e-prop (sequential engine, chosen automatically)
settings = build_settings(RunSettings, None, [
    "partition.num_clients=8", f"federation.rounds={2 if SMALL else 5}", "model.hidden=[64]", "model.readout=membrane",
    "local.method=eprop", "local.loss=ce_membrane", "local.membrane_reduction=time_mean", "local.epochs=1",
])
sim = Simulation(build_spec(settings))
for _ in range(settings.federation.rounds):
    row = sim.run_round()
    print(f"round {row['round']}  accuracy {row['accuracy']:.4f}")
