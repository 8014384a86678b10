"""Drift between consecutive tasks of a continual stream, measured where the model sees it.

The input-space measure (:func:`spikefed.federated.continual.input_drift`, W2 between Gaussian fits of the
pixels) saturates beyond about 45 degrees of rotation: rotating digits further keeps the pixel mean and
covariance about as far away. Two measures that look at the model instead:

- **feature drift** (:func:`feature_drift`): the 2-Wasserstein distance between Gaussian fits (mean, ``ddof = 1``
  covariance) of a model's hidden representation of the two tasks' inputs: the spike counts of the first
  hidden layer over the ``T`` time steps, one row per sample. Evaluated with the global model of the end of
  the earlier task, it says how differently that model sees the new task;
- **model drift** (:func:`model_drift`): the Euclidean distance between the two tasks' optima, each found by
  the same centralized training from the same initial parameters with the same batch order
  (:func:`task_optimum`), so identical tasks give exactly 0 and the distance is the displacement the new task
  asks of the parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import torch

from ..snn.train import TrainConfig, encode_inputs, input_dtype, make_optimizer, train_epoch
from .continual import gaussian_w2
from .types import ParamDict, load_params_, params_of


def _fit(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rows.mean(0), np.atleast_2d(np.cov(rows, rowvar=False, ddof=1))


@torch.no_grad()
def hidden_counts(model: torch.nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor, cfg: TrainConfig,
                  generator: torch.Generator | None = None, layer: int = 0) -> torch.Tensor:
    """Spike counts ``[B, H]`` of hidden layer ``layer`` of ``model`` with ``params`` on inputs ``x`` (a copy of
    the model is used; ``model`` is not changed). ``ValueError`` if the model has no such hidden layer."""
    net = copy.deepcopy(model)
    load_params_(net, dict(params))
    net.eval()
    out = net(encode_inputs(x.to(input_dtype(net)), cfg, generator))
    hidden = getattr(out, "hidden", None)
    if not hidden or not -len(hidden) <= layer < len(hidden):
        raise ValueError(f"the model has no hidden spiking layer {layer} (it returned "
                         f"{0 if not hidden else len(hidden)})")
    return hidden[layer].sum(0).reshape(x.shape[0], -1).double()


def feature_drift(model: torch.nn.Module, params: Mapping[str, torch.Tensor], x_a: torch.Tensor,
                  x_b: torch.Tensor, cfg: TrainConfig, layer: int = 0) -> float:
    """W2 between Gaussian fits of the hidden spike counts of ``x_a`` and ``x_b`` (module docstring); in spikes
    per neuron. ``ValueError`` with fewer than 2 samples on a side."""
    if len(x_a) < 2 or len(x_b) < 2:
        raise ValueError(f"feature_drift needs >= 2 samples per task, got {len(x_a)} and {len(x_b)}")
    gen = torch.Generator().manual_seed(0)  # stochastic encoders: the same stream for both sides
    fa = hidden_counts(model, params, x_a, cfg, gen, layer).numpy()
    gen = torch.Generator().manual_seed(0)
    fb = hidden_counts(model, params, x_b, cfg, gen, layer).numpy()
    return gaussian_w2(*_fit(fa), *_fit(fb))


def model_drift(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """``||a - b||_2`` over all tensors (same names and shapes, else ``ValueError``)."""
    if list(a) != list(b) or any(a[n].shape != b[n].shape for n in a):
        raise ValueError("model_drift needs two parameter sets with the same names and shapes")
    return float(sum(float((a[n].double() - b[n].double()).pow(2).sum()) for n in a) ** 0.5)


def task_optimum(model: torch.nn.Module, start: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 cfg: TrainConfig, seed: int) -> ParamDict:
    """Parameters after ``cfg.epochs`` of centralized training on ``(x, y)`` from ``start`` (batch order and
    encoder noise from ``torch.Generator().manual_seed(seed)``, so two calls differ only by their data)."""
    net = copy.deepcopy(model)
    load_params_(net, dict(start))
    opt = make_optimizer(net.parameters(), cfg)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(cfg.epochs):
        train_epoch(net, x, y, cfg, opt, gen)
    return params_of(net)


def spearman(a: list[float] | np.ndarray, b: list[float] | np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties; Pearson correlation of the ranks); ``nan`` if either
    side is constant. ``ValueError`` for fewer than 2 pairs or unequal lengths."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.shape != xb.shape or xa.ndim != 1 or len(xa) < 2:
        raise ValueError(f"spearman needs two equal-length sequences of >= 2 values, got {xa.shape}, {xb.shape}")
    ra, rb = _ranks(xa), _ranks(xb)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1, dtype=np.float64)
    for value in np.unique(v):  # ties share their average rank
        tie = v == value
        ranks[tie] = ranks[tie].mean()
    return ranks


def fit_through_origin(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> tuple[float, float]:
    """Least-squares ``y ~ a x`` (no intercept): returns ``(a, rmse)`` of the residual ``y - a x``."""
    xv, yv = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xv.shape != yv.shape or len(xv) < 1 or float(xv @ xv) == 0:
        raise ValueError("fit_through_origin needs equal-length data with a non-zero x")
    a = float(xv @ yv / (xv @ xv))
    return a, float(np.sqrt(np.mean((yv - a * xv) ** 2)))
