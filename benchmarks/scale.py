"""Memory and time at scale through the ``spikefed run`` code path, RSS sampled every round.

Two populations:

- ``--clients 1000`` (the default; digits): the 1,437 digits training samples split IID into 1,000 clients (1 or 2
  samples each), 5% sampled per round (50 clients), spiking MLP 64-256-10, 100 rounds, faults on (``--no-faults``
  turns them off): dropout 0.1, deadline 4 step-times, straggler sigma 0.5, jitter 0.2, late work kept FedNova-style.
- ``--clients`` above what digits holds (e.g. ``--clients 100000``): a seeded synthetic training set of 2 samples
  per client (``(seed, SCALE_DATA)``: label uniform over the 10 classes, features = the digits class mean + 0.5 x
  the per-pixel standard deviation x N(0, 1); offline, no download), tested on the real digits test set; 10%
  sampled per round, spiking MLP 64-32-10, uplink top-k (1%) with error feedback, so every sampled client keeps
  a residual in the compact per-client state store (:mod:`spikefed.federated.client_state`; above
  ``--state-memory-mb`` it lives in files under the run directory's ``client_state/``). ``--scaffold`` adds
  SCAFFOLD controls (a second state kind). Faults off unless ``--faults``.

Both: LIF, T = 25, direct input, the federated local defaults (4 epochs, Adam 3e-3, batch 32), evaluation every 10
rounds and at the last. What runs: :class:`spikefed.experiment.runner.Run` in a temporary run directory, exactly as
``spikefed run`` (the allocator setting of the command, the checkpoint written atomically every round, one metrics
row appended per round), without the HTML report at the end.

Memory: resident set size read from ``/proc/self/statm`` (field 2, pages x page size; ``psutil`` is not a
dependency) after setup and after every round; the peak from ``getrusage`` (``ru_maxrss``, the whole process
including setup). Reported:

- ``peak_rss_mb``: the process's peak resident set size;
- ``seconds_per_round``: median wall seconds of ``Run.step`` (round + checkpoint + metrics row) after warm-up;
- ``rss_growth_mb`` = RSS after the last round - RSS after the warm-up round (``--warmup``, default 10: allocator
  pools, autograd and kernel caches, first-use imports fill up there);
- ``slope_mb_per_100_rounds``: least-squares slope of RSS over the rounds after warm-up, times 100.

Run
    .venv/bin/python benchmarks/scale.py                                # 1,000 clients x 100 rounds
    .venv/bin/python benchmarks/scale.py --clients 100000 --rounds 5 --warmup 1
    .venv/bin/python benchmarks/scale.py --clients 10000 --rounds 50
Prints progress, a Markdown table and, last, ``peak_rss_mb=<a> seconds_per_round=<b> rss_growth_mb=<c>``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from spikefed.data.digits import DatasetSplit
from spikefed.experiment.centralized import load_dataset
from spikefed.experiment.config import RunSettings
from spikefed.experiment.runner import Run, build_spec
from spikefed.federated.client_state import STATE_DIR
from spikefed.runtime import configure_allocator
from spikefed.seeding import Purpose, numpy_rng

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "scale.json"
#: samples per client of the synthetic population
PER_CLIENT = 2
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident set size of this process in MiB (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).mallinfo2 if name else None
    except (OSError, AttributeError):
        return None
    if fn is not None:
        fn.restype = _MallInfo2
    return fn


_MALLINFO = _mallinfo2()


def heap_mb() -> tuple[float, float] | None:
    """glibc heap (all arenas, ``mallinfo2``): bytes in use by live allocations (``uordblks + hblkhd``) and
    bytes free but kept by the allocator (``fordblks``), in MiB; ``None`` where glibc's ``mallinfo2`` is
    missing. RSS growth with flat in-use bytes is allocator retention / fragmentation, not a leak."""
    if _MALLINFO is None:
        return None
    m = _MALLINFO()
    return (m.uordblks + m.hblkhd) / 2**20, m.fordblks / 2**20


def make_settings(clients: int, rounds: int, fraction: float, seed: int, faults: bool, *, hidden: int = 256,
                  state: bool = False, scaffold: bool = False, state_memory_mb: float = 256.0) -> RunSettings:
    data: dict[str, Any] = {
        "seed": seed,
        "partition": {"method": "iid", "num_clients": clients},
        "model": {"hidden": [hidden]},
        "local": {"num_steps": 25},
        "federation": {"rounds": rounds, "fraction": fraction, "eval_every": 10,
                       "client_state_memory_mb": state_memory_mb},
    }
    if faults:
        data["faults"] = {"dropout": 0.1, "deadline": 4.0, "straggler_sigma": 0.5, "jitter_sigma": 0.2,
                          "late_policy": "fednova"}
    if state:
        data["compression"] = {"uplink": "topk", "fraction": 0.01, "error_feedback": True}
    if scaffold:
        data["federation"]["strategy"] = "scaffold"
        data["local"].update({"optimizer": "sgd", "lr": 0.05})
    return RunSettings.model_validate(data)


def synthetic_split(settings: RunSettings, clients: int) -> DatasetSplit:
    """``PER_CLIENT`` samples per client around the digits class means (seeded by ``(seed, SCALE_DATA)``); the
    digits test set."""
    digits = load_dataset(settings.data, settings.seed)
    x, y = digits.x_train, digits.y_train
    means = torch.stack([x[y == c].mean(0) for c in range(digits.num_classes)])
    std = x.std(0)
    rng = numpy_rng(settings.seed, Purpose.SCALE_DATA)
    n = PER_CLIENT * clients
    labels = torch.as_tensor(rng.integers(0, digits.num_classes, n), dtype=torch.int64)
    noise = torch.as_tensor(rng.standard_normal((n, x.shape[1]), dtype=np.float32))
    xs = (means[labels] + 0.5 * std * noise).contiguous()
    return DatasetSplit(xs, labels, digits.x_test, digits.y_test, digits.num_classes, digits.feature_shape,
                        "synthetic-digits")


def folder_mb(path: Path) -> float:
    """Disk bytes of the files under ``path`` (allocated blocks), in MiB."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope ``cov(x, y) / var(x)``."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=None, help="default: 100 on digits, 50 on the synthetic set")
    ap.add_argument("--fraction", type=float, default=None, help="default: 0.05 on digits, 0.1 synthetic")
    ap.add_argument("--warmup", type=int, default=10, help="rounds before the growth is measured")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", choices=["auto", "digits", "synthetic"], default="auto",
                    help="auto: digits while it has a sample per client, else synthetic")
    ap.add_argument("--hidden", type=int, default=None, help="hidden LIF units (default: 256 digits, 32 synthetic)")
    ap.add_argument("--no-faults", action="store_true", help="digits: run without dropout / stragglers")
    ap.add_argument("--faults", action="store_true", help="synthetic: run with dropout / stragglers")
    ap.add_argument("--state", choices=["auto", "ef", "none"], default="auto",
                    help="per-client state: ef = top-k 1%% + error feedback (auto: ef on the synthetic set)")
    ap.add_argument("--scaffold", action="store_true", help="SCAFFOLD (per-client control variates) too")
    ap.add_argument("--state-memory-mb", type=float, default=256.0, help="federation.client_state_memory_mb")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--setup-only", action="store_true",
                    help="time the setup (data, partition, heterogeneity report, Run) and stop: last line setup_s=X")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="also trace Python allocations from the end of warm-up and print the largest growth")
    args = ap.parse_args()
    configure_allocator()  # as the spikefed command does
    digits_n = int(load_dataset(RunSettings().data, args.seed).y_train.shape[0])
    synthetic = args.data == "synthetic" or (args.data == "auto" and args.clients > digits_n)
    rounds = args.rounds or (50 if synthetic else 100)
    fraction = args.fraction or (0.1 if synthetic else 0.05)
    if rounds <= args.warmup:
        ap.error(f"--rounds must exceed the {args.warmup} warm-up rounds (--warmup)")
    faults = args.faults if synthetic else not args.no_faults
    state = args.state == "ef" or (args.state == "auto" and synthetic)
    settings = make_settings(args.clients, rounds, fraction, args.seed, faults,
                             hidden=args.hidden or (32 if synthetic else 256), state=state, scaffold=args.scaffold,
                             state_memory_mb=args.state_memory_mb)
    rss_start = rss_mb()
    with tempfile.TemporaryDirectory(prefix="spikefed-scale-") as tmp:
        t0 = time.perf_counter()
        spec = build_spec(settings, data=synthetic_split(settings, args.clients)) if synthetic else None
        run = Run(settings, Path(tmp) / "run", spec=spec,
                  custom={"data": f"synthetic, {PER_CLIENT} per client"} if synthetic else None)
        setup_s = time.perf_counter() - t0
        rss_setup = rss_mb()
        print(f"setup: {setup_s:.1f} s, RSS {rss_start:.1f} -> {rss_setup:.1f} MiB "
              f"({args.clients} clients, {'synthetic' if synthetic else 'digits'}, {settings.partition.method}, "
              f"{fraction:g} sampled, state {'ef' if state else 'none'}{' + scaffold' if args.scaffold else ''})",
              flush=True)
        if args.setup_only:
            run.sim.state.client_state.close()
            print(f"setup_s={setup_s:.2f} rss_setup_mb={rss_setup:.1f}")
            return
        rss: list[float] = []
        heap_used: list[float] = []
        heap_free: list[float] = []
        trained: list[int] = []
        seconds: list[float] = []
        ckpt_sizes: list[int] = []
        dropped = late = 0
        while not run.done:
            t = time.perf_counter()
            row = run.step()
            seconds.append(time.perf_counter() - t)
            ckpt_sizes.append(run.checkpoint.stat().st_size)
            rss.append(rss_mb())
            heap = heap_mb()
            if heap is not None:
                heap_used.append(heap[0])
                heap_free.append(heap[1])
            trained.append(int(row["accepted"]) + int(row["rejected"]))
            dropped += row.get("dropped", 0)
            late += row.get("late", 0)
            r = row["round"]
            if args.tracemalloc and r == args.warmup:
                tracemalloc.start()
                baseline = tracemalloc.take_snapshot()
            if r <= 3 or r % 10 == 0 or r == rounds:
                acc = row.get("accuracy")
                print(f"round {r:4d}: {seconds[-1]:.3f} s/round, RSS {rss[-1]:.1f} MiB"
                      + (f" (heap in use {heap_used[-1]:.1f}, free {heap_free[-1]:.1f})" if heap_used else "")
                      + (f", accuracy {acc:.4f}" if acc is not None else ""), flush=True)
        ckpt_bytes = run.checkpoint.stat().st_size
        store = run.sim.state.client_state
        state_info = {"clients_with_state": len(store), "in_file": store.in_file,
                      "resident_mb": store.resident_bytes / 2**20, "files_mb": folder_mb(run.dir / STATE_DIR)}
        traced: list[str] = []
        if args.tracemalloc:
            diff = tracemalloc.take_snapshot().compare_to(baseline, "lineno")
            traced = [str(d) for d in diff[:8]]
            tracemalloc.stop()
        final = run.sim.state.metrics[-1]
        store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    w = args.warmup
    rounds_done = list(range(1, len(rss) + 1))
    growth = rss[-1] - rss[w - 1]
    per100 = 100 * slope(rounds_done[w - 1:], rss[w - 1:]) if len(rss) - w >= 1 else float("nan")
    per_round = float(np.median(seconds[w:]))
    marks = sorted({1, w, 25, 50, 75, len(rss)} & set(rounds_done))
    print(f"\n{args.clients} clients, {fraction:g} sampled per round, {len(rss)} rounds, "
          f"faults {'on' if faults else 'off'}; final accuracy {final.get('accuracy')}")
    print("| after round | RSS MiB | heap in use MiB | heap free (kept) MiB | s/round (median of the last 10) |")
    print("|---:|---:|---:|---:|---:|")
    for m in marks:
        window = seconds[max(0, m - 10):m]
        used = f"{heap_used[m - 1]:.1f}" if heap_used else "-"
        free = f"{heap_free[m - 1]:.1f}" if heap_free else "-"
        print(f"| {m} | {rss[m - 1]:.1f} | {used} | {free} | {float(np.median(window)):.3f} |")
    heap_growth = heap_used[-1] - heap_used[w - 1] if heap_used else float("nan")
    print(f"\nsetup {setup_s:.1f} s; RSS after setup {rss_setup:.1f} MiB; max per round {max(rss):.1f} MiB; peak "
          f"{peak:.1f} MiB; growth after warm-up (round {w} -> {len(rss)}): {growth:+.1f} MiB; least-squares slope "
          f"{per100:+.2f} MiB per 100 rounds; checkpoint {ckpt_bytes / 1e6:.2f} MB (after round {w}: "
          f"{ckpt_sizes[w - 1] / 1e6:.3f} MB); per-client state: "
          f"{state_info['clients_with_state']} clients, {'files' if state_info['in_file'] else 'memory'} "
          f"(resident {state_info['resident_mb']:.1f} MiB, files {state_info['files_mb']:.1f} MiB); dropped "
          f"{dropped}, late {late} client-rounds; heap in use after warm-up: {heap_growth:+.2f} MiB; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if traced:
        print(f"Python allocations, growth since round {w} (tracemalloc):")
        print("\n".join(f"  {line}" for line in traced))
    result = {
        "clients": args.clients, "rounds": len(rss), "fraction": fraction, "seed": args.seed, "warmup": w,
        "data": "synthetic" if synthetic else "digits", "faults": faults,
        "settings": settings.model_dump(mode="json"),
        "rss_start_mb": rss_start, "rss_setup_mb": rss_setup, "rss_mb": rss, "seconds": seconds,
        "peak_rss_mb": peak, "seconds_per_round": per_round,
        "heap_in_use_mb": heap_used, "heap_free_mb": heap_free, "heap_in_use_growth_mb": heap_growth,
        "clients_trained": trained, "client_state": state_info,
        "setup_s": setup_s, "rss_growth_mb": growth, "slope_mb_per_100_rounds": per100,
        "checkpoint_bytes": ckpt_bytes, "checkpoint_bytes_by_round": ckpt_sizes,
        "final_accuracy": final.get("accuracy"),
        "dropped": dropped, "late": late, "tracemalloc_top": traced,
        "machine": {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
                    "threads": torch.get_num_threads(), "loadavg": os.getloadavg()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"peak_rss_mb={peak:.1f} seconds_per_round={per_round:.3f} rss_growth_mb={growth:.1f}")


if __name__ == "__main__":
    main()
