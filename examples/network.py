"""Network model: slow uplinks miss the round deadline; top-k compression lets them make it.

20 clients (half sampled per round) on log-normal links around 1 Mbit/s up / 20 Mbit/s down / 50 ms (spread 1),
one local step = 10 ms, a 60-step deadline (0.6 s). The same federation runs with dense uploads and with top-10% /
top-1% + error feedback; the table counts late clients and reports accuracy next to the simulated wall-clock time.

Run:  .venv/bin/python examples/network.py [--rounds 10]      (SPIKEFED_EXAMPLE_SMALL=1, CI: 3 rounds by default)
"""

import argparse
import os

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation

NETWORK = ["network.enabled=true", "network.uplink_mbps=1.0", "network.downlink_mbps=20.0", "network.latency_ms=50",
           "network.spread=1.0", "network.step_ms=10", "faults.deadline=60", "local.epochs=1"]
RUNS = {"dense": [], "top-10% + EF": ["compression.uplink=topk", "compression.fraction=0.1"],
        "top-1% + EF": ["compression.uplink=topk", "compression.fraction=0.01"]}

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=3 if os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1" else 10)
args = ap.parse_args()
print("| uplink | late client-rounds | sampled | final accuracy | sim seconds | uplink bytes |")
print("|---|---:|---:|---:|---:|---:|")
for name, extra in RUNS.items():
    sim = Simulation(build_spec(build_settings(RunSettings, None, [f"federation.rounds={args.rounds}", *NETWORK,
                                                                   *extra])))
    rows = [sim.run_round() for _ in range(args.rounds)]
    print(f"| {name} | {sum(r['late'] for r in rows)} | {sum(r['clients'] for r in rows)} | "
          f"{rows[-1]['accuracy']:.3f} | {sum(r['sim_seconds'] for r in rows):.2f} | "
          f"{sum(r['bytes_up'] for r in rows):,} |")
