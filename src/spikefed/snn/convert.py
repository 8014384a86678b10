"""ANN-to-SNN conversion ("shadow training", seed 004) and hybrid conversion + surrogate-gradient fine-tuning.

Recipe (Diehl et al. 2015, Rueckauer et al. 2017):

1. train a ReLU network :class:`ReLUMLP` with the same layer sizes as the :class:`~spikefed.snn.models.SpikingMLP`
   it becomes (:func:`train_ann`);
2. record, on training data, the activations ``a_l = relu(W_l a_{l-1} + b_l)`` of every layer (the output layer's
   logits through a ReLU too, since a spike rate cannot be negative) and take one scale per layer
   (:func:`activation_scales`): ``lambda_l = max(a_l)`` (``"max"``) or the ``p``-th percentile of the positive
   activations of the layer (``"percentile"``, robust to outliers); ``lambda_0 = 1`` (the input);
3. copy the weights into integrate-and-fire neurons with reset by subtraction, fed the input as a constant current
   (direct coding), and balance them (:func:`convert`):

   - ``balance="weights"`` (weight normalisation): ``W'_l = W_l lambda_{l-1} / lambda_l``, ``b'_l = b_l / lambda_l``,
     threshold 1;
   - ``balance="threshold"`` (threshold balancing): ``W'_l = W_l``, ``b'_l = b_l / lambda_{l-1}``,
     threshold ``theta_l = lambda_l / lambda_{l-1}``.

   Both make the layer-``l`` firing rate ``r_l = a_l / lambda_l`` (clipped to [0, 1]): an IF neuron with reset by
   subtraction, driven by a constant current ``z``, fires ``floor((T z + v_0) / theta)`` times in T steps for
   ``0 <= z <= theta`` (every step for ``z >= theta``, never for ``z <= 0`` unless ``v_0 >= theta``), so its rate
   tends to ``clip(z, 0, theta) / theta`` with an error below ``1 / T``. With ``W'`` and ``theta`` as above the
   current of layer ``l`` is ``(W_l a_{l-1} + b_l) / lambda_l`` times ``theta_l``, hence the rates.
4. predict by output spike count; accuracy rises with the number of steps T towards the ANN's
   (:func:`accuracy_vs_steps` reads every T of a list from one run of the longest one, since the dynamics are causal).

:class:`ConvertedSNN` wraps the converted network so that every run starts with the membranes at
``initial_membrane * theta`` (0.5 halves the rounding error of the rate code, Rueckauer et al.), a plain
``nn.Module`` that :func:`~spikefed.snn.train.fit` (hybrid fine-tuning, :func:`hybrid_finetune`) and
:func:`~spikefed.hardware.metrics.measure` accept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.digits import iterate_batches
from .decoding import predict_count
from .models import ModelOutput, SpikingMLP, init_linear
from .neurons import LIFState
from .train import TrainConfig, fit, fit_loop

__all__ = [
    "BALANCE_MODES", "NORMS", "ConvertedSNN", "ReLUMLP", "StepsAccuracy", "accuracy_vs_steps", "activation_scales",
    "ann_accuracy", "convert", "hybrid_finetune", "train_ann",
]

#: How the per-layer scale is taken from the activations.
NORMS: tuple[str, ...] = ("max", "percentile")
#: Where the scale goes: into the weights (threshold 1) or into the thresholds.
BALANCE_MODES: tuple[str, ...] = ("weights", "threshold")


class ReLUMLP(nn.Module):
    """``sizes = [in, hidden..., out]``: ``Linear -> ReLU`` hidden layers and a linear output (logits).

    Initialised like :class:`~spikefed.snn.models.SpikingMLP` (seeded uniform, same generator use).
    """

    def __init__(self, sizes: Sequence[int], generator: torch.Generator | None = None) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must list >= 2 positive layer widths [in, hidden..., out], got {sizes}")
        self.sizes = sizes
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        init_linear(self.linears, generator if generator is not None else torch.Generator().manual_seed(0))

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.sizes[0]:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected input of shape [B, {self.sizes[0]}], got {shape}")

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Pre-activations ``W_l a_{l-1} + b_l`` of every layer (the last one: the logits), ``[B, width]`` each."""
        self._check(x)
        out, h = [], x
        for i, lin in enumerate(self.linears):
            z = lin(h)
            out.append(z)
            h = F.relu(z) if i < len(self.linears) - 1 else z
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, out]``."""
        return self.activations(x)[-1]


def train_ann(ann: ReLUMLP, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, generator: torch.Generator,
              on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Cross-entropy training of the ReLU network with ``cfg``'s epochs, batch size, optimizer, learning rate,
    weight decay and cosine schedule (the spiking fields of ``cfg`` are not used). Returns the mean loss per epoch."""
    def batch_backward(xb: torch.Tensor, yb: torch.Tensor) -> float:
        loss = F.cross_entropy(ann(xb), yb)
        loss.backward()
        return float(loss.detach())

    return fit_loop(ann, x, y, cfg, generator, batch_backward, on_epoch)


@torch.no_grad()
def ann_accuracy(ann: ReLUMLP, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of samples whose largest logit is the label (ties: the lowest index, as the SNN's count readout)."""
    logits = ann(x)
    best = logits == logits.amax(dim=1, keepdim=True)
    index = torch.arange(logits.shape[1]).expand_as(logits)
    pred = torch.where(best, index, torch.full_like(index, logits.shape[1])).amin(dim=1)
    return float((pred == y).double().mean())


@torch.no_grad()
def activation_scales(ann: ReLUMLP, x: torch.Tensor, norm: str = "max", percentile: float = 99.9,
                      batch_size: int = 1024) -> list[float]:
    """One scale ``lambda_l`` per layer from the ReLU activations ``relu(W_l a_{l-1} + b_l)`` on ``x``.

    ``norm="max"``: the largest activation of the layer (over samples and neurons). ``norm="percentile"``: the
    ``percentile``-th percentile (linear interpolation, ``numpy.percentile``'s default) of the layer's *positive*
    activations (zeros, the silent ReLUs, are left out). The output layer's logits count through a ReLU.

    Raises ``ValueError`` on an unknown ``norm``, a percentile outside (0, 100], an empty or misshaped ``x``, or a
    layer that never activates on ``x`` (its scale would be 0).
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"calibration data must be a non-empty [N, {ann.sizes[0]}] tensor, "
                         f"got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    ann.eval()
    per_layer: list[list[torch.Tensor]] = [[] for _ in ann.linears]
    for start in range(0, x.shape[0], batch_size):
        for i, z in enumerate(ann.activations(x[start:start + batch_size])):
            a = F.relu(z).flatten()
            per_layer[i].append(a if norm == "max" else a[a > 0])
    scales = []
    for i, parts in enumerate(per_layer):
        a = torch.cat(parts).double()
        if a.numel() == 0 or float(a.max()) <= 0:
            raise ValueError(f"layer {i} never activates on the calibration data (all ReLU outputs are 0); "
                             "its scale would be 0: retrain the ANN or use other calibration data")
        scales.append(float(a.max()) if norm == "max" else float(np.percentile(a.numpy(), percentile)))
    return scales


class ConvertedSNN(nn.Module):
    """A converted :class:`SpikingMLP` (IF neurons) whose membranes start at ``initial_membrane * theta_l``.

    ``forward(x [T, B, in], state=None)`` returns the :class:`ModelOutput` of the inner network; with an explicit
    ``state`` (e.g. truncated BPTT windows) that state is used as given.
    """

    def __init__(self, snn: SpikingMLP, initial_membrane: float = 0.5) -> None:
        super().__init__()
        if not isinstance(initial_membrane, (int, float)) or isinstance(initial_membrane, bool) or \
                not 0 <= initial_membrane < 1:
            raise ValueError("initial_membrane must be a fraction of the threshold in [0, 1), "
                             f"got {initial_membrane!r}")
        self.snn = snn
        self.initial_membrane = float(initial_membrane)

    @property
    def sizes(self) -> list[int]:
        return self.snn.sizes

    @property
    def thresholds(self) -> list[float]:
        return [float(n.threshold.detach().reshape(-1)[0]) for n in self.snn.neurons]

    def initial_state(self, batch: int, like: torch.Tensor) -> list[LIFState]:
        return [LIFState(torch.zeros((batch, *n.features), dtype=like.dtype, device=like.device)
                         + self.initial_membrane * n.threshold.detach()) for n in self.snn.neurons]

    def forward(self, x: torch.Tensor, state: Sequence[Any] | None = None) -> ModelOutput:
        if state is None and self.initial_membrane and isinstance(x, torch.Tensor) and x.dim() >= 3:
            state = self.initial_state(int(x.shape[1]), x)
        return self.snn(x, state)


def convert(ann: ReLUMLP, scales: Sequence[float], balance: str = "weights", initial_membrane: float = 0.5,
            surrogate: str = "atan", slope: float | None = None) -> ConvertedSNN:
    """Copy the ANN's weights into an IF :class:`SpikingMLP` (reset by subtraction) balanced with ``scales``.

    ``scales``: one positive ``lambda_l`` per layer (:func:`activation_scales`). ``surrogate``/``slope`` only matter
    for fine-tuning. See the module docstring for the two ``balance`` modes.
    """
    if balance not in BALANCE_MODES:
        raise ValueError(f"unknown balance {balance!r}; valid: {', '.join(BALANCE_MODES)}")
    lams = [float(s) for s in scales]
    if len(lams) != len(ann.linears):
        raise ValueError(f"scales must have one entry per layer ({len(ann.linears)}), got {len(lams)}")
    if not all(math.isfinite(s) and s > 0 for s in lams):
        raise ValueError(f"scales must be finite and > 0, got {lams}")
    snn = SpikingMLP(ann.sizes, neuron="if", readout="spikes", reset="subtract", surrogate=surrogate, slope=slope)
    previous = 1.0
    with torch.no_grad():
        for lin, target, neuron, lam in zip(ann.linears, snn.linears, snn.neurons, lams):
            if balance == "weights":
                target.weight.copy_(lin.weight * (previous / lam))
                target.bias.copy_(lin.bias / lam)
            else:
                target.weight.copy_(lin.weight)
                target.bias.copy_(lin.bias / previous)
                neuron.threshold.fill_(lam / previous)
            previous = lam
    return ConvertedSNN(snn, initial_membrane)


@dataclass(frozen=True)
class StepsAccuracy:
    """Accuracy and output/hidden spikes per sample after the first ``steps`` time steps."""

    steps: int
    accuracy: float
    spikes_per_sample: float


@torch.no_grad()
def accuracy_vs_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: Sequence[int],
                      batch_size: int = 512) -> list[StepsAccuracy]:
    """Count-readout accuracy after each T in ``steps`` (direct coding), from one run of ``max(steps)`` steps.

    ``spikes_per_sample`` counts every spike of every spiking layer (hidden and output) in the first T steps.
    """
    wanted = sorted({int(t) for t in steps})
    if not wanted or wanted[0] < 1:
        raise ValueError(f"steps must be a non-empty list of integers >= 1, got {list(steps)}")
    horizon = wanted[-1]
    correct = dict.fromkeys(wanted, 0)
    spikes = dict.fromkeys(wanted, 0.0)
    model.eval()
    n = 0
    for xb, yb in iterate_batches(x, y, batch_size, shuffle=False):
        out = model(xb.unsqueeze(0).expand(horizon, *xb.shape))
        per_step = sum(h.flatten(2).sum(dim=(1, 2)) for h in out.hidden)  # [T] spikes over the batch
        cumulative = torch.cumsum(per_step, 0)
        for t in wanted:
            correct[t] += int((predict_count(out.output[:t]) == yb).sum())
            spikes[t] += float(cumulative[t - 1])
        n += yb.shape[0]
    return [StepsAccuracy(t, correct[t] / n, spikes[t] / n) for t in wanted]


def hybrid_finetune(model: ConvertedSNN, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                    generator: torch.Generator,
                    on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Hybrid training: surrogate-gradient fine-tuning of the converted network with
    :func:`~spikefed.snn.train.fit` (usually at a small ``cfg.num_steps``, ``loss="ce_count"``, direct coding)."""
    if cfg.encoder != "direct":
        raise ValueError(f"hybrid fine-tuning feeds the converted network direct current; encoder must be 'direct', "
                         f"got {cfg.encoder!r}")
    return fit(model, x, y, cfg, generator, on_epoch=on_epoch)
