"""Clean vs attacked (FGSM, PGD) accuracy of a spiking MLP on digits, without and with robust training.

Digits (pixels in [0, 1], 80/20 split), spiking MLP 64-128-10 (LIF, beta 0.9), direct coding over T steps,
cross-entropy on spike counts, Adam. The attacks perturb the static pixels before encoding, with the gradient
through the surrogate (spikefed.snn.adversarial): FGSM at eps, PGD at eps with ``--pgd-steps`` steps of
2.5 eps / steps from a random start. "robust" is PGD adversarial training (each batch plus its PGD copies,
local.adversarial=pgd, 3 steps) with the information-bottleneck penalty (local.ib_weight). Mean over seeds.

Run:  .venv/bin/python benchmarks/adversarial.py [--seeds 0 1] [--eps 0.1] [--epochs 15]
      [--json benchmarks/results/adversarial.json]
Last line:  clean=A fgsm=B pgd=C robust_clean=D robust_fgsm=E robust_pgd=F
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from spikefed.data.digits import load_digits_split
from spikefed.seeding import Purpose, torch_generator
from spikefed.snn.adversarial import attacked_accuracy
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig, fit


def run(seed: int, robust: bool, args: argparse.Namespace) -> dict[str, float]:
    data = load_digits_split(seed=seed, scale="unit")
    model = SpikingMLP([64, args.hidden, 10], neuron="lif", beta=0.9,
                       generator=torch_generator(seed, Purpose.INIT))
    cfg = TrainConfig(epochs=args.epochs, num_steps=args.steps, loss="ce_count", lr=5e-3,
                      adversarial="pgd" if robust else "none", adv_eps=args.eps, adv_steps=3,
                      ib_weight=args.ib_weight if robust else 0.0)
    fit(model, data.x_train, data.y_train, cfg, torch_generator(seed, Purpose.ADVERSARIAL, index=0))
    gen = torch_generator(seed, Purpose.ADVERSARIAL, index=1)
    return {kind: attacked_accuracy(model, data.x_test, data.y_test, cfg, kind, args.eps, args.pgd_steps, gen)
            for kind in ("none", "fgsm", "pgd")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--eps", type=float, default=0.1, help="attack radius in pixel units ([0, 1] pixels)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--steps", type=int, default=8, help="time steps T")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--ib-weight", type=float, default=0.05)
    p.add_argument("--json", type=Path, default=None, help="write the per-seed and mean accuracies here")
    args = p.parse_args()
    torch.set_num_threads(1)
    res: dict[str, list[float]] = {}
    start = time.perf_counter()
    for robust in (False, True):
        for seed in args.seeds:
            for kind, acc in run(seed, robust, args).items():
                res.setdefault(("robust_" if robust else "") + kind, []).append(acc)
    mean = {k: sum(v) / len(v) for k, v in res.items()}
    if args.json is not None:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "per_seed": res,
                                         "mean": mean}, indent=2))
    print(f"digits, eps={args.eps} (pixels in [0, 1]), T={args.steps}, seeds {args.seeds}, "
          f"{time.perf_counter() - start:.0f} s")
    print("| training | clean | FGSM | PGD |")
    print("|---|---|---|---|")
    print(f"| standard | {mean['none']:.3f} | {mean['fgsm']:.3f} | {mean['pgd']:.3f} |")
    print(f"| PGD adversarial + IB | {mean['robust_none']:.3f} | {mean['robust_fgsm']:.3f} | "
          f"{mean['robust_pgd']:.3f} |")
    print(f"clean={mean['none']:.3f} fgsm={mean['fgsm']:.3f} pgd={mean['pgd']:.3f} "
          f"robust_clean={mean['robust_none']:.3f} robust_fgsm={mean['robust_fgsm']:.3f} "
          f"robust_pgd={mean['robust_pgd']:.3f}")


if __name__ == "__main__":
    main()
