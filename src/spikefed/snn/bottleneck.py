"""Information-bottleneck regulariser on hidden spikes (seed 002: IB for robust, efficient spike codes).

Seed 002 combines the IB principle (keep in the representation ``Z`` what predicts ``Y``, drop the rest of ``X``)
with surrogate gradients, with KL-divergence terms in the objective. spikefed uses the *variational* bound (VIB,
Alemi et al. 2017) on the hidden spikes: per sample and hidden neuron ``n`` of layer ``l`` the spikes are read as
Bernoulli draws with rate ``p_n(x) = mean_t s_n[t]``, and the marginal ``p(z)`` is replaced by a fixed prior
``Bernoulli(r)``; since ``KL(p(z) || q) >= 0``, ``I(X; Z) <= E_x KL(p(z|x) || q(z))``, so::

    L_IB = mean_b sum_l mean_n KL(Bern(p_bn) || Bern(r)),
    KL(Bern(p) || Bern(r)) = p log(p / r) + (1 - p) log((1 - p) / (1 - r))   (p clamped to [1e-6, 1 - 1e-6])

and the training objective is ``task loss + ib_weight * L_IB`` (the task loss stands for ``-I(Z; Y)``).

Why this bound and not an HSIC one: it is differentiable through the surrogate rate, costs ``O(B N)`` (HSIC needs
``B x B`` kernel matrices per layer), decomposes per sample (so a client's loss is the mean of its samples', as
the federated engines need), and its minimum at ``p = r`` also pulls firing rates towards ``r``: compression and
fewer spikes (energy) go together. Its gradient is ``log(p (1 - r) / ((1 - p) r))`` per unit rate, zero at ``p=r``.
"""

from __future__ import annotations

from typing import Sequence

import torch

EPS_RATE = 1e-6


def bernoulli_kl(p: torch.Tensor, r: float) -> torch.Tensor:
    """Elementwise ``KL(Bern(p) || Bern(r))`` (``p`` clamped to ``[1e-6, 1 - 1e-6]``)."""
    if not 0 < r < 1:
        raise ValueError(f"prior rate r must lie in (0, 1), got {r!r}")
    p = p.clamp(EPS_RATE, 1 - EPS_RATE)
    return p * torch.log(p / r) + (1 - p) * torch.log((1 - p) / (1 - r))


def ib_penalty(hidden: Sequence[torch.Tensor], prior_rate: float = 0.1) -> torch.Tensor:
    """``L_IB`` of the module docstring for hidden spike tensors ``[T, B, *features]`` (0 if there are none)."""
    total: torch.Tensor | None = None
    for s in hidden:
        rate = s.mean(0).reshape(s.shape[1], -1)  # [B, N]
        term = bernoulli_kl(rate, prior_rate).mean(1).mean(0)
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total
