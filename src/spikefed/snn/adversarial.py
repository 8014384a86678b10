"""Adversarial attacks and training through the surrogate gradient: FGSM and PGD on the static input.

The attack perturbs the static input ``x`` (in input units, e.g. standardised pixels) *before* encoding, and the
gradient flows through the encoder and the spiking network by the surrogate derivative (``L`` the configured task
loss of the model output, ``Pi`` the projection onto the L-infinity ball of radius ``eps`` around ``x``)::

    FGSM:  x_adv = x + eps * sign(grad_x L(f(enc(x)), y))                               (Goodfellow et al.)
    PGD:   x_0 = x + U(-eps, eps) (random start),  x_{k+1} = Pi(x_k + alpha * sign(grad_x L(f(enc(x_k)), y)))
           for k < steps, alpha = 2.5 eps / steps by default                            (Madry et al.)

Adversarial training (``local.adversarial``: fgsm or pgd) trains each batch on the clean samples and their
adversarial copies together, ``L = (L(x, y) + L(x_adv, y)) / 2`` (one loss over the doubled batch). The
attack needs a differentiable encoder: ``direct`` (constant current); spike encoders (rate, latency, rank order)
have no input gradient.
"""

from __future__ import annotations

import torch
from torch import nn

from .models import as_model_output
from .train import TrainConfig, encode_inputs, input_dtype, predict, task_loss

ATTACKS = ("none", "fgsm", "pgd")
DIFFERENTIABLE_ENCODERS = ("direct",)


def _check(cfg: TrainConfig, eps: float) -> None:
    if cfg.encoder not in DIFFERENTIABLE_ENCODERS:
        raise ValueError(f"adversarial attacks need a differentiable encoder ({', '.join(DIFFERENTIABLE_ENCODERS)}), "
                         f"got encoder={cfg.encoder!r}: spike encoders have no input gradient")
    if not eps >= 0:
        raise ValueError(f"attack eps must be >= 0, got {eps!r}")


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``grad_x L(f(enc(x)), y)`` for a static batch ``x [B, *F]`` (model parameters get no gradient)."""
    xr = x.detach().clone().requires_grad_(True)
    out = as_model_output(model(encode_inputs(xr, cfg, generator)), model)
    loss = task_loss(out.output, y, cfg)
    (grad,) = torch.autograd.grad(loss, xr)
    return grad


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, eps: float,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """FGSM adversarial inputs (module docstring)."""
    _check(cfg, eps)
    return (x + eps * input_gradient(model, x, y, cfg, generator).sign()).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, eps: float, steps: int = 10,
        alpha: float | None = None, generator: torch.Generator | None = None,
        random_start: bool = True) -> torch.Tensor:
    """PGD (L-infinity) adversarial inputs (module docstring); the random start draws from ``generator``."""
    _check(cfg, eps)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"pgd steps must be an integer >= 1, got {steps!r}")
    step = 2.5 * eps / steps if alpha is None else float(alpha)
    x0 = x.detach()
    xa = x0
    if random_start and eps > 0:
        if generator is None:
            raise ValueError("pgd with random_start needs a torch.Generator")
        xa = x0 + (torch.rand(x0.shape, generator=generator, dtype=x0.dtype) * 2 - 1) * eps
    for _ in range(steps):
        xa = xa + step * input_gradient(model, xa, y, cfg, generator).sign()
        xa = torch.max(torch.min(xa, x0 + eps), x0 - eps).detach()
    return xa


def attack(kind: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, eps: float,
           steps: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """``fgsm`` / ``pgd`` adversarial inputs, or ``x`` itself for ``none``; the model is put in eval mode while
    the attack runs (and back in its previous mode after)."""
    if kind not in ATTACKS:
        raise ValueError(f"unknown attack {kind!r}; valid: {', '.join(ATTACKS)}")
    if kind == "none":
        return x
    was_training = model.training
    model.eval()
    try:
        if kind == "fgsm":
            return fgsm(model, x, y, cfg, eps, generator)
        return pgd(model, x, y, cfg, eps, steps, generator=generator)
    finally:
        model.train(was_training)


def adversarial_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                      generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Adversarial training batch: ``(cat(x, x_adv), cat(y, y))`` for ``cfg.adversarial`` fgsm/pgd; ``(x, y)``
    unchanged for none."""
    if cfg.adversarial == "none":
        return x, y
    xa = attack(cfg.adversarial, model, x, y, cfg, cfg.adv_eps, cfg.adv_steps, generator)
    return torch.cat([x, xa]), torch.cat([y, y])


def attacked_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, kind: str, eps: float,
                      steps: int = 10, generator: torch.Generator | None = None, batch_size: int = 256) -> float:
    """Accuracy of ``model`` on ``x`` attacked with ``kind`` at radius ``eps`` (clean accuracy for ``none``)."""
    correct = 0
    dtype = input_dtype(model)
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size].to(dtype), y[i:i + batch_size]
        xa = attack(kind, model, xb, yb, cfg, eps, steps, generator)
        model.eval()
        with torch.no_grad():
            out = as_model_output(model(encode_inputs(xa, cfg, generator)), model)
        correct += int((predict(out.output, cfg) == yb).sum())
    return correct / max(int(y.shape[0]), 1)
