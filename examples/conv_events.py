"""A convolutional SNN trained federated on event-camera recordings (the seeds' scenario, on ideal hardware).

The binned event frames arrive flat, ``[T, B, 2*H*W]`` (ON/OFF polarity channels first); the conv net lays them
out as ``2 x H x W`` images. Conv nets, recurrent nets and delays train on the sequential engine for now, and the
run says so.

Run:  .venv/bin/python examples/conv_events.py       (a few minutes on a laptop core; SPIKEFED_EXAMPLE_SMALL=1: quick)
"""

from __future__ import annotations

import os
import time

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

settings = build_settings(RunSettings, None, [
    "data.name=event_digits", "data.bins=6",            # 20x20 sensor, two polarities, 6 time bins
    "model.kind=conv", "model.channels=[4, 4]", "model.kernel=3", "model.pooling=sum", "model.residual=true",
    "partition.num_clients=6", "partition.method=iid", "federation.fraction=0.5",
    f"federation.rounds={2 if SMALL else 6}", "local.epochs=1", *(["local.local_steps=3"] if SMALL else []),
])
spec = build_spec(settings)
print(f"model: {type(spec.model).__name__} input {spec.model.in_shape}, channels {settings.model.channels}, "
      f"{sum(p.numel() for p in spec.model.parameters())} parameters; residual blocks {spec.model.residual}")
print(f"engine: {spec.engine}" + (f" ({spec.engine_note})" if spec.engine_note else ""))
sim = Simulation(spec)
for _ in range(settings.federation.rounds):
    start = time.perf_counter()
    row = sim.run_round()
    print(f"round {row['round']}  accuracy {row['accuracy']:.3f}  spikes/inference {row['spikes']:.0f}  "
          f"{time.perf_counter() - start:.1f} s")
