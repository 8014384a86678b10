"""Seed 000's open claims as measured benchmark lines (issue 19): compression with adaptive local optimizers,
SCAFFOLD on spiking nets, the forgetting bound against task drift, FedProx on a noisy device fleet.

Every section runs digits federations (spiking MLP 64-256-10) on seeds 0, 1, 2, one run at a time, single-threaded;
within a seed the rows of a section share partition and client sampling. Sections run alone with ``--sections``.

- compression: default federation (Dirichlet 0.5, 20 clients, 10 per round), the run's default local Adam, 20 rounds;
  dense vs top-1% + error feedback, and the three remedies tried: per-layer budgets (``scope=tensor``), DGC momentum
  correction + factor masking (``compression.momentum_correction``), server-side adaptivity (FedAdam on the
  compressed pseudo-gradients, against dense FedAdam). Mean energy kept by the compressor and residual/delta ratio.
- scaffold: Dirichlet 0.1, local SGD 0.002 without momentum, 5 epochs, 20 rounds (the setting of benchmarks/noniid.py);
  FedAvg vs SCAFFOLD and SCAFFOLD under controls: full participation (no stale controls), sample weights, local steps
  capped at 10 (local.local_steps: closer to equal), learning rate x0.5 / x2, surrogate slope 1 / 4 (default 2),
  one local epoch.
- scaffold_controls: FedAvg and SCAFFOLD side by side at local lr 0.001 and at surrogate slope 1 (same setting).
- drift: domain drift, 2 tasks x 4 rounds, L2 stability term; rotations 0..180 degrees and the class-incremental
  split, lambda 1 and 10; forgetting vs input W2, feature W2 (hidden spike counts of the global model at the end
  of task 0) and model drift (distance between the two tasks' optima, trained centrally from the initial model).
- fedprox: device fleets with 10 / 20 / 40% analog mismatch (threshold, leak, gain) and input jitter of 2 steps;
  10 clients, 5 per round, 2 local epochs, 22 rounds; oscillation = std of the round-to-round change of the
  deployed accuracy over the last 20 rounds; FedAvg vs FedProx mu 0.01 / 0.1 / 1.
- server: the adaptivity moved to the server (local SGD 0.002, 5 epochs; FedAdam server lr 0.01), dense vs
  top-1% + EF, 20 rounds.
- longrun (not in the default set): dense vs top-1% + EF with local Adam over 60 rounds (the "long run").

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seed_claims.py [--sections compression scaffold drift fedprox]
      [--seeds 0 1 2] [--json benchmarks/results/seed_claims.json]
Last line (only when every section ran): topk1_ef_adam_drop=A scaffold_minus_fedavg=B drift_forgetting_spearman=C
fedprox_oscillation_ratio=D  (A: dense minus top-1% + EF final accuracy with local Adam under the default kept for
compression.uplink=topk, points; B: SCAFFOLD minus FedAvg final accuracy, points; C: Spearman rank correlation of
forgetting and feature drift over the settings at lambda = 1; D: oscillation with FedProx at its best mu / without,
mean over the fleets).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.continual import accuracy_matrix
from spikefed.federated.simulation import Simulation
from spikefed.federated.task_drift import feature_drift, fit_through_origin, model_drift, spearman, task_optimum
from spikefed.runtime import configure_allocator

TOP1 = ["compression.uplink=topk", "compression.fraction=0.01"]
COMPRESSION_ROWS: list[tuple[str, list[str]]] = [
    ("dense", []),
    ("top-1% + EF", TOP1),
    ("top-1% + EF, per-layer budgets", [*TOP1, "compression.scope=tensor"]),
    ("top-1% + EF + DGC m=0.9", [*TOP1, "compression.momentum_correction=0.9"]),
    ("top-1% + EF + DGC m=0.5", [*TOP1, "compression.momentum_correction=0.5"]),
    ("dense, FedAdam server", ["federation.strategy=fedadam", "federation.server_lr=0.01"]),
    ("top-1% + EF, FedAdam server", [*TOP1, "federation.strategy=fedadam", "federation.server_lr=0.01"]),
]
#: the adaptivity moved to the server: clients run plain SGD (their deltas concentrate their energy), FedAdam adapts
SERVER_ADAM = ["local.optimizer=sgd", "local.lr=0.002", "local.momentum=0.0", "local.epochs=5",
               "federation.strategy=fedadam", "federation.server_lr=0.01"]
SERVER_ROWS: list[tuple[str, list[str]]] = [
    ("dense, SGD clients + FedAdam server", SERVER_ADAM),
    ("top-1% + EF, SGD clients + FedAdam server", [*TOP1, *SERVER_ADAM]),
]
SGD5 = ["partition.alpha=0.1", "local.optimizer=sgd", "local.lr=0.002", "local.momentum=0.0", "local.epochs=5"]
SCAFFOLD = "federation.strategy=scaffold"
SCAFFOLD_ROWS: list[tuple[str, list[str]]] = [
    ("FedAvg", []),
    ("SCAFFOLD", [SCAFFOLD]),
    ("FedAvg, all clients every round", ["federation.fraction=1.0"]),
    ("SCAFFOLD, all clients every round", [SCAFFOLD, "federation.fraction=1.0"]),
    ("SCAFFOLD, sample-weighted mean", [SCAFFOLD, "federation.strategy_args={sample_weighted: true}"]),
    ("FedAvg, steps capped at 10", ["local.local_steps=10"]),
    ("SCAFFOLD, steps capped at 10", [SCAFFOLD, "local.local_steps=10"]),
    ("SCAFFOLD, lr 0.001", [SCAFFOLD, "local.lr=0.001"]),
    ("SCAFFOLD, lr 0.004", [SCAFFOLD, "local.lr=0.004"]),
    ("SCAFFOLD, surrogate slope 1", [SCAFFOLD, "model.slope=1.0"]),
    ("SCAFFOLD, surrogate slope 4", [SCAFFOLD, "model.slope=4.0"]),
    ("FedAvg, 1 epoch", ["local.epochs=1"]),
    ("SCAFFOLD, 1 epoch", [SCAFFOLD, "local.epochs=1"]),
]
#: FedAvg under the settings where SCAFFOLD recovered: the fair comparison at each setting
SCAFFOLD_CONTROL_ROWS: list[tuple[str, list[str]]] = [
    ("FedAvg, lr 0.001", ["local.lr=0.001"]),
    ("SCAFFOLD, lr 0.001", [SCAFFOLD, "local.lr=0.001"]),
    ("FedAvg, surrogate slope 1", ["model.slope=1.0"]),
    ("SCAFFOLD, surrogate slope 1", [SCAFFOLD, "model.slope=1.0"]),
]
ROTATIONS = [0, 45, 90, 135, 180]
LAMBDAS = [1.0, 10.0]
FLEET_LEVELS = [0.1, 0.2, 0.4]
MUS = [0.01, 0.1, 1.0]


def simulate(overrides: list[str], rounds: int, seed: int) -> tuple[Simulation, list[dict[str, Any]]]:
    settings = build_settings(RunSettings, None, [f"federation.rounds={rounds}", f"seed={seed}", *overrides])
    sim = Simulation(build_spec(settings))
    return sim, [sim.run_round() for _ in range(rounds)]


def final(rows: list[dict[str, Any]], key: str = "accuracy") -> float:
    return [r[key] for r in rows if r[key] is not None][-1]


def mean(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return sum(xs) / len(xs) if xs else float("nan")


def table(title: str, head: list[str], lines: list[list[str]]) -> None:
    print(f"\n{title}\n\n| " + " | ".join(head) + " |\n|" + "---|" * len(head), flush=True)
    for line in lines:
        print("| " + " | ".join(line) + " |", flush=True)


# -- compression ---------------------------------------------------------------------------------------------

def reference_row(name: str, names: list[str]) -> str:
    """The dense row a compressed row is compared with: ``dense, <same suffix>`` if there is one, else the first."""
    suffix = name.split(", ", 1)[1] if ", " in name else ""
    return f"dense, {suffix}" if f"dense, {suffix}" in names else names[0]


def section_compression(seeds: list[int], rounds: int = 20,
                        rows_def: list[tuple[str, list[str]]] = COMPRESSION_ROWS, tag: str = "compression"
                        ) -> dict[str, Any]:
    cells: dict[tuple[str, int], dict[str, Any]] = {}
    for seed in seeds:
        for name, over in rows_def:
            t = time.perf_counter()
            _, rows = simulate(over, rounds, seed)
            kept = [r["uplink_energy_kept"] for r in rows if "uplink_energy_kept" in r]
            ratio = [r["uplink_residual_ratio"] for r in rows if "uplink_residual_ratio" in r]
            cells[(name, seed)] = {"final": final(rows), "bytes_up": sum(r["bytes_up"] for r in rows),
                                   "energy_kept": mean(kept), "residual_ratio": mean(ratio),
                                   "residual_ratio_last": ratio[-1] if ratio else float("nan")}
            print(f"[{tag} seed {seed}] {name}: {cells[(name, seed)]['final']:.4f} "
                  f"({time.perf_counter() - t:.1f} s)", flush=True)
    lines, drops = [], {}
    for name, over in rows_def:
        ref = reference_row(name, [n for n, _ in rows_def])
        accs = [cells[(name, s)]["final"] for s in seeds]
        drop = mean([100 * (cells[(ref, s)]["final"] - cells[(name, s)]["final"]) for s in seeds])
        drops[name] = drop
        c = [cells[(name, s)] for s in seeds]
        lines.append([name, " / ".join(f"{a:.4f}" for a in accs), f"{mean(accs):.4f}", f"{drop:.2f}",
                      f"{mean([x['bytes_up'] for x in c]):,.0f}", f"{mean([x['energy_kept'] for x in c]):.3f}",
                      f"{mean([x['residual_ratio'] for x in c]):.2f}"])
    table(f"Compression ({tag}; local Adam unless the row says SGD), {rounds} rounds, final accuracy seeds {seeds}",
          ["uplink", "final accuracy per seed", "mean", "drop vs dense (points)", "uplink bytes",
           "energy kept (mean)", "residual / delta (mean)"], lines)
    return {"cells": {f"{k[0]}|{k[1]}": v for k, v in cells.items()}, "drops": drops}


def section_longrun(seeds: list[int], rounds: int = 60) -> dict[str, Any]:
    """Dense vs top-1% + EF with local Adam over more rounds: does the gap close in the long run?"""
    curves: dict[tuple[str, int], list[float]] = {}
    for seed in seeds:
        for name, over in COMPRESSION_ROWS[:2]:
            t = time.perf_counter()
            _, rows = simulate(over, rounds, seed)
            curves[(name, seed)] = [r["accuracy"] for r in rows]
            print(f"[longrun seed {seed}] {name}: {curves[(name, seed)][-1]:.4f} ({time.perf_counter() - t:.1f} s)",
                  flush=True)
    marks = [r for r in (10, 20, 30, 40, 50, 60) if r <= rounds]
    gap = {m: mean([100 * (curves[("dense", s)][m - 1] - curves[("top-1% + EF", s)][m - 1]) for s in seeds])
           for m in marks}
    table(f"Local Adam, dense minus top-1% + EF accuracy (points) after r rounds, mean over seeds {seeds}",
          [f"r={m}" for m in marks], [[f"{gap[m]:.2f}" for m in marks]])
    return {"curves": {f"{k[0]}|{k[1]}": v for k, v in curves.items()}, "gap_by_round": gap}


# -- scaffold -------------------------------------------------------------------------------------------------

def section_scaffold(seeds: list[int], rounds: int = 20,
                     rows_def: list[tuple[str, list[str]]] = SCAFFOLD_ROWS) -> dict[str, Any]:
    cells: dict[tuple[str, int], dict[str, Any]] = {}
    for seed in seeds:
        for name, over in rows_def:
            t = time.perf_counter()
            _, rows = simulate([*SGD5, *over], rounds, seed)
            accs = [r["accuracy"] for r in rows]
            cells[(name, seed)] = {"final": accs[-1], "best": max(accs), "rejected": sum(r["rejected"] for r in rows),
                                   "drift_cos": mean([r["client_drift_cosine"] for r in rows
                                                      if r["client_drift_cosine"] is not None]),
                                   "drift_norm": mean([r["client_drift_norm"] for r in rows
                                                       if r["client_drift_norm"] is not None])}
            print(f"[scaffold seed {seed}] {name}: {accs[-1]:.4f} ({time.perf_counter() - t:.1f} s)", flush=True)
    lines = []
    for name, _ in rows_def:
        c = [cells[(name, s)] for s in seeds]
        lines.append([name, " / ".join(f"{x['final']:.4f}" for x in c), f"{mean([x['final'] for x in c]):.4f}",
                      f"{mean([x['best'] for x in c]):.4f}", f"{mean([x['drift_cos'] for x in c]):.3f}",
                      f"{mean([x['drift_norm'] for x in c]):.2f}", str(sum(x["rejected"] for x in c))])
    table(f"SCAFFOLD vs FedAvg, Dirichlet 0.1, local SGD 0.002 (no momentum), 5 epochs, {rounds} rounds",
          ["row", "final accuracy per seed", "mean", "best (mean)", "client drift cos", "client drift norm",
           "rejected updates"], lines)
    out: dict[str, Any] = {"cells": {f"{k[0]}|{k[1]}": v for k, v in cells.items()}}
    if ("SCAFFOLD", seeds[0]) in cells:
        out["scaffold_minus_fedavg"] = mean([100 * (cells[("SCAFFOLD", s)]["final"] - cells[("FedAvg", s)]["final"])
                                             for s in seeds])
    return out


def section_scaffold_controls(seeds: list[int]) -> dict[str, Any]:
    """FedAvg and SCAFFOLD side by side at the learning rate and surrogate slope where SCAFFOLD recovered."""
    return section_scaffold(seeds, rows_def=SCAFFOLD_CONTROL_ROWS)


# -- drift ----------------------------------------------------------------------------------------------------

def _continual(stream: str, rotation: float, lam: float) -> list[str]:
    over = [f"continual.stream={stream}", "continual.tasks=2", "continual.rounds_per_task=4",
            "continual.regularizer=l2", f"continual.lam={lam}"]
    return over + ([f"continual.rotation={rotation}"] if stream == "domain_drift" else [])


def _drift_run(stream: str, rotation: float, lam: float, seed: int, measure: bool) -> dict[str, Any]:
    settings = build_settings(RunSettings, None, [f"seed={seed}", "federation.rounds=8",
                                                  *_continual(stream, rotation, lam)])
    sim = Simulation(build_spec(settings))
    spec = sim.spec
    start = {n: p.clone() for n, p in sim.state.global_params.items()}
    stage = next(s for s in sim.stages if s.key == "continual")
    data = stage.stream.data  # type: ignore[attr-defined]
    rows, out = [], {"input_w2": data.drift[0]}
    for r in range(8):
        rows.append(sim.run_round())
        if r == 3 and measure:  # end of task 0: the global model sees both tasks' test inputs
            out["feature_w2"] = feature_drift(spec.model, sim.state.global_params, data.tests[0][0],
                                              data.tests[1][0], spec.local)
    if measure:
        pooled = [(torch.cat([c.x for c in task]), torch.cat([c.y for c in task])) for task in data.clients]
        cfg = dataclasses.replace(spec.local, epochs=2)
        optima = [task_optimum(spec.model, start, x, y, cfg, seed) for x, y in pooled]
        out["model_drift"] = model_drift(optima[0], optima[1])
    m = accuracy_matrix(rows)
    out["forgetting"] = m[0][0] - m[1][0]
    out["acc"] = sum(m[1]) / len(m[1])
    return out


DriftCells = dict[tuple[str, float, float, int], dict[str, Any]]


def saved_drift_cells(saved: dict[str, Any]) -> DriftCells:
    """The drift section's per-run results as saved in the JSON (keys ``stream|rotation|lambda|seed``)."""
    cells: DriftCells = {}
    for key, value in saved.items():
        stream, rot, lam, seed = key.split("|")
        cells[(stream, float(rot), float(lam), int(seed))] = value
    return cells


def section_drift(seeds: list[int], cells: DriftCells | None = None) -> dict[str, Any]:
    """Runs the drift grid (or summarises ``cells`` saved by an earlier run) and fits forgetting against drift."""
    settings = [("domain_drift", float(a)) for a in ROTATIONS] + [("class_incremental", 0.0)]
    todo = seeds if cells is None else []
    cells = {} if cells is None else cells
    for seed in todo:
        for stream, rot in settings:
            measured: dict[str, Any] = {}
            for lam in LAMBDAS:
                t = time.perf_counter()
                res = _drift_run(stream, rot, lam, seed, measure=lam == LAMBDAS[0])
                measured.update({k: v for k, v in res.items() if k not in ("forgetting", "acc")})
                res.update(measured)
                cells[(stream, rot, lam, seed)] = res
                print(f"[drift seed {seed}] {stream} {rot:g} lam {lam:g}: forgetting {res['forgetting']:.3f} "
                      f"feature W2 {res['feature_w2']:.2f} model {res['model_drift']:.3f} "
                      f"({time.perf_counter() - t:.1f} s)", flush=True)

    def avg(stream: str, rot: float, lam: float, key: str) -> float:
        return mean([cells[(stream, rot, lam, s)][key] for s in seeds])

    lines = []
    for stream, rot in settings:
        label = f"rotation {rot:g}" if stream == "domain_drift" else "class-incremental (0-4, 5-9)"
        lines.append([label, f"{avg(stream, rot, 1.0, 'input_w2'):.2f}", f"{avg(stream, rot, 1.0, 'feature_w2'):.2f}",
                      f"{avg(stream, rot, 1.0, 'model_drift'):.3f}"]
                     + [f"{avg(stream, rot, lam, 'forgetting'):.3f}" for lam in LAMBDAS])
    table(f"Forgetting vs task drift, 2 tasks x 4 rounds, L2 stability term, mean over seeds {seeds}",
          ["task pair", "input W2", "feature W2", "model drift", *[f"forgetting lambda={lam:g}" for lam in LAMBDAS]],
          lines)
    out: dict[str, Any] = {"cells": {"|".join(map(str, k)): v for k, v in cells.items()}}
    for key in ("input_w2", "feature_w2", "model_drift"):
        for lam in LAMBDAS:
            xs = [avg(st, rot, lam, key) for st, rot in settings]
            fs = [avg(st, rot, lam, "forgetting") for st, rot in settings]
            out[f"spearman_{key}_lam{lam:g}"] = spearman(xs, fs)
            dom = [avg(st, rot, lam, key) for st, rot in settings if st == "domain_drift"]
            fdom = [avg(st, rot, lam, "forgetting") for st, rot in settings if st == "domain_drift"]
            out[f"spearman_{key}_lam{lam:g}_rotations"] = spearman(dom, fdom)
        pts = [(avg(st, rot, lam, key) / lam, avg(st, rot, lam, "forgetting")) for st, rot in settings
               for lam in LAMBDAS]
        a, rmse = fit_through_origin([p[0] for p in pts], [p[1] for p in pts])
        spread = statistics.pstdev([p[1] for p in pts])
        out[f"fit_{key}"] = {"a": a, "rmse": rmse, "forgetting_std": spread}
    lines = [[key, *[f"{out[f'spearman_{key}_lam{lam:g}']:.3f} ({out[f'spearman_{key}_lam{lam:g}_rotations']:.3f})"
                     for lam in LAMBDAS], f"{out[f'fit_{key}']['a']:.4g}", f"{out[f'fit_{key}']['rmse']:.3f}",
              f"{out[f'fit_{key}']['forgetting_std']:.3f}"] for key in ("input_w2", "feature_w2", "model_drift")]
    table(f"Rank correlation of forgetting with drift (all {len(settings)} task pairs; rotations only in brackets), "
          "and the fit forgetting = a drift / lambda over both lambdas",
          ["drift measure", *[f"Spearman lambda={lam:g}" for lam in LAMBDAS], "a", "residual RMSE",
           "std of forgetting"], lines)
    # at fixed lambda: forgetting = a_lambda drift; and the lambda exponent b of forgetting ~ lambda^-b
    lines = []
    for key in ("input_w2", "feature_w2", "model_drift"):
        for lam in LAMBDAS:
            xs = [avg(st, rot, lam, key) for st, rot in settings]
            fs = [avg(st, rot, lam, "forgetting") for st, rot in settings]
            a, rmse = fit_through_origin(xs, fs)
            out[f"fit_{key}_lam{lam:g}"] = {"a": a, "rmse": rmse, "forgetting_std": statistics.pstdev(fs)}
            lines.append([key, f"{lam:g}", f"{a:.4g}", f"{rmse:.3f}", f"{statistics.pstdev(fs):.3f}"])
    table("Fixed lambda: forgetting = a drift (least squares through the origin)",
          ["drift measure", "lambda", "a", "residual RMSE", "std of forgetting"], lines)
    lo, hi = LAMBDAS[0], LAMBDAS[-1]
    exps = [-np.log(avg(st, rot, hi, "forgetting") / avg(st, rot, lo, "forgetting")) / np.log(hi / lo)
            for st, rot in settings if avg(st, rot, lo, "forgetting") > 0 and avg(st, rot, hi, "forgetting") > 0]
    out["lambda_exponent"] = float(np.mean(exps))
    print(f"\nforgetting ~ lambda^-b between lambda={lo:g} and {hi:g}: b = {out['lambda_exponent']:.3f} "
          f"(mean over the {len(exps)} task pairs that forget; b = 1 is the claimed 1/lambda)", flush=True)
    return out


# -- fedprox --------------------------------------------------------------------------------------------------

def _fleet(level: float) -> list[str]:
    return [f"devices.fleet=[{{profile: analog20, threshold_cv: {level}, leak_cv: {level}, gain_cv: {level}, "
            "jitter: 2}]", "partition.num_clients=10", "federation.fraction=0.5", "local.epochs=2"]


def oscillation(accs: list[float], last: int = 20) -> float:
    """Standard deviation of the round-to-round change over the last ``last`` changes."""
    tail = np.diff(np.asarray(accs, dtype=np.float64))[-last:]
    return float(tail.std(ddof=1))


def section_fedprox(seeds: list[int], rounds: int = 22) -> dict[str, Any]:
    rows_def = [("FedAvg", ["federation.strategy=fedavg"])] + [
        (f"FedProx mu={mu:g}", ["federation.strategy=fedprox", f"federation.prox_mu={mu}"]) for mu in MUS]
    cells: dict[tuple[float, str, int], dict[str, float]] = {}
    for seed in seeds:
        for level in FLEET_LEVELS:
            for name, over in rows_def:
                t = time.perf_counter()
                _, rows = simulate([*_fleet(level), *over], rounds, seed)
                accs = [r["accuracy"] for r in rows]
                cells[(level, name, seed)] = {"osc": oscillation(accs), "final": accs[-1],
                                              "mean_last": mean(accs[-20:])}
                print(f"[fedprox seed {seed}] mismatch {level:g} {name}: osc {cells[(level, name, seed)]['osc']:.4f}"
                      f" final {accs[-1]:.4f} ({time.perf_counter() - t:.1f} s)", flush=True)
    lines, ratios = [], {}
    for level in FLEET_LEVELS:
        for name, _ in rows_def:
            c = [cells[(level, name, s)] for s in seeds]
            lines.append([f"{level:.0%}", name, " / ".join(f"{x['osc']:.4f}" for x in c),
                          f"{mean([x['osc'] for x in c]):.4f}", f"{mean([x['mean_last'] for x in c]):.4f}",
                          f"{mean([x['final'] for x in c]):.4f}"])
    for name, _ in rows_def[1:]:
        ratios[name] = mean([mean([cells[(lv, name, s)]["osc"] for s in seeds])
                             / mean([cells[(lv, "FedAvg", s)]["osc"] for s in seeds]) for lv in FLEET_LEVELS])
    best = min(ratios, key=lambda k: ratios[k])
    table(f"Accuracy oscillation on noisy fleets (deployed accuracy), 10 clients, 5 per round, 2 local epochs, "
          f"{rounds} rounds",
          ["mismatch (+ jitter 2)", "strategy", "oscillation per seed", "mean", "mean accuracy, last 20",
           "final accuracy"], lines)
    print("\nOscillation ratio FedProx / FedAvg (mean over fleets): "
          + ", ".join(f"{k}: {v:.3f}" for k, v in ratios.items()) + f"; best {best}", flush=True)
    return {"cells": {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in cells.items()}, "ratios": ratios, "best": best}


def section_server(seeds: list[int]) -> dict[str, Any]:
    """Adaptivity moved from the clients to the server (SGD clients, FedAdam server), dense vs top-1% + EF."""
    return section_compression(seeds, rows_def=SERVER_ROWS, tag="server")


SECTIONS = {"compression": section_compression, "server": section_server, "scaffold": section_scaffold,
            "scaffold_controls": section_scaffold_controls, "drift": section_drift, "fedprox": section_fedprox,
            "longrun": section_longrun}
#: the sections the last line needs
HEADLINE = ("compression", "server", "scaffold", "drift", "fedprox")


def summarize(name: str, seeds: list[int], saved: dict[str, Any]) -> dict[str, Any]:
    """Re-print a section's tables from its saved per-run results (drift only)."""
    if name != "drift":
        raise SystemExit(f"--summarize supports the drift section only, not {name}")
    return section_drift(seeds, saved_drift_cells(saved["cells"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(HEADLINE),
                    help="what to run (default: the four of the last line; longrun: compression over 60 rounds)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", default="benchmarks/results/seed_claims.json")
    ap.add_argument("--summarize", action="store_true", help="drift: re-print the tables from the saved runs")
    args = ap.parse_args()
    configure_allocator()
    torch.set_num_threads(1)
    path = Path(args.json)
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    for name in args.sections:
        t = time.perf_counter()
        if args.summarize:
            if name not in results:
                raise SystemExit(f"--summarize: {path} holds no {name} section; run it first")
            seconds = results[name].get("seconds")
            results[name] = summarize(name, args.seeds, results[name])
            results[name]["seconds"] = seconds
        else:
            results[name] = SECTIONS[name](args.seeds)
            results[name]["seconds"] = time.perf_counter() - t
        results[name]["seeds"] = args.seeds
        print(f"[{name}] {results[name]['seconds'] or 0:.0f} s", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=float))
    if all(k in results for k in HEADLINE):
        comp, fp = results["compression"]["drops"], results["fedprox"]
        print(f"topk1_ef_adam_drop={comp[KEPT_DEFAULT]:.2f} "
              f"scaffold_minus_fedavg={results['scaffold']['scaffold_minus_fedavg']:.2f} "
              f"drift_forgetting_spearman={results['drift']['spearman_feature_w2_lam1']:.3f} "
              f"fedprox_oscillation_ratio={fp['ratios'][fp['best']]:.3f}")


#: the top-1% + EF row that compression.uplink=topk with local Adam runs by default
KEPT_DEFAULT = "top-1% + EF"

if __name__ == "__main__":
    main()
