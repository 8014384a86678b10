"""ANN-to-SNN knowledge distillation: a ReLU teacher trained first, the spiking student trained on both the labels
and the teacher's softened outputs (Hinton et al. 2015).

With the student's class scores ``z_s`` (spike counts ``sum_t o[t]`` for ``loss=ce_count``, the reduced output
potential for ``loss=ce_membrane``), the teacher's logits ``z_t`` on the same static inputs, temperature ``tau``
and weight ``lambda`` (``local.distill``)::

    L = task loss(o, y) + regularisers + lambda * tau^2 * mean_b KL(softmax(z_t / tau) || softmax(z_s / tau))

(``tau^2`` keeps the soft-target gradients on the scale of the hard-label ones). The teacher is a
:class:`~spikefed.snn.convert.ReLUMLP` ``[in, distill_hidden, classes]`` trained with cross-entropy for
``distill_epochs`` epochs on the same training data (federated: each client trains its own teacher on its own
shard at the start of its local training; nothing of it is uploaded). It sees the static input, so the student's
encoder must take static data (not pre-binned events).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .convert import ReLUMLP, train_ann
from .models import as_model_output
from .train import TrainConfig, encode_inputs, group_population, objective

DISTILL_LOSSES = ("ce_count", "ce_membrane")


def student_scores(output: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Class scores ``[B, C]`` of the (population-grouped) output ``[T, B, C * population]``."""
    out = group_population(output, cfg.population)
    if cfg.loss == "ce_membrane":
        if cfg.membrane_reduction == "max":
            return out.amax(0)
        return out[-1] if cfg.membrane_reduction == "last" else out.mean(0)
    return out.sum(0)


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``tau^2 mean_b KL(softmax(teacher / tau) || softmax(student / tau))``."""
    log_q = F.log_softmax(student / temperature, dim=1)
    p = F.softmax(teacher / temperature, dim=1)
    return temperature**2 * (p * (torch.log(p.clamp_min(1e-12)) - log_q)).sum(1).mean()


def train_teacher(student: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                  generator: torch.Generator) -> ReLUMLP:
    """The ReLU teacher for ``student`` (as many classes as the student's output groups), trained on ``(x, y)``."""
    if x.dim() != 2:
        raise ValueError(f"distillation needs static inputs [N, features] for the ANN teacher, got {list(x.shape)}")
    with torch.no_grad():
        probe = as_model_output(student(encode_inputs(x[:1].float(), cfg, generator)), student)
    classes = probe.output.shape[-1] // cfg.population
    teacher = ReLUMLP([x.shape[1], cfg.distill_hidden, classes], generator=generator)
    tcfg = TrainConfig(epochs=cfg.distill_epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer)
    train_ann(teacher, x.float(), y, tcfg, generator)
    teacher.eval()
    return teacher


def distill_loss_fn(teacher: nn.Module, x_static: torch.Tensor, cfg: TrainConfig
                    ) -> Callable[[torch.Tensor, list[torch.Tensor], torch.Tensor], torch.Tensor]:
    """The ``loss_fn(output, hidden, y)`` of a batch whose static inputs are ``x_static`` (module docstring)."""
    with torch.no_grad():
        logits = teacher(x_static)

    def loss_fn(output: torch.Tensor, hidden: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        kl = soft_kl(student_scores(output, cfg), logits, cfg.distill_temperature)
        return objective(output, hidden, y, cfg) + cfg.distill * kl

    return loss_fn
