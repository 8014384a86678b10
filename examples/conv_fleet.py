"""A convolutional SNN federated across a fleet of mismatched chips, through the Fleet / device-engine API.

Digits (8x8 images, rate coded) on a ``SpikingConvNet`` (conv 3x3 -> LIF [C, 8, 8] -> maxpool -> LIF read-out).
Every client owns a simulated chip: 20% per-neuron mismatch of gain, threshold and leak (per position of the
feature map), 4- or 8-bit weights, and half of the chips run with a coarser time step (dt = 2, T/2 steps). Each
round, the clients train their device's program through the device (``train_on_devices``), upload latent values
(calibrated) or raw programs (naive), and the server averages them; the deployed accuracy is the global model
written to every device. A third row lets the dt = 2 clients train their chip's digital twin at the nominal
step instead (``training_step="nominal"``: calibrated mismatch, bits, T steps); the chips are still deployed at
their own dt. A fourth row trains every client at both time steps of the fleet (``training_step="resolutions"``:
its device's loss at dt = 1 plus at dt = 2, its chip where that is its chip's step, else its digital twin, on
inputs of T/2 steps). The same loop works for any model the devices accept (recurrent, CuBa, ALIF, delays).

Run:  .venv/bin/python examples/conv_fleet.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import os

import torch

from spikefed.data import load_digits_split
from spikefed.federated.cohort import ClientData
from spikefed.federated.fleet_training import train_on_devices
from spikefed.federated.types import FitInstructions, params_of
from spikefed.hardware.devices import get_profile
from spikefed.hardware.fleet import Fleet
from spikefed.seeding import Purpose, derive_seed, torch_generator
from spikefed.snn.models import SpikingConvNet
from spikefed.snn.train import TrainConfig

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2 if SMALL else 6)
    ap.add_argument("--clients", type=int, default=4 if SMALL else 8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    d = load_digits_split(seed=args.seed)
    x_train, x_test = d.x_train.view(-1, 1, 8, 8), d.x_test.view(-1, 1, 8, 8)
    if SMALL:
        x_test, y_test = x_test[:120], d.y_test[:120]
    else:
        y_test = d.y_test
    shards = torch.arange(len(d.y_train)).chunk(args.clients)
    clients = [ClientData(k, x_train[idx], d.y_train[idx]) for k, idx in enumerate(shards)]
    cfg = TrainConfig(epochs=1, batch_size=32, num_steps=8, lr=5e-3, encoder="rate")
    analog = get_profile("analog20")
    kinds = [analog.replace(name=f"{b}bit_dt{dt:g}", weight_bits=b, dt=dt) for b in (8, 4) for dt in (1.0, 2.0)]
    profiles = [kinds[k % len(kinds)] for k in range(args.clients)]
    for mode, step in (("naive", "device"), ("calibrated", "device"), ("calibrated", "nominal"),
                       ("calibrated", "resolutions")):
        model = SpikingConvNet((1, 8, 8), 10, channels=(6,), generator=torch.Generator().manual_seed(args.seed))
        fleet = Fleet(model, profiles, mode,
                      [derive_seed(args.seed, Purpose.DEVICE, client=k) for k in range(args.clients)],
                      [derive_seed(args.seed, Purpose.CALIBRATION, client=k) for k in range(args.clients)],
                      training_step=step)
        latent = params_of(model)
        for rnd in range(1, args.rounds + 1):
            gens = [torch_generator(args.seed, Purpose.CLIENT, rnd, k) for k in range(args.clients)]
            ups = train_on_devices(fleet, model, latent, clients, gens, cfg, FitInstructions(rnd))
            total = sum(u.num_samples for u in ups)
            latent = {n: sum(u.params[n] * (u.num_samples / total) for u in ups) for n in latent}  # FedAvg
        ev = fleet.evaluate(latent, x_test, y_test, cfg, torch_generator(args.seed, Purpose.EVAL, args.rounds))
        label = f"{mode}, {step} step"
        print(f"{label:>24}: deployed accuracy {ev.accuracy:.3f} "
              f"(per device kind { {k: round(v, 3) for k, v in ev.by_profile.items()} })")


if __name__ == "__main__":
    main()
