"""ANN-to-SNN conversion on digits: accuracy vs T, max vs percentile balancing, membrane start, hybrid fine-tuning.

What is measured (per seed): a ReLU MLP 64-256-10 trained 20 epochs (Adam 1e-3, cosine, batch 32, z-scored
pixels), then converted to IF neurons with reset by subtraction and direct-current input, balanced with the layer
maxima or the 99.9th percentile of the positive training activations, membranes starting at 0 or at half the
threshold. Test accuracy, spikes per sample (hidden + output) and energy per inference (``measure``, 45 nm preset,
first 64 test samples) at T = 4 ... 256, all read from one run of 256 steps. Threshold balancing is checked to
give the same accuracies as weight normalisation. Hybrid: the converted network (max norm, v0 = 0, the weakest at
small T) fine-tuned with surrogate gradients (arctan, ce on counts, Adam 5e-4, 3 epochs) at T = 4 and T = 8.

Run:  .venv/bin/python benchmarks/conversion.py [--seeds 0 1 2] [--json benchmarks/results/conversion.json]
Last line:  ann=<mean acc> max_T256=<mean> percentile_T256=<mean> worst_gap_T256=<max over seeds/variants>
            hybrid_T4=<mean before>-><mean after>
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from spikefed.data import load_digits_split
from spikefed.seeding import Purpose, torch_generator
from spikefed.hardware.metrics import measure
from spikefed.runtime import configure_allocator
from spikefed.snn.convert import (ReLUMLP, accuracy_vs_steps, activation_scales, ann_accuracy, convert,
                                  hybrid_finetune, train_ann)
from spikefed.snn.train import TrainConfig

STEPS = [4, 8, 16, 32, 64, 128, 256]
VARIANTS = [("max", 0.0), ("max", 0.5), ("percentile", 0.0), ("percentile", 0.5)]
HYBRID_STEPS = [4, 8]


def _gen(seed: int, purpose: int) -> torch.Generator:
    return torch_generator(seed, purpose)


def _energy(model: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    return measure(model, x.unsqueeze(0).expand(steps, *x.shape)).energy_j


def run_seed(seed: int) -> dict:
    data = load_digits_split(test_size=0.2, seed=seed, scale="standard")
    ann = ReLUMLP([64, 256, 10], generator=_gen(seed, Purpose.CONVERT_INIT))
    train_ann(ann, data.x_train, data.y_train, TrainConfig(epochs=20, lr=1e-3), _gen(seed, Purpose.CONVERT_SHUFFLE))
    ann_acc = ann_accuracy(ann, data.x_test, data.y_test)
    probe = data.x_test[:64]
    out: dict = {"seed": seed, "ann_accuracy": ann_acc, "variants": [], "hybrid": []}
    for norm, v0 in VARIANTS:
        scales = activation_scales(ann, data.x_train, norm)
        snn = convert(ann, scales, "weights", v0)
        rows = accuracy_vs_steps(snn, data.x_test, data.y_test, STEPS)
        thr_rows = accuracy_vs_steps(convert(ann, scales, "threshold", v0), data.x_test, data.y_test, STEPS)
        out["variants"].append({
            "norm": norm, "initial_membrane": v0, "scales": scales,
            "accuracy": [r.accuracy for r in rows], "spikes_per_sample": [r.spikes_per_sample for r in rows],
            "energy_j": [_energy(snn, probe, t) for t in STEPS],
            "threshold_balancing_accuracy": [r.accuracy for r in thr_rows],
        })
    base = convert(ann, activation_scales(ann, data.x_train, "max"), "weights", 0.0)
    for t in HYBRID_STEPS:
        tuned = copy.deepcopy(base)
        before = accuracy_vs_steps(tuned, data.x_test, data.y_test, [t])[0]
        start = time.perf_counter()
        hybrid_finetune(tuned, data.x_train, data.y_train,
                        TrainConfig(epochs=3, lr=5e-4, num_steps=t, loss="ce_count", cosine_schedule=False),
                        _gen(seed, Purpose.FINETUNE))
        after = accuracy_vs_steps(tuned, data.x_test, data.y_test, [t, 256])
        out["hybrid"].append({"steps": t, "before": before.accuracy, "after": after[0].accuracy,
                              "after_T256": after[1].accuracy, "spikes_before": before.spikes_per_sample,
                              "spikes_after": after[0].spikes_per_sample,
                              "finetune_seconds": time.perf_counter() - start})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "conversion.json"))
    args = ap.parse_args()
    configure_allocator()
    torch.set_num_threads(1)
    start = time.perf_counter()
    seeds = []
    for seed in args.seeds:
        seeds.append(run_seed(seed))
        print(f"seed {seed}: ANN {seeds[-1]['ann_accuracy']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    mean = statistics.mean
    ann = mean(s["ann_accuracy"] for s in seeds)
    print(f"\nReLU MLP 64-256-10 on digits, seeds {args.seeds}: ANN test accuracy {ann:.4f} (mean)\n")
    print("| balancing | v0 / theta | " + " | ".join(f"T={t}" for t in STEPS) + " |")
    print("|---|---:|" + "---:|" * len(STEPS))
    for i, (norm, v0) in enumerate(VARIANTS):
        accs = [mean(s["variants"][i]["accuracy"][j] for s in seeds) for j in range(len(STEPS))]
        print(f"| {norm} | {v0} | " + " | ".join(f"{a:.4f}" for a in accs) + " |")
    print("\nspikes per sample / energy per inference (nJ), seed mean:\n")
    print("| balancing | v0 / theta | " + " | ".join(f"T={t}" for t in STEPS) + " |")
    print("|---|---:|" + "---:|" * len(STEPS))
    for i, (norm, v0) in enumerate(VARIANTS):
        cells = [f"{mean(s['variants'][i]['spikes_per_sample'][j] for s in seeds):.0f} / "
                 f"{mean(s['variants'][i]['energy_j'][j] for s in seeds) * 1e9:.0f}" for j in range(len(STEPS))]
        print(f"| {norm} | {v0} | " + " | ".join(cells) + " |")
    same = all(v["accuracy"] == v["threshold_balancing_accuracy"] for s in seeds for v in s["variants"])
    print(f"\nthreshold balancing gives the same accuracies as weight normalisation: {same}")
    print("\n| hybrid (max, v0 = 0) | before | after 3 epochs | after, evaluated at T=256 |")
    print("|---|---:|---:|---:|")
    for k, t in enumerate(HYBRID_STEPS):
        row = [mean(s["hybrid"][k][key] for s in seeds) for key in ("before", "after", "after_T256")]
        print(f"| T={t} | {row[0]:.4f} | {row[1]:.4f} | {row[2]:.4f} |")
    gaps = [s["ann_accuracy"] - v["accuracy"][-1] for s in seeds for v in s["variants"]]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"steps": STEPS, "seeds": seeds, "seconds": time.perf_counter() - start},
                                          indent=2))
    t256 = {norm: mean(s["variants"][i]["accuracy"][-1] for s in seeds for i, (n, _) in enumerate(VARIANTS)
                       if n == norm) for norm in ("max", "percentile")}
    h4 = [mean(s["hybrid"][0][key] for s in seeds) for key in ("before", "after")]
    print(f"ann={ann:.4f} max_T256={t256['max']:.4f} percentile_T256={t256['percentile']:.4f} "
          f"worst_gap_T256={max(gaps):.4f} hybrid_T4={h4[0]:.4f}->{h4[1]:.4f}")


if __name__ == "__main__":
    main()
