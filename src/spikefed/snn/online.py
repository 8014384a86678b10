"""Online learning with eligibility propagation (e-prop, Bellec et al. 2020): gradients carried forward in time.

BPTT stores the whole trajectory and runs backward over it, so its memory grows with the sequence length T.
e-prop computes an approximate gradient in one forward pass: every synapse carries an *eligibility vector*
(the derivative of its postsynaptic neuron's hidden state with respect to the weight, through that neuron's own
dynamics only), the loss at step t gives each neuron a *learning signal*, and the weight gradient is their product
summed over time (the seeds' three-factor rule ``dw ~ e * phi(u) * x``). The state kept is that of one step;
memory does not depend on T and no autograd graph is built over time.

Network (one spiking layer of H neurons, leaky read-out of C units; ``p[t]``: the presynaptic vector, the input
``x[t]``, for recurrent layers also the previous spikes ``z[t-1]``, and a constant 1 for the bias)::

    a[t] = rho a[t-1] + z[t-1]                             (ALIF only; theta[t] = thr + gamma a[t], else thr)
    v[t] = lif_update(v[t-1], W p[t], r[t] = z[t-1])      (the model's reset mode, see spikefed.snn.kernels)
    z[t] = H(v[t] - theta[t]),   psi[t] = sg'(v[t] - theta[t])         (the model's surrogate derivative)
    y[t] = kappa y[t-1] + W_out z[t] + b_out                            (leaky read-out, kappa its decay)

Eligibility vectors and traces (per synapse ``j <- i``; ``A[t] = dv[t]/dv[t-1]`` with the reset signal held
constant: ``beta``, or ``beta (1 - r[t])`` for reset "zero")::

    eps_v[t] = A[t] eps_v[t-1] + p_i[t]
    eps_a[t] = rho eps_a[t-1] + e[t-1]                      (ALIF whose spikes feed the threshold, else 0)
    e[t]     = psi_j[t] (eps_v[t] - gamma eps_a[t])         (eligibility trace)
    ebar[t]  = kappa ebar[t-1] + e[t]                       (filtered by the read-out's decay)

Loss ``E = sum_t w_t mean_b CE(y[t, b], label_b)``, which decomposes over time: ``w_t = 1/T`` (the
``ce_membrane`` loss with ``membrane_reduction: time_mean``) or ``w_t = 1[t = T-1]`` (``last``). With
``delta[t] = dE_t/dy[t]`` the learning signal and the gradients are::

    L_j[t]       = sum_k B_kj delta_k[t]     (B = W_out: symmetric e-prop; a fixed random matrix: random e-prop)
    dE/dW_ji    ~= sum_t L_j[t] ebar_ji[t]
    dE/dW_out,kj = sum_t delta_k[t] zbar_j[t],   zbar[t] = kappa zbar[t-1] + z[t]   (exact)

What e-prop keeps and what it drops, relative to BPTT through the same model (autograd):

- kept: the implicit membrane recurrence, and for ALIF the path spike -> own threshold (Bellec's ``eps_a``),
  which this library's ALIF differentiates only when ``detach_reset=False`` (e-prop follows the model there);
- dropped: the reset path (``r[t]`` treated as a constant, as with ``detach_reset=True``), and every path through
  other neurons' spikes: the recurrent input ``V z[t-1]`` enters only as a presynaptic signal, never as a
  function of W. Losses at later steps reach a spike only through the read-out filter.

So e-prop equals BPTT exactly (symmetric feedback) for a non-recurrent layer whose reset carries no gradient
(``detach_reset=True`` or ``reset="none"``; for ALIF with spikes feeding the threshold, ``reset="none"``), and is
the gradient of BPTT with those paths cut otherwise (the tests check both, against autograd).

Supported: :class:`~spikefed.snn.models.SpikingMLP` ``[in, hidden, out]`` (one spiking layer; several hidden
layers: :mod:`spikefed.snn.eprop_deep`, which :func:`eprop_backward` calls for them) with
``readout="membrane"``, neuron ``lif``, ``if``, ``alif``, ``rlif`` or ``ralif`` (recurrent ALIF), without
trainable neuron parameters, refractory period or graded spikes; loss ``ce_membrane`` with ``membrane_reduction``
``time_mean`` or ``last``.
Anything else is refused by :func:`eprop_support` with the reason.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..seeding import Purpose, torch_generator
from .kernels import lif_update
from .models import SpikingMLP
from .neurons import ALIF, IF, LIF, RECURRENT_NEURONS, RecurrentALIF, RecurrentLIF
from .surrogate import Surrogate, heaviside

FEEDBACKS = ("symmetric", "random")
#: ``membrane_reduction`` values of the ``ce_membrane`` loss that decompose over time (e-prop's losses)
EPROP_REDUCTIONS = ("time_mean", "last")


class EpropLayer(NamedTuple):
    """A spiking layer as e-prop sees it. ``weight [H, P]`` acts on the presynaptic vector ``p = [x, z_prev, 1]``
    (``z_prev`` only if ``recurrent``, the 1 only if ``bias``). ``rho``/``gamma`` are ``None`` for LIF;
    ``adapt_grad``: spikes carry gradient into the ALIF threshold."""

    weight: torch.Tensor
    recurrent: bool
    bias: bool
    beta: torch.Tensor
    threshold: torch.Tensor
    reset_value: torch.Tensor
    reset: str
    surrogate: Surrogate
    rho: torch.Tensor | None = None
    gamma: torch.Tensor | None = None
    adapt_grad: bool = False


class Readout(NamedTuple):
    """Leaky read-out ``y[t] = kappa y[t-1] + weight z[t] + bias``; ``feedback [C, H]`` routes the learning signal."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    kappa: torch.Tensor
    feedback: torch.Tensor


class EpropState(NamedTuple):
    """Everything carried from one step to the next (nothing grows with T).

    ``v, a, z``: membrane, adaptation and last spikes ``[B, H]``; ``y``: read-out ``[B, C]``; ``eps_v``
    ``[B, H or 1, P]``, ``eps_a``, ``e``, ``ebar`` ``[B, H, P]`` (``eps_a``/``e`` ``None`` without adaptation
    gradient); ``zbar [B, H]``, ``onebar`` (scalar): filtered spikes and bias input of the read-out;
    ``grad [H, P]``, ``grad_out [C, H]``, ``grad_out_bias [C]``: the gradients accumulated so far; ``loss``."""

    v: torch.Tensor
    a: torch.Tensor | None
    z: torch.Tensor
    y: torch.Tensor
    eps_v: torch.Tensor
    eps_a: torch.Tensor | None
    e: torch.Tensor | None
    ebar: torch.Tensor
    zbar: torch.Tensor
    onebar: torch.Tensor
    grad: torch.Tensor
    grad_out: torch.Tensor
    grad_out_bias: torch.Tensor
    loss: torch.Tensor


def eprop_init(layer: EpropLayer, readout: Readout, batch: int) -> EpropState:
    """The resting state: every potential, trace and accumulated gradient at zero."""
    w = layer.weight
    hidden, pre = w.shape
    z = w.new_zeros(batch, hidden)
    adapt = layer.rho is not None
    full = w.new_zeros(batch, hidden, pre)
    return EpropState(
        v=z, a=z if adapt else None, z=z, y=w.new_zeros(batch, readout.weight.shape[0]),
        eps_v=w.new_zeros(batch, 1, pre), eps_a=full if layer.adapt_grad else None,
        e=full if layer.adapt_grad else None, ebar=full, zbar=z, onebar=w.new_zeros(()),
        grad=torch.zeros_like(w), grad_out=torch.zeros_like(readout.weight),
        grad_out_bias=w.new_zeros(readout.weight.shape[0]), loss=w.new_zeros(()))


def presynaptic(layer: EpropLayer, x_t: torch.Tensor, z_prev: torch.Tensor) -> torch.Tensor:
    """``p[t] = [x[t], z[t-1] (recurrent), 1 (bias)]`` of shape ``[B, P]``."""
    parts = [x_t]
    if layer.recurrent:
        parts.append(z_prev)
    if layer.bias:
        parts.append(x_t.new_ones(x_t.shape[0], 1))
    return torch.cat(parts, 1) if len(parts) > 1 else x_t


def _per_synapse(value: torch.Tensor) -> torch.Tensor:
    """A per-neuron quantity (``[H]`` or ``[B, H]``) broadcast over the presynaptic axis; scalars unchanged."""
    return value.unsqueeze(-1) if value.dim() else value


def eprop_step(layer: EpropLayer, readout: Readout, state: EpropState, x_t: torch.Tensor,
               target: torch.Tensor, loss_weight: float) -> EpropState:
    """One time step: neuron and read-out dynamics, eligibility traces, learning signal, gradient accumulation.

    ``x_t [B, I]``; ``target [B]`` class indices; ``loss_weight``: ``w_t`` of the instantaneous loss
    ``w_t mean_b CE(y[t, b], target_b)`` (0 skips the loss of this step). Pure: returns the new state.
    """
    s = state
    p = presynaptic(layer, x_t, s.z)
    r = s.z  # reset signal r[t] = z[t-1]
    a = None
    theta = layer.threshold
    if layer.rho is not None:
        a = layer.rho * s.a + r
        theta = layer.threshold + layer.gamma * a
    v = lif_update(s.v, p @ layer.weight.t(), r, layer.beta, layer.threshold, layer.reset_value,
                   layer.reset)  # type: ignore[arg-type]
    z = heaviside(v - theta)
    psi = layer.surrogate.derivative(v - theta)
    # eligibility vector of the membrane: dv[t]/dv[t-1] with the reset held constant
    decay = layer.beta * (1 - r) if layer.reset == "zero" else layer.beta
    eps_v = _per_synapse(decay) * s.eps_v + p.unsqueeze(1)
    eps_a = e = None
    if layer.adapt_grad:
        eps_a = _per_synapse(layer.rho) * s.eps_a + s.e
        e = psi.unsqueeze(-1) * (eps_v - _per_synapse(layer.gamma) * eps_a)
        trace = e
    else:
        trace = psi.unsqueeze(-1) * eps_v
    kappa = readout.kappa
    ebar = kappa * s.ebar + trace
    zbar = kappa * s.zbar + z
    onebar = kappa * s.onebar + 1
    y = kappa * s.y + z @ readout.weight.t()
    if readout.bias is not None:
        y = y + readout.bias
    grad, grad_out, grad_out_bias, loss = s.grad, s.grad_out, s.grad_out_bias, s.loss
    if loss_weight:
        batch = y.shape[0]
        delta = (torch.softmax(y, 1) - F.one_hot(target, y.shape[1]).to(y.dtype)) * (loss_weight / batch)
        signal = delta @ readout.feedback  # learning signal L[t] [B, H]
        grad = grad + torch.einsum("bj,bjp->jp", signal, ebar)
        grad_out = grad_out + delta.t() @ zbar
        grad_out_bias = grad_out_bias + delta.sum(0) * onebar
        loss = loss + loss_weight * F.cross_entropy(y, target)
    return EpropState(v, a, z, y, eps_v, eps_a, e, ebar, zbar, onebar, grad, grad_out, grad_out_bias, loss)


def loss_weights(steps: int, reduction: str) -> list[float]:
    """``w_t`` of the instantaneous losses: ``1/T`` each (``time_mean``) or only the last step (``last``)."""
    if reduction == "time_mean":
        return [1.0 / steps] * steps
    if reduction == "last":
        return [0.0] * (steps - 1) + [1.0]
    raise ValueError(f"e-prop needs a loss that decomposes over time: membrane_reduction must be one of "
                     f"{', '.join(EPROP_REDUCTIONS)}, got {reduction!r} (the max over time is not online)")


def eprop_run(layer: EpropLayer, readout: Readout, x: torch.Tensor, target: torch.Tensor,
              reduction: str = "time_mean", record: bool = True) -> tuple[EpropState, torch.Tensor | None]:
    """Run e-prop over ``x [T, B, I]``; returns the final state (gradients, loss) and, if ``record``, the
    read-out trace ``y [T, B, C]`` (kept for metrics only; ``record=False`` keeps memory independent of T)."""
    weights = loss_weights(x.shape[0], reduction)
    with torch.no_grad():
        state = eprop_init(layer, readout, x.shape[1])
        ys = []
        for t in range(x.shape[0]):
            state = eprop_step(layer, readout, state, x[t], target, weights[t])
            if record:
                ys.append(state.y)
    return state, (torch.stack(ys) if record else None)


def state_bytes(state: EpropState) -> int:
    """Bytes held by an :class:`EpropState` (distinct tensors counted once)."""
    seen: dict[int, int] = {}
    for t in state:
        if isinstance(t, torch.Tensor):
            seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


# -- the model shell: SpikingMLP -> (EpropLayer, Readout), gradients into .grad ------------------------------

def eprop_loss_reason(reduction: str, population: int) -> str | None:
    """``None`` if e-prop can train with this loss (it must decompose over time, one neuron per class), else the
    reason naming the setting."""
    if reduction not in EPROP_REDUCTIONS:
        return (f"e-prop needs a loss that decomposes over time: loss=ce_membrane with membrane_reduction "
                f"{' or '.join(EPROP_REDUCTIONS)}, got membrane_reduction={reduction}")
    if population != 1:
        return f"e-prop does not support population coding (population must be 1, got {population})"
    return None


def eprop_support(model: torch.nn.Module, reduction: str = "time_mean", population: int = 1) -> str | None:
    """``None`` if e-prop can train ``model`` with this loss, else the reason (naming the setting to change)."""
    if not isinstance(model, SpikingMLP):
        return f"e-prop trains a SpikingMLP, got {type(model).__name__}"
    if model.readout != "membrane":
        return "e-prop needs the leaky read-out (model.readout=membrane), got readout=spikes"
    if len(model.sizes) > 3:  # several hidden layers: spikefed.snn.eprop_deep
        from .eprop_deep import deep_support

        return deep_support(model, reduction, population)
    if len(model.sizes) != 3:
        return f"e-prop trains spiking hidden layers (model.hidden must not be empty), got sizes {model.sizes}"
    neuron = model.neurons[0]
    if type(neuron) not in (LIF, IF, ALIF, RecurrentLIF, RecurrentALIF):
        return f"e-prop supports neurons lif, if, alif, rlif, ralif (model.neuron), got {type(neuron).__name__}"
    trainable = [n for n, p in neuron.named_parameters() if n != "recurrent" and p.requires_grad]
    trainable += [f"integrator.{n}" for n, p in model.integrator.named_parameters() if p.requires_grad]
    if trainable:
        return (f"e-prop computes weight and bias gradients only; turn off trainable neuron parameters "
                f"(model.learn_beta / learn_threshold), got {', '.join(trainable)}")
    if neuron.refractory or neuron.graded:
        return "e-prop does not support refractory periods or graded spikes"
    if model.integrator.beta.dim():
        return "e-prop needs a scalar read-out decay"
    return eprop_loss_reason(reduction, population)


def feedback_matrix(shape: tuple[int, int], seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The fixed random feedback matrix of random e-prop, ``N(0, 1/H)`` entries, drawn from ``(seed, 3001)``."""
    gen = torch_generator(int(seed), Purpose.EPROP_FEEDBACK)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) / shape[1] ** 0.5).to(dtype)


def eprop_modules(model: torch.nn.Module, feedback: str = "symmetric",
                  feedback_seed: int = 0) -> tuple[EpropLayer, Readout]:
    """The e-prop view of a supported :class:`SpikingMLP` (see :func:`eprop_support`); parameters detached."""
    if feedback not in FEEDBACKS:
        raise ValueError(f"unknown e-prop feedback {feedback!r}; valid: {', '.join(FEEDBACKS)}")
    lin, out = model.linears[0], model.linears[1]
    neuron = model.neurons[0]
    recurrent = isinstance(neuron, RECURRENT_NEURONS)
    parts = [lin.weight] + ([neuron.recurrent] if recurrent else []) + \
            ([lin.bias.unsqueeze(1)] if lin.bias is not None else [])
    weight = torch.cat([p.detach() for p in parts], 1)
    adapt = isinstance(neuron, ALIF)
    w_out = out.weight.detach()
    fb = w_out if feedback == "symmetric" else feedback_matrix(tuple(w_out.shape), feedback_seed, w_out.dtype)
    layer = EpropLayer(weight, recurrent, lin.bias is not None, neuron.beta.detach(), neuron.threshold.detach(),
                       neuron.reset_value.detach(), neuron.reset, neuron.surrogate,
                       neuron.rho.detach() if adapt else None, neuron.gamma.detach() if adapt else None,
                       adapt and not neuron.detach_reset)
    bias = out.bias.detach() if out.bias is not None else None
    return layer, Readout(w_out, bias, model.integrator.beta.detach(), fb)


def _accumulate(param: torch.Tensor | None, grad: torch.Tensor) -> None:
    if param is None:
        return
    grad = grad.to(param.dtype)
    param.grad = grad.clone() if param.grad is None else param.grad + grad


def eprop_backward(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, reduction: str = "time_mean",
                   feedback: str = "symmetric", feedback_seed: int = 0,
                   record: bool = True) -> tuple[float, torch.Tensor | None]:
    """e-prop gradients of a supported model on one batch, added to the parameters' ``.grad`` (like
    ``loss.backward()``). Returns the loss and (if ``record``) the read-out trace ``[T, B, C]``."""
    reason = eprop_support(model, reduction)
    if reason is not None:
        raise ValueError(reason)
    if len(model.sizes) > 3:
        from .eprop_deep import deep_eprop_backward

        return deep_eprop_backward(model, x, target, reduction, feedback, feedback_seed, record)
    layer, readout = eprop_modules(model, feedback, feedback_seed)
    state, ys = eprop_run(layer, readout, x, target, reduction, record)
    lin, out = model.linears[0], model.linears[1]
    n_in = lin.weight.shape[1]
    _accumulate(lin.weight, state.grad[:, :n_in])
    if layer.recurrent:
        _accumulate(model.neurons[0].recurrent, state.grad[:, n_in:n_in + state.grad.shape[0]])
    if layer.bias:
        _accumulate(lin.bias, state.grad[:, -1])
    _accumulate(out.weight, state.grad_out)
    _accumulate(out.bias, state.grad_out_bias)
    return float(state.loss), ys
