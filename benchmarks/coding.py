"""Rate vs latency coding on digits: accuracy, spikes per inference, synaptic ops and energy, decision time.

What is measured (per seed and coding): a LIF MLP 64-128-10 (beta 0.9, threshold 1, arctan surrogate) trained
end to end with surrogate-gradient BPTT for 15 epochs (Adam 2e-3, cosine, batch 32) on pixels in [0, 1], T = 16:

- ``rate``: Bernoulli(x) input spikes at every step, cross-entropy on output spike counts, count read-out;
- ``latency``: one input spike per pixel at t = round((1 - x)(T - 1)) (dark pixels fire last), the first-to-spike
  loss (cross-entropy on minus the soft first-spike time), first-spike read-out (the class that fires first);
- two mixed rows (latency input / count read-out, rate input / first-spike read-out) separate the input code
  from the output code.

On the test set: accuracy; input spikes per sample (the encoder's events); network spikes per sample (hidden +
output, from ``measure``); synaptic operations and energy per inference (``measure``, 45 nm preset: 0.9 pJ per
accumulate, 4.6 pJ per multiply-accumulate); and for first-spike read-outs the mean step of the first output spike
(the decision could be taken there, the remaining steps skipped: ``energy_at_decision`` scales the energy by
(decision step + 1) / T, an upper bound on what an early-stopping chip would spend).

Run:  .venv/bin/python benchmarks/coding.py [--seeds 0 1 2] [--json benchmarks/results/coding.json]
Last line:  rate_acc=<mean> latency_acc=<mean> rate_spikes=<mean> latency_spikes=<mean>
            energy_ratio_latency_over_rate=<mean ratio>
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from spikefed.data import load_digits_split
from spikefed.seeding import Purpose, torch_generator
from spikefed.hardware.metrics import measure
from spikefed.runtime import configure_allocator
from spikefed.snn.decoding import first_spike_time
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig, encode_inputs, evaluate, fit

STEPS, EPOCHS = 16, 15
CODINGS = [
    ("rate", "rate", "ce_count"),
    ("latency", "latency", "ce_temporal"),
    ("latency in / count out", "latency", "ce_count"),
    ("rate in / first spike out", "rate", "ce_temporal"),
]


def _gen(seed: int, purpose: int) -> torch.Generator:
    return torch_generator(seed, purpose)


def run(seed: int, encoder: str, loss: str) -> dict:
    data = load_digits_split(test_size=0.2, seed=seed, scale="unit")
    model = SpikingMLP([64, 128, 10], neuron="lif", generator=_gen(seed, Purpose.CODING_INIT), beta=0.9)
    cfg = TrainConfig(epochs=EPOCHS, lr=2e-3, num_steps=STEPS, encoder=encoder, loss=loss)
    start = time.perf_counter()
    fit(model, data.x_train, data.y_train, cfg, _gen(seed, Purpose.CODING_TRAIN))
    seconds = time.perf_counter() - start
    ev = evaluate(model, data.x_test, data.y_test, cfg, _gen(seed, Purpose.CODING_EVAL))
    x = encode_inputs(data.x_test, cfg, _gen(seed, Purpose.CODING_EVAL))
    m = measure(model, x)
    row = {"seed": seed, "encoder": encoder, "loss": loss, "accuracy": ev.accuracy,
           "input_spikes": float(x.sum()) / x.shape[1], **m.per_inference(), "train_seconds": seconds}
    if loss == "ce_temporal":
        with torch.no_grad():
            first = first_spike_time(model(x).output).amin(dim=1)  # [B], T when no output neuron fires
        row["decision_step"] = float(first.double().mean())
        row["energy_at_decision_j"] = m.energy_j * float(((first.clamp(max=STEPS - 1) + 1) / STEPS).mean())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "coding.json"))
    args = ap.parse_args()
    configure_allocator()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    for name, encoder, loss in CODINGS:
        for seed in args.seeds:
            rows.append({"coding": name, **run(seed, encoder, loss)})
            print(f"{name} seed {seed}: acc {rows[-1]['accuracy']:.4f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    mean = statistics.mean

    def avg(name: str, key: str) -> float | None:
        values = [r[key] for r in rows if r["coding"] == name and key in r]
        return mean(values) if values else None

    print(f"\nLIF MLP 64-128-10 on digits, T = {STEPS}, {EPOCHS} epochs, seeds {args.seeds} (means)\n")
    print("| coding (input / read-out) | accuracy | input spikes | network spikes | synops | energy nJ | "
          "first output spike (step) | energy to decision nJ |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, _, _ in CODINGS:
        dec, e_dec = avg(name, "decision_step"), avg(name, "energy_at_decision_j")
        print(f"| {name} | {avg(name, 'accuracy'):.4f} | {avg(name, 'input_spikes'):.1f} | "
              f"{avg(name, 'spikes'):.1f} | {avg(name, 'synops'):,.0f} | {avg(name, 'energy_j') * 1e9:.2f} | "
              + (f"{dec:.2f} | {e_dec * 1e9:.2f} |" if dec is not None else "- | - |"))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"steps": STEPS, "epochs": EPOCHS, "rows": rows,
                                           "seconds": time.perf_counter() - start}, indent=2))
    ratios = [r["energy_j"] / q["energy_j"] for r in rows if r["coding"] == "latency"
              for q in rows if q["coding"] == "rate" and q["seed"] == r["seed"]]
    print(f"rate_acc={avg('rate', 'accuracy'):.4f} latency_acc={avg('latency', 'accuracy'):.4f} "
          f"rate_spikes={avg('rate', 'spikes'):.1f} latency_spikes={avg('latency', 'spikes'):.1f} "
          f"energy_ratio_latency_over_rate={mean(ratios):.3f}")


if __name__ == "__main__":
    main()
