"""The batched cohort engine on models beyond the LIF MLP: a spiking conv net and an adaptive (ALIF) MLP.

Each model trains a cohort of clients for one round on both engines from the same global parameters with the
same per-client generators; the script prints which forward the cohort engine used, the seconds per round of
each engine and how far apart their client parameters are (float32 summation order only).

Run:  .venv/bin/python examples/cohort_any_model.py
"""

import os

import torch

from spikefed.federated.cohort import ClientData, supports_cohort
from spikefed.federated.cohort_timing import time_engines
from spikefed.snn.models import SpikingConvNet, SpikingMLP
from spikefed.snn.train import TrainConfig

small = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"
k = 4 if small else 16
gen = torch.Generator().manual_seed(0)

conv = SpikingConvNet((2, 16, 16), 10, channels=(4, 8), kernel_size=3)
conv_clients = [ClientData(i, (torch.rand(12, 8, 2, 16, 16, generator=gen) < 0.1).float(),
                           torch.randint(0, 10, (12,), generator=gen)) for i in range(k)]
conv_cfg = TrainConfig(epochs=1, batch_size=8, num_steps=8, encoder="events")  # pre-binned event frames

alif = SpikingMLP([64, 64, 10], neuron="alif", readout="membrane", learn_beta=True)
alif_clients = [ClientData(i, torch.rand(20, 64, generator=gen), torch.randint(0, 10, (20,), generator=gen))
                for i in range(k)]
alif_cfg = TrainConfig(epochs=1, batch_size=8, num_steps=10, loss="ce_membrane", encoder="rate")

for name, model, clients, cfg in [("conv", conv, conv_clients, conv_cfg), ("alif mlp", alif, alif_clients, alif_cfg)]:
    assert supports_cohort(model, cfg) is None  # no fallback to the sequential engine
    t = time_engines(model, clients, cfg, rounds=1)
    print(f"{name}: cohort forward={t.path}  cohort {t.cohort_s:.2f} s  sequential {t.sequential_s:.2f} s "
          f"({t.ratio:.1f}x)  max client parameter difference {t.max_param_diff:.1e}")
