"""Per-client evaluation: how well one model does on each client's own data.

The global model of a federation is judged on the held-out test set; under label or feature skew it can still be
poor for single clients. :func:`evaluate_clients` runs it on every client's local data (as that client sees it,
feature transforms included) and returns one row per client.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..seeding import Purpose, torch_generator
from ..snn.train import TrainConfig, evaluate
from .cohort import ClientData

__all__ = ["evaluate_clients", "summarize_clients"]


@torch.no_grad()
def evaluate_clients(model: torch.nn.Module, clients: Sequence[ClientData], cfg: TrainConfig, seed: int = 0,
                     rnd: int = 0) -> list[dict[str, Any]]:
    """``[{"client", "samples", "accuracy", "loss"}]``, one row per client, in the order given.

    Inputs are encoded as in evaluation (``cfg``); a stochastic encoder draws from the evaluation stream
    ``(seed, EVAL, rnd)``, the same for every client, so rows are reproducible and comparable. The model's
    training mode is restored afterwards.
    """
    was_training = model.training
    rows: list[dict[str, Any]] = []
    try:
        for c in clients:
            if c.num_samples == 0:
                rows.append({"client": c.client_id, "samples": 0, "accuracy": None, "loss": None})
                continue
            res = evaluate(model, c.x, c.y, cfg, torch_generator(seed, Purpose.EVAL, rnd))
            rows.append({"client": c.client_id, "samples": c.num_samples, "accuracy": res.accuracy,
                         "loss": res.loss})
    finally:
        model.train(was_training)
    return rows


def summarize_clients(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Mean, worst, best and sample-weighted mean accuracy over the rows of :func:`evaluate_clients`."""
    acc = [(r["accuracy"], r["samples"]) for r in rows if r.get("accuracy") is not None]
    if not acc:
        return {"mean": None, "min": None, "max": None, "weighted": None}
    total = sum(n for _, n in acc)
    return {"mean": sum(a for a, _ in acc) / len(acc), "min": min(a for a, _ in acc),
            "max": max(a for a, _ in acc), "weighted": sum(a * n for a, n in acc) / total}
