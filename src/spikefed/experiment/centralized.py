"""Centralized training run (``spikefed train``): settings -> data, model, training -> result dict."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from ..data.digits import DatasetSplit, load_digits_split
from ..snn.train import evaluate, fit
from .config import DataSettings, TrainSettings


def load_dataset(data: DataSettings, seed: int) -> DatasetSplit:
    """The configured dataset and split. Event data (``event_digits``, ``event_mnist5k``, and the recorded
    ``nmnist``, ``dvs_gesture``, ``shd``, ``ssc``) comes binned into ``data.bins`` frames, ``x [N, bins, F]``
    with ``sequence=True`` (``data.scale`` does not apply to it; see experiment.eventdata)."""
    if data.name == "digits":
        return load_digits_split(test_size=data.test_size, seed=seed, scale=data.scale)
    from .eventdata import load_event_data

    return load_event_data(data, seed).split


def load_data(settings: TrainSettings) -> DatasetSplit:
    return load_dataset(settings.data, settings.seed)


def build_model(settings: TrainSettings, in_features: int, num_classes: int,
                generator: torch.Generator, feature_shape: tuple[int, ...] | None = None) -> torch.nn.Module:
    """The configured network (every ``model.kind``): :func:`spikefed.experiment.models.build_model`."""
    from .models import build_model as build

    return build(settings, in_features, num_classes, generator, feature_shape)


def run_centralized(settings: TrainSettings,
                    on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train the configured spiking network (``model.kind``) on the configured data; every random choice comes
    from generators seeded by ``settings.seed``. Returns the metrics that ``spikefed train --json`` prints."""
    start = time.perf_counter()
    torch.manual_seed(settings.seed)  # only as a guard: all sampling below uses explicit generators
    data = load_data(settings)
    gen = torch.Generator().manual_seed(settings.seed)
    cfg = settings.train.to_train_config()
    model = build_model(settings, data.step_features, data.num_classes, gen)
    history = fit(model, data.x_train, data.y_train, cfg, gen, on_epoch=on_epoch)
    test = evaluate(model, data.x_test, data.y_test, cfg, gen)
    seconds = time.perf_counter() - start
    rates = test.firing_rate
    from .models import hidden_widths

    widths = hidden_widths(model)[:len(rates)]  # every spiking layer, the spiking output layer included
    mean_rate = sum(r * n for r, n in zip(rates, widths)) / sum(widths) if rates and widths else 0.0
    return {
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "train_accuracy": history[-1]["train_accuracy"],
        "train_loss": history[-1]["train_loss"],
        "firing_rate": mean_rate,
        "firing_rate_per_layer": rates,
        "spikes_per_neuron": test.spikes_per_neuron,
        "spikes_per_sample": test.spikes_per_sample,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": cfg.epochs,
        "train_samples": int(data.y_train.shape[0]),
        "test_samples": int(data.y_test.shape[0]),
        "seed": settings.seed,
        "seconds": seconds,
        "history": history,
    }
