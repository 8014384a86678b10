"""Malicious clients vs robust aggregation: every attack x every defence (and none), plus a no-attack baseline.

The default federated run (digits, Dirichlet alpha = 0.5 over 20 clients, 10 sampled per round, spiking MLP
64-256-10, FedAvg, 4 local epochs) with 20 % of the clients malicious (4 of 20, chosen once per run, seeded).
Each cell is one run from the same seed and partition; the table reports the final test accuracy. The no-attack
row shows what each defence costs on honest non-IID clients.

Defence options are derived from the threat model and are the same for every attack: Krum/Multi-Krum assume
``f`` = the expected number of attackers per round (``fraction x clients per round`` = 2; Multi-Krum averages
``m = K - f``), the trimmed mean cuts ``beta = 0.2`` (the attacker fraction) at each end, norm clipping uses the
round's median norm. Attack strengths are the config defaults (boost 10, sign scale 1, noise std 1).

Run:  .venv/bin/python benchmarks/robustness.py [--rounds 30] [--seed 0] [--json benchmarks/results/robustness.json]
Last line:  worst_defended_drop=<points>  (per attack the best defence's final accuracy; the largest drop, in
            percentage points, below the no-attack no-defence baseline over all attacks)
"""

from __future__ import annotations

import argparse
import json
import time
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
                 "krum": "Krum", "multikrum": "Multi-Krum", "norm_clip": "norm clip"}


def run_cell(base: list[str], attack: str, defense: str, rounds: int) -> dict[str, object]:
    """One federated run; its final/best accuracy, rejected updates, attackers sampled, wall and CPU time."""
    settings = build_settings(RunSettings, None, base + [f"robustness.attack={attack}",
                                                         f"robustness.defense={defense}"])
    wall, cpu = time.perf_counter(), time.process_time()
    sim = Simulation(build_spec(settings))
    rows = [sim.run_round() for _ in range(rounds)]
    accs = [r["accuracy"] for r in rows if r["accuracy"] is not None]
    return {"attack": attack, "defense": defense, "final_accuracy": accs[-1], "best_accuracy": max(accs),
            "rejected": sum(r["rejected"] for r in rows), "malicious_sampled": sum(r.get("malicious", 0) for r in rows),
            "malicious_clients": sorted(sim.malicious), "seconds": time.perf_counter() - wall,
            "cpu_seconds": time.process_time() - cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fraction", type=float, default=0.2, help="fraction of malicious clients")
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--defenses", default=",".join(DEFENSES))
    ap.add_argument("--krum-f", type=int, default=None,
                    help="Krum/Multi-Krum f (default: the expected attackers per round, fraction x clients per round)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--set", action="append", default=[], help="extra key=value overrides")
    ap.add_argument("--json", default="benchmarks/results/robustness.json")
    args = ap.parse_args()
    configure_allocator()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    attacks, defenses = args.attacks.split(","), args.defenses.split(",")
    base = [f"federation.rounds={args.rounds}", f"seed={args.seed}", f"robustness.attack_fraction={args.fraction}",
            *args.set]
    probe = build_settings(RunSettings, None, base)
    per_round = max(probe.federation.min_clients, round(probe.federation.fraction * probe.partition.num_clients))
    krum_f = round(args.fraction * per_round) if args.krum_f is None else args.krum_f
    base.append(f"robustness.krum_f={krum_f}")
    start = time.perf_counter()
    results = []
    for attack in attacks:
        for defense in defenses:
            r = run_cell(base, attack, defense, args.rounds)
            results.append(r)
            print(f"{attack:>10} x {defense:<12}: final {r['final_accuracy']:.4f} best {r['best_accuracy']:.4f} "
                  f"rejected {r['rejected']:3d} attackers sampled {r['malicious_sampled']:3d} "
                  f"({r['seconds']:.1f} s)", flush=True)
    total = time.perf_counter() - start
    cell = {(r["attack"], r["defense"]): r for r in results}
    print(f"\ndigits, Dirichlet alpha=0.5, 20 clients, {per_round} per round, {args.rounds} rounds, seed {args.seed}, "
          f"{args.fraction:.0%} malicious, Krum f={krum_f}, trim fraction {probe.robustness.trim_fraction}; "
          f"final test accuracy; {total:.0f} s in all\n")
    print("| attack | " + " | ".join(DEFENSE_NAMES[d] for d in defenses) + " | best defence |")
    print("|---|" + "---:|" * len(defenses) + "---|")
    baseline = cell[("none", "none")]["final_accuracy"] if ("none", "none") in cell else None
    summary = []
    for attack in attacks:
        row = [cell[(attack, d)] for d in defenses]
        best = max(row, key=lambda r: r["final_accuracy"])
        drop = None if baseline is None else 100.0 * (baseline - best["final_accuracy"])
        if attack != "none":
            summary.append({"attack": attack, "best_defense": best["defense"],
                            "best_accuracy": best["final_accuracy"], "drop_points": drop})
        cells = " | ".join(f"{r['final_accuracy']:.4f}" for r in row)
        tail = f"{DEFENSE_NAMES[best['defense']]}" + ("" if drop is None else f" ({-drop:+.1f} pts)")
        print(f"| {ATTACK_NAMES[attack]} | {cells} | {tail} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    worst = max((s for s in summary if s["drop_points"] is not None), key=lambda s: s["drop_points"], default=None)
    Path(args.json).write_text(json.dumps({
        "rounds": args.rounds, "seed": args.seed, "attack_fraction": args.fraction, "krum_f": krum_f,
        "overrides": base,
        "baseline_accuracy": baseline, "results": results, "best_defense_per_attack": summary,
        "worst_defended_drop": None if worst is None else worst["drop_points"], "seconds": total}, indent=2))
    if worst is not None:
        print(f"\nworst attack: {worst['attack']} (best defence {worst['best_defense']})")
        print(f"worst_defended_drop={worst['drop_points']:.2f}")


if __name__ == "__main__":
    main()
