"""Leakage attacks on spiking-network updates: update inversion and membership inference.

These measure what an observer of the federated traffic learns about a client's data; they are tools for
benchmarks (``benchmarks/leakage.py``) and for judging the defences (DP, secure aggregation, compression), not
part of a round.

**Update inversion** (gradient matching; Zhu et al. 2019 "Deep Leakage from Gradients", Geiping et al. 2020
"Inverting Gradients"). The attacker holds the global model ``x`` and one client's update after a single local
SGD step on a batch ``(X, y)``: ``Delta = -lr * g`` with ``g = dL(x; X, y)/dx``, so the observed gradient is
``g_obs = -Delta / lr``. It optimises dummy inputs ``X' = sigmoid(Z)`` (inputs live in ``[0, 1]``) so that
their gradient matches::

    cosine:  D(Z) = 1 - <g(X'), g_obs>_M / (||g(X')||_M ||g_obs||_M)
    l2:      D(Z) = ||g(X') - g_obs||_M^2

over the coordinates ``M`` the attacker sees (all of them, or the top-k indices of a compressed update), with
Adam on ``Z``. ``dD/dZ`` differentiates the gradient itself (a second derivative through the network): for a
spiking network the forward spike is a Heaviside step, whose derivative is replaced by the surrogate; the
attacker's twin (:func:`differentiable_twin`) runs the step-by-step neuron path with an out-of-place surrogate
derivative, so that derivative can itself be differentiated. The labels are inferred from the last layer's bias
gradient (:func:`infer_labels`, the iDLG observation: the true class's output bias gradient is the most
negative one) or given.

**Closed form for direct coding** (Phong et al. 2017; exact for one sample): with direct (constant-current)
coding the first layer computes ``h_t = W x + b`` at every step ``t``, so
``dL/dW = sum_t delta_t x^T`` and ``dL/db = sum_t delta_t``: row ``i`` gives ``x = (dL/dW)_i / (dL/db)_i``
exactly, whatever the spiking dynamics above (:func:`closed_form_input`). With rate coding the input changes
each step and the ratio is a ``delta_t``-weighted mean of the input spikes: an estimate, not the input.

**Membership inference** (loss threshold; Yeom et al. 2018): members (the training samples of a client) tend
to have a lower loss under the trained model than non-members. The score ``-loss(x_i)`` ranks samples; the
attack's success over all thresholds is the ROC AUC (:func:`rank_auc`, the Mann-Whitney statistic with
mid-ranks for ties: ``AUC = (R_members - n_m (n_m + 1) / 2) / (n_m n_n)``, 0.5 = no leakage).

Quality of a reconstruction: ``MSE = mean((X' - X)^2)`` and ``PSNR = 10 log10(range^2 / MSE)`` (range 1 for
inputs in ``[0, 1]``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..snn.surrogate import Surrogate
from ..snn.train import TrainConfig, encode_inputs, task_loss

__all__ = [
    "MATCHES",
    "InversionResult",
    "closed_form_input",
    "differentiable_twin",
    "infer_labels",
    "invert_update",
    "loss_gradients",
    "mse",
    "per_sample_losses",
    "psnr",
    "rank_auc",
    "single_step_update",
]

MATCHES: tuple[str, ...] = ("cosine", "l2")


# ------------------------------------------------------------------------------------------ the twin


def _atan(z: torch.Tensor, a: float) -> torch.Tensor:
    return 1.0 / (2.0 / a + (math.pi**2 * a / 2.0) * z * z)


def _fast_sigmoid(z: torch.Tensor, k: float) -> torch.Tensor:
    return 1.0 / (1.0 + k * z.abs()) ** 2


def _sigmoid(z: torch.Tensor, k: float) -> torch.Tensor:
    return k * torch.sigmoid(k * z) * torch.sigmoid(-k * z)


def _triangular(z: torch.Tensor, a: float) -> torch.Tensor:
    return a * torch.clamp(1.0 - a * z.abs(), min=0.0)


def _straight_through(z: torch.Tensor, s: float) -> torch.Tensor:
    return torch.full_like(z, s)


_OUT_OF_PLACE = {"atan": _atan, "fast_sigmoid": _fast_sigmoid, "sigmoid": _sigmoid, "triangular": _triangular,
                 "straight_through": _straight_through}


def _twice_differentiable(s: Surrogate) -> Surrogate:
    if s.slope is None:  # a user callable: assumed out of place already
        return s
    if s.name not in _OUT_OF_PLACE:
        raise ValueError(f"no twice-differentiable form of surrogate {s.name!r}; known: {', '.join(_OUT_OF_PLACE)}")
    fn, slope = _OUT_OF_PLACE[s.name], float(s.slope)
    return Surrogate(s.name, None, lambda z: fn(z, slope))


def differentiable_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the same parameters and the same forward (and first derivative) whose gradient
    can be differentiated again: every neuron runs its step-by-step path (``fused=False``) and its surrogate
    derivative is computed out of place. The attacker's copy; ``model`` is not changed."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if hasattr(module, "fused"):
            setattr(module, "fused", False)  # noqa: B010 - plain attributes of the neuron, not submodules
        surrogate = getattr(module, "surrogate", None)
        if isinstance(surrogate, Surrogate):
            setattr(module, "surrogate", _twice_differentiable(surrogate))  # noqa: B010
    return twin


# ------------------------------------------------------------------------------------------ gradients


def _named(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def loss_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                   create_graph: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """``dL/dtheta`` of the configured task loss on the batch ``(x [B, F], y [B])``, by parameter name."""
    out = model(encode_inputs(x, cfg, generator))
    loss = task_loss(out.output, y, cfg)
    named = _named(model)
    grads = torch.autograd.grad(loss, [p for _, p in named], create_graph=create_graph, allow_unused=True)
    return {n: (torch.zeros_like(p) if g is None else g) for (n, p), g in zip(named, grads)}


def single_step_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, lr: float,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The client's update after one local SGD step: ``Delta = -lr * dL/dtheta`` (what it uploads)."""
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return {n: -lr * g.detach() for n, g in loss_gradients(model, x, y, cfg, generator=generator).items()}


def closed_form_input(weight_grad: torch.Tensor, bias_grad: torch.Tensor) -> torch.Tensor:
    """The single input ``x [F]`` behind a first-layer gradient under direct coding: ``(dL/dW)_i / (dL/db)_i``
    for the row ``i`` with the largest ``|dL/db_i|`` (``weight_grad [H, F]``, ``bias_grad [H]``)."""
    if weight_grad.dim() != 2 or bias_grad.shape != weight_grad.shape[:1]:
        raise ValueError(f"need weight_grad [H, F] and bias_grad [H], got {tuple(weight_grad.shape)} and "
                         f"{tuple(bias_grad.shape)}")
    i = int(bias_grad.abs().argmax())
    if float(bias_grad[i]) == 0.0:
        raise ValueError("the bias gradient is zero everywhere: no input can be recovered from it")
    return weight_grad[i] / bias_grad[i]


def infer_labels(last_bias_grad: torch.Tensor, count: int) -> torch.Tensor:
    """iDLG label inference: the ``count`` classes whose output-bias gradient is most negative (the true class
    of a sample pulls its output up, so its bias gradient is negative). Exact for one sample under a softmax
    cross-entropy; a heuristic for the spike-count losses and for batches with repeated labels."""
    if last_bias_grad.dim() != 1 or not 1 <= count <= last_bias_grad.numel():
        raise ValueError(f"need a 1-D bias gradient and 1 <= count <= {last_bias_grad.numel()}, got count={count}")
    return torch.argsort(last_bias_grad)[:count]


# ------------------------------------------------------------------------------------------ inversion


@dataclass(frozen=True)
class InversionResult:
    """A reconstruction ``x [B, F]`` and the final matching distance."""

    x: torch.Tensor
    distance: float


def _distance(dummy: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
              mask: Mapping[str, torch.Tensor] | None, match: str) -> torch.Tensor:
    a, b = [], []
    for n, t in target.items():
        d = dummy[n]
        if mask is not None:
            m = mask[n]
            d, t = d[m], t[m]
        a.append(d.reshape(-1))
        b.append(t.reshape(-1))
    va, vb = torch.cat(a), torch.cat(b)
    if match == "l2":
        return (va - vb).square().sum()
    return 1.0 - torch.dot(va, vb) / (va.norm() * vb.norm() + 1e-12)


def invert_update(model: nn.Module, observed_grad: Mapping[str, torch.Tensor], labels: torch.Tensor,
                  cfg: TrainConfig, generator: torch.Generator, *, steps: int = 300, lr: float = 0.1,
                  match: Literal["cosine", "l2"] = "cosine", mask: Mapping[str, torch.Tensor] | None = None,
                  features: int | None = None, restarts: int = 1) -> InversionResult:
    """Reconstruct a batch of ``len(labels)`` inputs from an observed gradient by gradient matching (module
    docstring). ``model`` is the global model (a :func:`differentiable_twin` is made here); ``observed_grad`` maps
    parameter names to gradients (``-Delta / lr`` of a one-step update; any positive scale is fine for
    ``cosine``); ``mask`` restricts matching to the coordinates seen (top-k); ``generator`` draws the dummy's
    starting points: the matching is not convex (spikes make it piecewise), so ``restarts`` random starts run
    ``steps`` Adam steps each and the reconstruction with the smallest distance (which the attacker can see)
    wins. Direct or seeded stochastic encoders (the dummy's encoding reuses one fixed stream)."""
    if match not in MATCHES:
        raise ValueError(f"unknown match {match!r}; valid: {', '.join(MATCHES)}")
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got steps={steps}, restarts={restarts}")
    twin = differentiable_twin(model)
    names = {n for n, _ in _named(twin)}
    unknown = sorted(set(observed_grad) - names)
    if unknown:
        raise ValueError(f"observed gradient names {unknown} are not parameters of the model")
    if mask is not None and set(mask) != set(observed_grad):
        raise ValueError("mask must have exactly the observed gradient's parameter names")
    width = features if features is not None else getattr(twin, "in_features", None)
    if width is None:
        raise ValueError("pass features= (the model does not say its input width)")
    target = {n: g.detach() for n, g in observed_grad.items()}
    best = InversionResult(torch.empty(0), math.inf)
    for _ in range(restarts):
        z = torch.randn(len(labels), int(width), generator=generator).mul_(0.5)
        enc_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        found = _match(twin, z, labels, cfg, target, mask, match, steps, lr, enc_seed)
        if found.distance < best.distance or best.x.numel() == 0:
            best = found
    return best


def _match(twin: nn.Module, z0: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
           target: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None, match: str, steps: int,
           lr: float, enc_seed: int) -> InversionResult:
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best_x, best_d = torch.sigmoid(z).detach().clone(), math.inf
    for _ in range(steps):
        opt.zero_grad()
        x = torch.sigmoid(z)
        enc = torch.Generator().manual_seed(enc_seed)
        grads = loss_gradients(twin, x, labels, cfg, create_graph=True, generator=enc)
        dist = _distance(grads, target, mask, match)
        d = float(dist.detach())
        if d < best_d:
            best_d, best_x = d, x.detach().clone()
        dist.backward()
        opt.step()
    return InversionResult(best_x, best_d)


def mse(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    """Mean squared error of a reconstruction."""
    if x_hat.shape != x.shape:
        raise ValueError(f"shapes differ: {tuple(x_hat.shape)} vs {tuple(x.shape)}")
    return float((x_hat.double() - x.double()).square().mean())


def psnr(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(range^2 / MSE)`` (``inf`` for an exact reconstruction)."""
    err = mse(x_hat, x)
    return math.inf if err == 0 else 10.0 * math.log10(data_range**2 / err)


# ------------------------------------------------------------------------------------------ membership


@torch.no_grad()
def per_sample_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The configured task loss of every sample ``[N]`` (one forward pass for the batch)."""
    model.eval()
    out = model(encode_inputs(x, cfg, generator)).output
    return torch.stack([task_loss(out[:, i:i + 1], y[i:i + 1], cfg) for i in range(len(y))])


def rank_auc(members: torch.Tensor, nonmembers: torch.Tensor) -> float:
    """ROC AUC of scores where members should score higher: the Mann-Whitney U over ``n_m n_n`` with mid-ranks
    (the probability that a random member outscores a random non-member, ties counting one half)."""
    a, b = members.double().reshape(-1), nonmembers.double().reshape(-1)
    if a.numel() == 0 or b.numel() == 0:
        raise ValueError("need at least one member and one non-member score")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("scores must be finite")
    scores = torch.cat([a, b])
    order = torch.argsort(scores, stable=True)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    i, n = 0, scores.numel()
    while i < n:  # mid-ranks of tied runs (1-based)
        j = i
        while j + 1 < n and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    n_m, n_n = a.numel(), b.numel()
    return float((ranks[:n_m].sum() - n_m * (n_m + 1) / 2.0) / (n_m * n_n))
