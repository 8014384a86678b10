"""Learning rules benchmark: BPTT, e-prop, DECOLLE, DFA and STDP (+ read-out) on digits, centrally and federated.

What is measured
    Model: SpikingMLP 64-H-10 (one hidden LIF layer, so e-prop applies), leaky read-out (``readout="membrane"``),
    loss ``ce_membrane`` with ``membrane_reduction=time_mean`` (the per-step loss e-prop needs; the same for all),
    direct coding, Adam. STDP: the hidden layer learns by additive STDP with synaptic scaling (the defaults of
    ``local.stdp_*``), the read-out by gradient. Same initial weights and batch order for every method of a seed.

    - Accuracy, central: ``--epochs`` epochs on 80 % of the bundled digits, test accuracy on the other 20 %, at
      T = ``--steps``; for each of ``--seeds`` seeds (weights, batch order; the split is fixed).
    - Accuracy, federated: 10 clients, Dirichlet(0.5) label skew, all clients every round, FedAvg, ``--rounds``
      rounds of ``--local-steps`` local steps (the sequential engine; the same seeds).
    - Training memory of one batch (B = 32, rate-coded input) at T = 25 and T = 400: for methods that use autograd,
      the peak bytes of the distinct storages autograd holds for backward (saved-tensor hooks, counted from the
      moment a tensor is saved until its graph node frees it); for e-prop the largest state it carries from step
      to step (no graph); STDP holds no graph over the hidden layer (only the read-out's), but its trace update
      runs on the batch's recorded spike trains, whose bytes are added.
    - Energy per inference: ACs/MACs of one forward of the trained model on the test set
      (:func:`spikefed.hardware.energy.mlp_operations`), priced with the 45 nm preset, per sample.

    ``--plot FILE.png``: seed 004's comparison, the weight change BPTT makes (``beta^dt``, one input spike, the
    error at ``t_pre + dt``) against the STDP window of the implemented rule, for ``dt`` in -20..20 steps; the
    maximum absolute error of the implemented window against its closed form is printed.

Run
    .venv/bin/python benchmarks/learning_rules.py                 # defaults below, ~5-8 min on 2 loaded cores
    .venv/bin/python benchmarks/learning_rules.py --seeds 1 --epochs 1 --rounds 2   # quick check
Control row ``readout_only``: the STDP method with zero amplitudes (the hidden layer stays at its random
initialisation, only the read-out learns), to show what STDP adds.
The last line is ``bptt_accuracy=A eprop_accuracy=B decolle_accuracy=C dfa_accuracy=D stdp_accuracy=E``
(central test accuracy, mean over the seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from spikefed.data import load_digits_split
from spikefed.experiment.config import RunSettings, build_settings
from spikefed.hardware.energy import energy_preset, mlp_operations
from spikefed.snn.encoding import encode
from spikefed.snn.models import SpikingMLP
from spikefed.snn.online import eprop_init, eprop_modules, eprop_step, loss_weights, state_bytes
from spikefed.snn.stdp import STDPParams, bptt_weight_change, pair_weight_change, stdp_window
from spikefed.snn.train import TrainConfig, backward_batch, encode_inputs, evaluate, fit

METHODS = ("bptt", "eprop", "decolle", "dfa", "stdp")
#: a control row: the STDP method with zero amplitudes, i.e. only the read-out trains on the initial random layer
CONTROL = "readout_only"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "learning_rules.json"


def train_config(method: str, steps: int, epochs: int, **kw: Any) -> TrainConfig:
    if method == CONTROL:
        method, kw = "stdp", {**kw, "stdp_a_plus": 0.0, "stdp_a_minus": 0.0}
    return TrainConfig(epochs=epochs, num_steps=steps, method=method, loss="ce_membrane",
                       membrane_reduction="time_mean", lr=1e-2, **kw)


def make_model(hidden: int, seed: int) -> SpikingMLP:
    return SpikingMLP([64, hidden, 10], readout="membrane", generator=torch.Generator().manual_seed(seed))


def energy_per_sample(model: SpikingMLP, x: torch.Tensor, cfg: TrainConfig) -> float:
    with torch.no_grad():
        xs = encode_inputs(x, cfg, None)
        ops = mlp_operations(model, xs, model(xs))
    return energy_preset("45nm").energy(ops["acs"], ops["macs"], ops["spikes"]) / x.shape[0]


def central(method: str, seed: int, args: argparse.Namespace, data: Any) -> dict[str, float]:
    cfg = train_config(method, args.steps, args.epochs)
    model = make_model(args.hidden, seed)
    fit(model, data.x_train, data.y_train, cfg, torch.Generator().manual_seed(seed))
    acc = evaluate(model, data.x_test, data.y_test, cfg).accuracy
    return {"accuracy": acc, "energy_j": energy_per_sample(model, data.x_test, cfg)}


def federated(method: str, seed: int, args: argparse.Namespace) -> float:
    from spikefed.experiment.runner import build_spec
    from spikefed.federated.simulation import Simulation

    settings = build_settings(RunSettings, None, [
        f"seed={seed}", "partition.method=dirichlet", "partition.alpha=0.5", "partition.num_clients=10",
        "partition.min_size=10", "federation.fraction=1", f"federation.rounds={args.rounds}",
        f"model.hidden=[{args.hidden}]", "model.readout=membrane",
        *(["local.method=stdp", "local.stdp_a_plus=0", "local.stdp_a_minus=0"] if method == CONTROL
          else [f"local.method={method}"]),
        "local.loss=ce_membrane", "local.membrane_reduction=time_mean", f"local.local_steps={args.local_steps}",
        f"local.num_steps={args.steps}", "local.lr=0.01", "federation.engine=sequential"])
    sim = Simulation(build_spec(settings))
    row: dict[str, Any] = {}
    for _ in range(args.rounds):
        row = sim.run_round()
    return float(row["accuracy"])


class _Held:
    """A saved tensor as autograd holds it; its storage leaves the tally when autograd lets go of it."""

    def __init__(self, t: torch.Tensor, tally: "_Tally") -> None:
        self.t, self.tally = t, tally
        self.ptr = t.untyped_storage().data_ptr()
        tally.add(self.ptr, t.untyped_storage().nbytes())

    def __del__(self) -> None:
        self.tally.drop(self.ptr)


class _Tally:
    def __init__(self) -> None:
        self.live: dict[int, list[int]] = {}
        self.total = self.peak = 0

    def add(self, ptr: int, nbytes: int) -> None:
        if ptr in self.live:
            self.live[ptr][1] += 1
            return
        self.live[ptr] = [nbytes, 1]
        self.total += nbytes
        self.peak = max(self.peak, self.total)

    def drop(self, ptr: int) -> None:
        entry = self.live[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            self.total -= entry[0]
            del self.live[ptr]


def peak_saved_bytes(run: Callable[[], Any]) -> tuple[int, Any]:
    """Peak bytes of the distinct storages autograd holds for backward while ``run()`` executes."""
    tally = _Tally()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: _Held(t, tally), lambda h: h.t):
        out = run()
    return tally.peak, out


def training_memory(method: str, steps: int, hidden: int) -> int:
    gen = torch.Generator().manual_seed(0)
    data = load_digits_split(test_size=0.2, seed=0)
    x = encode("rate", data.x_train[:32], steps, generator=gen)
    y = data.y_train[:32]
    model = make_model(hidden, 0)
    cfg = train_config(method, steps, 1)
    if method == "eprop":
        layer, readout = eprop_modules(model)
        state = eprop_init(layer, readout, x.shape[1])
        peak = 0
        with torch.no_grad():
            for t, w in enumerate(loss_weights(steps, "time_mean")):
                state = eprop_step(layer, readout, state, x[t], y, w)
                peak = max(peak, state_bytes(state))
        return peak
    peak, (_, out) = peak_saved_bytes(lambda: backward_batch(model, x, y, cfg))
    if method in ("stdp", CONTROL):  # the recorded spike trains the trace update runs on
        peak += x.numel() * x.element_size() + sum(h.numel() * h.element_size() for h in out.hidden)
    return peak


def write_plot(path: Path, beta: float) -> float:
    """The BPTT-vs-STDP figure (PNG); returns the max abs error of the implemented window vs its closed form."""
    from spikefed.experiment.report.spec import figure, line
    from spikefed.experiment.report.static import render_png

    params = STDPParams()
    dts = list(range(-20, 21))
    measured = [pair_weight_change(dt, params) for dt in dts]
    closed = [float(stdp_window(dt, params)) for dt in dts]
    bptt = [bptt_weight_change(dt, beta) for dt in dts]
    scale = params.a_plus
    spec = figure("Weight change vs spike-time difference (seed 004)",
                  [line(dts, [m / scale for m in measured], "STDP (implemented rule) / A+"),
                   line(dts, [c / scale for c in closed], "STDP closed form / A+", mode="lines"),
                   line(dts, bptt, f"BPTT -dL/dw, LIF beta={beta}")],
                  "dt = t_post - t_pre (steps)", "weight change (normalised)")
    path.write_bytes(render_png(spec))
    return max(abs(m - c) for m, c in zip(measured, closed))


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def window_error() -> float:
    params = STDPParams()
    return max(abs(pair_weight_change(dt, params) - float(stdp_window(dt, params))) for dt in range(-20, 21))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8, help="time steps T for the accuracy runs")
    ap.add_argument("--hidden", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--local-steps", type=int, default=5)
    ap.add_argument("--plot", type=Path, default=None, help="write the BPTT-vs-STDP figure here (.png)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = load_digits_split(test_size=0.2, seed=0)
    results: dict[str, dict[str, Any]] = {}
    for method in (*METHODS, CONTROL):
        runs = [central(method, s, args, data) for s in range(args.seeds)]
        fed = [federated(method, s, args) for s in range(args.seeds)]
        results[method] = {
            "central_accuracy": [r["accuracy"] for r in runs], "federated_accuracy": fed,
            "energy_j_per_sample": statistics.mean(r["energy_j"] for r in runs),
            "memory_T25": training_memory(method, 25, args.hidden),
            "memory_T400": training_memory(method, 400, args.hidden)}
        print(f"  {method}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    err = write_plot(args.plot, 0.9) if args.plot else window_error()
    print(f"\nDigits, SpikingMLP 64-{args.hidden}-10, T={args.steps}, {args.epochs} epochs central; federated: 10 "
          f"clients, Dirichlet 0.5, {args.rounds} rounds x {args.local_steps} local steps; {args.seeds} seeds "
          "(mean +- std)\n")
    print("| method | central acc | federated acc | memory T=25 (KiB) | memory T=400 (KiB) | ratio | "
          "energy / inference (nJ) |")
    print("|---|---|---|---|---|---|---|")
    for method, r in results.items():
        c, f = r["central_accuracy"], r["federated_accuracy"]
        print(f"| {method} | {statistics.mean(c):.3f} +- {sd(c):.3f} | {statistics.mean(f):.3f} +- {sd(f):.3f} | "
              f"{r['memory_T25'] / 1024:.0f} | {r['memory_T400'] / 1024:.0f} | "
              f"{r['memory_T400'] / max(r['memory_T25'], 1):.1f} | {r['energy_j_per_sample'] * 1e9:.2f} |")
    print(f"\nSTDP window, implemented rule vs closed form, dt in -20..20: max abs error {err:.3e}"
          + (f"; figure: {args.plot}" if args.plot else ""))
    print(f"wall time {time.perf_counter() - start:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                                     "stdp_window_max_abs_error": err}, indent=1))
    print(" ".join(f"{m}_accuracy={statistics.mean(results[m]['central_accuracy']):.4f}" for m in METHODS))


if __name__ == "__main__":
    main()
