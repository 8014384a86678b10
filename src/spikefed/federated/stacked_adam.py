"""One fused Adam update over a cohort's stacked parameters (the cohort engine's local optimizer).

:class:`~spikefed.federated.cohort.StackedOptimizer` applies ``torch.optim.Adam``'s update to every client's
slice of the ``[K, ...]`` stacks. Written as tensor expressions that update is about nine passes over each
stack (moments, square root, bias corrections, three fresh temporaries); at 1,000 clients of the ``fl_round``
workload, with one local step each, it was the largest part of local training. When the clients that step all
share one step count (always so in the cohort engine: clients start together and the ones still training are
a prefix, so at local step ``j`` every one of them takes its ``(j+1)``-th step), the bias corrections are
scalars and the whole update is ``torch.optim.Adam``'s own fused kernel (``fused=True``, public functional API
``torch.optim.adam.adam``): one pass that reads the parameters, gradients and both moments and writes them
back. The update per element is Adam's (L2 weight decay added to the gradient, bias correction with the
step count), evaluated in a different order than the unfused expressions, so it agrees with them and with
``torch.optim.Adam`` to float rounding (tests: float64, 1e-12). Only stacks :func:`fusable` says so go through
it (a client's bits must not depend on the size of the stack). Where the fused kernel is missing (an older
torch, a device without it) :func:`fused_adam_` says so and the caller keeps its unfused update.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.optim.adam import adam as adam_functional

#: a stack is fused only if each client's slice holds a multiple of this many values: the kernel runs a vector
#: loop with a scalar tail (which may round differently, e.g. without fused multiply-add) over the flattened
#: stack, so a client's values must sit at the same vector lanes whatever the number of clients in the stack,
#: or a cohort split across ranks or chunks would not reproduce the one-process numbers bit for bit
LANES = 64

#: devices/dtypes on which the fused kernel raised once: not tried again in this process
_UNAVAILABLE: set[tuple[str, torch.dtype]] = set()


def fusable(stack: torch.Tensor) -> bool:
    """Whether a ``[K, ...]`` stack goes through the fused kernel: each client's slice a multiple of :data:`LANES`
    values (the 64-256-10 MLP's weights and hidden bias do; the 10 output biases take the unfused update)."""
    return stack.dim() >= 1 and stack[0].numel() % LANES == 0


def fused_adam_(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], exp_avgs: Sequence[torch.Tensor],
                exp_avg_sqs: Sequence[torch.Tensor], step: int, lr: float, weight_decay: float,
                beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> bool:
    """Adam's ``step``-th update (1-based, the same for every row) in place on ``params`` and the moments, one
    fused pass per tensor. Returns ``False`` without touching anything where the fused kernel is unavailable."""
    if not params:
        return True
    key = (params[0].device.type, params[0].dtype)
    if key in _UNAVAILABLE or step < 1 or any(not t.is_contiguous() for t in (*params, *exp_avgs, *exp_avg_sqs)):
        return False
    if any(g.shape != p.shape or g.dtype != p.dtype for g, p in zip(grads, params)):
        return False
    grads = [g.contiguous() for g in grads]  # the kernel walks every tensor as dense memory
    steps = [torch.tensor(float(step - 1), dtype=torch.float32, device=p.device) for p in params]  # adam adds 1
    try:
        adam_functional(list(params), list(grads), list(exp_avgs), list(exp_avg_sqs), [], steps,
                              fused=True, amsgrad=False, beta1=beta1, beta2=beta2, lr=lr,
                              weight_decay=weight_decay, eps=eps, maximize=False)
    except (RuntimeError, NotImplementedError, TypeError):
        _UNAVAILABLE.add(key)  # torch refuses the device/dtype in its set-up, before the kernel writes
        return False
    return True
