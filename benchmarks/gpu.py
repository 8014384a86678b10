"""Seconds per round on one GPU: spikefed cohort vs sequential engine vs Flower, and a centralized epoch.

One command; on a machine without CUDA it prints "no CUDA device: nothing to measure" and exits 0 (``--device
cpu`` runs the same measurement on the CPU, a smoke test). Workload: ``benchmarks/fl_round.py``'s (digits
split IID into K clients, all train every round; spiking MLP 64-256-10, LIF, T = 25, direct input, 1 local
epoch, batch 32, Adam, FedAvg), built by its ``make_settings`` with ``runtime.device`` set, so the clients'
data, generators, cohort buffers, kernels and model live on the device.

Timed (perf_counter after ``torch.cuda.synchronize``, one warm-up round then ``--rounds``, median):
    cohort       ``Simulation.run_round()``, engine cohort (``--kernel``: loop | compiled | auto)
    sequential   the same, engine sequential (one client after another, on the device)
    flower       ``fl_round.time_flower`` (Flower simulation + Ray; its ClientApp trains each client with the
                 sequential engine on the CPU: Flower's actors hold no GPU here), only if flwr is installed and
                 ``--flower`` is given
    centralized  one epoch of the same model on all K clients' samples pooled (batch 32, Adam) on the device
Last line: ``gpu_cohort_vs_sequential=X gpu_cohort_vs_flower=Y gpu_round_vs_centralized_epoch=Z`` (X, Y:
speedups of the cohort round; Z: cohort round seconds / centralized epoch seconds; nan where not run).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fl_round import flower_unavailable, make_settings, time_flower  # noqa: E402  (reused, not copied)

from spikefed.experiment.config import RunSettings  # noqa: E402
from spikefed.experiment.runner import build_spec  # noqa: E402
from spikefed.federated.simulation import Simulation  # noqa: E402
from spikefed.manifold import copy_module  # noqa: E402
from spikefed.runtime import configure_allocator, resolve_device  # noqa: E402
from spikefed.snn.train import make_optimizer, train_epoch  # noqa: E402

NO_CUDA = "no CUDA device: nothing to measure"


def settings_on(k: int, engine: str, device: str, kernel: str) -> RunSettings:
    d = make_settings(k, engine).model_dump()
    d["runtime"] = {"device": device, "threads": "torch"}
    d["local"]["kernel"] = kernel
    return RunSettings.model_validate(d)


def timed(fn: Callable[[], Any], rounds: int, sync: Callable[[], None]) -> dict[str, Any]:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    warmup = time.perf_counter() - t0
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"warmup_s": warmup, "rounds_s": times, "median_s": statistics.median(times)}


def time_engine(k: int, engine: str, device: str, kernel: str, rounds: int, sync: Callable[[], None]) -> dict:
    sim = Simulation(build_spec(settings_on(k, engine, device, kernel)))
    return timed(sim.run_round, rounds, sync)


def time_centralized(k: int, device: str, kernel: str, rounds: int, sync: Callable[[], None]) -> dict:
    spec = build_spec(settings_on(k, "cohort", device, kernel))
    dev = torch.device(device)
    model = copy_module(spec.model).to(dev)
    x, y = spec.data.x_train.to(dev), spec.data.y_train.to(dev)  # every client's samples (IID split of all)
    opt = make_optimizer(model.parameters(), spec.local)
    gen = torch.Generator().manual_seed(0)  # as spikefed.experiment.centralized: the run's seed (CPU batch order)
    return timed(lambda: train_epoch(model, x, y, spec.local, opt, gen), rounds, sync)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100, help="clients per round")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up)")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a smoke test of the script)")
    ap.add_argument("--kernel", default="loop", choices=("loop", "compiled", "numba", "auto"),
                    help="local.kernel (compiled: torch.compile / Triton on CUDA; its first round compiles)")
    ap.add_argument("--flower", action="store_true", help="also time Flower (needs flwr; its clients run on CPU)")
    ap.add_argument("--skip-sequential", action="store_true")
    args = ap.parse_args(argv)
    if args.clients < 1 or args.rounds < 1:
        ap.error("--clients and --rounds must be >= 1")
    if args.device != "cpu" and not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    device = str(resolve_device(args.device))
    configure_allocator()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, {args.clients} clients, kernel {args.kernel}",
          flush=True)
    res: dict[str, dict[str, Any]] = {"cohort": time_engine(args.clients, "cohort", device, args.kernel,
                                                            args.rounds, sync)}
    if not args.skip_sequential:
        res["sequential"] = time_engine(args.clients, "sequential", device, args.kernel, args.rounds, sync)
    res["centralized"] = time_centralized(args.clients, device, args.kernel, args.rounds, sync)
    why = flower_unavailable() if args.flower else "not asked (--flower)"
    if why is None:
        f = time_flower(args.clients, args.rounds, 600.0, False)
        if f.get("status") == "ok":
            res["flower"] = f
        else:
            why = f.get("reason", "failed")
    print("\n| what | warm-up s | median s |\n|---|---:|---:|")
    for key, r in res.items():
        print(f"| {key} | {r['warmup_s']:.3f} | {r['median_s']:.4f} |")
    if why:
        print(f"- Flower not run: {why}")
    cohort = res["cohort"]["median_s"]
    seq = res["sequential"]["median_s"] / cohort if "sequential" in res else math.nan
    flw = res["flower"]["median_s"] / cohort if "flower" in res else math.nan
    cen = cohort / res["centralized"]["median_s"]
    print(f"gpu_cohort_vs_sequential={seq:.2f} gpu_cohort_vs_flower={flw:.2f} gpu_round_vs_centralized_epoch={cen:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
