"""Spike-timing-dependent plasticity (STDP): pair-based with traces, additive or multiplicative, and its
reward-modulated three-factor form (R-STDP).

Pair rule (time in steps; ``dt = t_post - t_pre``; every pre/post pair counts, "all-to-all")::

    Delta w(dt) = + A+ exp(-dt / tau+)     dt >= 0   (pre before post: potentiation; dt = 0 counts here)
    Delta w(dt) = - A- exp( dt / tau-)     dt <  0   (post before pre: depression)

Online with one trace per neuron (no spike history): each step first decays the traces, then adds the presynaptic
activity to its trace, applies both terms, and adds the postsynaptic spikes to theirs last::

    x_i[t] = exp(-1/tau+) x_i[t-1] + s_i[t]                  (presynaptic trace, this step's input included)
    dw_ji += A+(w) z_j[t] x_i[t]  -  A-(w) exp(-1/tau-) y_j[t-1] s_i[t]
    y_j[t] = exp(-1/tau-) y_j[t-1] + z_j[t]                   (postsynaptic trace)

so each pair is counted exactly once and the summed change of a pre spike at ``t_pre`` and a post spike at
``t_post`` is ``Delta w(t_post - t_pre)`` above. Amplitudes (``variant``):

- ``additive``: ``A+(w) = A+``, ``A-(w) = A-``, the weight is clipped to ``[w_min, w_max]`` after the update;
- ``multiplicative`` (soft bounds): ``A+(w) = A+ (w_max - w)``, ``A-(w) = A- (w - w_min)``.

Synaptic scaling (``normalize``, default on): after each update every neuron's incoming weight vector is scaled
back to the L2 norm it had before, a homeostatic constraint that stops the positive feedback of Hebbian learning
(more firing -> more potentiation -> more firing) from saturating the layer; STDP then only turns the weight vector
towards the inputs that make the neuron fire.

The presynaptic activity of the first layer is the encoded input (spikes, or analog currents with direct coding;
the trace then low-passes the current). Batches: the change is averaged over the samples.

Reward-modulated STDP (three factors: pre, post, reward). Each pair term feeds a per-sample eligibility trace
``e[t] = exp(-1/tau_e) e[t-1] + (pair terms at t)`` instead of the weight; a reward ``R`` arriving at the end of the
sequence turns it into a weight change ``Delta w = mean_b (R_b - mean R) e_b[T-1]``. In training the reward is
``+1`` for a sample the read-out classifies correctly and ``-1`` otherwise (the batch mean is the baseline).

In training (``local.method: stdp``) the hidden layers learn by STDP alone (unsupervised; with ``stdp_reward`` the
reward is their only supervision) and the output layer is a supervised read-out trained by the true gradient of the
task loss on the hidden spikes (the optimizer and ``lr`` apply to it only). The STDP change is written into the
weights directly, outside the optimizer, and the hidden layers' ``.grad`` is left at zero.

:func:`bptt_weight_change` gives the other side of seed 004's comparison: the weight change BPTT makes for one
input spike at ``t_pre`` when the error arrives at ``t_post`` (``beta^dt`` for ``dt >= 0``, zero before): the
causal half of the STDP window, found by gradient descent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .kernels import lowpass
from .local import LossFn, check_rule_support, num_layers, run_layer, train_output_layer, zero_missing_grads
from .models import ModelOutput, SpikingMLP
from .neurons import LIF

STDP_VARIANTS = ("additive", "multiplicative")


@dataclass(frozen=True)
class STDPParams:
    """Amplitudes, time constants (in steps) and weight bounds of the pair rule; ``reward``: three-factor R-STDP
    with eligibility time constant ``tau_eligibility`` (steps)."""

    a_plus: float = 1e-4
    a_minus: float = 1.05e-4
    tau_plus: float = 5.0
    tau_minus: float = 5.0
    variant: str = "additive"
    w_min: float = -1.0
    w_max: float = 1.0
    reward: bool = False
    tau_eligibility: float = 25.0
    normalize: bool = True

    def __post_init__(self) -> None:
        for name in ("a_plus", "a_minus"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"stdp_{name} must be a finite number >= 0, got {v!r}")
        for name in ("tau_plus", "tau_minus", "tau_eligibility"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"stdp_{name} must be a finite number of steps > 0, got {v!r}")
        if self.variant not in STDP_VARIANTS:
            raise ValueError(f"unknown stdp_variant {self.variant!r}; valid: {', '.join(STDP_VARIANTS)}")
        if not (math.isfinite(self.w_min) and math.isfinite(self.w_max) and self.w_min < self.w_max):
            raise ValueError(f"need finite stdp_w_min < stdp_w_max, got {self.w_min!r}, {self.w_max!r}")


def stdp_window(dt: torch.Tensor | float, params: STDPParams) -> torch.Tensor:
    """The closed-form pair window ``Delta w(dt)`` (additive amplitudes; ``dt = t_post - t_pre`` in steps)."""
    dt = torch.as_tensor(dt, dtype=torch.float64)
    return torch.where(dt >= 0, params.a_plus * torch.exp(-dt / params.tau_plus),
                       -params.a_minus * torch.exp(dt / params.tau_minus))


def _traces(pre: torch.Tensor, post: torch.Tensor, params: STDPParams) -> tuple[torch.Tensor, torch.Tensor]:
    """``x[t]`` (pre trace including step t) and ``d- y[t-1]`` (post trace decayed to step t, excluding it)."""
    d_plus, d_minus = math.exp(-1.0 / params.tau_plus), math.exp(-1.0 / params.tau_minus)
    x = lowpass(pre, d_plus)
    y = lowpass(post, d_minus)
    y_before = torch.cat([torch.zeros_like(y[:1]), y[:-1]]) * d_minus
    return x, y_before


def stdp_delta(pre: torch.Tensor, post: torch.Tensor, params: STDPParams, weight: torch.Tensor | None = None,
               reward: torch.Tensor | None = None) -> torch.Tensor:
    """The weight change ``[H, I]`` of the pair rule for presynaptic activity ``pre [T, B, I]`` and postsynaptic
    spikes ``post [T, B, H]`` (averaged over the batch). ``weight [H, I]``: needed by the multiplicative
    variant. ``reward [B]``: R-STDP, the change is ``mean_b R_b e_b[T-1]`` (pass the baseline-subtracted reward)."""
    if pre.dim() != 3 or post.dim() != 3 or pre.shape[:2] != post.shape[:2]:
        raise ValueError(f"pre and post must be [T, B, features] with the same T and B, got {list(pre.shape)} and "
                         f"{list(post.shape)}")
    steps, batch = pre.shape[:2]
    with torch.no_grad():
        x, y_before = _traces(pre, post, params)
        post_w, y_w = post, y_before
        if reward is not None:
            if reward.shape != (batch,):
                raise ValueError(f"reward must have one value per sample [{batch}], got {list(reward.shape)}")
            d_e = math.exp(-1.0 / params.tau_eligibility)
            k = d_e ** torch.arange(steps - 1, -1, -1, dtype=pre.dtype)  # decay of e from step t to T-1
            scale = (k[:, None] * reward.to(pre.dtype)[None, :]).unsqueeze(-1)
            post_w, y_w = post * scale, y_before * scale
        ltp = torch.einsum("tbh,tbi->hi", post_w, x) / batch
        ltd = torch.einsum("tbh,tbi->hi", y_w, pre) / batch
        if params.variant == "multiplicative":
            if weight is None:
                raise ValueError("stdp_variant=multiplicative needs the current weight (soft bounds)")
            return params.a_plus * (params.w_max - weight) * ltp - params.a_minus * (weight - params.w_min) * ltd
        return params.a_plus * ltp - params.a_minus * ltd


def apply_stdp_(weight: torch.Tensor, delta: torch.Tensor, params: STDPParams) -> None:
    """``weight += delta`` in place; with ``normalize`` each row (a neuron's incoming weights) is rescaled to its
    L2 norm before the update (synaptic scaling); the additive variant then clips to ``[w_min, w_max]``."""
    with torch.no_grad():
        norms = weight.norm(dim=1, keepdim=True) if params.normalize else None
        weight.add_(delta.to(weight.dtype))
        if norms is not None:
            weight.mul_(norms / weight.norm(dim=1, keepdim=True).clamp_min(1e-12))
        if params.variant == "additive":
            weight.clamp_(params.w_min, params.w_max)


def pair_weight_change(dt: int, params: STDPParams, steps: int | None = None) -> float:
    """The implemented rule's change for one pre spike and one post spike ``dt`` steps later (``dt < 0``: the post
    spike first), measured with :func:`stdp_delta` on a single synapse at weight 0."""
    steps = steps if steps is not None else 2 * abs(dt) + 3
    t_pre = abs(dt) + 1
    pre, post = torch.zeros(steps, 1, 1, dtype=torch.float64), torch.zeros(steps, 1, 1, dtype=torch.float64)
    pre[t_pre, 0, 0] = 1.0
    post[t_pre + dt, 0, 0] = 1.0
    return float(stdp_delta(pre, post, params, torch.zeros(1, 1, dtype=torch.float64))[0, 0])


def bptt_weight_change(dt: int, beta: float, steps: int | None = None) -> float:
    """Seed 004's comparison: the weight change ``-dL/dw`` BPTT makes through a LIF neuron (this library's, no
    spikes) with one input spike at ``t_pre`` when the error ``L = -U[t_post]`` arrives at ``t_post = t_pre + dt``.
    ``beta^dt`` for ``dt >= 0`` (the membrane's memory of the input), zero for ``dt < 0`` (causality)."""
    steps = steps if steps is not None else 2 * abs(dt) + 3
    t_pre = abs(dt) + 1
    neuron = LIF(1, beta=beta, threshold=1e9)
    w = torch.ones((), dtype=torch.float64, requires_grad=True)
    pre = torch.zeros(steps, 1, 1, dtype=torch.float64)
    pre[t_pre] = 1.0
    mem = neuron.to(torch.float64).run(pre * w).membrane
    (grad,) = torch.autograd.grad(-mem[t_pre + dt, 0, 0], w)
    return float(-grad) + 0.0  # no negative zero before the input spike


def stdp_backward(model: SpikingMLP, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, params: STDPParams,
                  predict: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, ModelOutput]:
    """One batch: STDP (or R-STDP) on every hidden layer, written into the weights; the read-out's task-loss
    gradient into ``.grad`` (zeros for the hidden layers). ``predict(output) -> labels``: R-STDP's reward
    (default: the arg-max of the output summed over time). Returns the task loss and the output."""
    check_rule_support(model, "stdp")
    inputs, spikes = [], []
    with torch.no_grad():
        h = x
        for i in range(num_layers(model) - 1):
            s = run_layer(model, i, h)
            inputs.append(h)
            spikes.append(s)
            h = s
    out, loss = train_output_layer(model, h, y, spikes, loss_fn)
    reward = None
    if params.reward:
        guess = predict(out) if predict is not None else out.sum(0).argmax(-1)
        r = (guess == y).to(x.dtype) * 2 - 1
        reward = r - r.mean()
    for i, (pre, post) in enumerate(zip(inputs, spikes)):
        w = model.linears[i].weight
        apply_stdp_(w, stdp_delta(pre.to(w.dtype), post.to(w.dtype), params, w.detach(), reward), params)
    zero_missing_grads(model)
    return float(loss), ModelOutput(out, out, spikes, [])
