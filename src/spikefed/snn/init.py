"""Variance-preserving weight initialisation for spiking layers fed by Bernoulli spike trains.

Layer ``l`` has ``n`` inputs ``x_i[t] ~ Bernoulli(r)`` (independent over inputs and time), weights ``w_i``
i.i.d. with mean 0 and variance ``sigma^2``, no bias, and a leaky membrane without reset
``u[t] = beta u[t-1] + h[t]``, ``h[t] = sum_i w_i x_i[t]``. Over weights and inputs
``E[h[t] h[t']] = n sigma^2 r`` for ``t = t'`` and ``n sigma^2 r^2`` otherwise (the weights are the same at every
step), so the stationary second moment of the membrane is::

    E[u^2] = sum_{k,k'} beta^(k+k') E[h[t-k] h[t-k']] = n sigma^2 (r^2 / (1 - beta)^2 + r (1 - r) / (1 - beta^2))

Choosing ``sigma^2 = target^2 / (n (r^2 / (1 - beta)^2 + r (1 - r) / (1 - beta^2)))`` makes ``E[u^2] = target^2``
in every layer, whatever its fan-in: the membrane variance stays constant with depth (``target`` defaults to the
threshold, so a typical neuron sits one threshold away from rest). Weights are drawn uniformly in
``+-sqrt(3) sigma`` from a seeded generator; biases are set to 0.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def vp_sigma(fan_in: int, rate: float, beta: float, target: float = 1.0) -> float:
    """The weight standard deviation ``sigma`` of the module docstring."""
    if not 0 < rate <= 1:
        raise ValueError(f"input spike rate must lie in (0, 1], got {rate!r}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must lie in [0, 1) for a stationary membrane, got {beta!r}")
    if fan_in < 1 or not target > 0:
        raise ValueError(f"need fan_in >= 1 and target > 0, got {fan_in!r}, {target!r}")
    moment = rate**2 / (1 - beta) ** 2 + rate * (1 - rate) / (1 - beta**2)
    return math.sqrt(target**2 / (fan_in * moment))


def variance_preserving_init(layers: Sequence[nn.Module], generator: torch.Generator, rate: float, beta: float,
                             target: float = 1.0) -> None:
    """Re-initialise the ``weight`` of every layer (fan-in: ``weight[0].numel()``) in place; biases to 0."""
    with torch.no_grad():
        for layer in layers:
            weight: torch.Tensor = layer.weight  # type: ignore[attr-defined,assignment]
            sigma = vp_sigma(weight[0].numel(), rate, beta, target)
            weight.copy_((torch.rand(weight.shape, generator=generator, dtype=weight.dtype) * 2 - 1)
                         * sigma * math.sqrt(3.0))
            bias = getattr(layer, "bias", None)
            if bias is not None:
                bias.zero_()
