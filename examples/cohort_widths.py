"""Batch widths of the batched cohort engine: clients of ragged sizes, each batch computed at its own length
rounded up to a multiple of ``bucket`` (default 8) instead of padded to the widest batch.

Clients of 1 to 64 samples (batch 32) train a small spiking conv net; for each rule the script prints the share
of the computed samples that is padding, checks that the cohort engine gives the sequential engine's updates
(float64: only summation order differs) and prints the seconds it took on this machine.

Run:  .venv/bin/python examples/cohort_widths.py
"""

import os
import time

import torch

from spikefed.federated.cohort import ClientData, client_schedule, train_cohort, train_sequential
from spikefed.federated.cohort_widths import padded_fraction
from spikefed.federated.types import FitInstructions, params_of
from spikefed.snn.models import SpikingConvNet
from spikefed.snn.train import TrainConfig

small = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"
sizes = [1, 31, 33, 64] if small else [1, 5, 12, 20, 31, 33, 40, 47, 58, 64, 9, 27]
gen = torch.Generator().manual_seed(0)
model = SpikingConvNet((2, 8, 8), 10, channels=(4,), kernel_size=3, generator=gen).double()
clients = [ClientData(i, (torch.rand(n, 5, 2, 8, 8, generator=gen) < 0.2).double(),
                      torch.randint(0, 10, (n,), generator=gen)) for i, n in enumerate(sizes)]
cfg = TrainConfig(epochs=1, batch_size=32, num_steps=5, encoder="events", lr=0.01, batch_width=32)
start = params_of(model)


def gens() -> list[torch.Generator]:
    return [torch.Generator().manual_seed(100 + i) for i in range(len(clients))]


schedules = [client_schedule(c.num_samples, cfg, g) for c, g in zip(clients, gens())]
reference = train_sequential(model, start, clients, gens(), cfg, FitInstructions(1))
for bucket, name in ((0, "pad every batch to batch_width=32"), (8, "width groups, multiples of 8 (default)"),
                     (1, "width groups, exact lengths")):
    t0 = time.perf_counter()
    updates = train_cohort(model, start, clients, gens(), cfg, FitInstructions(1), bucket=bucket)
    seconds = time.perf_counter() - t0
    diff = max(float((u.params[n] - r.params[n]).abs().max()) for u, r in zip(updates, reference) for n in u.params)
    assert diff < 1e-10, diff
    print(f"{name}: padded share {padded_fraction(schedules, cfg, bucket):.1%}, {seconds:.2f} s, "
          f"largest difference to the sequential engine {diff:.1e}")
