"""The seeds' scenario end to end: a convolutional SNN with axonal delays on event-camera data, federated across a
heterogeneous fleet of neuromorphic chips; deployed accuracy calibrated vs naive vs ideal hardware.

Data: the 34x34 two-polarity synthetic MNIST recordings (``data.name=event_mnist5k``, 5,000 samples), cropped to
32x32 and pooled 2x2 to 16x16, ``--bins`` time bins. Dirichlet(0.3) label skew over 50 clients, FedAvg,
``--per-round`` clients per round. Model (built here in Python, the config has no delay model):
``conv 3x3 (2 -> C) -> LIF [C, 16, 16] -> maxpool 2 -> Delay (learnable axonal delays, ring of 4, from zero) ->
Linear -> LIF [10]`` (spike-count read-out; a tie for the top count goes to the tied class that spiked first,
``local.count_ties=first_spike``; ``--readout membrane`` swaps the output layer for a leaky integrator).

Fleet (seed 000's setting): every device has 20% analog mismatch (threshold, leak, gain CV 0.2 per neuron, delay
lines CV 0.2); 8-bit and 4-bit weights; two time steps (dt = 1 and dt = 2: half of the devices run T/2 steps on
event frames rebinned to them); delay ring buffers of 3 slots. Rows:

- naive: every client writes the global values to its chip as they are and uploads its raw program;
- calibrated: each client calibrates its chip from probes and speaks the latent language (docs/hardware.md); a
  client whose chip runs dt = 2 trains on the sum of two losses, its digital twin's (its calibrated mismatch,
  bits and delay buffer at the nominal step) and its chip's at its own dt (``devices.training_step=mixed``,
  sequential engine); every chip is deployed at its own dt (ablation rows: ``calibrated_nominal``, the twin
  alone; ``calibrated_mixed``, the same as the calibrated row; ``calibrated_resolutions``, every client also trains
  its device's twin at dt = 2, ``devices.training_step=resolutions``);
- ideal: the same run on ideal hardware (no mismatch, float weights, dt = 1): the headline reference;
- ideal_fleet_dt: ideal chips (no mismatch, float weights) that keep the fleet's two clocks (half at dt = 2),
  trained as the calibrated row: the reference for what mismatch and bits cost, with the clocks held equal.
  Ablation row ``ideal_dt2_chip_step``: every chip ideal at dt = 2, trained at that step (what the net reaches on
  3 rebinned steps when trained only for them).

Deployed accuracy is the global model written to every device of the fleet (each with its client's map), mean
over the 50 devices. Energy per inference (45 nm: 0.9 pJ per AC, 4.6 pJ per MAC) is measured on the final latent
model with the test inputs; bytes are the uplink bytes actually serialised. "cohort vs sequential" times one
round of local training of the conv net with each engine through ``train_clients(engine, ...)``: every client of
its own Dirichlet(0.3) partition into ``--engine-clients`` clients (100, as the issue asks); an engine that cannot
train the model is reported with its reason.

Run:  .venv/bin/python benchmarks/scenario.py [--seeds 0 1 2] [--rounds 30] [--quick]
Line before the last:  ideal_same_clocks=<accuracy> calibrated_minus_ideal_same_clocks=<points>
Last line:  calibrated_minus_naive=<points> ideal_minus_calibrated=<points> conv_cohort_vs_sequential=<ratio>
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.cohort import ClientData, train_clients
from spikefed.federated.simulation import Simulation, build_client, client_generator
from spikefed.federated.types import FitInstructions, params_of
from spikefed.hardware.devices import assign_fleet, get_profile
from spikefed.hardware.fleet import Fleet
from spikefed.hardware.metrics import measure
from spikefed.runtime import configure_allocator
from spikefed.seeding import Purpose, derive_seed, numpy_rng
from spikefed.snn.delay import INITS as DELAY_INITS, Delay
from spikefed.snn.models import READOUTS, ModelOutput, init_linear
from spikefed.snn.neurons import LIF, LeakyIntegrator
from spikefed.snn.train import encode_inputs

SIDE, POLARITIES = 16, 2
MISMATCH = {"threshold_cv": 0.2, "leak_cv": 0.2, "gain_cv": 0.2, "delay_cv": 0.2, "delay_buffer": 3}
FLEET = [  # (profile overrides, share): 4/8-bit x dt 1/2, all with 20% mismatch
    ({**MISMATCH, "weight_bits": 8, "dt": 1.0}, 0.25), ({**MISMATCH, "weight_bits": 4, "dt": 1.0}, 0.25),
    ({**MISMATCH, "weight_bits": 8, "dt": 2.0}, 0.25), ({**MISMATCH, "weight_bits": 4, "dt": 2.0}, 0.25),
]

CALIBRATED_STEP = "mixed"  # devices.training_step of the calibrated row

ABLATION = ("calibrated_8bit_only", "calibrated_dt1_only", "calibrated_chip_step", "calibrated_nominal",
            "calibrated_mixed", "calibrated_resolutions")
# references for the dt = 2 chips (rows of --rows): ideal chips with the fleet's two clocks (half at dt = 2), trained
# as the calibrated row; and every ideal chip at dt = 2, trained at its own step (what this net reaches on 3 steps)
REFERENCES = ("ideal_fleet_dt", "ideal_dt2_chip_step")
MAIN_ROWS = ("naive", "calibrated", "ideal", "ideal_fleet_dt")


class DelayedConvNet(nn.Module):
    """``[T, B, 2*16*16]`` event frames -> conv -> LIF -> maxpool -> axonal delays -> Linear -> LIF (10)."""

    def __init__(self, channels: int, generator: torch.Generator, beta: float = 0.9,
                 readout: str = "spikes", delay_init: str = "uniform") -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; valid: {', '.join(READOUTS)}")
        self.readout = readout
        self.conv = nn.Conv2d(POLARITIES, channels, 3, padding=1)
        self.lif = LIF((channels, SIDE, SIDE), beta=beta)
        self.pool = nn.MaxPool2d(2)
        width = channels * (SIDE // 2) ** 2
        self.delay = Delay(width, max_delay=4, init=delay_init, generator=generator)
        self.fc = nn.Linear(width, 10)
        self.out = LIF(10, beta=beta) if readout == "spikes" else LeakyIntegrator(10, beta=beta)
        init_linear([self.conv, self.fc], generator)

    def forward(self, x: torch.Tensor, state: Any = None) -> ModelOutput:
        t, b = x.shape[:2]
        h = self.conv(x.reshape(t * b, POLARITIES, SIDE, SIDE)).reshape(t, b, -1, SIDE, SIDE)
        s = self.lif.run(h).spikes
        p = self.pool(s.reshape(t * b, *s.shape[2:])).reshape(t, b, -1)
        d, _ = self.delay(p)
        if isinstance(self.out, LeakyIntegrator):
            mem, _ = self.out(self.fc(d))
            return ModelOutput(mem, mem, [s.flatten(2)], [])
        o = self.out.run(self.fc(d))
        return ModelOutput(o.spikes, o.membrane, [s.flatten(2), o.spikes], [])


def settings_for(args: argparse.Namespace, seed: int) -> RunSettings:
    return build_settings(RunSettings, None, [
        "data.name=event_mnist5k", "data.crop=[1, 1, 32, 32]", "data.downsample=2", f"data.bins={args.bins}",
        "partition.method=dirichlet", "partition.alpha=0.3", f"partition.num_clients={args.clients}",
        "partition.min_size=5", f"federation.rounds={args.rounds}",
        f"federation.fraction={args.per_round / args.clients}", f"federation.eval_every={args.rounds}",
        f"local.epochs={args.epochs}", "local.batch_size=32", f"local.lr={args.lr}", "local.count_ties=first_spike",
        f"seed={seed}", *args.set])


def build_fleet(model: nn.Module, row: str, n: int, seed: int) -> Fleet:
    if row == "ideal":
        profiles = [get_profile("ideal")] * n
    elif row.startswith("ideal_"):  # ideal chips (no mismatch, float weights) at the fleet's clocks, or all at dt 2
        dts = (2.0,) if row.startswith("ideal_dt2") else tuple(sorted({o["dt"] for o, _ in FLEET}))
        entries = [(get_profile("ideal").replace(name=f"ideal_dt{dt:g}", dt=dt), 1 / len(dts)) for dt in dts]
        profiles = assign_fleet(n, entries, numpy_rng(seed, Purpose.FLEET))
    else:
        kept = [(o, f) for o, f in FLEET if not (row.endswith("_8bit_only") and o["weight_bits"] != 8)
                and not (row.endswith("_dt1_only") and o["dt"] != 1.0)]
        entries = [(get_profile("analog20").replace(name=f"{o['weight_bits']}bit_dt{o['dt']:g}", **o),
                    f / sum(f for _, f in kept)) for o, f in kept]
        profiles = assign_fleet(n, entries, numpy_rng(seed, Purpose.FLEET))
    return Fleet(model, profiles, "naive" if row.startswith("naive") else "calibrated",
                 [derive_seed(seed, Purpose.DEVICE, client=c) for c in range(n)],
                 [derive_seed(seed, Purpose.CALIBRATION, client=c) for c in range(n)], probe_repeats=16,
                 training_step="device" if row.startswith("naive") or row.endswith("_chip_step") else
                 "nominal" if row.endswith("_nominal") else "mixed" if row.endswith("_mixed") else
                 "resolutions" if row.endswith("_resolutions") else CALIBRATED_STEP)


def base_spec(args: argparse.Namespace, seed: int) -> Any:
    """The run's data, partition and strategy (built once per seed; every row replaces model and fleet). The
    deployed accuracy is measured on ``--test`` held-out samples (an evenly spaced subset of the test split)."""
    spec = build_spec(settings_for(args, seed))
    d = spec.data
    keep = torch.linspace(0, len(d.y_test) - 1, min(args.test, len(d.y_test))).round().long()
    return dataclasses.replace(spec, data=dataclasses.replace(d, x_test=d.x_test[keep], y_test=d.y_test[keep]))


def run_row(args: argparse.Namespace, row: str, seed: int, base: Any) -> dict[str, Any]:
    spec = dataclasses.replace(base, strategy=copy.deepcopy(base.strategy))
    model = DelayedConvNet(args.channels, torch.Generator().manual_seed(derive_seed(seed, Purpose.INIT)),
                           readout=args.readout, delay_init=args.delay_init)
    fleet = build_fleet(model, row, args.clients, seed)
    spec = dataclasses.replace(spec, model=model, fleet=fleet)
    sim = Simulation(spec)
    start = time.perf_counter()
    rows = [sim.run_round() for _ in range(args.rounds)]
    seconds = time.perf_counter() - start
    last = rows[-1]
    x = spec.data.x_test[:args.energy_samples].float()
    metrics = measure(_loaded(model, sim.state.global_params),
                      encode_inputs(x, spec.local, None), "45nm").per_inference()
    return {"row": row, "seed": seed, "deployed": last["accuracy"], "on_ideal_hardware": last["accuracy_ideal"],
            "by_device": last["accuracy_by_device"], "seconds": seconds, "engine": spec.engine,
            "bytes_up_per_round": sum(r["bytes_up"] for r in rows) / len(rows),
            "acs": metrics["effective_acs"], "macs": metrics["effective_macs"], "energy_j": metrics["energy_j"]}


def _loaded(model: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(params[n])
    return model


def engine_round(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Seconds of one round of local training with each engine (float32, this machine), each after an untimed
    warm-up round: every client of a Dirichlet(0.3) partition of the same data into ``--engine-clients``
    clients (the issue's 100 by default), one local epoch each, from the same global parameters."""
    k = args.engine_clients
    spec = build_spec(settings_for(argparse.Namespace(**{**vars(args), "clients": k, "per_round": k}), seed))
    model = DelayedConvNet(args.channels, torch.Generator().manual_seed(derive_seed(seed, Purpose.INIT)),
                           readout=args.readout, delay_init=args.delay_init)
    clients: list[ClientData] = [build_client(spec, c) for c in range(k)]
    out: dict[str, Any] = {"clients": k, "samples": sum(c.num_samples for c in clients),
                           "threads": torch.get_num_threads(), "load_1min": os.getloadavg()[0]}
    for engine in ("sequential", "cohort"):
        try:
            for timed in (False, True):  # a warm-up round first (allocator, first-call costs), then the timed one
                gens = [client_generator(seed, 1, c) for c in range(k)]
                start = time.perf_counter()
                train_clients(engine, model, params_of(model), clients, gens, spec.local, FitInstructions(1))
        except ValueError as e:
            out[engine] = None
            out[f"{engine}_reason"] = str(e)
            continue
        out[engine] = time.perf_counter() - start
    seq, coh = out.get("sequential"), out.get("cohort")
    out["ratio"] = seq / coh if seq and coh else math.nan
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--per-round", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--bins", type=int, default=6)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--delay-init", choices=DELAY_INITS, default="zeros", help="initial axonal delays: "
                    "zeros (learned from no delay) or uniform in [0, 4) steps")
    ap.add_argument("--readout", choices=READOUTS, default="spikes", help="output layer: spiking LIF neurons "
                    "(classes by spike count) or a non-spiking leaky integrator (classes by potential; give "
                    "--set local.loss=ce_membrane)")
    ap.add_argument("--test", type=int, default=1000, help="held-out samples for the deployed accuracy (default: "
                    "the whole test split of 1,000; the runs before 2026-12-06 03:40 used 400)")
    ap.add_argument("--energy-samples", type=int, default=200)
    ap.add_argument("--ablation", action="store_true", help="calibrated fleets with only 8-bit weights / only "
                    "dt = 1 / training through the dt = 2 chips at their own step (where the gap to ideal hardware "
                    "comes from); no summary line")
    ap.add_argument("--rows", nargs="+", default=None, help="ablation: these rows instead of the default ablation "
                    f"rows (any of naive, calibrated, ideal, {', '.join(ABLATION + REFERENCES)})")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a further run-config "
                    "override for every row (ablations)")
    ap.add_argument("--no-engines", action="store_true", help="skip the cohort vs sequential timing")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON", help="print the summary of these result "
                    "files (one per seed, run in parallel with --seeds S --json FILE) and write --json")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 1 round, 6 clients")
    ap.add_argument("--engine-clients", type=int, default=100, help="clients of the cohort-vs-sequential timing "
                    "(its own partition of the data; the issue's 100)")
    ap.add_argument("--json", default=None, help="result file (default: benchmarks/results/scenario.json; "
                    "ablations write one only when given)")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.rounds, args.clients, args.per_round, args.epochs = [0], 1, 6, 3, 1
        args.energy_samples, args.test, args.engine_clients = 8, 32, 6
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        runs = [r for part in parts for r in part["runs"]]
        timing = next((part["engines"] for part in parts if part["engines"]), {})
        args.seeds = sorted({r["seed"] for r in runs})
        summarize(args, runs, timing)
        return
    configure_allocator()
    runs, timing = [], {}
    for seed in args.seeds:
        base = base_spec(args, seed)
        if seed == args.seeds[0] and not args.ablation and not args.no_engines:
            timing = engine_round(args, seed)
        for row in ((args.rows or ABLATION) if args.ablation else MAIN_ROWS):
            r = run_row(args, row, seed, base)
            runs.append(r)
            by = ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["by_device"].items()))
            print(f"{row} seed {seed}: deployed {r['deployed']:.4f} (ideal hw {r['on_ideal_hardware']:.4f}; {by}) "
                  f"{r['seconds']:.0f} s, engine {r['engine']}", flush=True)

    if args.ablation:
        for r in runs:
            by = " / ".join(f"{v:.3f}" for _, v in sorted(r["by_device"].items()))
            print(f"| {r['row']} | seed {r['seed']} | {r['deployed']:.4f} | {r['on_ideal_hardware']:.4f} | {by} |")
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "engines": timing}, indent=1))
        return
    summarize(args, runs, timing)


def summarize(args: argparse.Namespace, runs: list[dict[str, Any]], timing: dict[str, Any]) -> None:
    """The table, the engine timing, the result file and the last line."""
    def mean(row: str, key: str) -> float:
        return statistics.fmean(r[key] for r in runs if r["row"] == row)

    print("\n| aggregation | deployed accuracy (mean) | per seed | ACs / inference | MACs / inference | "
          "energy / inference | uplink bytes / round |")
    print("|---|---|---|---|---|---|---|")
    for row in (r for r in MAIN_ROWS if any(run["row"] == r for run in runs)):
        per = ", ".join(f"{r['deployed']:.4f}" for r in runs if r["row"] == row)
        print(f"| {row} | {mean(row, 'deployed'):.4f} | {per} | {mean(row, 'acs'):.3g} | {mean(row, 'macs'):.3g} | "
              f"{mean(row, 'energy_j') * 1e9:.2f} nJ | {mean(row, 'bytes_up_per_round'):.0f} |")
    for engine in ("sequential", "cohort"):
        if engine not in timing:
            continue
        v = timing[engine]
        print(f"\n{engine} engine, one round of {timing['clients']} clients (conv net): "
              + (f"{v:.2f} s" if v is not None else f"not available: {timing[engine + '_reason']}"))
    args.json = args.json or "benchmarks/results/scenario.json"
    a = 100 * (mean("calibrated", "deployed") - mean("naive", "deployed"))
    b = 100 * (mean("ideal", "deployed") - mean("calibrated", "deployed"))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "engines": timing}, indent=1))
    if any(r["row"] == "ideal_fleet_dt" for r in runs):  # the reference with the fleet's own clocks
        c = 100 * (mean("calibrated", "deployed") - mean("ideal_fleet_dt", "deployed"))
        print(f"ideal_same_clocks={mean('ideal_fleet_dt', 'deployed'):.4f} calibrated_minus_ideal_same_clocks={c:.2f}")
    print(f"calibrated_minus_naive={a:.2f} ideal_minus_calibrated={b:.2f} conv_cohort_vs_sequential="
          f"{timing.get('ratio', math.nan):.2f}")


if __name__ == "__main__":
    main()
