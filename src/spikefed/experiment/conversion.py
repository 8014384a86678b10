"""``spikefed convert`` and ``spikefed regress``: settings -> data, model, training -> result dict.

Random streams (``derive_seed(seed, purpose)``, :mod:`spikefed.seeding`): conversion draws the ReLU network's
initialisation from ``CONVERT_INIT``, its shuffling from ``CONVERT_SHUFFLE`` and the hybrid fine-tuning's
shuffling from ``FINETUNE`` (so fine-tuning or not leaves the ANN and the converted network unchanged);
regression draws the series' initial history from ``SERIES``, the model's initialisation from
``REGRESS_INIT`` and the shuffling from ``REGRESS_SHUFFLE``.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

import torch

from ..data.digits import load_digits_split
from ..data.mackey_glass import mackey_glass_split
from ..seeding import Purpose, derive_seed, torch_generator
from ..hardware.metrics import measure
from ..snn.convert import (ReLUMLP, accuracy_vs_steps, activation_scales, ann_accuracy, convert, hybrid_finetune,
                           train_ann)
from ..snn.models import RecurrentRegressor
from ..snn.regression import change_scale, evaluate_regression, fit_regression
from ..snn.train import TrainConfig
from .config import ConvertSettings, RegressSettings


Progress = Callable[[str, int, int, str], None]
"""``progress(stage, done, total, info)``: called after every epoch of every training stage."""


def _rows(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: list[int],
          energy_samples: int) -> list[dict[str, Any]]:
    """Accuracy and spikes per sample at every T, with energy per inference (``measure``, 45 nm) on the first
    ``energy_samples`` test samples."""
    rows = []
    probe = x[:energy_samples]
    for r in accuracy_vs_steps(model, x, y, steps):
        m = measure(model, probe.unsqueeze(0).expand(r.steps, *probe.shape))
        rows.append({"steps": r.steps, "accuracy": r.accuracy, "spikes_per_sample": r.spikes_per_sample,
                     "synops": m.synops / m.samples, "energy_j": m.energy_j})
    return rows


def run_conversion(settings: ConvertSettings, progress: Progress | None = None,
                   energy_samples: int = 64) -> dict[str, Any]:
    """Train the ReLU network, convert it, evaluate it at every T (and after hybrid fine-tuning if asked)."""
    start = time.perf_counter()
    c, seed = settings.convert, settings.seed
    data = load_digits_split(test_size=settings.data.test_size, seed=seed, scale=settings.data.scale)
    sizes = [data.num_features, *c.hidden, data.num_classes]
    ann = ReLUMLP(sizes, generator=torch_generator(seed, Purpose.CONVERT_INIT))
    ann_cfg = TrainConfig(epochs=c.ann_epochs, batch_size=c.batch_size, lr=c.ann_lr)
    train_ann(ann, data.x_train, data.y_train, ann_cfg, torch_generator(seed, Purpose.CONVERT_SHUFFLE),
              on_epoch=None if progress is None else
              lambda e, loss: progress("ann", e + 1, c.ann_epochs, f"loss {loss:.4f}"))
    ann_acc = ann_accuracy(ann, data.x_test, data.y_test)
    scales = activation_scales(ann, data.x_train, c.norm, c.percentile)
    snn = convert(ann, scales, c.balance, c.initial_membrane)
    rows = _rows(snn, data.x_test, data.y_test, c.steps, energy_samples)
    result: dict[str, Any] = {
        "ann_accuracy": ann_acc, "scales": scales, "thresholds": snn.thresholds, "sizes": sizes,
        "norm": c.norm, "percentile": c.percentile, "balance": c.balance, "initial_membrane": c.initial_membrane,
        "converted": rows, "gap_at_max_steps": ann_acc - rows[-1]["accuracy"],
    }
    if c.finetune_epochs:
        tuned = copy.deepcopy(snn)
        cfg = TrainConfig(epochs=c.finetune_epochs, batch_size=c.batch_size, lr=c.finetune_lr,
                          num_steps=c.finetune_steps, loss="ce_count")
        hybrid_finetune(tuned, data.x_train, data.y_train, cfg, torch_generator(seed, Purpose.FINETUNE),
                        on_epoch=None if progress is None else
                        lambda e, row: progress("finetune", e + 1, c.finetune_epochs,
                                                f"loss {row['train_loss']:.4f}"))
        result["hybrid"] = _rows(tuned, data.x_test, data.y_test, c.steps, energy_samples)
        result["finetune_steps"] = c.finetune_steps
    result.update(seed=seed, train_samples=data.num_train, test_samples=data.num_test,
                  seconds=time.perf_counter() - start)
    return result


def run_regression(settings: RegressSettings, progress: Progress | None = None) -> dict[str, Any]:
    """Generate the series, train the recurrent SNN, and compare it with persistence on the test windows."""
    start = time.perf_counter()
    d, t, seed = settings.data, settings.train, settings.seed
    split = mackey_glass_split(d.length, window=d.window, horizon=d.horizon, train_fraction=d.train_fraction,
                               seed=derive_seed(seed, Purpose.SERIES), history_noise=d.history_noise,
                               tau=d.tau, dt=d.dt, sample_every=d.sample_every, discard=d.discard)
    model = RecurrentRegressor(1, t.hidden, 1, neuron=t.neuron, readout_beta=t.readout_beta,
                               generator=torch_generator(seed, Purpose.REGRESS_INIT), beta=t.beta,
                               threshold=t.threshold)
    cfg = TrainConfig(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, tbptt=t.tbptt, grad_clip=t.grad_clip)
    scale = change_scale(split.x_train, split.y_train, t.warmup) if t.target == "change" else None
    history = fit_regression(model, split.x_train, split.y_train, cfg, torch_generator(seed, Purpose.REGRESS_SHUFFLE),
                             warmup=t.warmup, on_epoch=None if progress is None else
                             lambda e, loss: progress("train", e + 1, t.epochs, f"loss {loss:.4f}"),
                             change_scale=scale)
    test = evaluate_regression(model, split.x_test, split.y_test, t.warmup, split.denormalize, scale)
    train = evaluate_regression(model, split.x_train, split.y_train, t.warmup, split.denormalize, scale)
    return {
        **test.to_dict(), "train_mse": train.mse, "train_persistence_mse": train.persistence_mse,
        "beats_persistence": test.mse < test.persistence_mse, "horizon": d.horizon, "target": t.target,
        "final_train_loss": history[-1],
        "train_windows": int(split.x_train.shape[0]), "test_windows": int(split.x_test.shape[0]),
        "parameters": sum(p.numel() for p in model.parameters()), "seed": seed,
        "seconds": time.perf_counter() - start,
    }
