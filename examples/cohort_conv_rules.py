"""The two convolution rules of the batched cohort engine on a spiking conv net: one ordinary convolution per
client (``conv="loop"``, the default) and PyTorch's grouped convolution (``conv="grouped"``).

Both train the same clients from the same global parameters with the same per-client generators; the script
checks that they give the updates of the sequential engine (float64, so only summation order differs) and prints
the seconds each took on this machine.

Run:  .venv/bin/python examples/cohort_conv_rules.py
"""

import os
import time

import torch

from spikefed.federated.cohort import ClientData, train_cohort, train_sequential
from spikefed.federated.types import FitInstructions, params_of
from spikefed.snn.models import SpikingConvNet
from spikefed.snn.train import TrainConfig

small = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"
k = 4 if small else 24
gen = torch.Generator().manual_seed(0)
model = SpikingConvNet((2, 16, 16), 10, channels=(4, 8), kernel_size=3, generator=gen).double()
clients = [ClientData(i, (torch.rand(20, 6, 2, 16, 16, generator=gen) < 0.1).double(),
                      torch.randint(0, 10, (20,), generator=gen)) for i in range(k)]
cfg = TrainConfig(epochs=1, batch_size=8, num_steps=6, encoder="events", lr=0.01)  # pre-binned event frames
start = params_of(model)


def gens() -> list[torch.Generator]:
    return [torch.Generator().manual_seed(100 + i) for i in range(k)]


t0 = time.perf_counter()
reference = train_sequential(model, start, clients, gens(), cfg, FitInstructions(1))
print(f"sequential engine: {time.perf_counter() - t0:.2f} s")
for conv in ("loop", "grouped"):
    t0 = time.perf_counter()
    updates = train_cohort(model, start, clients, gens(), cfg, FitInstructions(1), conv=conv)
    seconds = time.perf_counter() - t0
    diff = max(float((u.params[n] - r.params[n]).abs().max()) for u, r in zip(updates, reference) for n in u.params)
    assert diff < 1e-10, diff
    print(f"cohort engine, conv={conv}: {seconds:.2f} s, largest difference to the sequential engine {diff:.1e}")
