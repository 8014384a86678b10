"""DECOLLE-style local losses (Kaiser, Mostafa and Neftci 2020): every hidden layer learns from its own read-out.

Each hidden layer ``l`` (spikes ``s_l [T, B, n_l]``) gets a fixed random linear read-out ``G_l [C, n_l]`` (drawn
once from ``local.rule_seed``, :func:`spikefed.snn.local.fixed_matrix`) on a low-pass trace of its spikes, and a
local classification loss::

    p_l[t] = alpha p_l[t-1] + (1 - alpha) s_l[t]           (low-pass trace, alpha = local.decolle_alpha)
    y_l[t] = G_l p_l[t]
    L_l    = (1/T) sum_t CE(y_l[t], label)                  (the ce_membrane loss, membrane_reduction time_mean)

Layer ``l`` minimises ``L_l`` alone: its input is detached, so no gradient crosses from one layer to another
(``dW_l = dL_l/dW_l``, with autograd through the layer's own dynamics over time), and ``G_l`` is never trained.
The output layer learns the task loss on its own detached input. Each layer is updated as soon as it has run,
so only one layer's graph is held at a time.
"""

from __future__ import annotations

import torch

from .kernels import lowpass
from .local import LossFn, check_rule_support, fixed_matrix, num_layers, run_layer, train_output_layer, \
    zero_missing_grads
from .losses import ce_membrane_loss
from .models import ModelOutput, SpikingMLP


def readout_matrices(model: SpikingMLP, seed: int) -> list[torch.Tensor]:
    """The fixed random read-outs ``G_l [C, n_l]`` of the hidden layers."""
    classes, dtype = model.sizes[-1], model.linears[0].weight.dtype
    return [fixed_matrix((classes, model.sizes[i + 1]), seed, i, dtype)
            for i in range(num_layers(model) - 1)]


def local_readout(spikes: torch.Tensor, g: torch.Tensor, alpha: float) -> torch.Tensor:
    """``y_l [T, B, C]``: the fixed read-out ``G_l`` of the low-pass trace of ``spikes [T, B, n_l]``."""
    trace = lowpass((1.0 - alpha) * spikes, alpha)
    return trace @ g.t()


def local_loss(spikes: torch.Tensor, g: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """``L_l``: cross-entropy of the local read-out, averaged over the steps."""
    return ce_membrane_loss(local_readout(spikes, g, alpha), y, "time_mean")


def decolle_backward(model: SpikingMLP, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, seed: int = 0,
                     alpha: float = 0.9) -> tuple[float, ModelOutput]:
    """DECOLLE updates of one batch into ``.grad``; returns the task loss of the output layer and the output.

    ``alpha`` in ``[0, 1)``: decay of the traces the local read-outs see."""
    check_rule_support(model, "decolle")
    if not 0 <= alpha < 1:
        raise ValueError(f"decolle_alpha must be in [0, 1), got {alpha!r}")
    mats = readout_matrices(model, seed)
    h, hidden = x, []
    for i, g in enumerate(mats):
        s = run_layer(model, i, h.detach())
        local_loss(s, g, y, alpha).backward()
        h = s.detach()
        hidden.append(h)
    out, loss = train_output_layer(model, h, y, hidden, loss_fn)
    zero_missing_grads(model)
    return float(loss), ModelOutput(out, out, hidden, [])
