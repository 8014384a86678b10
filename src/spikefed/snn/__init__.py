"""Spiking neural network engine: neurons, surrogate gradients, encoders, decoders, losses, models, training."""

from .delay import Delay, DelayState, delay_shift
from .kernels import lif_fused, lif_reference, lif_step, lowpass, lowpass_reference
from .models import ModelOutput, RecurrentRegressor, as_model_output, SpikingConvNet, SpikingMLP
from .neurons import (
    ALIF,
    IF,
    LIF,
    NEURONS,
    ALIFState,
    LeakyIntegrator,
    LIFState,
    NeuronOutput,
    RecurrentALIF,
    RecurrentLIF,
    RecurrentState,
    Synaptic,
    SynapticState,
    make_neuron,
)
from .surrogate import SURROGATES, Surrogate, get_surrogate, heaviside, spike
from .train import EvalResult, TrainConfig, evaluate, fit, train_epoch

__all__ = [
    "ALIF", "ALIFState", "Delay", "DelayState", "EvalResult", "IF", "LIF", "LIFState", "LeakyIntegrator",
    "ModelOutput", "NEURONS", "NeuronOutput", "RecurrentALIF", "RecurrentLIF", "RecurrentRegressor", "RecurrentState",
    "SURROGATES", "SpikingConvNet", "SpikingMLP", "Surrogate", "Synaptic", "SynapticState", "TrainConfig",
    "as_model_output", "delay_shift", "evaluate", "fit", "get_surrogate", "heaviside", "lif_fused", "lif_reference",
    "lif_step", "lowpass", "lowpass_reference", "make_neuron", "spike", "train_epoch",
]
