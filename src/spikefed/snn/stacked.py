"""Stacked (cohort) forward: K copies of a model, one per client, run as one batched computation.

Every trained parameter is stacked per copy into a ``[K, ...]`` tensor. Two forwards take such stacks:

- :func:`vmap_forward`, the generic one: the model's own ``forward`` run over the stacks with
  ``torch.func.functional_call`` + ``torch.func.vmap`` (K is the vmapped axis). Linear layers become batched
  matmuls, convolutions grouped convolutions (PyTorch's batching rules), and the fused neuron kernels
  (:mod:`.kernels`) carry their own batching rule that runs one fused call over ``[T, K, ...]``. It works for
  any model built from spikefed's layers (every neuron, conv nets, recurrent layers, delays) without a line per
  model; :func:`vmap_reason` names what it cannot run (modules with in-place running statistics or random draws).
- :func:`cohort_forward`, hand-written for a :class:`~.models.SpikingMLP` of LIF/IF neurons: a linear layer is
  one ``baddbmm`` over ``[K, T*B, in]``, a spiking layer one fused LIF call over ``[T, K, B, N]``. It is kept
  because it is faster for that model (``benchmarks/cohort_models.py`` measures both); :func:`forward_path`
  makes the choice explicit.

Used by the cohort trainer (:mod:`spikefed.federated.cohort`) and by device fleets
(:mod:`spikefed.hardware.fleet`); the losses and predictions here match :mod:`.train` sample by sample.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .client_conv import conv_mode
from .compiled import resolve_kernel
from .kernels import RESET_IDS, lif_fused, lowpass
from .losses import soft_first_spike_time
from .models import SpikingMLP, as_model_output, is_time_constant
from .neurons import IF, LIF
from .train import TrainConfig, group_population, predict

#: forward paths of the stacked engine: ``auto`` picks ``mlp`` where it applies, else ``vmap``
PATHS = ("auto", "mlp", "vmap")

#: how the ``vmap`` path runs convolutions over stacked kernels (:mod:`.client_conv`): ``loop`` (one ordinary
#: convolution per client), ``grouped`` (PyTorch's grouped convolution) or ``auto`` (``loop`` on a CPU,
#: ``grouped`` on a GPU); ``benchmarks/conv_floor.py`` measures both rules
DEFAULT_CONV = "auto"

#: torch layers that update state in place or draw random numbers per call: vmap over clients cannot
#: reproduce one client trained alone with them
_UNSUPPORTED: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.modules.batchnorm._NormBase, "updates running statistics in place during the forward pass"),
    (nn.modules.dropout._DropoutNd, "draws from the global random generator (not the client's own)"),
)


def mlp_path_reason(model: nn.Module) -> str | None:
    """``None`` if the hand-written :func:`cohort_forward` runs ``model``, else why not."""
    if type(model) is not SpikingMLP:
        return f"the hand-written stacked forward covers SpikingMLP, got {type(model).__name__}"
    extra = sorted(set(dict(model.named_children())) - {"linears", "neurons", "integrator"})
    if extra or getattr(model, "delays", None) is not None:  # parts it has no code for (e.g. axonal delays)
        return f"the hand-written stacked forward has no code for {', '.join(extra) or 'delays'}"
    if any(type(n) not in (LIF, IF) for n in model.neurons):
        return "the hand-written stacked forward covers LIF and IF neurons"
    if any(n.refractory for n in model.neurons):
        return "the hand-written stacked forward has no refractory period"
    return None


def vmap_reason(model: nn.Module) -> str | None:
    """``None`` if :func:`vmap_forward` can run ``model`` (a client's numbers as if trained alone), else why not."""
    for name, module in model.named_modules():
        for kind, why in _UNSUPPORTED:
            if isinstance(module, kind):
                return f"module {name or '<root>'} ({type(module).__name__}) {why}"
    if not any(p.requires_grad for p in model.parameters()):
        return f"{type(model).__name__} has no trainable parameters"
    return _probe(model)


def _probe(model: nn.Module) -> str | None:
    """Run the model's forward once under vmap over two copies on one all-zero sample of two steps (its input
    shape from ``in_shape`` / ``in_features``; not probed when it has neither): a layer that branches on data,
    updates a buffer in place or draws random numbers fails here, and the model trains on the sequential engine
    with that error as the reason instead of failing mid-round."""
    shape = getattr(model, "in_shape", None)
    if shape is None and isinstance(getattr(model, "in_features", None), int):
        shape = (model.in_features,)
    if shape is None:
        return None
    dtype = next((p.dtype for p in model.parameters() if p.dtype.is_floating_point), torch.get_default_dtype())
    params = {n: torch.stack([p.detach(), p.detach()]) for n, p in model.named_parameters() if p.requires_grad}
    try:
        with torch.no_grad():
            vmap_forward(model, params, torch.zeros((2, 2, 1, *shape), dtype=dtype))
    except Exception as e:  # noqa: BLE001 - any failure means "not vmap-friendly"; the message is the reason
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"the forward of {type(model).__name__} does not run under torch.func.vmap ({first[:200]})"
    return None


def forward_path(model: nn.Module, requested: str = "auto") -> str:
    """The forward the cohort engine uses: ``mlp`` (hand-written, LIF/IF MLPs) or ``vmap`` (any model).

    ``requested="auto"`` takes ``mlp`` where it applies (it is faster there), else ``vmap``; asking for ``mlp``
    on a model it does not cover raises ``ValueError`` with the reason."""
    if requested not in PATHS:
        raise ValueError(f"unknown cohort forward path {requested!r}; valid: {', '.join(PATHS)}")
    reason = mlp_path_reason(model)
    if requested == "mlp" and reason is not None:
        raise ValueError(f"cohort path 'mlp' cannot run this model: {reason}")
    if requested == "auto":
        return "mlp" if reason is None else "vmap"
    return requested


def vmap_forward(model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                 conv: str = DEFAULT_CONV) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The model's own forward over K stacked copies: ``x [T, K, B, *F]`` -> output ``[T, K, B, C]`` and the
    hidden spike trains ``[T, K, B, *f]`` the model reports (what the activity regularisers see).

    ``params[name]`` has shape ``[K, *shape]``; names not given keep the module's own tensor (shared by all
    copies). Random draws inside the forward are refused (``randomness="error"``). ``conv`` picks the rule of
    convolutions over stacked kernels (:func:`~.client_conv.conv_mode`: ``auto``, ``loop`` or ``grouped``)."""
    def one(p: dict[str, torch.Tensor], xk: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = as_model_output(torch.func.functional_call(model, p, (xk,)), model)
        return out.output, list(out.hidden)

    with conv_mode(conv, x.device):
        output, hidden = torch.func.vmap(one, in_dims=(0, 1), out_dims=1, randomness="error")(dict(params), x)
    return output, hidden


def stacked_forward(model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                    path: str = "auto", kernel: str = "loop",
                    conv: str = DEFAULT_CONV) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward of K stacked copies by the path :func:`forward_path` picks (same numbers either way).

    ``kernel`` (``loop`` | ``compiled`` | ``auto``, :func:`~.compiled.resolve_kernel` on ``x``'s device) picks the
    LIF / low-pass kernels of the hand-written ``mlp`` path; the ``vmap`` path runs the model's own neurons,
    which use the loop kernel; ``conv`` its convolution rule (:func:`vmap_forward`)."""
    if forward_path(model, path) == "mlp":
        return cohort_forward(model, params, x, kernel)  # type: ignore[arg-type]
    return vmap_forward(model, params, x, conv)


class StackedLinearFunction(torch.autograd.Function):
    """``z = x @ w^T (+ b)`` for K stacked copies: ``x [K, R, in]``, ``w [K, out, in]``, ``b [K, out]`` or None.

    The products are autograd's for ``baddbmm``; only the weight gradient is taken as ``g^T x``
    (``[K, out, R] x [K, R, in]``, the ``[K, out, in]`` layout of ``w``) instead of ``(x^T g)^T``: the same
    sums, and on the cohort's thin shapes (``out`` = 10 classes, ``R`` = T x samples) ``torch.bmm`` runs that
    orientation 2-3x faster (``benchmarks/round_phases.py --profile``). Tested against autograd's ``baddbmm``
    in float64 (values and every gradient)."""

    @staticmethod
    def forward(x, w, b):  # type: ignore[override]
        if b is None:
            return torch.bmm(x, w.transpose(1, 2))
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, w, b = inputs
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):  # type: ignore[override]
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        gx = torch.bmm(g, w) if need_x else None
        gw = torch.bmm(g.transpose(1, 2), x) if need_w else None
        gb = g.sum(1) if need_b and ctx.has_bias else None
        return gx, gw, gb


def stacked_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """K stacked linear layers at once (:class:`StackedLinearFunction`): ``[K, R, in]`` -> ``[K, R, out]``."""
    return StackedLinearFunction.apply(x, w, b)


def stacked_param(params: Mapping[str, torch.Tensor], name: str, default: torch.Tensor, k: int) -> torch.Tensor:
    """A neuron parameter as ``[K, 1, N]`` (stacked per client) or the module's fixed buffer."""
    if name in params:
        p = params[name]
        return p.reshape(k, 1, *p.shape[1:]) if p.dim() > 1 else p.reshape(k, 1, 1)
    return default


def cohort_forward(model: SpikingMLP, params: Mapping[str, torch.Tensor],
                   x: torch.Tensor, kernel: str = "loop") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward of K stacked copies of ``model``: ``x [T, K, B, in]`` -> output ``[T, K, B, C]``, spiking layers.

    ``params[name]`` has shape ``[K, *shape]`` for every ``model.named_parameters()`` name; ``kernel``: the LIF /
    low-pass kernels (``loop``, ``compiled``, ``numba`` or ``auto``: :func:`~.compiled.resolve_kernel`). With
    ``numba``, a spiking layer whose input is the same at every step (direct coding: the first layer) runs
    :func:`~.kernels_constant.lif_constant_input` on the one ``[K, B, N]`` current instead of the expanded
    sequence, where that kernel covers the layer (else the reference kernels run).
    """
    kernel = resolve_kernel(kernel, x.device)
    steps, k, b, _ = x.shape
    h = x
    spikes: list[torch.Tensor] = []
    for i, lin in enumerate(model.linears):
        w = params[f"linears.{i}.weight"]  # [K, out, in]
        constant = is_time_constant(h)  # direct coding: one matmul for all T steps
        flat = h[0] if constant else h.transpose(0, 1).reshape(k, steps * b, h.shape[-1])
        z = stacked_linear(flat, w, params.get(f"linears.{i}.bias"))
        if i < len(model.neurons) and constant and kernel == "numba":
            s = _constant_input_layer(model.neurons[i], i, params, z, steps)
            if s is not None:  # the layer's whole LIF in one numba pass each way (kernels_constant)
                h = s
                spikes.append(s)
                continue
        if constant:
            h = z.unsqueeze(0).expand(steps, *z.shape)  # [T, K, B, out], broadcast over time
        else:
            h = z.view(k, steps, b, -1).transpose(0, 1)  # [T, K, B, out], K-major memory
        if i < len(model.neurons):
            neuron = model.neurons[i]
            beta, thr, vr = _neuron_params(neuron, i, params, k)
            s, _ = lif_fused(h, None, beta, thr, vr, neuron.reset, neuron.detach_reset, neuron.surrogate, kernel)
            if neuron.graded:
                s = s * stacked_param(params, f"neurons.{i}.amplitude", neuron.amplitude, k)
            h = s
            spikes.append(s)
    if model.integrator is not None:
        beta = stacked_param(params, "integrator.beta", model.integrator.beta, k)
        out = lowpass(h, beta, kernel=kernel)
        return out, spikes
    return h, spikes


def _neuron_params(neuron: Any, i: int, params: Mapping[str, torch.Tensor],
                   k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decay, threshold and reset offset of spiking layer ``i`` as stacked ``[K, 1, N]`` or fixed buffers."""
    beta = stacked_param(params, f"neurons.{i}.beta", neuron.beta, k)
    thr = stacked_param(params, f"neurons.{i}.threshold", neuron.threshold, k)
    vr = stacked_param(params, f"neurons.{i}.reset_value", neuron.reset_value, k)
    if f"neurons.{i}.beta" in params:
        beta = beta.clamp(1e-4, 1 - 1e-4)
    if f"neurons.{i}.threshold" in params:
        thr = thr.clamp(min=1e-4)
    return beta, thr, vr


def _constant_input_layer(neuron: Any, i: int, params: Mapping[str, torch.Tensor], z: torch.Tensor,
                          steps: int) -> torch.Tensor | None:
    """Spikes ``[T, K, B, N]`` of spiking layer ``i`` driven by the time-constant current ``z [K, B, N]``
    through :func:`~.kernels_constant.lif_constant_input`, or None where that kernel does not cover the layer
    (graded spikes, a trained neuron parameter, ...: the caller runs the reference kernels)."""
    from .kernels_constant import constant_input_reason, lif_constant_input

    if neuron.graded:
        return None
    beta, thr, vr = _neuron_params(neuron, i, params, z.shape[0])
    u0 = torch.zeros((), dtype=z.dtype, device=z.device)
    b, th, v = (torch.as_tensor(t, dtype=z.dtype) for t in (beta, thr, vr))
    if constant_input_reason(z, (u0, b, th, v), neuron.detach_reset, neuron.surrogate) is not None:
        return None
    return lif_constant_input(z, steps, u0, b, th, v, RESET_IDS[neuron.reset], neuron.surrogate)


def per_sample_loss(output: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Task loss per sample: ``output [T, K, B, C]``, ``y [K, B]`` -> ``[K, B]`` (same as the trainer's loss)."""
    steps, k, b, _ = output.shape
    out = group_population(output.reshape(steps, k * b, -1), cfg.population)
    c = out.shape[-1]
    yf = y.reshape(k * b)
    if cfg.loss == "mse_count":
        counts = out.sum(0)
        target = torch.full_like(counts, cfg.incorrect_rate * steps)
        target.scatter_(1, yf.unsqueeze(1), cfg.correct_rate * steps)
        loss = ((counts - target) ** 2).mean(1)
    elif cfg.loss == "ce_count":
        loss = F.cross_entropy(out.sum(0), yf, reduction="none")
    elif cfg.loss == "ce_membrane":
        if cfg.membrane_reduction == "time_mean":
            loss = F.cross_entropy(out.reshape(steps * k * b, c), yf.repeat(steps), reduction="none")
            loss = loss.view(steps, k * b).mean(0)
        elif cfg.membrane_reduction == "max":
            loss = F.cross_entropy(out.amax(0), yf, reduction="none")
        else:
            loss = F.cross_entropy(out[-1], yf, reduction="none")
    elif cfg.loss == "mse_membrane":  # 1/2 sum_t sum_c (v_t - y)^2 per sample (the trainer's batch mean of it)
        target = torch.full_like(out[0], cfg.incorrect_rate)
        target.scatter_(1, yf.unsqueeze(1), cfg.correct_rate)
        loss = 0.5 * (out - target.unsqueeze(0)).pow(2).sum((0, 2))
    else:
        loss = F.cross_entropy(-cfg.temporal_scale * soft_first_spike_time(out), yf, reduction="none")
    return loss.view(k, b)


def predict_cohort(out: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Predicted classes per client and sample: ``out [T, K, B, C]`` -> ``[K, B]`` (same as :func:`~.train.predict`)."""
    steps, k, b, c = out.shape
    return predict(out.reshape(steps, k * b, c), cfg).view(k, b)


def masked_regularizers(spikes: list[torch.Tensor], mask: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Per-client activity regularisers ``[K]`` over the valid samples (``mask [K, B]``) of the spike trains
    ``[T, K, B, *features]``; the same formulas as :func:`~.train.objective` on one client's batch (feature
    positions of multi-dimensional layers are pooled as there)."""
    k = mask.shape[0]
    flat = [s.flatten(3) for s in spikes]  # [T, K, B, N]
    total = torch.zeros(k, dtype=flat[0].dtype, device=mask.device)
    n_valid = mask.sum(1).clamp(min=1)  # [K]
    w = mask.to(flat[0].dtype)
    if cfg.reg_l1:
        num = sum((s.abs().sum((0, 3)) * w).sum(1) for s in flat)
        den = sum(s.shape[0] * s.shape[-1] for s in flat) * n_valid
        total = total + cfg.reg_l1 * num / den
    if cfg.reg_l2:
        num = sum(((s.mean(0) ** 2).sum(-1) * w).sum(1) for s in flat)
        den = sum(s.shape[-1] for s in flat) * n_valid
        total = total + cfg.reg_l2 * num / den
    if cfg.reg_bounds:
        for s in flat:  # one penalty per layer, summed (as the objective)
            rates = (s.mean(0) * w.unsqueeze(-1)).sum(1) / n_valid.unsqueeze(-1)  # [K, N]
            pen = F.relu(cfg.rate_lower - rates).pow(2).mean(1) + F.relu(rates - cfg.rate_upper).pow(2).mean(1)
            total = total + cfg.reg_bounds * pen
    return total
