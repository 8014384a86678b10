"""Seconds per round of local training: batched cohort engine vs sequential engine, per model (issue 13).

Workload: K clients (default 100), each with its own shard; every client trains one local epoch per round
(batch 32, Adam), float32, torch's default threads, one process. Both engines train the same clients from the
same global parameters with the same per-client generators; the script checks that they agree (largest parameter
difference) and reports the median seconds per round over ``--rounds`` timed rounds after one warm-up round
(:func:`spikefed.federated.cohort_timing.time_engines`).

Models
    mlp       SpikingMLP 64-256-10, LIF, T = 25, direct input (digits-sized inputs, 14 samples per client at
              K = 100), on both cohort forward paths: ``mlp`` (hand-written stacked forward, the default for
              LIF/IF MLPs) and ``vmap`` (the generic functional_call + vmap forward that covers every model)
    conv      SpikingConvNet on two-polarity 34x34 event frames (the seeds' event-camera setting), channels
              (8, 16), kernel 3, max-pool 2, LIF, T = 10 bins (``encoder = events``), 50 samples per client
              (event MNIST 5k over 100 clients); generic ``vmap`` path (one convolution per client,
              snn/client_conv.py; benchmarks/conv_floor.py compares the convolution rules and the compute floor)
    recurrent SpikingMLP 64-128-10 with RLIF neurons, T = 25, direct input; generic ``vmap`` path

Run
    .venv/bin/python benchmarks/cohort_models.py                      # all models, K = 100, 2 timed rounds
    .venv/bin/python benchmarks/cohort_models.py --models conv --clients 100 --rounds 1
Prints a Markdown table and last the line ``mlp_cohort_vs_sequential=<x> conv_cohort_vs_sequential=<y>``.
"""

from __future__ import annotations

import argparse
import math
import platform

import torch

from spikefed.federated.cohort import ClientData
from spikefed.federated.cohort_timing import time_engines
from spikefed.seeding import Purpose, derive_seed
from spikefed.snn.models import SpikingConvNet, SpikingMLP
from spikefed.snn.train import TrainConfig

SEED = 0


def _gen(purpose: Purpose, *key: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(SEED, purpose, *key))


def workload(name: str, k: int) -> tuple[torch.nn.Module, list[ClientData], TrainConfig]:
    gen = _gen(Purpose.EVENT_SYNTH, len(name))  # synthetic inputs and labels
    if name in ("mlp", "recurrent"):
        neuron, hidden = ("lif", 256) if name == "mlp" else ("rlif", 128)
        model: torch.nn.Module = SpikingMLP([64, hidden, 10], neuron=neuron, generator=_gen(Purpose.INIT))
        clients = [ClientData(i, torch.rand(14, 64, generator=gen), torch.randint(0, 10, (14,), generator=gen))
                   for i in range(k)]
        cfg = TrainConfig(epochs=1, batch_size=32, num_steps=25, encoder="direct")
        return model, clients, cfg
    if name == "conv":
        steps = 10
        model = SpikingConvNet((2, 32, 32), 10, channels=(8, 16), kernel_size=3, generator=_gen(Purpose.INIT))
        clients = [ClientData(i, (torch.rand(50, steps, 2, 32, 32, generator=gen) < 0.05).float(),
                              torch.randint(0, 10, (50,), generator=gen)) for i in range(k)]
        cfg = TrainConfig(epochs=1, batch_size=32, num_steps=steps, encoder="events")
        return model, clients, cfg
    raise ValueError(f"unknown model {name!r}; valid: mlp, conv, recurrent")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,conv,recurrent")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    ratios: dict[str, float] = {}
    for name in args.models.split(","):
        paths = ("mlp", "vmap") if name == "mlp" else ("vmap",)
        for i, path in enumerate(paths):
            model, clients, cfg = workload(name, args.clients)
            engines = ("cohort", "sequential") if i == 0 else ("cohort",)
            t = time_engines(model, clients, cfg, rounds=args.rounds, seed=SEED, path=path, engines=engines)
            seq = t.sequential_s if i == 0 else rows[-1]["sequential_s"]
            row = {"model": name, "path": path, "cohort_s": t.cohort_s, "sequential_s": seq,
                   "ratio": seq / t.cohort_s, "diff": t.max_param_diff}
            rows.append(row)
            if name not in ratios:
                ratios[name] = row["ratio"]
            print(f"done {name}/{path}: {row}", flush=True)
    print(f"\n{args.clients} clients per round, median of {args.rounds} timed round(s) after a warm-up; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}\n")
    print("| model | cohort path | cohort s/round | sequential s/round | cohort vs sequential | max param diff |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        diff = "-" if math.isnan(r["diff"]) else f"{r['diff']:.1e}"
        print(f"| {r['model']} | {r['path']} | {r['cohort_s']:.3f} | {r['sequential_s']:.3f} | {r['ratio']:.2f}x "
              f"| {diff} |")
    print(" ".join(f"{m}_cohort_vs_sequential={ratios.get(m, float('nan')):.2f}" for m in ("mlp", "conv")))


if __name__ == "__main__":
    main()
