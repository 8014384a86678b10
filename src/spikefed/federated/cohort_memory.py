"""How many clients the batched cohort engine trains in one stacked computation.

The cohort engine stacks the K clients' activations into one ``[T, K, B, *features]`` tensor per layer. For
small models that is what makes it fast (one kernel launch instead of K). For large activations (a conv net on
32x32 event frames: about 20 MB per client and step) the stacked tensors leave the caches, and 100 clients at
once ran 3x slower than training them one after another (measured: 16.1 s vs 5.3 s per round,
benchmarks/cohort_models.py). Clients are independent within a round, so the engine may train them in chunks
with identical results; :func:`clients_per_chunk` sizes a chunk so that its activations stay within a budget.

Activation bytes per client and step: the elements every leaf module outputs for one sample over the T steps
(forward hooks on a one-sample probe), times the batch size, times 4 bytes (float32) or 8 (float64).
"""

from __future__ import annotations

from typing import Any

import torch

from ..data.compact import as_float_batch
from ..snn.train import TrainConfig, encode_inputs, input_dtype

__all__ = ["ACTIVATION_BUDGET", "activation_bytes", "clients_per_chunk"]

#: activation bytes per stacked computation. Measured on the project machine (2 cores, one round of 100
#: clients, benchmarks/cohort_models.py): the conv net on 32x32 frames (18.8 MiB per client) takes 4.96 s in
#: chunks of 1 client, 5.42 s of 2, 7.09 s of 4, 11.5 s of 8, 16.1 s all at once (sequential engine: 4.97 s);
#: the LIF MLP 64-256-10 (0.06 MiB per client) stays in one chunk of up to ~260 clients.
ACTIVATION_BUDGET = 16 * 2**20


def activation_bytes(model: torch.nn.Module, sample: torch.Tensor, cfg: TrainConfig) -> int:
    """Bytes every leaf module of ``model`` outputs for one client's batch (``cfg.batch_size`` samples, T steps),
    from a forward of one sample ``sample [1, *features]`` (no gradient, fixed generator: nothing is drawn from
    the run's generators)."""
    total = [0]

    def count(_m: torch.nn.Module, _i: Any, out: Any) -> None:
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            x = encode_inputs(as_float_batch(sample, input_dtype(model)), cfg, torch.Generator().manual_seed(0))
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return total[0] * cfg.batch_size * next(model.parameters()).element_size()


def clients_per_chunk(model: torch.nn.Module, sample: torch.Tensor, cfg: TrainConfig,
                      budget: int = ACTIVATION_BUDGET) -> int:
    """The largest number of clients whose stacked activations fit ``budget`` bytes (at least 1)."""
    return max(1, budget // max(1, activation_bytes(model, sample, cfg)))
