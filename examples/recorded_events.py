"""Recorded event data through the whole pipeline: an N-MNIST folder on disk -> streamed frames -> a federated run
with per-client sensors (living room vs street corner) and its measured divergence (docs/events.md).

Without the real N-MNIST at hand, the script writes a small one in the official layout (Train/<digit>/<id>.bin,
Test/<digit>/<id>.bin, 40-bit events) from the synthetic event digits, placed in the middle of the 34x34 sensor.
With the real files, skip the writing and pass their folder:

    .venv/bin/python examples/recorded_events.py                       # about a minute on a laptop core
    .venv/bin/python examples/recorded_events.py /data/N-MNIST         # the real thing (set --limit for a quick look)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from spikefed.data.compact import as_float_batch
from spikefed.events.datasets import event_digits
from spikefed.events.loaders import write_nmnist
from spikefed.events.sources import nmnist_source
from spikefed.events.stream import FrameSpec, iter_frames
from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.eventdata import load_event_data
from spikefed.experiment.runner import run_experiment


def write_small_nmnist(root: Path, n_train: int = 400, n_test: int = 100) -> None:
    batch, labels = event_digits(seed=0)
    for i in range(n_train + n_test):
        ev = batch[i].copy()
        y, x = np.divmod(ev["addr"].astype(np.int64), 20)
        ev["addr"] = (y + 7) * 34 + (x + 7)  # 20x20 digits in the middle of the 34x34 sensor
        split = "Train" if i < n_train else "Test"
        path = root / split / str(int(labels[i])) / f"{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_nmnist(path, ev, shape=(34, 34))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", nargs="?", type=Path, help="an N-MNIST folder (default: write a small one)")
    ap.add_argument("--limit", type=int, default=None, help="samples per split")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    root = args.root or Path(tmp.name) / "N-MNIST"
    if args.root is None:
        write_small_nmnist(root)

    # 1. lazy source + streamed binning: one batch of files in memory at a time
    source = nmnist_source(root, "train")
    spec = FrameSpec(bins=6, mode="binary", downsample=2)
    x, y = next(iter_frames(source, spec, batch_size=32))
    print(f"{len(source)} training files; first batch {list(x.shape)} frames, labels {y[:8].tolist()} ...")

    # 2. federated runs: iid, then every client behind its own sensor (partition.method=feature)
    common = [f"data.root={root}", "data.name=nmnist", "data.bins=6", "partition.num_clients=4",
              "model.hidden=[64]", "local.epochs=2", "federation.rounds=3", "federation.fraction=1.0"]
    if args.limit:
        common.append(f"data.limit={args.limit}")

    # the run holds the frames as a compact uint8 store (N T F bytes) and makes one batch at a time float
    store = load_event_data(build_settings(RunSettings, None, common).data, seed=0).split.x_train
    batch = as_float_batch(store[:32], torch.float32)
    print(f"frame store {store.dtype} {list(store.shape)}: {store.nbytes / 2**20:.1f} MB "
          f"(as float32: {4 * store.nbytes / 2**20:.1f} MB); a batch for the model: {batch.dtype}")
    for method in ("iid", "feature"):
        settings = build_settings(RunSettings, None, [*common, f"partition.method={method}"])
        summary = run_experiment(settings, Path(tmp.name) / f"run-{method}")
        het = summary["heterogeneity"]
        line = f"{method:8s} accuracy {summary['final_accuracy']:.3f}  feature Hellinger {het['mean_hellinger']:.3f}"
        if "events" in het:
            ev = het["events"]
            line += (f"  event-statistics Hellinger {ev['mean_event_hellinger']:.3f} (as recorded: "
                     f"{ev['recorded_mean_event_hellinger']:.3f}; sensors {', '.join(ev['sensors'])})")
        print(line)


if __name__ == "__main__":
    main()
