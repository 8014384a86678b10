"""Malicious clients vs robust aggregation: every attack x every defence (and none), 3 seeds, mean and per seed.

The default federated run (digits, Dirichlet alpha = 0.5 over 20 clients, 10 sampled per round, spiking MLP
64-256-10, FedAvg, 4 local epochs) with 20 % of the clients malicious (4 of 20, chosen once per run, seeded),
20 rounds (30 in ``spikefed run``'s default; 20 keeps 3 seeds x 7 attacks x 7 defences = 147 runs within about
8 minutes on two cores). Each cell is one run; the tables report final test accuracy, mean over the seeds and
per seed. The no-attack row shows what each defence costs on honest non-IID clients.

Defence options are fixed in advance, derived from the threat model, the same for every attack and seed:
Krum/Multi-Krum assume ``f`` = the expected number of attackers per round (``fraction x clients per round`` = 2;
Multi-Krum averages ``m = K - f``), the trimmed mean cuts ``beta = 0.2`` (the attacker fraction) at each end,
norm clipping uses the round's median norm, FLTrust's server root set is 100 training samples (never test data).
Attack strengths are the config defaults (boost 10, sign scale 1, noise std 1).

Run:  .venv/bin/python benchmarks/robustness.py [--seeds 0 1 2] [--rounds 20] [--workers 2]
      [--json benchmarks/results/robustness.json]
Last line:  worst_defended_drop=<points>  (per attack the defence with the best mean final accuracy; the largest
            drop of that mean, in percentage points, below the mean no-attack no-defence baseline)
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.attacks import ATTACKS
from spikefed.federated.robust import DEFENSES
from spikefed.federated.simulation import Simulation
from spikefed.runtime import configure_allocator

ATTACK_NAMES = {"none": "no attack", "label_flip": "label flip", "sign_flip": "sign flip", "boost": "boost x10",
                "noise": "Gaussian noise", "nan": "NaN/Inf", "shape": "wrong shape"}
DEFENSE_NAMES = {"none": "none (FedAvg)", "median": "median", "trimmed_mean": "trimmed mean",
                 "krum": "Krum", "multikrum": "Multi-Krum", "norm_clip": "norm clip", "fltrust": "FLTrust"}


def run_cell(job: tuple[list[str], int, str, str, int]) -> dict[str, object]:
    """One federated run; its final/best accuracy, rejected updates, attackers sampled, wall and CPU time."""
    base, seed, attack, defense, rounds = job
    configure_allocator()
    torch.set_num_threads(1)
    settings = build_settings(RunSettings, None, base + [f"seed={seed}", f"robustness.attack={attack}",
                                                         f"robustness.defense={defense}"])
    wall, cpu = time.perf_counter(), time.process_time()
    sim = Simulation(build_spec(settings))
    rows = [sim.run_round() for _ in range(rounds)]
    accs = [r["accuracy"] for r in rows if r["accuracy"] is not None]
    return {"seed": seed, "attack": attack, "defense": defense, "final_accuracy": accs[-1],
            "best_accuracy": max(accs), "rejected": sum(r["rejected"] for r in rows),
            "malicious_sampled": sum(r.get("malicious", 0) for r in rows), "malicious_clients": sorted(sim.malicious),
            "seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}


def summarize(results: list[dict], seeds: list[int], attacks: list[str], defenses: list[str]) -> dict:
    """Means over seeds, the best defence per attack (by mean) with its mean and per-seed drops (points below
    the no-attack no-defence baseline of the same seed / the mean baseline), and each defence's worst attack."""
    acc = {(r["seed"], r["attack"], r["defense"]): r["final_accuracy"] for r in results}
    mean = {(a, d): sum(acc[(s, a, d)] for s in seeds) / len(seeds) for a in attacks for d in defenses}
    base = {s: acc[(s, "none", "none")] for s in seeds}
    base_mean = sum(base.values()) / len(seeds)
    per_attack = []
    for a in attacks:
        if a == "none":
            continue
        best = max(defenses, key=lambda d: mean[(a, d)])
        per_attack.append({"attack": a, "best_defense": best, "mean_accuracy": mean[(a, best)],
                           "drop_points": 100.0 * (base_mean - mean[(a, best)]),
                           "drop_points_by_seed": {str(s): 100.0 * (base[s] - acc[(s, a, best)]) for s in seeds}})
    per_defense = {d: max(100.0 * (base_mean - mean[(a, d)]) for a in attacks if a != "none") for d in defenses}
    worst = max(per_attack, key=lambda x: x["drop_points"])
    worst_seed = max(((x["attack"], x["best_defense"], int(s), v) for x in per_attack
                      for s, v in x["drop_points_by_seed"].items()), key=lambda t: t[3])
    return {"baseline_by_seed": {str(s): v for s, v in base.items()}, "baseline_mean": base_mean,
            "mean_accuracy": {f"{a}/{d}": v for (a, d), v in mean.items()}, "best_defense_per_attack": per_attack,
            "worst_drop_per_defense": per_defense, "worst_defended_drop": worst["drop_points"],
            "worst_attack": worst["attack"],
            "worst_seed": {"attack": worst_seed[0], "defense": worst_seed[1], "seed": worst_seed[2],
                           "drop_points": worst_seed[3]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fraction", type=float, default=0.2, help="fraction of malicious clients")
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--defenses", default=",".join(DEFENSES))
    ap.add_argument("--krum-f", type=int, default=None,
                    help="Krum/Multi-Krum f (default: the expected attackers per round, fraction x clients per round)")
    ap.add_argument("--workers", type=int, default=2, help="parallel runs (each one torch thread)")
    ap.add_argument("--set", action="append", default=[], help="extra key=value overrides")
    ap.add_argument("--json", default="benchmarks/results/robustness.json")
    args = ap.parse_args()
    attacks, defenses, seeds = args.attacks.split(","), args.defenses.split(","), args.seeds
    for needed, names in (("none", attacks), ("none", defenses)):
        if needed not in names:
            raise SystemExit("the baseline needs attack 'none' and defence 'none' in the lists")
    base = [f"federation.rounds={args.rounds}", f"robustness.attack_fraction={args.fraction}", *args.set]
    probe = build_settings(RunSettings, None, base)
    per_round = max(probe.federation.min_clients, round(probe.federation.fraction * probe.partition.num_clients))
    krum_f = round(args.fraction * per_round) if args.krum_f is None else args.krum_f
    base.append(f"robustness.krum_f={krum_f}")
    jobs = [(base, s, a, d, args.rounds) for s in seeds for a in attacks for d in defenses]
    start = time.perf_counter()
    results = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for r in pool.map(run_cell, jobs):
            results.append(r)
            print(f"seed {r['seed']} {r['attack']:>10} x {r['defense']:<12}: final {r['final_accuracy']:.4f} "
                  f"rejected {r['rejected']:3d} attackers sampled {r['malicious_sampled']:3d} "
                  f"({r['seconds']:.1f} s)", flush=True)
    total = time.perf_counter() - start
    summary = summarize(results, seeds, attacks, defenses)
    mean = summary["mean_accuracy"]
    acc = {(r["seed"], r["attack"], r["defense"]): r["final_accuracy"] for r in results}
    print(f"\ndigits, Dirichlet alpha=0.5, 20 clients, {per_round} per round, {args.rounds} rounds, seeds "
          f"{' '.join(map(str, seeds))}, {args.fraction:.0%} malicious, Krum f={krum_f}, trim fraction "
          f"{probe.robustness.trim_fraction}, FLTrust root set {probe.robustness.root_size}; final test accuracy, "
          f"mean over seeds (per seed below); {total:.0f} s in all\n")
    print("| attack | " + " | ".join(DEFENSE_NAMES[d] for d in defenses) + " | best defence (mean drop) |")
    print("|---|" + "---:|" * len(defenses) + "---|")
    best = {x["attack"]: x for x in summary["best_defense_per_attack"]}
    for a in attacks:
        cells = " | ".join(f"{mean[f'{a}/{d}']:.4f}" for d in defenses)
        tail = "" if a == "none" else f"{DEFENSE_NAMES[best[a]['best_defense']]} ({-best[a]['drop_points']:+.1f} pts)"
        print(f"| {ATTACK_NAMES[a]} | {cells} | {tail} |")
    print("\nper seed (" + " / ".join(map(str, seeds)) + "):\n")
    print("| attack | " + " | ".join(DEFENSE_NAMES[d] for d in defenses) + " |")
    print("|---|" + "---|" * len(defenses))
    for a in attacks:
        print(f"| {ATTACK_NAMES[a]} | " + " | ".join(" / ".join(f"{acc[(s, a, d)]:.3f}" for s in seeds)
                                                   for d in defenses) + " |")
    print("\nworst attack per defence (mean drop, points): "
          + ", ".join(f"{DEFENSE_NAMES[d]} {v:.2f}" for d, v in summary["worst_drop_per_defense"].items()))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "rounds": args.rounds, "seeds": seeds, "attack_fraction": args.fraction, "krum_f": krum_f,
        "overrides": base, **summary, "results": results, "seconds": total}, indent=2))
    ws = summary["worst_seed"]
    drops = best[summary["worst_attack"]]["drop_points_by_seed"]
    print(f"worst attack: {summary['worst_attack']} (best defence {best[summary['worst_attack']]['best_defense']}; "
          "per seed " + ", ".join(f"{s}: {v:.2f}" for s, v in drops.items()) + ")")
    print(f"worst seed: seed {ws['seed']}, {ws['attack']} under {ws['defense']}: {ws['drop_points']:.2f} points")
    print(f"worst_defended_drop={summary['worst_defended_drop']:.2f}")


if __name__ == "__main__":
    main()
