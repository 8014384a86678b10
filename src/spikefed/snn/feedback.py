"""Feedback alignment (FA), direct feedback alignment (DFA) and direct random target projection (DRTP).

Backpropagation sends the output error down through the transposed forward weights, ``delta_l = (delta_{l+1}
W_{l+1}) * f'(a_l)``. These rules replace that transport by fixed random matrices (drawn once from
``local.rule_seed``, :func:`spikefed.snn.local.fixed_matrix`), so no layer needs another layer's weights:

    FA    (Lillicrap et al. 2016):  delta_l = (delta_{l+1} B_{l+1}) * f'(a_l)      B_{l+1} shaped like W_{l+1}
    DFA   (Nokland 2016):           delta_l = (e B_l) * f'(a_l)                     e = dL/d(output), B_l [C, n_l]
    DRTP  (Frenkel et al. 2021):    delta_l = (-y* B_l / (T N)) * f'(a_l)           y* the one-hot target

    dW_l = sum_t delta_l[t]^T x_l[t]      (x_l: the layer's input; its bias gets sum_t delta_l[t])

In a spiking layer ``f'(a)`` is the surrogate derivative at the membrane and ``a`` depends on earlier steps
through the membrane recurrence ``v[t] = beta v[t-1] + W x[t] - reset``: the signal at step t reaches the
weights through every earlier input, filtered by the neuron (within-layer BPTT, autograd through the neuron's
own dynamics only; with ``beta = 0`` and a detached reset it is exactly the per-step formula above). The output
layer always learns with its true gradient on its own input. DRTP needs no output error at all, so each layer is
updated as soon as it has run (only one layer's graph is held); FA and DFA need the error of the whole sequence
first, so they hold every layer's graph until the error is known (as BPTT does).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .local import LossFn, check_rule_support, fixed_matrix, num_layers, run_layer, train_output_layer, \
    zero_missing_grads
from .models import ModelOutput, SpikingMLP, is_time_constant

FEEDBACK_RULES = ("fa", "dfa", "drtp")


class FeedbackLinear(torch.autograd.Function):
    """``y = x W^T + b`` whose backward sends ``g B`` (a fixed matrix shaped like ``W``) to the input instead of
    ``g W``; the weight and bias gradients are the usual ``g^T x`` and ``sum g``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                feedback: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        out = x @ weight.t()
        return out + bias if bias is not None else out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):  # type: ignore[override]
        x, feedback = ctx.saved_tensors
        g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
        grad_x = g @ feedback if ctx.needs_input_grad[0] else None
        grad_w = g2.t() @ x2 if ctx.needs_input_grad[1] else None
        grad_b = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def feedback_linear(layer: torch.nn.Linear, feedback: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``layer`` applied to ``h [T, B, n]`` with random feedback ``feedback`` in the backward pass (a
    time-constant input is processed once and broadcast, as the models do)."""
    if is_time_constant(h):
        y = FeedbackLinear.apply(h[0], layer.weight, layer.bias, feedback)
        return y.unsqueeze(0).expand(h.shape[0], *y.shape)
    return FeedbackLinear.apply(h, layer.weight, layer.bias, feedback)


def feedback_matrices(model: SpikingMLP, method: str, seed: int) -> list[torch.Tensor | None]:
    """The fixed matrices of ``method`` per layer: FA: ``B_l`` shaped like ``W_l`` for layers ``l >= 1`` (layer
    0's input needs no error); DFA/DRTP: ``B_l [C, n_l]`` for every hidden layer ``l``; ``None`` elsewhere."""
    dtype = model.linears[0].weight.dtype
    layers = num_layers(model)
    out: list[torch.Tensor | None] = [None] * layers
    if method == "fa":
        for i in range(1, layers):
            w = model.linears[i].weight
            out[i] = fixed_matrix(tuple(w.shape), seed, i, dtype)
        return out
    classes = model.sizes[-1]
    for i in range(layers - 1):
        out[i] = fixed_matrix((classes, model.sizes[i + 1]), seed, i, dtype)
    return out


def fa_backward(model: SpikingMLP, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                seed: int = 0) -> tuple[float, ModelOutput]:
    """Feedback-alignment gradients of one batch into ``.grad``: the network's forward pass with every layer's
    backward routed through its fixed random ``B_l`` instead of ``W_l``."""
    check_rule_support(model, "fa")
    mats = feedback_matrices(model, "fa", seed)
    h, hidden = x, []
    for i, lin in enumerate(model.linears):
        b = mats[i]
        current = feedback_linear(lin, b, h) if b is not None else _plain(lin, h)
        if i < len(model.neurons):
            h = model.neurons[i].run(current).spikes
            if i < num_layers(model) - 1:
                hidden.append(h)
        else:
            assert model.integrator is not None
            h, _ = model.integrator(current)
    loss = loss_fn(h, hidden, y)
    loss.backward()
    zero_missing_grads(model)
    return float(loss.detach()), ModelOutput(h.detach(), h.detach(), [s.detach() for s in hidden], [])


def _plain(lin: torch.nn.Linear, h: torch.Tensor) -> torch.Tensor:
    if is_time_constant(h):
        z = lin(h[0])
        return z.unsqueeze(0).expand(h.shape[0], *z.shape)
    return lin(h)


def dfa_backward(model: SpikingMLP, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                 seed: int = 0) -> tuple[float, ModelOutput]:
    """Direct-feedback-alignment gradients of one batch into ``.grad``: each hidden layer runs on its detached
    input and receives ``e B_l``, the output error ``e = dL/d(output) [T, B, C]`` projected by a fixed matrix."""
    check_rule_support(model, "dfa")
    mats = feedback_matrices(model, "dfa", seed)
    h, hidden = x, []
    for i in range(num_layers(model) - 1):
        h = run_layer(model, i, h.detach())
        hidden.append(h)
    out = run_layer(model, num_layers(model) - 1, h.detach())
    out_leaf = out.detach().requires_grad_(True)
    loss = loss_fn(out_leaf, [s.detach() for s in hidden], y)
    (e,) = torch.autograd.grad(loss, out_leaf)
    tensors, signals = [out], [e]
    for i, s in enumerate(hidden):
        b = mats[i]
        assert b is not None
        tensors.append(s)
        signals.append(e @ b)
    torch.autograd.backward(tensors, signals)
    zero_missing_grads(model)
    return float(loss.detach()), ModelOutput(out.detach(), out.detach(), [s.detach() for s in hidden], [])


def drtp_signal(y: torch.Tensor, b: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """DRTP's learning signal ``-y* B / (T N)`` for every step ``[T, N, n]`` (the one-hot target stands in for
    the sign of the output error; 1/(T N) matches a loss averaged over steps and samples)."""
    target = F.one_hot(y.long(), b.shape[0]).to(dtype)
    per_step = -(target @ b) / (steps * y.shape[0])
    return per_step.unsqueeze(0).expand(steps, *per_step.shape)


def drtp_backward(model: SpikingMLP, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                  seed: int = 0) -> tuple[float, ModelOutput]:
    """DRTP updates of one batch into ``.grad``: each hidden layer, on its detached input, is updated at once
    from the projected target (no output error, no backward pass through the network)."""
    check_rule_support(model, "drtp")
    mats = feedback_matrices(model, "drtp", seed)
    steps = x.shape[0]
    h, hidden = x, []
    for i in range(num_layers(model) - 1):
        s = run_layer(model, i, h.detach())
        b = mats[i]
        assert b is not None
        torch.autograd.backward(s, drtp_signal(y, b, steps, s.dtype))
        h = s.detach()
        hidden.append(h)
    out, loss = train_output_layer(model, h, y, hidden, loss_fn)
    zero_missing_grads(model)
    return float(loss), ModelOutput(out, out, hidden, [])


BACKWARDS = {"fa": fa_backward, "dfa": dfa_backward, "drtp": drtp_backward}
