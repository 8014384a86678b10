"""Dropout with one mask for the whole sequence (a dropped neuron stays silent for all T steps).

For spikes ``s [T, B, N]`` and drop probability ``p``, in training::

    m[b, n] ~ Bernoulli(1 - p)  (drawn once per sequence),   y[t, b, n] = s[t, b, n] * m[b, n] / (1 - p)

and ``y = s`` in evaluation. Redrawing the mask every step would only add noise to the spike trains (a neuron
would fire at random steps); a fixed mask removes whole neurons, as dropout does in a non-spiking net. The masks
come from the layer's own seeded ``torch.Generator`` (no global random state).
"""

from __future__ import annotations

import torch
from torch import nn


class TimeDropout(nn.Module):
    """Dropout over ``[T, B, *features]`` with the mask fixed over time (module docstring)."""

    def __init__(self, p: float, seed: int = 0) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must lie in [0, 1), got {p!r}")
        self.p = float(p)
        self.generator = torch.Generator().manual_seed(int(seed))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return s
        keep = torch.rand(s.shape[1:], generator=self.generator) >= self.p
        return s * (keep.to(s.dtype) / (1 - self.p)).to(s.device)

    def extra_repr(self) -> str:
        return f"p={self.p}"
