"""e-prop for more than one hidden layer: eligibility traces in every layer, learning signals broadcast from the
read-out (Bellec et al. 2020, with the deep-network variant of random broadcast feedback).

Each spiking layer ``l`` (``H_l`` neurons) runs the one-layer e-prop of :mod:`spikefed.snn.online` on its own
presynaptic vector ``p_l[t] = [z_{l-1}[t], z_l[t-1] (recurrent), 1]`` (``z_0 = x``): the spikes of the layer
below enter as input, never as a function of the lower weights (the e-prop approximation, applied across layers as
it is applied across neurons)::

    eps_l[t]  = A_l[t] eps_l[t-1] + p_l[t]        e_l[t] = psi_l[t] eps_l[t]
    ebar_l[t] = kappa ebar_l[t-1] + e_l[t]
    y[t]      = kappa y[t-1] + W_out z_L[t] + b_out                                  (leaky read-out on the top layer)
    L_l[t]    = delta[t] B_l,   delta[t] = dE_t/dy[t]
    dE/dW_l  ~= sum_t L_l[t] ebar_l[t]

Feedback ``B_l``: the top layer uses the read-out weights (``eprop_feedback: symmetric``) or the fixed random
matrix of random e-prop; every lower layer uses a fixed random matrix ``[C, H_l]`` drawn from
``(eprop_feedback_seed, LOCAL_RULE, l)`` (there are no weights from a lower layer to the read-out to be symmetric
with). The state carried is one step's per layer, so memory does not depend on T.

For non-recurrent layers with a detached reset this is exact where it can be: the top layer's gradient equals BPTT
with the lower layers' spikes held fixed, each lower layer's equals a direct-feedback update that sends
``(dE/d(read-out current)) B_l`` into its spikes (the tests check both against autograd). Supported: neurons
``lif``, ``if``, ``rlif`` (no adaptation), otherwise as :func:`spikefed.snn.online.eprop_support`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .kernels import lif_update
from .local import fixed_matrix
from .models import SpikingMLP
from .neurons import IF, LIF, RECURRENT_NEURONS, RecurrentLIF
from .online import FEEDBACKS, EpropLayer, Readout, feedback_matrix, eprop_loss_reason, loss_weights, presynaptic
from .surrogate import heaviside


class DeepState(NamedTuple):
    """Per layer ``v, z [B, H_l]``, ``eps_v``, ``ebar`` ``[B, H_l, P_l]``, ``grads [H_l, P_l]``; the read-out
    ``y``, filtered top spikes ``zbar``, ``onebar``, its gradients and the loss (one step's state)."""

    v: list[torch.Tensor]
    z: list[torch.Tensor]
    eps_v: list[torch.Tensor]
    ebar: list[torch.Tensor]
    grads: list[torch.Tensor]
    y: torch.Tensor
    zbar: torch.Tensor
    onebar: torch.Tensor
    grad_out: torch.Tensor
    grad_out_bias: torch.Tensor
    loss: torch.Tensor


def deep_support(model: torch.nn.Module, reduction: str = "time_mean", population: int = 1) -> str | None:
    """``None`` if deep e-prop can train ``model``, else the reason."""
    if not isinstance(model, SpikingMLP):
        return f"e-prop trains a SpikingMLP, got {type(model).__name__}"
    if model.readout != "membrane":
        return "e-prop needs the leaky read-out (model.readout=membrane), got readout=spikes"
    for neuron in model.neurons:
        if type(neuron) not in (LIF, IF, RecurrentLIF):
            return (f"e-prop with several hidden layers supports neurons lif, if, rlif (model.neuron), got "
                    f"{type(neuron).__name__}")
        if any(n != "recurrent" and p.requires_grad for n, p in neuron.named_parameters()):
            return "e-prop computes weight and bias gradients only; turn off model.learn_beta / learn_threshold"
        if neuron.refractory or neuron.graded:
            return "e-prop does not support refractory periods or graded spikes"
    if any(p.requires_grad for p in model.integrator.parameters()) or model.integrator.beta.dim():
        return "e-prop needs a fixed scalar read-out decay"
    return eprop_loss_reason(reduction, population)


def deep_modules(model: SpikingMLP, feedback: str = "symmetric",
                 seed: int = 0) -> tuple[list[EpropLayer], Readout, list[torch.Tensor]]:
    """The e-prop view of every hidden layer, the read-out, and the feedback matrix of every layer."""
    if feedback not in FEEDBACKS:
        raise ValueError(f"unknown e-prop feedback {feedback!r}; valid: {', '.join(FEEDBACKS)}")
    layers = []
    for lin, neuron in zip(model.linears[:-1], model.neurons):
        recurrent = isinstance(neuron, RECURRENT_NEURONS)
        parts = [lin.weight] + ([neuron.recurrent] if recurrent else []) + \
                ([lin.bias.unsqueeze(1)] if lin.bias is not None else [])
        layers.append(EpropLayer(torch.cat([p.detach() for p in parts], 1), recurrent, lin.bias is not None,
                                 neuron.beta.detach(), neuron.threshold.detach(), neuron.reset_value.detach(),
                                 neuron.reset, neuron.surrogate))
    out = model.linears[-1]
    w_out = out.weight.detach()
    top = w_out if feedback == "symmetric" else feedback_matrix(tuple(w_out.shape), seed, w_out.dtype)
    classes = w_out.shape[0]
    mats = [fixed_matrix((classes, layer.weight.shape[0]), seed, i, w_out.dtype) for i, layer in
            enumerate(layers[:-1])] + [top]
    bias = out.bias.detach() if out.bias is not None else None
    return layers, Readout(w_out, bias, model.integrator.beta.detach(), top), mats


def deep_init(layers: list[EpropLayer], readout: Readout, batch: int) -> DeepState:
    w0 = readout.weight
    zeros = [layer.weight.new_zeros(batch, layer.weight.shape[0]) for layer in layers]
    return DeepState(
        v=zeros, z=zeros, eps_v=[layer.weight.new_zeros(batch, 1, layer.weight.shape[1]) for layer in layers],
        ebar=[layer.weight.new_zeros(batch, *layer.weight.shape) for layer in layers],
        grads=[torch.zeros_like(layer.weight) for layer in layers], y=w0.new_zeros(batch, w0.shape[0]),
        zbar=zeros[-1], onebar=w0.new_zeros(()), grad_out=torch.zeros_like(w0),
        grad_out_bias=w0.new_zeros(w0.shape[0]), loss=w0.new_zeros(()))


def deep_step(layers: list[EpropLayer], readout: Readout, mats: list[torch.Tensor], s: DeepState,
              x_t: torch.Tensor, target: torch.Tensor, loss_weight: float) -> DeepState:
    """One time step of every layer, the read-out, the traces and the gradient accumulation (pure)."""
    kappa = readout.kappa
    vs, zs, epss, ebars = [], [], [], []
    inp = x_t
    for layer, v_prev, z_prev, eps_prev, ebar_prev in zip(layers, s.v, s.z, s.eps_v, s.ebar):
        p = presynaptic(layer, inp, z_prev)
        v = lif_update(v_prev, p @ layer.weight.t(), z_prev, layer.beta, layer.threshold, layer.reset_value,
                       layer.reset)  # type: ignore[arg-type]
        z = heaviside(v - layer.threshold)
        psi = layer.surrogate.derivative(v - layer.threshold)
        decay = layer.beta * (1 - z_prev) if layer.reset == "zero" else layer.beta
        decay = decay.unsqueeze(-1) if decay.dim() else decay
        eps = decay * eps_prev + p.unsqueeze(1)
        ebars.append(kappa * ebar_prev + psi.unsqueeze(-1) * eps)
        vs.append(v)
        zs.append(z)
        epss.append(eps)
        inp = z
    top = zs[-1]
    y = kappa * s.y + top @ readout.weight.t()
    if readout.bias is not None:
        y = y + readout.bias
    zbar, onebar = kappa * s.zbar + top, kappa * s.onebar + 1
    grads, grad_out, grad_out_bias, loss = s.grads, s.grad_out, s.grad_out_bias, s.loss
    if loss_weight:
        delta = (torch.softmax(y, 1) - F.one_hot(target, y.shape[1]).to(y.dtype)) * (loss_weight / y.shape[0])
        grads = [g + torch.einsum("bj,bjp->jp", delta @ b, e) for g, b, e in zip(grads, mats, ebars)]
        grad_out = grad_out + delta.t() @ zbar
        grad_out_bias = grad_out_bias + delta.sum(0) * onebar
        loss = loss + loss_weight * F.cross_entropy(y, target)
    return DeepState(vs, zs, epss, ebars, grads, y, zbar, onebar, grad_out, grad_out_bias, loss)


def _accumulate(param: torch.Tensor | None, grad: torch.Tensor) -> None:
    if param is not None:
        grad = grad.to(param.dtype)
        param.grad = grad.clone() if param.grad is None else param.grad + grad


def deep_eprop_backward(model: SpikingMLP, x: torch.Tensor, target: torch.Tensor, reduction: str = "time_mean",
                        feedback: str = "symmetric", feedback_seed: int = 0,
                        record: bool = True) -> tuple[float, torch.Tensor | None]:
    """Deep e-prop gradients of one batch added to ``.grad``; the loss and (if ``record``) the read-out trace."""
    reason = deep_support(model, reduction)
    if reason is not None:
        raise ValueError(reason)
    layers, readout, mats = deep_modules(model, feedback, feedback_seed)
    ys = []
    with torch.no_grad():
        state = deep_init(layers, readout, x.shape[1])
        for t, w in enumerate(loss_weights(x.shape[0], reduction)):
            state = deep_step(layers, readout, mats, state, x[t], target, w)
            if record:
                ys.append(state.y)
    for i, (layer, grad) in enumerate(zip(layers, state.grads)):
        lin, neuron = model.linears[i], model.neurons[i]
        n_in = lin.weight.shape[1]
        _accumulate(lin.weight, grad[:, :n_in])
        if layer.recurrent:
            _accumulate(neuron.recurrent, grad[:, n_in:n_in + grad.shape[0]])
        if layer.bias:
            _accumulate(lin.bias, grad[:, -1])
    _accumulate(model.linears[-1].weight, state.grad_out)
    _accumulate(model.linears[-1].bias, state.grad_out_bias)
    return float(state.loss), (torch.stack(ys) if record else None)
