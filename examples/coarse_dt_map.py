"""What the calibration's dt map does: a network deployed on a chip with a coarser time step (dt = 2).

A two-layer spiking network (IF or LIF neurons) runs on constant inputs for T = 40 nominal steps; a calibrated
ideal chip with dt = 2 runs it in 20 steps, its program written by ``Fleet.program`` (docs/hardware.md, "the
maps"). The first layer receives data (a per-step value: input scale ``z``), the second the first layer's
spikes (one device spike stands for two nominal steps: scale ``z / dt``). The script prints the hidden and output
spike counts of the nominal network and of the chip, and of the chip programmed with the data scale ``z`` on
every layer (what the map did before), whose output counts about twice as many spikes. (A LIF chip fires about
10% less: its reset comes one device step later, see the limits in docs/hardware.md.)

Run:  .venv/bin/python examples/coarse_dt_map.py [--neuron lif]
"""

from __future__ import annotations

import argparse

import torch
from torch.func import functional_call

from spikefed.hardware.devices import get_profile
from spikefed.hardware.fleet import Fleet
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neuron", choices=("if", "lif"), default="if")
    args = ap.parse_args()
    kw = {"beta": 0.9} if args.neuron == "lif" else {}
    model = SpikingMLP([6, 40, 4], neuron=args.neuron, generator=torch.Generator().manual_seed(3), **kw)
    with torch.no_grad():
        model.linears[0].weight.mul_(0.2)
        model.linears[1].weight.abs_().mul_(0.2)
    fleet = Fleet(model, [get_profile("coarse_dt")], "calibrated", [0], [0])
    x = torch.rand(64, 6, generator=torch.Generator().manual_seed(4))
    cfg = TrainConfig(num_steps=40, encoder="direct")
    latent = {n: p.detach() for n, p in model.named_parameters()}
    device = fleet.devices[0]
    with torch.no_grad():
        nominal = model(x.unsqueeze(0).expand(40, *x.shape))
        xs, dcfg = fleet.device_inputs(0, x, cfg, None)
        program = fleet.program(0, latent)
        chip = functional_call(model, device.effective(program), (xs,))
        # the data scale z on the spike synapses too: the second layer's weights dt times larger
        old = dict(program, **{"linears.1.weight": program["linears.1.weight"] * 2.0})
        before = functional_call(model, device.effective(old), (xs,))
    print(f"{args.neuron.upper()} network, T = 40 nominal steps, dt = 2 chip: {dcfg.num_steps} steps")
    print(f"{'':28s}{'hidden spikes':>16s}{'output spikes':>16s}")
    rows = (("nominal network", nominal), ("dt = 2 chip, z / dt", chip), ("dt = 2 chip, z everywhere", before))
    for label, out in rows:
        print(f"{label:28s}{float(out.hidden[0].sum(0).mean()):16.2f}{float(out.output.sum(0).mean()):16.2f}")


if __name__ == "__main__":
    main()
