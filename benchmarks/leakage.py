"""Leakage attacks on spiking-network updates, without protection and with DP, secure aggregation, top-k and
e-prop (issue 18).

Federation: digits (pixels in [0, 1]), IID over 20 clients, all 20 sampled every round, spiking MLP 64-128-10
(LIF, direct coding, T = 10, spike-count MSE loss), FedAvg, local Adam 3e-3 for 4 epochs, 12 rounds. (Smaller
than the ``spikefed run`` default, 64-256-10 at T = 25, so that the second-order inversion fits in a few minutes on
2 cores.)

**Update inversion** at the initial global model (the first round, where the literature attacks): a client
takes one SGD step on one sample; the attacker sees what each protection leaves of that update and runs

* *optimised*: gradient matching (cosine) through the surrogate, labels inferred from the output bias gradient,
  3 random starts x 150 Adam steps (:func:`spikefed.federated.leakage.invert_update`);
* *closed form*: row ratio of the first layer's weight and bias gradients (exact under direct coding).

Protections: none; DP: ``clip(Delta) + N(0, (z C)^2)`` with ``C = ||Delta||`` (the client's contribution to the
noised sum as seen by an attacker who knows the other clients' updates; one release: epsilon of one Gaussian
mechanism at delta 1e-5); secure aggregation: the attacker sees only the sum of K = 4 one-sample updates and
inverts a batch of 4 (each true input scored against its best-matching reconstruction); top-k: only the 10% / 1%
largest coordinates (the attacker matches on those); e-prop: the client's update is its e-prop gradient (model
with membrane read-out, closed form only: e-prop has no differentiable graph to match through). Scores: PSNR in dB
over 4 target samples (the data-free floor, the mean training image, is printed).

**Membership inference** (loss threshold) on the final global model: members are client 0's training samples,
non-members the test set (and, as a steadier second figure, all clients' training samples vs the test set); AUC
via the rank statistic. Rows: none, DP-FedAvg (clip 0.3) at several noise multipliers (epsilon after all rounds,
q = 1), secure aggregation, top-10% compression with error feedback.

Run:   OMP_NUM_THREADS=1 .venv/bin/python benchmarks/leakage.py [--json benchmarks/results/leakage.json]
Last line:  inversion_psnr_none=A inversion_psnr_dp=B mia_auc_none=C mia_auc_dp=D epsilon_inversion=E
            epsilon_mia=F delta=1e-05   (DP columns at the middle noise multiplier of each list)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.compression import topk_indices
from spikefed.federated.leakage import (
    closed_form_input,
    infer_labels,
    invert_update,
    loss_gradients,
    per_sample_losses,
    psnr,
    rank_auc,
)
from spikefed.federated.privacy import PrivacyAccountant, clip_deltas
from spikefed.federated.simulation import Simulation
from spikefed.federated.types import load_params_
from spikefed.runtime import configure_allocator
from spikefed.seeding import Purpose, torch_generator
from spikefed.snn.online import eprop_backward
from spikefed.snn.train import encode_inputs

BASE = ["data.scale=unit", "partition.method=iid", "partition.num_clients=20", "federation.fraction=1.0",
        "model.hidden=[128]", "local.num_steps=10", "local.epochs=4", "local.lr=0.003", "federation.norm_bound=null"]
ROUNDS = 12
DELTA = 1e-5
INV_Z = [0.1, 0.5, 2.0]  # DP noise multipliers for the inversion (one release)
MIA_Z = [0.5, 1.0, 3.0]  # DP noise multipliers for the federated runs (ROUNDS releases)
MIA_CLIP = 0.3
TARGETS = 4  # target samples of the inversion
SECAGG_K = 4
SEED = 0
STEP_LR = 0.1  # the client's one local SGD step


def _settings(extra: list[str]) -> RunSettings:
    return build_settings(RunSettings, None, [*BASE, f"federation.rounds={ROUNDS}", f"seed={SEED}", *extra])


def _flat(g: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in g.values()])


def _unflat(v: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for n, t in like.items():
        out[n] = v[i:i + t.numel()].reshape(t.shape).to(t.dtype)
        i += t.numel()
    return out


def _closed(g: dict[str, torch.Tensor]) -> torch.Tensor:
    return closed_form_input(g["linears.0.weight"], g["linears.0.bias"]).clamp(0, 1)


def _matched_psnr(recon: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean PSNR after pairing each true input with one reconstruction (min total MSE, Hungarian)."""
    cost = torch.cdist(truth.double(), recon.double()).square() / truth.shape[1]
    rows, cols = linear_sum_assignment(cost.numpy())
    return sum(psnr(recon[c], truth[r]) for r, c in zip(rows, cols)) / len(rows)


def inversion_table(spec: Any) -> tuple[list[dict[str, Any]], float]:
    model, cfg = spec.model, spec.local
    x_all, y_all = spec.data.x_train, spec.data.y_train
    floor = sum(psnr(x_all.mean(0), x_all[i]) for i in range(TARGETS)) / TARGETS
    rows: list[dict[str, Any]] = []

    def attack(name: str, observed: list[dict[str, torch.Tensor]], eps: float | None) -> None:
        start = time.perf_counter()
        opt, cf = [], []
        for i, g in enumerate(observed):
            labels = infer_labels(g["linears.1.bias"], 1)
            res = invert_update(model, g, labels, cfg, torch_generator(SEED, Purpose.LEAKAGE, index=i), steps=150,
                                restarts=3)
            opt.append(psnr(res.x[0], x_all[i]))
            cf.append(psnr(_closed(g), x_all[i]))
        rows.append({"protection": name, "epsilon": eps, "psnr_optimised": sum(opt) / len(opt),
                     "psnr_closed_form": sum(cf) / len(cf),
                     "seconds": time.perf_counter() - start})
        print(f"  inversion {name}: {rows[-1]}", flush=True)

    grads = [loss_gradients(model, x_all[i:i + 1], y_all[i:i + 1], cfg) for i in range(TARGETS)]
    attack("none", grads, None)
    for z in INV_Z:
        eps = PrivacyAccountant(z, 1.0).epsilon(1, DELTA)
        noisy = []
        for i, g in enumerate(grads):
            v = _flat(g).unsqueeze(0)
            c = float(v.norm())
            clipped, _ = clip_deltas(v, c)
            noise = torch.randn(v.shape[1], generator=torch_generator(SEED, Purpose.LEAKAGE, index=100 + i),
                                dtype=torch.float64) * z * c
            noisy.append(_unflat(clipped[0] + noise, g))
        attack(f"DP z={z}", noisy, eps)
    for frac in (0.1, 0.01):
        sparse, masks = [], []
        for g in grads:
            kept = topk_indices(g, frac)
            m = {n: torch.zeros(t.numel(), dtype=torch.bool).index_fill_(0, kept[n], True).reshape(t.shape)
                 for n, t in g.items()}
            sparse.append({n: t * m[n] for n, t in g.items()})
            masks.append(m)
        start = time.perf_counter()
        opt, cf = [], []
        for i, (g, m) in enumerate(zip(sparse, masks)):
            labels = infer_labels(g["linears.1.bias"], 1)
            res = invert_update(model, g, labels, cfg, torch_generator(SEED, Purpose.LEAKAGE, index=i), steps=150,
                                restarts=3, mask=m)
            opt.append(psnr(res.x[0], x_all[i]))
            b = g["linears.0.bias"]
            cf.append(psnr(_closed(g), x_all[i]) if float(b.abs().max()) > 0 else psnr(x_all.mean(0), x_all[i]))
        rows.append({"protection": f"top-{frac:.0%}", "epsilon": None, "psnr_optimised": sum(opt) / len(opt),
                     "psnr_closed_form": sum(cf) / len(cf), "seconds": time.perf_counter() - start})
        print(f"  inversion top-{frac:.0%}: {rows[-1]}", flush=True)
    # secure aggregation: the sum of K one-sample updates = K x the gradient of the batch mean
    start = time.perf_counter()
    xb, yb = x_all[:SECAGG_K], y_all[:SECAGG_K]
    g_sum = loss_gradients(model, xb, yb, cfg)
    labels = infer_labels(g_sum["linears.1.bias"], SECAGG_K)
    res = invert_update(model, g_sum, labels, cfg, torch_generator(SEED, Purpose.LEAKAGE, index=200), steps=150,
                        restarts=3)
    cf_sum = _closed(g_sum).unsqueeze(0).expand(SECAGG_K, -1)
    rows.append({"protection": f"secure aggregation (sum of {SECAGG_K})", "epsilon": None,
                 "psnr_optimised": _matched_psnr(res.x, xb), "psnr_closed_form": _matched_psnr(cf_sum, xb),
                 "seconds": time.perf_counter() - start})
    print(f"  inversion secagg: {rows[-1]}", flush=True)
    rows.extend(eprop_rows(x_all, y_all))
    return rows, floor


def eprop_rows(x_all: torch.Tensor, y_all: torch.Tensor) -> list[dict[str, Any]]:
    """Closed-form inversion of e-prop updates vs BPTT updates on the same membrane-read-out model."""
    spec = build_spec(_settings(["model.readout=membrane", "local.loss=ce_membrane",
                                 "local.membrane_reduction=time_mean"]))
    model, cfg = spec.model, spec.local
    out = []
    for method in ("bptt", "eprop"):
        vals = []
        for i in range(TARGETS):
            x = x_all[i:i + 1]
            if method == "eprop":
                model.zero_grad()
                eprop_backward(model, encode_inputs(x, cfg, None), y_all[i:i + 1], "time_mean")
                g = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            else:
                g = loss_gradients(model, x, y_all[i:i + 1], cfg)
            vals.append(psnr(_closed(g), x_all[i]))
        out.append({"protection": f"{method} update (membrane read-out)", "epsilon": None, "psnr_optimised": None,
                    "psnr_closed_form": sum(vals) / len(vals), "seconds": 0.0})
        print(f"  inversion {method}: {out[-1]}", flush=True)
    return out


def mia_row(name: str, extra: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    sim = Simulation(build_spec(_settings(extra)))
    last = [sim.run_round() for _ in range(ROUNDS)][-1]
    spec = sim.spec
    load_params_(spec.model, sim.state.global_params)
    member = sim.clients[0]
    gen = torch_generator(SEED, Purpose.LEAKAGE, index=300)
    lm = per_sample_losses(spec.model, member.x, member.y, spec.local, gen)
    ln = per_sample_losses(spec.model, spec.data.x_test, spec.data.y_test, spec.local, gen)
    la = per_sample_losses(spec.model, spec.data.x_train, spec.data.y_train, spec.local, gen)
    row = {"protection": name, "epsilon": last.get("dp_epsilon"), "accuracy": last["accuracy"],
           "auc_loss_threshold": rank_auc(-lm, -ln), "auc_all_members": rank_auc(-la, -ln),
           "member_loss": float(lm.mean()),
           "nonmember_loss": float(ln.mean()), "members": len(member.y), "seconds": time.perf_counter() - start}
    print(f"  mia {name}: {row}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    configure_allocator()
    torch.set_num_threads(1)
    start = time.perf_counter()
    inv, floor = inversion_table(build_spec(_settings([])))
    mia = [mia_row("none", [])]
    for z in MIA_Z:
        mia.append(mia_row(f"DP z={z}", ["privacy.dp=true", f"privacy.noise_multiplier={z}",
                                        f"privacy.clip={MIA_CLIP}", f"privacy.delta={DELTA}"]))
    mia.append(mia_row("secure aggregation", ["privacy.secure_aggregation=true"]))
    mia.append(mia_row("top-10% + EF", ["compression.uplink=topk", "compression.fraction=0.1"]))

    print(f"\nUpdate inversion (one SGD step on one sample, initial global model; PSNR dB over {TARGETS} samples; "
          f"data-free floor, the mean image: {floor:.1f} dB)\n")
    print("| attacker sees | epsilon (one release) | optimised PSNR | closed-form PSNR |")
    print("|---|---:|---:|---:|")
    for r in inv:
        eps = "" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        opt = "" if r["psnr_optimised"] is None else f"{r['psnr_optimised']:.1f}"
        cf = "inf" if math.isinf(r["psnr_closed_form"]) else f"{r['psnr_closed_form']:.1f}"
        print(f"| {r['protection']} | {eps} | {opt} | {cf} |")
    print(f"\nMembership inference (loss threshold; client 0's {mia[0]['members']}"
          f" training samples vs the test set; {ROUNDS} rounds)\n")
    print("| run | epsilon | test accuracy | AUC (client 0) | AUC (all clients) | member loss | non-member loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in mia:
        eps = "" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        print(f"| {r['protection']} | {eps} | {r['accuracy']:.3f} | {r['auc_loss_threshold']:.3f} | "
              f"{r['auc_all_members']:.3f} | {r['member_loss']:.3f} | {r['nonmember_loss']:.3f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"inversion": inv, "mia": mia, "floor_psnr": floor,
                                         "seconds": time.perf_counter() - start}, indent=1, default=str))
    mid_inv = next(r for r in inv if r["protection"] == f"DP z={INV_Z[1]}")
    mid_mia = next(r for r in mia if r["protection"] == f"DP z={MIA_Z[1]}")
    print(f"\nDP in the last line: inversion z={INV_Z[1]} (epsilon {mid_inv['epsilon']:.2f}, one release), "
          f"membership z={MIA_Z[1]} (epsilon {mid_mia['epsilon']:.2f} after {ROUNDS} rounds), delta={DELTA}; "
          f"{time.perf_counter() - start:.0f} s")
    print(f"inversion_psnr_none={inv[0]['psnr_optimised']:.2f} inversion_psnr_dp={mid_inv['psnr_optimised']:.2f} "
          f"mia_auc_none={mia[0]['auc_loss_threshold']:.3f} mia_auc_dp={mid_mia['auc_loss_threshold']:.3f} "
          f"epsilon_inversion={mid_inv['epsilon']:.2f} epsilon_mia={mid_mia['epsilon']:.2f} delta={DELTA}")


if __name__ == "__main__":
    main()
