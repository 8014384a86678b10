"""Spiking network models built from the layers in :mod:`spikefed.snn.neurons`.

All models take a time-major input ``[T, B, *features]`` and an optional explicit state (a list with one entry
per stateful layer, as returned in :class:`ModelOutput.state`), and return a :class:`ModelOutput`. Linear and
convolution layers are applied to all T steps at once (folded into the batch), so a layer costs one matmul plus
one fused neuron call.

- :class:`SpikingMLP`: ``Linear -> neuron`` blocks; the output layer spikes (decode counts / first spikes) or is a
  non-spiking leaky integrator (decode the membrane).
- :class:`SpikingConvNet`: ``conv -> neuron -> pool`` blocks (stride, padding, max/avg/sum pooling, optional
  spiking residual blocks), then a linear read-out.
- :class:`RecurrentRegressor`: recurrent spiking layer (RLIF/ALIF/LIF) with a low-pass (synaptic filter) linear
  read-out, for sequence regression with an MSE loss.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
from torch import nn

from .delay import Delay
from .neurons import LeakyIntegrator, NeuronOutput, check_sequence, make_neuron

READOUTS = ("spikes", "membrane")


class ModelOutput(NamedTuple):
    """``output``: ``[T, B, C]`` spikes (readout "spikes") or membrane (readout "membrane");
    ``membrane``: output-layer membrane ``[T, B, C]``; ``hidden``: spikes of each hidden spiking layer;
    ``state``: final state of every stateful layer (pass it back in to continue the sequence)."""

    output: torch.Tensor
    membrane: torch.Tensor
    hidden: list[torch.Tensor]
    state: list[Any]


def as_model_output(out: Any, model: Any = None) -> ModelOutput:
    """What a model returned, as a :class:`ModelOutput`: the boundary between spikefed's training loops and any
    model (spikefed's own return a ``ModelOutput``; your own may return a plain time-major tensor).

    Accepted: a ``ModelOutput``; a tensor ``[T, B, C]`` (per-step output spikes, or membrane potentials for the
    membrane losses), taken as ``output`` and ``membrane`` with no hidden layers (the activity regularisers and
    the per-layer firing rates then see none). Anything else raises ``TypeError`` naming the model and what it
    returned.
    """
    if isinstance(out, ModelOutput):
        return out
    name = type(model).__name__ if model is not None else "the model"
    if isinstance(out, torch.Tensor):
        if out.dim() == 3:
            return ModelOutput(out, out, [], [])
        raise TypeError(f"{name} returned a tensor of shape {list(out.shape)}; spikefed needs the output of every "
                        "time step, time-major [T, B, classes] (e.g. torch.stack(per_step_outputs)), or a "
                        "spikefed.snn.ModelOutput")
    what = type(out).__name__ + (f" of {len(out)} items" if isinstance(out, (tuple, list)) else "")
    raise TypeError(f"{name} returned a {what}; spikefed needs a time-major tensor [T, B, classes] (spikes, or "
                    "membrane potentials for the membrane losses) or a spikefed.snn.ModelOutput (for a model "
                    "returning (spikes, membrane), return the spikes)")


def _fold(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    t, b = x.shape[:2]
    return x.reshape(t * b, *x.shape[2:]), (t, b)


def _unfold(x: torch.Tensor, tb: tuple[int, int]) -> torch.Tensor:
    return x.reshape(*tb, *x.shape[1:])


def is_time_constant(x: torch.Tensor) -> bool:
    """Whether ``x [T, ...]`` is one tensor broadcast over time (a stride-0 view, as direct coding produces)."""
    return x.dim() > 1 and x.shape[0] > 1 and x.stride(0) == 0


def time_invariant(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a stateless layer to ``x [T, B, ...]``; a time-constant input is processed once and broadcast."""
    if is_time_constant(x):
        y = layer(x[0])
        return y.unsqueeze(0).expand(x.shape[0], *y.shape)
    return layer(x)


def _per_step(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer on one sample ``[B, *shape]`` applied to every step of ``x [T, B, *shape]`` (once if constant)."""
    if is_time_constant(x):
        y = layer(x[0])
        return y.unsqueeze(0).expand(x.shape[0], *y.shape)
    flat, tb = _fold(x)
    return _unfold(layer(flat), tb)


def _check_state(state: Sequence[Any] | None, n: int) -> list[Any]:
    if state is None:
        return [None] * n
    if len(state) != n:
        raise ValueError(f"state must have one entry per stateful layer ({n}), got {len(state)}")
    return list(state)


class SpikingMLP(nn.Module):
    """Fully connected SNN: ``sizes = [in, hidden..., out]``, each ``Linear`` followed by a spiking neuron.

    Args:
        sizes: layer widths, at least ``[in, out]``.
        neuron: hidden/output neuron kind (``lif``, ``if``, ``synaptic``, ``alif``, ``rlif``, ``ralif``).
        readout: ``"spikes"`` (output layer spikes) or ``"membrane"`` (non-spiking leaky integrator output).
        neuron_kwargs: passed to every neuron (beta, threshold, reset, surrogate, slope, learn_* ...).
        generator: seeds the weight initialisation (default: a fresh generator seeded with 0).
        output_neuron: the output layer's neuron kind when it differs from the hidden layers' (e.g. recurrent
            hidden layers ``rlif`` with a feed-forward ``lif`` output); default ``neuron``.
        delays: ``D >= 1`` puts learnable axonal delays on the spikes of every hidden layer,
            ``z[t, :, i] = s[t - d_i, :, i]`` with ``d`` on the ring ``circular(D)`` (:class:`~.delay.Delay`;
            averaged circularly in a federated run); 0: none.
    """

    def __init__(self, sizes: Sequence[int], neuron: str = "lif", readout: str = "spikes",
                 generator: torch.Generator | None = None, bias: bool = True, *, output_neuron: str | None = None,
                 delays: int = 0, **neuron_kwargs: Any) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must list >= 2 positive layer widths [in, hidden..., out], got {sizes}")
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; valid: {', '.join(READOUTS)}")
        self.sizes, self.readout = sizes, readout
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        self.linears = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:]))
        init_linear(self.linears, gen)
        n_spiking = len(sizes) - 1 if readout == "spikes" else len(sizes) - 2

        def layer(kind: str, width: int) -> nn.Module:
            kw = dict(neuron_kwargs)
            if kind in ("rlif", "ralif"):
                kw["generator"] = gen
            return make_neuron(kind, width, **kw)

        last = output_neuron if output_neuron is not None else neuron
        self.neurons = nn.ModuleList(layer(neuron if i < len(sizes) - 2 else last, sizes[i + 1])
                                     for i in range(n_spiking))
        beta = float(neuron_kwargs.get("beta", 0.9))
        self.integrator = LeakyIntegrator(sizes[-1], beta=beta) if readout == "membrane" else None
        # learnable axonal delays on the spikes of every hidden layer (none without hidden layers)
        self.delays = (nn.ModuleList(Delay(w, delays, init="uniform", generator=gen) for w in sizes[1:-1])
                       if delays else None)

    @property
    def in_features(self) -> int:
        return self.sizes[0]

    def forward(self, x: torch.Tensor, state: Sequence[Any] | None = None) -> ModelOutput:
        check_sequence(x, (self.sizes[0],))
        n_neural = len(self.neurons) + (1 if self.integrator is not None else 0)
        n_delay = len(self.delays) if self.delays is not None else 0
        states = _check_state(state, n_neural + n_delay)
        hidden: list[torch.Tensor] = []
        new_state: list[Any] = []
        delay_states: list[Any] = []
        h = x
        out: NeuronOutput | None = None
        for i, lin in enumerate(self.linears):
            h = time_invariant(lin, h)
            if i < len(self.neurons):
                out = self.neurons[i].run(h, states[i])
                new_state.append(out.state)
                h = out.spikes
                if i < len(self.linears) - 1:
                    hidden.append(h)
                    if self.delays is not None:
                        h, ds = self.delays[i](h, states[n_neural + i])
                        delay_states.append(ds)
        if self.integrator is not None:
            mem, last = self.integrator(h, states[n_neural - 1])
            new_state.append(last)
            return ModelOutput(mem, mem, hidden, new_state + delay_states)
        assert out is not None
        return ModelOutput(out.spikes, out.membrane, hidden + [out.spikes], new_state + delay_states)


POOLINGS = ("max", "avg", "sum")


class SumPool2d(nn.Module):
    """Sum pooling: the sum of each ``k x k`` window (stride ``k``), ``k^2`` times average pooling. Spike counts
    add up, so a pooled unit carries every spike of its window (max pooling keeps one, average divides them)."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        return torch.nn.functional.avg_pool2d(x, k) * float(k * k)


def make_pool(pooling: str, size: int) -> nn.Module:
    """``max`` / ``avg`` / ``sum`` pooling over ``size x size`` windows with stride ``size`` (identity for 1)."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    if size == 1:
        return nn.Identity()
    return {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "sum": SumPool2d}[pooling](size)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis: ``floor((size + 2 padding - kernel) / stride) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


class SpikingConvNet(nn.Module):
    """Convolutional SNN: ``[conv -> neuron -> pool] x len(channels)``, then a linear read-out ``Linear -> neuron``
    (or a leaky integrator for ``readout="membrane"``).

    Block ``l`` computes, for every time step, the current ``I_l[t] = conv_l(z_{l-1}[t])`` (``+ z_{l-1}[t]`` for a
    residual block), the spikes ``s_l = neuron(I_l)`` and the pooled output ``z_l[t] = pool(s_l[t])``. A block is
    residual only when ``residual=True`` and its input and convolution output have the same shape (same
    channels, stride 1, size-preserving padding): the input spikes then add to the current (a spiking residual
    block, spike-element-wise ADD before the neuron). Optional axonal delays (``delays = D >= 1``) delay each
    flattened feature of the last block before the read-out (:class:`~spikefed.snn.delay.Delay`, learnable).

    Input ``[T, B, C, H, W]``, or flat ``[T, B, C*H*W]`` (reshaped; event frames arrive flat, channels first).
    ``num_classes`` output neurons (spiking or leaky-integrator read-out).
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (16, 32),
                 kernel_size: int = 3, pool: int = 2, neuron: str = "lif", readout: str = "spikes",
                 generator: torch.Generator | None = None, *, stride: int = 1, padding: int | None = None,
                 pooling: str = "max", residual: bool = False, delays: int = 0, **neuron_kwargs: Any) -> None:
        super().__init__()
        in_shape = tuple(int(s) for s in in_shape)
        if len(in_shape) != 3:
            raise ValueError(f"in_shape must be (channels, height, width), got {in_shape}")
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; valid: {', '.join(READOUTS)}")
        if neuron in ("rlif", "ralif"):
            raise ValueError("SpikingConvNet needs a feed-forward neuron (lif, if, synaptic, alif)")
        pad = kernel_size // 2 if padding is None else int(padding)
        if kernel_size < 1 or stride < 1 or pad < 0 or pool < 1:
            raise ValueError(f"kernel_size, stride, pool must be >= 1 and padding >= 0, got {kernel_size}, "
                             f"{stride}, {pool}, {pad}")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        self.in_shape, self.readout = in_shape, readout
        self.kernel_size, self.stride, self.padding, self.pool_size = int(kernel_size), int(stride), pad, int(pool)
        self.pooling, self.residual_requested = pooling, bool(residual)
        c, h, w = in_shape
        convs, neurons, residual_flags, widths = [], [], [], []
        for i, ch in enumerate(channels):
            ho, wo = (conv_output_size(n, kernel_size, stride, pad) for n in (h, w))
            if ho < 1 or wo < 1:
                raise ValueError(f"conv block {i}: kernel {kernel_size} (stride {stride}, padding {pad}) does not "
                                 f"fit its {h}x{w} input")
            if ho < pool or wo < pool:
                raise ValueError(f"conv block {i}: pooling {pool}x{pool} does not fit its {ho}x{wo} feature map "
                                 f"(input {in_shape})")
            convs.append(nn.Conv2d(c, ch, kernel_size, stride=stride, padding=pad))
            neurons.append(make_neuron(neuron, (ch, ho, wo), **neuron_kwargs))
            residual_flags.append(bool(residual) and (c, h, w) == (ch, ho, wo))
            c, h, w = ch, ho // pool, wo // pool
            widths.append(c * h * w)
        self.convs, self.conv_neurons = nn.ModuleList(convs), nn.ModuleList(neurons)
        self.residual = tuple(residual_flags)
        self.pool = make_pool(pooling, pool)
        self.head = SpikingMLP([c * h * w, num_classes], neuron=neuron, readout=readout, generator=gen,
                               **neuron_kwargs)
        init_linear(self.convs, gen)
        self.delay = Delay(c * h * w, delays, init="uniform", generator=gen) if delays else None
        #: neurons per hidden output (each block's pooled map, then the head's spiking layer)
        self.hidden_widths = widths + self.head.sizes[1:1 + len(self.head.neurons)]

    def forward(self, x: torch.Tensor, state: Sequence[Any] | None = None) -> ModelOutput:
        flat = int(torch.tensor(self.in_shape).prod())
        if isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[2] == flat:
            x = x.reshape(*x.shape[:2], *self.in_shape)
        check_sequence(x, self.in_shape)
        n_conv = len(self.convs)
        n_head = len(self.head.neurons) + (1 if self.head.integrator is not None else 0)
        n_delay = 1 if self.delay is not None else 0
        states = _check_state(state, n_conv + n_head + n_delay)
        hidden, new_state = [], []
        h = x
        for i, (conv, neuron) in enumerate(zip(self.convs, self.conv_neurons)):
            current = _per_step(conv, h)
            if self.residual[i]:
                current = current + h
            out = neuron.run(current, states[i])
            new_state.append(out.state)
            pooled, tb = _fold(out.spikes)
            h = _unfold(self.pool(pooled), tb)
            hidden.append(h)
        z = h.flatten(2)
        delay_state = []
        if self.delay is not None:
            z, ds = self.delay(z, states[-1])
            delay_state = [ds]
        head = self.head(z, states[n_conv:n_conv + n_head])
        return ModelOutput(head.output, head.membrane, hidden + head.hidden, new_state + head.state + delay_state)


class RecurrentRegressor(nn.Module):
    """Recurrent SNN for sequence regression: ``Linear -> recurrent spiking layer -> Linear -> low-pass``.

    The read-out is a leaky integrator (synaptic filter) ``y[t] = beta_out y[t-1] + W s[t]``, trained with MSE.
    """

    def __init__(self, in_features: int, hidden: int, out_features: int = 1, neuron: str = "rlif",
                 readout_beta: float = 0.8, generator: torch.Generator | None = None,
                 **neuron_kwargs: Any) -> None:
        super().__init__()
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        self.in_features = int(in_features)
        self.encoder = nn.Linear(in_features, hidden)
        kw = dict(neuron_kwargs)
        if neuron in ("rlif", "ralif"):
            kw["generator"] = gen
        self.neuron = make_neuron(neuron, hidden, **kw)
        self.decoder = nn.Linear(hidden, out_features)
        self.readout = LeakyIntegrator(out_features, beta=readout_beta)
        init_linear([self.encoder, self.decoder], gen)

    def forward(self, x: torch.Tensor, state: Sequence[Any] | None = None) -> ModelOutput:
        check_sequence(x, (self.in_features,))
        states = _check_state(state, 2)
        out = self.neuron.run(self.encoder(x), states[0])
        y, last = self.readout(self.decoder(out.spikes), states[1])
        return ModelOutput(y, y, [out.spikes], [out.state, last])


def init_linear(layers: Sequence[nn.Module], gen: torch.Generator) -> None:
    """Seeded Kaiming-uniform-style initialisation (weights and biases in +-1/sqrt(fan_in))."""
    with torch.no_grad():
        for layer in layers:
            weight = layer.weight  # type: ignore[attr-defined]
            fan_in = weight[0].numel()
            bound = 1.0 / fan_in**0.5
            weight.copy_((torch.rand(weight.shape, generator=gen) * 2 - 1) * bound * 3**0.5)
            bias = getattr(layer, "bias", None)
            if bias is not None:
                bias.copy_((torch.rand(bias.shape, generator=gen) * 2 - 1) * bound)


MODELS = ("mlp", "conv", "recurrent")
