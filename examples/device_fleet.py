"""A fleet of mismatched, quantized neuromorphic devices: calibrated latent aggregation vs naive averaging.

Every client owns a simulated chip (20% threshold / leak / gain mismatch, 8- or 4-bit weights). With
``devices.aggregation=calibrated`` each chip estimates its own map from probes and clients exchange latent
parameters; with ``naive`` the raw device parameters are averaged. The accuracy printed is the global model
deployed on every device of the fleet (mean), next to the same model on ideal hardware.

Run:  .venv/bin/python examples/device_fleet.py [--rounds 8]
"""

from __future__ import annotations

import argparse
import os

import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation
from spikefed.hardware.calibration import calibrate

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

FLEET = "[{profile: analog20_8bit, fraction: 0.5}, {profile: analog20_4bit, fraction: 0.5}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2 if SMALL else 8)
    args = ap.parse_args()
    for mode in ("naive", "calibrated"):
        settings = build_settings(RunSettings, None, [f"devices.fleet={FLEET}", f"devices.aggregation={mode}",
                                                      f"federation.rounds={args.rounds}"])
        sim = Simulation(build_spec(settings))
        if mode == "calibrated":
            fleet = sim.spec.fleet
            dev = fleet.devices[0]
            est = calibrate(dev, torch.Generator().manual_seed(0))
            err = (est.gains[0] / dev.gains[0] - 1).abs().max().item()
            print(f"device 0 ({dev.profile.name}): gain estimated from probes within {100 * err:.2f}% "
                  f"(true gains span {dev.gains[0].min():.2f}..{dev.gains[0].max():.2f})")
        for _ in range(args.rounds):
            row = sim.run_round()
        print(f"{mode:>10}: deployed accuracy {row['accuracy']:.3f} (per device kind "
              f"{ {k: round(v, 3) for k, v in row['accuracy_by_device'].items()} }), "
              f"same model on ideal hardware {row['accuracy_ideal']:.3f}")


if __name__ == "__main__":
    main()
