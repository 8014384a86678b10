"""One machine, many devices: 3 Flower SuperNodes that each host 50 virtual clients, against the simulator.

Starts a SuperLink and 3 SuperNodes on 127.0.0.1 as real processes (each SuperNode with
``--node-config 'partition-id=i num-partitions=3 virtual-clients=50'``), runs spikefed on them, stops every
process, then runs the in-process simulator with the same settings and prints both side by side: final accuracy,
the largest difference between the two global models, and seconds per round.

    python examples/flower_cohort.py                       # 3 nodes x 50 virtual clients, 3 rounds, 20% sampled
    python examples/flower_cohort.py --nodes 2 --virtual-clients 20 --rounds 2 --fraction 0.5

The same from the command line: ``spikefed flower demo --nodes 3 --virtual-clients 50 --set federation.fraction=0.2
--set partition.min_size=5 --set partition.method=iid``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from spikefed.deploy.flower_launch import run_demo
from spikefed.experiment.config import RunSettings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    small = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI: the same code path, 2 nodes x 10 clients, 1 round
    ap.add_argument("--nodes", type=int, default=2 if small else 3)
    ap.add_argument("--virtual-clients", type=int, default=10 if small else 50)
    ap.add_argument("--rounds", type=int, default=1 if small else 3)
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    n, v = args.nodes, args.virtual_clients
    settings = {"partition": {"num_clients": n * v, "method": "iid", "min_size": 5},
                "local": {"epochs": 4}, "model": {"hidden": [64]},
                "federation": {"fraction": args.fraction, "rounds": args.rounds, "engine": "cohort"}}
    work = args.workdir or Path(tempfile.mkdtemp(prefix="spikefed-cohort-"))
    node_configs = [f"partition-id={i} num-partitions={n} virtual-clients={v}" for i in range(n)]

    started = time.perf_counter()
    summary = run_demo(work, n, {"settings": json.dumps(settings)}, timeout=1800.0, node_configs=node_configs,
                       on_line=lambda line: print(line) if line.startswith("spikefed") else None)
    deploy_s = time.perf_counter() - started
    rows = [json.loads(ln) for ln in (work / "out" / "metrics.jsonl").read_text().splitlines()]
    deployed = torch.load(work / "out" / "global.pt")

    sim = Simulation(build_spec(RunSettings.model_validate(settings)))
    sim_started = time.perf_counter()
    while sim.state.round < sim.spec.rounds:
        sim.run_round()
    sim_s = time.perf_counter() - sim_started

    diff = max(float((deployed[k].double() - t.double()).abs().max()) for k, t in sim.state.global_params.items())
    dep_round = sum(r["seconds"] for r in rows) / len(rows)
    sim_round = sum(r["seconds"] for r in sim.state.metrics) / len(sim.state.metrics)
    print(f"clients: {n} SuperNodes x {v} virtual clients = {n * v}; {rows[0]['clients']} sampled per round")
    print(f"accuracy per round  deployed  {[round(r['accuracy'], 4) for r in rows]}")
    print(f"                    simulator {[round(r['accuracy'], 4) for r in sim.state.metrics]}")
    print(f"bytes up            deployed {summary['total_bytes_up']}  simulator {sim.state.bytes_up}")
    print(f"seconds per round   deployed {dep_round:.2f} (whole demo with process start-up {deploy_s:.1f} s)  "
          f"simulator {sim_round:.3f} (whole run {sim_s:.1f} s)")
    print(f"final_accuracy_deployed={summary['final_accuracy']:.4f} "
          f"final_accuracy_simulator={sim.state.metrics[-1]['accuracy']:.4f} max_param_diff={diff:.3g}")


if __name__ == "__main__":
    main()
