"""Centralized training run (``spikefed train``): settings -> data, model, training -> result dict."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from ..data.digits import DatasetSplit, load_digits_split
from ..seeding import Purpose, derive_seed
from ..snn.init import variance_preserving_init
from ..snn.models import SpikingMLP
from ..snn.local import RULE_METHODS, rule_support
from ..snn.residual import ResidualSpikingMLP
from ..snn.online import eprop_support
from ..snn.train import evaluate, fit
from .config import ConfigError, DataSettings, TrainSettings


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
                generator: torch.Generator) -> Any:
    m = settings.model
    out = num_classes * settings.train.population
    sizes = [in_features, *m.hidden, out]
    model: Any
    try:
        if m.blocks():
            model = ResidualSpikingMLP(sizes, neuron=m.neuron, readout=m.readout, generator=generator,
                                       dropout_seed=derive_seed(settings.seed, Purpose.DROPOUT) % 2**32,
                                       **m.blocks(), **m.neuron_kwargs())
        else:
            model = SpikingMLP(sizes, neuron=m.neuron, readout=m.readout, generator=generator,
                               **m.neuron_kwargs())
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.neuron={m.neuron} (model.neuron_options={m.neuron_options}): {e}") from None
    if m.init == "variance_preserving":
        variance_preserving_init(model.linears, generator, m.init_rate, m.beta if m.neuron != "if" else 0.0,
                                 m.threshold)
    if settings.train.method == "eprop":
        reason = eprop_support(model, settings.train.membrane_reduction, settings.train.population)
        if reason is not None:
            raise ConfigError(f"method=eprop: {reason}")
    if settings.train.method in RULE_METHODS:
        reason = rule_support(model, settings.train.method)
        if reason is not None:
            raise ConfigError(f"local.method={settings.train.method}: {reason}")
    return model


def run_centralized(settings: TrainSettings,
                    on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train a spiking MLP on the configured data; every random choice comes from generators seeded by
    ``settings.seed``. Returns the metrics that ``spikefed train --json`` prints."""
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
    widths = model.sizes[1:1 + len(rates)]  # every spiking layer, the spiking output layer included
    mean_rate = sum(r * n for r, n in zip(rates, widths)) / sum(widths) if rates else 0.0
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
