"""Threshold-dependent batch normalisation (tdBN-like, Zheng et al. 2021) of a spiking layer's input current.

For the pre-activations ``x [T, B, N]`` of a spiking layer with threshold ``V_th``, every feature ``n`` is
normalised over batch *and time* together::

    mu_n = mean_{t,b} x[t,b,n],   var_n = mean_{t,b} (x[t,b,n] - mu_n)^2
    y[t,b,n] = gamma_n * alpha * V_th * (x[t,b,n] - mu_n) / sqrt(var_n + eps) + beta_n

so the current has standard deviation ``alpha V_th`` at initialisation (``gamma = 1``, ``beta = 0``), neither
silent nor saturated. ``gamma`` and ``beta`` are trained (euclidean manifold, averaged by federated learning).
The statistics are those of the current batch in training *and* evaluation: running averages would be buffers,
not parameters, and federated averaging would not carry them; evaluate with batches of tens of samples or more.
"""

from __future__ import annotations

import torch
from torch import nn

from ..manifold import EUCLIDEAN, declare


class ThresholdBatchNorm(nn.Module):
    """tdBN over ``[T, B, features]`` (module docstring); ``alpha`` and ``threshold`` fixed, ``gamma``/``beta``
    learned per feature."""

    def __init__(self, features: int, threshold: float = 1.0, alpha: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        if features < 1 or not threshold > 0 or not alpha > 0 or not eps > 0:
            raise ValueError(f"ThresholdBatchNorm needs features >= 1 and threshold, alpha, eps > 0, got "
                             f"{features}, {threshold}, {alpha}, {eps}")
        self.features, self.threshold, self.alpha, self.eps = int(features), float(threshold), float(alpha), eps
        self.gamma = declare(nn.Parameter(torch.ones(features)), EUCLIDEAN)
        self.beta = declare(nn.Parameter(torch.zeros(features)), EUCLIDEAN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.features:
            raise ValueError(f"ThresholdBatchNorm expects [T, B, {self.features}], got {list(x.shape)}")
        if x.shape[0] * x.shape[1] < 2:
            raise ValueError("ThresholdBatchNorm needs at least 2 values per feature (T * B >= 2)")
        mu = x.mean(dim=(0, 1))
        var = x.var(dim=(0, 1), unbiased=False)
        return self.gamma * (self.alpha * self.threshold) * (x - mu) / torch.sqrt(var + self.eps) + self.beta
