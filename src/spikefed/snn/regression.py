"""Sequence regression with a recurrent SNN (seed 002): low-pass read-out, MSE, truncated BPTT, gradient clipping.

The model is a :class:`~spikefed.snn.models.RecurrentRegressor` (``Linear -> recurrent LIF -> Linear -> leaky
integrator``); sequences are batch-major ``x [N, L, F]``, targets ``y [N, L, C]`` (for ``h``-step-ahead prediction
``y[:, t] = series[t + h]``). The loss on a batch is the MSE over every step after a ``warmup`` (the network starts
at rest, so its first outputs are not asked to be right):

    L = mean_{t >= warmup, b, c} (z[t, b, c] - y[t, b, c])^2

and is minimised by :func:`~spikefed.snn.train.backward_batch` (plain or truncated BPTT, ``cfg.tbptt``), clipped to
``cfg.grad_clip`` and stepped with Adam/SGD (``cfg``'s epochs, batch size, learning rate, cosine schedule).

Metrics (over the same steps, in the units the caller passes, e.g. de-normalised):

    MSE   = mean (p - y)^2
    sMAPE = 100 / N * sum 2 |p - y| / (|p| + |y|)        (a term with p = y = 0 counts 0), in percent

and the persistence baseline predicts the last observed value, ``p[t] = x[t]`` (the input of step t).

Target ``change`` (``change_scale=`` in the functions below): the model learns ``(y[t] - x[t]) / s`` with ``s`` the
standard deviation of that change on the training steps, and the prediction is ``x[t] + s z[t]``. The network then
only has to model the increment, so its noise floor (spike quantisation seen through the read-out) is ``s`` times
smaller: this is what beats persistence one step ahead, where the increment is tiny.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..data.digits import iterate_batches
from .train import TrainConfig, backward_batch, fit_loop

__all__ = ["RegressionMetrics", "change_scale", "evaluate_regression", "fit_regression", "mse", "persistence",
           "predict_sequences", "sequence_mse_loss", "smape"]


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError(f"prediction and target must be tensors, got {type(pred).__name__}, {type(target).__name__}")
    if pred.shape != target.shape or pred.numel() == 0:
        raise ValueError(f"prediction and target must have the same non-empty shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")


def mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """``mean (p - y)^2`` over every element."""
    _check_pair(pred, target)
    return float(((pred.double() - target.double()) ** 2).mean())


def smape(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Symmetric mean absolute percentage error ``100 * mean 2|p - y| / (|p| + |y|)`` (0/0 terms count 0)."""
    _check_pair(pred, target)
    p, y = pred.double(), target.double()
    den = p.abs() + y.abs()
    term = torch.where(den > 0, 2.0 * (p - y).abs() / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.zeros_like(den))
    return float(100.0 * term.mean())


def persistence(x: torch.Tensor, input_index: int = 0) -> torch.Tensor:
    """Persistence forecast: the value now is the forecast, ``p[:, t] = x[:, t, input_index]`` kept ``[N, L, 1]``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"expected sequences x of shape [N, L, F], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    return x[..., input_index:input_index + 1]


def _check_data(x: torch.Tensor, y: torch.Tensor, warmup: int) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.dim() != 3 or y.dim() != 3 \
            or x.shape[:2] != y.shape[:2]:
        raise ValueError(f"expected x [N, L, F] and y [N, L, C] with the same N and L, got "
                         f"{tuple(getattr(x, 'shape', ()))} and {tuple(getattr(y, 'shape', ()))}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup < x.shape[1]:
        raise ValueError(f"warmup must be an int in [0, L) = [0, {x.shape[1]}), got {warmup!r}")


def sequence_mse_loss(warmup: int) -> Callable[[torch.Tensor, list[torch.Tensor], torch.Tensor], torch.Tensor]:
    """The loss ``mean_{t >= warmup} (z - y)^2`` on time-major output ``z [T, B, C]`` and target ``y [T, B, C]``."""
    def loss(output: torch.Tensor, hidden: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return ((output[warmup:] - target[warmup:]) ** 2).mean()

    return loss


def change_scale(x: torch.Tensor, y: torch.Tensor, warmup: int = 0) -> float:
    """Standard deviation of the change ``y - x[..., :C]`` over the steps ``t >= warmup`` (the unit of the
    ``change`` target); ``ValueError`` if the targets never differ from the inputs."""
    _check_data(x, y, warmup)
    scale = float((y - x[..., :y.shape[-1]])[:, warmup:].std())
    if not scale > 0:
        raise ValueError("the targets equal the inputs: the change target has no scale (horizon 0?)")
    return scale


def _check_scale(scale: float | None) -> None:
    if scale is not None and not (isinstance(scale, (int, float)) and not isinstance(scale, bool)
                                  and math.isfinite(scale) and scale > 0):
        raise ValueError(f"change_scale must be a finite number > 0 or None, got {scale!r}")


def fit_regression(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, generator: torch.Generator,
                   warmup: int = 0, on_epoch: Callable[[int, float], None] | None = None,
                   change_scale: float | None = None) -> list[float]:
    """Train ``model`` on sequences ``x [N, L, F]`` -> ``y [N, L, C]`` (MSE after ``warmup``, BPTT or truncated
    BPTT with ``cfg.tbptt``, clipping ``cfg.grad_clip``). Returns the mean training loss of every epoch.

    With ``change_scale`` (see :func:`change_scale`) the model learns the standardised change
    ``(y - x[..., :C]) / change_scale`` instead of ``y``; pass the same value to :func:`predict_sequences` /
    :func:`evaluate_regression`, which add the input back."""
    _check_data(x, y, warmup)
    _check_scale(change_scale)
    if change_scale is not None:
        y = (y - x[..., :y.shape[-1]]) / change_scale
    loss_fn = sequence_mse_loss(warmup)

    def batch_backward(xb: torch.Tensor, yb: torch.Tensor) -> float:
        return backward_batch(model, xb.transpose(0, 1), yb.transpose(0, 1), cfg, loss_fn=loss_fn)[0]

    return fit_loop(model, x, y, cfg, generator, batch_backward, on_epoch)


@torch.no_grad()
def predict_sequences(model: nn.Module, x: torch.Tensor, batch_size: int = 256,
                      change_scale: float | None = None) -> torch.Tensor:
    """Predictions for every sequence, batch-major ``[N, L, C]``: the model output, or with ``change_scale`` the
    input plus ``change_scale`` times the output (a model trained on the change target)."""
    _check_scale(change_scale)
    model.eval()
    parts = [model(xb.transpose(0, 1)).output.transpose(0, 1) for xb, _ in
             iterate_batches(x, x, batch_size, shuffle=False)]
    out = torch.cat(parts)
    return out if change_scale is None else x[..., :out.shape[-1]] + change_scale * out


@dataclass(frozen=True)
class RegressionMetrics:
    """Model and persistence-baseline errors on the same steps (``mse`` in squared units of the series)."""

    mse: float
    smape: float
    persistence_mse: float
    persistence_smape: float
    steps: int

    def to_dict(self) -> dict[str, float]:
        return {"mse": self.mse, "smape": self.smape, "persistence_mse": self.persistence_mse,
                "persistence_smape": self.persistence_smape, "steps": self.steps}


def evaluate_regression(model: nn.Module, x: torch.Tensor, y: torch.Tensor, warmup: int = 0,
                        denormalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        change_scale: float | None = None) -> RegressionMetrics:
    """MSE and sMAPE of the model and of persistence on the steps ``t >= warmup``, after ``denormalize``
    (e.g. :meth:`~spikefed.data.mackey_glass.MackeyGlassSplit.denormalize`, so sMAPE sees the raw positive series)."""
    _check_data(x, y, warmup)
    undo = denormalize if denormalize is not None else (lambda z: z)
    target = undo(y[:, warmup:])
    pred = undo(predict_sequences(model, x, change_scale=change_scale)[:, warmup:])
    base = undo(persistence(x)[:, warmup:])
    return RegressionMetrics(mse(pred, target), smape(pred, target), mse(base, target), smape(base, target),
                             int(target.shape[0] * target.shape[1]))
