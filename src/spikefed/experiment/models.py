"""The model builder: ``model.*`` settings -> a spiking network sized for the data.

One function, :func:`build_model`, used by ``spikefed train``, ``spikefed run``, the Python API
(:mod:`spikefed.experiment.api`) and the Flower ClientApp (through :func:`~spikefed.experiment.runner.build_spec`),
so every path trains the same network for the same config.

- ``model.kind = mlp``: :class:`~spikefed.snn.models.SpikingMLP` ``[in, *hidden, classes * population]``.
- ``model.kind = recurrent``: the same layers, the hidden ones recurrent (``lif``/``rlif`` -> ``rlif``,
  ``alif``/``ralif`` -> ``ralif``: input ``x[t] + V s[t-1]``), the output layer feed-forward (``lif``/``alif``).
- ``model.kind = conv``: :class:`~spikefed.snn.models.SpikingConvNet`. Its input plane comes from the data
  (:func:`conv_input_shape`): the static digits are 8x8 images, ``1 x 8 x 8``; event frames are two polarity
  channels (ON, OFF) of the (downsampled) sensor, ``2 x H x W`` (event_digits: 20x20, event_mnist5k: 17x17 at the
  default downsampling 2; nmnist / dvs_gesture: their sensor, cropped and downsampled).
- ``model.delays = D``: learnable axonal delays on the circle ``[0, D)`` (mlp/recurrent: after each hidden layer;
  conv: before the read-out).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..events.datasets import EVENT_DATASETS
from ..seeding import Purpose, derive_seed
from ..snn.init import variance_preserving_init
from ..snn.local import RULE_METHODS, rule_support
from ..snn.models import SpikingConvNet, SpikingMLP
from ..snn.residual import ResidualSpikingMLP
from .config import ConfigError, DataSettings, TrainSettings

#: the recurrent hidden neuron and the feed-forward output neuron of ``model.kind = recurrent``
RECURRENT_FORMS: dict[str, tuple[str, str]] = {"lif": ("rlif", "lif"), "rlif": ("rlif", "lif"),
                                               "alif": ("ralif", "alif"), "ralif": ("ralif", "alif")}

#: event data sets recorded by a 1-D array of channels (a cochlea), which have no image plane for a conv net
CHANNEL_DATASETS = ("shd", "ssc")


def conv_input_shape(data: DataSettings, features: int,
                     feature_shape: tuple[int, ...] | None = None) -> tuple[int, int, int]:
    """``(channels, height, width)`` of a conv net's input for ``features`` inputs per step.

    ``feature_shape`` (your own data set, Python API): used when it is already ``(C, H, W)``. Static digits:
    ``(1, 8, 8)``. Event frames: ``(2, s, s)`` with ``s^2 = features / 2`` (the sensor square after crop and
    downsampling). Anything else is a :class:`ConfigError` naming ``model.kind``.
    """
    if feature_shape is not None and len(feature_shape) == 3:
        return int(feature_shape[0]), int(feature_shape[1]), int(feature_shape[2])
    if data.name == "digits":
        side = math.isqrt(features)
        if side * side == features:
            return 1, side, side
    elif data.name in CHANNEL_DATASETS:
        raise ConfigError(f"model.kind=conv needs an image plane; data.name={data.name} is a 1-D array of "
                          "channels (use model.kind=mlp or recurrent)")
    elif data.name in EVENT_DATASETS and features % 2 == 0:
        side = math.isqrt(features // 2)
        if side * side * 2 == features:
            return 2, side, side
    raise ConfigError(f"model.kind=conv: cannot lay {features} input features of data.name={data.name} out as "
                      "an image (a square sensor of two polarities is needed; set data.crop to a square)")


def build_model(settings: TrainSettings, in_features: int, num_classes: int, generator: torch.Generator,
                feature_shape: tuple[int, ...] | None = None) -> nn.Module:
    """The configured network for ``in_features`` inputs per step and ``num_classes`` classes (times
    ``train.population`` output neurons); every random choice from ``generator``. ``ConfigError`` (one line
    naming the key) for a model the data cannot feed or e-prop cannot train."""
    m = settings.model
    out = num_classes * settings.train.population
    kw: dict[str, Any] = m.neuron_kwargs()
    try:
        if m.kind == "conv":
            shape = conv_input_shape(settings.data, in_features, feature_shape)
            model: nn.Module = SpikingConvNet(
                shape, out, channels=m.channels, kernel_size=m.kernel, pool=m.pool, neuron=m.neuron,
                readout=m.readout, generator=generator, stride=m.stride, padding=m.padding, pooling=m.pooling,
                residual=m.residual, delays=m.delays, **kw)
        elif m.kind == "recurrent":
            hidden_kind, out_kind = RECURRENT_FORMS[m.neuron]
            model = SpikingMLP([in_features, *m.hidden, out], neuron=hidden_kind, readout=m.readout,
                               generator=generator, output_neuron=out_kind, delays=m.delays, **kw)
        elif m.blocks():  # tdBN, time-fixed dropout, residual shortcuts (snn.residual)
            if m.delays:
                raise ConfigError("model.delays with model.norm / dropout / residual: the residual MLP has no "
                                  "delay layers; set model.delays=0 or drop the block options")
            model = ResidualSpikingMLP([in_features, *m.hidden, out], neuron=m.neuron, readout=m.readout,
                                       generator=generator,
                                       dropout_seed=derive_seed(settings.seed, Purpose.DROPOUT) % 2**32,
                                       **m.blocks(), **kw)
        else:
            model = SpikingMLP([in_features, *m.hidden, out], neuron=m.neuron, readout=m.readout,
                               generator=generator, delays=m.delays, **kw)
    except (TypeError, ValueError) as e:  # a shape the data cannot feed, a neuron option the neuron lacks
        detail = f", neuron={m.neuron}, neuron_options={m.neuron_options}" if m.neuron_options else ""
        raise ConfigError(f"model (kind={m.kind}{detail}): {e}") from None
    if m.init == "variance_preserving":
        variance_preserving_init(model.linears, generator, m.init_rate, m.beta if m.neuron != "if" else 0.0,
                                 m.threshold)
    if settings.train.method in RULE_METHODS:
        reason = rule_support(model, settings.train.method)
        if reason is not None:
            raise ConfigError(f"local.method={settings.train.method}: {reason}")
    if settings.train.method == "eprop":
        from ..snn.online import eprop_support

        if m.delays:
            raise ConfigError("method=eprop: e-prop's eligibility traces assume each spike reaches the next layer "
                              "in the same step; set model.delays=0 (or local.method=bptt)")
        reason = eprop_support(model, settings.train.membrane_reduction, settings.train.population)
        if reason is not None:
            raise ConfigError(f"method=eprop: {reason}")
    return model


def hidden_widths(model: nn.Module) -> list[int]:
    """Neurons of each entry of ``ModelOutput.hidden`` (for firing rates per layer); ``[]`` if unknown."""
    if isinstance(model, SpikingConvNet):
        return list(model.hidden_widths)
    sizes = getattr(model, "sizes", None)
    return list(sizes[1:]) if sizes is not None else []


def has_delays(model: nn.Module) -> bool:
    """Whether ``model`` holds axonal delay layers (:class:`~spikefed.snn.delay.Delay`)."""
    from ..snn.delay import Delay

    return any(isinstance(mod, Delay) for mod in model.modules())
