"""Seconds per federated round with 1 process vs 2 torchrun processes (gloo on CPU).

Workload (that of benchmarks/fl_round.py): digits (1,437 training samples) split IID into K clients (default
1,000: each holds 1 or 2 samples), all of which train every round; spiking MLP 64-256-10 (LIF, T = 25, direct
input), 1 local epoch, batch 32, Adam; FedAvg; no evaluation inside the timed rounds.

What is timed (perf_counter on rank 0, after a warm-up round): ``Simulation.run_round()`` in one process (torch's
default intra-op threads, every core; and again with one thread: on a busy machine one thread can be faster, and
``seconds_1proc`` is the faster of the two), and the same round as a ``DistributedSimulation`` on 2 ranks started by
``torchrun --standalone --nproc_per_node 2`` (one thread each, as torchrun sets it): each rank trains its half of
the clients, the updates are gathered (all_gather of the serialized blocks), and both ranks run the server part.
The table gives the median of ``--rounds`` timed rounds; the script also checks that both runs end with the same
global model (SHA-256 of the parameters).

Run
    .venv/bin/python benchmarks/distributed.py                  # K = 1000, 3 timed rounds
    .venv/bin/python benchmarks/distributed.py --clients 100 --rounds 2
Last line: ``seconds_1proc=A seconds_2proc=B speedup=C``. The load average before and after is printed: the
machine may be shared, and the numbers mean little on a busy one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NEVER = 10**9


def settings(k: int) -> Any:
    from spikefed.experiment.config import RunSettings

    return RunSettings.model_validate({  # the workload of benchmarks/fl_round.py
        "seed": 0,
        "partition": {"method": "iid", "num_clients": k},
        "model": {"kind": "mlp", "hidden": [256], "neuron": "lif"},
        "local": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "num_steps": 25, "encoder": "direct"},
        "federation": {"rounds": NEVER, "eval_every": NEVER, "fraction": 1.0, "min_clients": k,
                       "strategy": "fedavg", "engine": "cohort"},
    })


def worker(k: int, rounds: int) -> None:
    """One process (plain) or one rank (under torchrun): warm-up round, then ``rounds`` timed rounds."""
    import torch

    from spikefed.experiment.distributed import torchrun_env
    from spikefed.experiment.runner import build_spec
    from spikefed.federated.distributed import DistributedSimulation, params_digest, start_group, stop_group
    from spikefed.federated.simulation import Simulation

    env = torchrun_env()
    spec = build_spec(settings(k))
    group = None
    if env is None:
        sim = Simulation(spec)
    else:
        group = start_group("gloo", 600.0, rank=env.rank, world=env.world, local_rank=env.local_rank,
                            addr=env.addr, port=env.port)
        sim = DistributedSimulation(spec, group)
    times = []
    for i in range(rounds + 1):
        if group is not None:  # start each round together
            group.gather_bytes(b"", "the round start")
        t0 = time.perf_counter()
        sim.run_round()
        if i:
            times.append(time.perf_counter() - t0)
    if group is None or group.primary:
        print(json.dumps({"processes": 1 if env is None else env.world, "threads": torch.get_num_threads(),
                          "clients": k, "seconds": times, "median": statistics.median(times),
                          "digest": params_digest(sim.state.global_params).hex()}), flush=True)
    if group is not None:
        stop_group()


def launch(cmd: list[str], extra_env: dict[str, str]) -> dict[str, Any]:
    env = {**os.environ, **extra_env}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.clients, a.rounds)
        return
    me = [sys.executable, str(Path(__file__).resolve()), "--worker", "--clients", str(a.clients), "--rounds",
          str(a.rounds)]
    load_before = os.getloadavg()
    one = launch(me, {})
    single = launch(me, {"OMP_NUM_THREADS": "1"})
    two = launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *me[1:]],
                 {"OMP_NUM_THREADS": "1"})
    load_after = os.getloadavg()
    same = one["digest"] == two["digest"] == single["digest"]
    best = min(one, single, key=lambda r: r["median"])  # on a busy machine one thread may beat two
    print(f"| processes | threads each | clients | s/round (median of {a.rounds}) | rounds (s) |")
    print("|---|---|---|---|---|")
    for r in (one, single, two):
        print(f"| {r['processes']} | {r['threads']} | {r['clients']} | {r['median']:.3f} | "
              f"{', '.join(f'{s:.3f}' for s in r['seconds'])} |")
    print(f"cores: {os.cpu_count()}; load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/"
          f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    print(f"same global model after {a.rounds + 1} rounds: {same}")
    print(f"1 process: the faster of {one['threads']} and 1 thread(s): {best['threads']}")
    print(f"seconds_1proc={best['median']:.4f} seconds_2proc={two['median']:.4f} "
          f"speedup={best['median'] / two['median']:.3f}")


if __name__ == "__main__":
    main()
