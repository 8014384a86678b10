"""Stacked (cohort) forward: K copies of a :class:`~.models.SpikingMLP` run as one batched computation.

Every parameter is stacked per copy into a ``[K, ...]`` tensor: a linear layer is one ``baddbmm`` over
``[K, T*B, in]``, a spiking layer one fused LIF call over ``[T, K, B, N]``. Used by the cohort trainer
(:mod:`spikefed.federated.cohort`) and by device fleets (:mod:`spikefed.hardware.fleet`); the losses and
predictions here match :mod:`.train` sample by sample.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from .kernels import lif_fused, lowpass
from .losses import soft_first_spike_time
from .models import SpikingMLP, is_time_constant
from .train import TrainConfig, group_population, predict


def stacked_param(params: Mapping[str, torch.Tensor], name: str, default: torch.Tensor, k: int) -> torch.Tensor:
    """A neuron parameter as ``[K, 1, N]`` (stacked per client) or the module's fixed buffer."""
    if name in params:
        p = params[name]
        return p.reshape(k, 1, *p.shape[1:]) if p.dim() > 1 else p.reshape(k, 1, 1)
    return default


def cohort_forward(model: SpikingMLP, params: Mapping[str, torch.Tensor],
                   x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward of K stacked copies of ``model``: ``x [T, K, B, in]`` -> output ``[T, K, B, C]``, spiking layers.

    ``params[name]`` has shape ``[K, *shape]`` for every ``model.named_parameters()`` name.
    """
    steps, k, b, _ = x.shape
    h = x
    spikes: list[torch.Tensor] = []
    for i, lin in enumerate(model.linears):
        w = params[f"linears.{i}.weight"]  # [K, out, in]
        constant = is_time_constant(h)  # direct coding: one matmul for all T steps
        flat = h[0] if constant else h.transpose(0, 1).reshape(k, steps * b, h.shape[-1])
        if f"linears.{i}.bias" in params:
            z = torch.baddbmm(params[f"linears.{i}.bias"].unsqueeze(1), flat, w.transpose(1, 2))
        else:
            z = torch.bmm(flat, w.transpose(1, 2))
        if constant:
            h = z.unsqueeze(0).expand(steps, *z.shape)  # [T, K, B, out], broadcast over time
        else:
            h = z.view(k, steps, b, -1).transpose(0, 1)  # [T, K, B, out], K-major memory
        if i < len(model.neurons):
            neuron = model.neurons[i]
            beta = stacked_param(params, f"neurons.{i}.beta", neuron.beta, k)
            thr = stacked_param(params, f"neurons.{i}.threshold", neuron.threshold, k)
            vr = stacked_param(params, f"neurons.{i}.reset_value", neuron.reset_value, k)
            if f"neurons.{i}.beta" in params:
                beta = beta.clamp(1e-4, 1 - 1e-4)
            if f"neurons.{i}.threshold" in params:
                thr = thr.clamp(min=1e-4)
            s, _ = lif_fused(h, None, beta, thr, vr, neuron.reset, neuron.detach_reset, neuron.surrogate)
            if neuron.graded:
                s = s * stacked_param(params, f"neurons.{i}.amplitude", neuron.amplitude, k)
            h = s
            spikes.append(s)
    if model.integrator is not None:
        beta = stacked_param(params, "integrator.beta", model.integrator.beta, k)
        out = lowpass(h, beta)
        return out, spikes
    return h, spikes


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
    else:
        loss = F.cross_entropy(-cfg.temporal_scale * soft_first_spike_time(out), yf, reduction="none")
    return loss.view(k, b)


def predict_cohort(out: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Predicted classes per client and sample: ``out [T, K, B, C]`` -> ``[K, B]`` (same as :func:`~.train.predict`)."""
    steps, k, b, c = out.shape
    return predict(out.reshape(steps, k * b, c), cfg).view(k, b)
