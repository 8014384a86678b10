"""Event data end to end: record digits as N-MNIST-style events, store them as AER, bin them, train federated.

Run:  .venv/bin/python examples/event_digits.py            (about a minute on a laptop core)
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from spikefed.events.aer import aer_size, read_events, write_events
from spikefed.events.datasets import event_digits
from spikefed.events.frames import batch_to_frames, bin_counts
from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

# 1. synthesis: 1797 digits, three saccades each, DVS pixel model (seeded)
start = time.perf_counter()
batch, labels = event_digits(seed=0)
print(f"{len(batch)} recordings on a {batch.shape[0]}x{batch.shape[1]} sensor in {time.perf_counter() - start:.1f} s, "
      f"{batch.counts().mean():.0f} events per sample on average")

# 2. one recording as an AER file, and what it costs against a dense bitmap of the same events
sample, label = batch[0], int(labels[0])
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "digit0.aer"
    size = write_events(path, sample, batch.shape, polarity=True, time_unit=batch.time_unit)
    back, header = read_events(path)
    assert (back == sample).all()
cost = aer_size(sample, batch.shape, batch.duration, polarity=True)
print(f"digit {label}: {len(sample)} events, {size} bytes as SFAER ({cost.bytes_per_event:.2f} B/event); "
      f"a 1-us bitmap would need {cost.bitmap_bytes:,} bytes")
print("events per 30 ms bin:", bin_counts(sample, 10, t_end=batch.duration).tolist())
frames = batch_to_frames(batch.select([0]), 10, mode="binary")  # [1, T, 2, H, W]
print(f"binned: {tuple(frames.shape[1:])} frames, {frames.mean():.1%} of cells active")

# 3. federated training on the binned frames (local.encoder = events and local.num_steps = data.bins are implied)
settings = build_settings(RunSettings, None, [
    "data.name=event_digits", "data.bins=10", "partition.num_clients=10", "model.hidden=[128]",
    f"federation.rounds={2 if SMALL else 8}", "federation.fraction=0.5"])
sim = Simulation(build_spec(settings))
for _ in range(settings.federation.rounds):
    row = sim.run_round()
    print(f"round {row['round']:2d}  accuracy {row['accuracy']:.4f}  spikes/inference {row['spikes']:.0f}")
