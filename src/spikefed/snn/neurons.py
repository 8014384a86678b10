"""Spiking neuron layers: thin ``nn.Module`` shells over the kernels in :mod:`spikefed.snn.kernels`.

Every layer takes a whole sequence ``x`` of shape ``[T, B, *features]`` (``forward`` / ``run``) or one step
``[B, *features]`` (``step``), and an explicit state (a NamedTuple, ``None`` for the resting state). Nothing is
remembered between calls: two networks, or two clients, never share neuron state.

Governing equations (``r[t]`` is the spike emitted at ``t-1``, ``H`` the Heaviside step, ``v_r`` the reset
offset, 0 by default):

- :class:`LIF`:  ``u[t] = beta u[t-1] + x[t] - r[t] (thr - v_r)`` (reset "subtract"),
  ``u[t] = beta ((1 - r[t]) u[t-1] + r[t] v_r) + x[t]`` ("zero"), ``u[t] = beta u[t-1] + x[t]`` ("none");
  ``s[t] = g * H(u[t] - thr)`` with graded amplitude ``g`` (1 unless ``graded=True``).
- :class:`IF`: LIF with ``beta = 1`` (no leak).
- :class:`Synaptic` (current-based): ``i[t] = alpha i[t-1] + x[t]``, then LIF driven by ``i[t]``.
- :class:`ALIF` (adaptive threshold, LSNN-style): ``a[t] = rho a[t-1] + r[t]``, ``theta[t] = thr + gamma a[t]``,
  LIF membrane with reset by the base threshold, ``s[t] = H(u[t] - theta[t])``.
- :class:`RecurrentLIF`: LIF driven by ``x[t] + V s[t-1]`` with a learned recurrent matrix ``V``.
- :class:`RecurrentALIF`: ALIF driven by ``x[t] + V s[t-1]`` (the LSNN of Bellec et al.).
- :class:`LeakyIntegrator`: non-spiking read-out ``y[t] = beta y[t-1] + x[t]``.

Parameters carry a manifold (see :mod:`spikefed.manifold`): decays are ``unit_interval``, thresholds
``positive``, reset offsets, graded amplitudes and weights ``euclidean``. Learnable decays/thresholds are kept
valid by :func:`spikefed.manifold.project_parameters_` after each optimizer step (the trainer calls it) and
clamped into their domain inside the forward pass.

IF, LIF, Synaptic and the leaky integrator run all T steps in one fused call (only the membrane potential is
saved for backward). ALIF, RecurrentLIF, RecurrentALIF and LIF with a refractory period run the step-by-step
reference path on autograd (their recurrences couple the spike back into the input or the threshold).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..manifold import EPS, POSITIVE, UNIT_INTERVAL, EUCLIDEAN, Manifold, check_open_interval, declare
from .kernels import RESET_MODES, ResetMode, lif_fused, lif_reference, lif_step, lif_update, lowpass, lowpass_reference
from .surrogate import DerivativeFn, Surrogate, get_surrogate


class LIFState(NamedTuple):
    """State of IF/LIF layers: membrane ``v``; with a refractory period also the last spikes and the counter."""

    v: torch.Tensor
    spikes: torch.Tensor | None = None
    refractory: torch.Tensor | None = None


class SynapticState(NamedTuple):
    """State of current-based layers: synaptic current ``i`` and membrane ``v``."""

    i: torch.Tensor
    v: torch.Tensor


class ALIFState(NamedTuple):
    """State of adaptive LIF layers: membrane ``v``, adaptation ``a``, last spikes ``spikes``."""

    v: torch.Tensor
    a: torch.Tensor
    spikes: torch.Tensor


class RecurrentState(NamedTuple):
    """State of recurrent LIF layers: membrane ``v`` and last spikes ``spikes``."""

    v: torch.Tensor
    spikes: torch.Tensor


class NeuronOutput(NamedTuple):
    """What :meth:`run` returns: spikes and membrane potential ``[T, B, *features]`` and the final state."""

    spikes: torch.Tensor
    membrane: torch.Tensor
    state: NamedTuple


def _shape_tuple(features: int | tuple[int, ...] | None) -> tuple[int, ...]:
    if features is None:
        return ()
    if isinstance(features, int):
        if features < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        return (features,)
    shape = tuple(int(f) for f in features)
    if any(f < 1 for f in shape):
        raise ValueError(f"features must all be >= 1, got {features!r}")
    return shape


def check_sequence(x: torch.Tensor, features: tuple[int, ...], name: str = "input") -> None:
    """Raise ``ValueError`` unless ``x`` is ``[T, B, *features]`` (any feature shape if ``features`` is ())."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    want = "[T, B, " + (", ".join(map(str, features)) if features else "features") + "]"
    if x.dim() < 3 or (features and tuple(x.shape[2:]) != features):
        raise ValueError(f"expected {name} of shape {want} (time-major), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def check_step(x: torch.Tensor, features: tuple[int, ...], name: str = "input") -> None:
    """Raise ``ValueError`` unless ``x`` is one time step ``[B, *features]``."""
    want = "[B, " + (", ".join(map(str, features)) if features else "features") + "]"
    if x.dim() < 2 or (features and tuple(x.shape[1:]) != features):
        raise ValueError(f"expected {name} of shape {want} (one time step), got {tuple(x.shape)}")


class _ParamsMixin(nn.Module):
    """Creates neuron parameters (learnable with a declared manifold, or fixed buffers)."""

    def _make(self, name: str, value: float, shape: tuple[int, ...], learn: bool, manifold: Manifold) -> None:
        tensor = torch.full(shape, float(value), dtype=torch.float32)
        if learn:
            self.register_parameter(name, declare(nn.Parameter(tensor), manifold))
        else:
            self.register_buffer(name, tensor)


class LIF(_ParamsMixin):
    """Leaky integrate-and-fire layer (see the module docstring for the equations).

    Args:
        features: feature shape of the layer (``int`` or tuple). Needed for per-neuron learnable parameters
            and checked against the input; ``None`` accepts any feature shape with scalar parameters.
        beta: membrane decay in (0, 1) (``exp(-dt / tau_mem)``).
        threshold: firing threshold > 0.
        reset: ``"subtract"`` (default), ``"zero"`` (to ``reset_value``) or ``"none"``.
        detach_reset: the reset carries no gradient (default, recommended by the seed's "bag of tricks").
        surrogate: name (``atan`` default, ``fast_sigmoid``, ``sigmoid``, ``triangular``, ``straight_through``),
            a :class:`Surrogate`, or a callable giving dS/dx; ``slope`` sets the width of named ones.
        learn_beta / learn_threshold / learn_reset: make decay / threshold / reset offset trainable
            (per neuron when ``features`` is given).
        graded: trainable per-neuron spike amplitude ``g`` (output ``g * s``).
        refractory: number of steps after a spike during which input is ignored and no spike is emitted.
        reset_value: the reset offset ``v_r``.
        fused: use the fused multi-step kernel (default); ``False`` runs the step-by-step reference.
    """

    _beta_low, _beta_high = 0.0, 1.0  # open interval allowed for beta
    # registered in __init__ as parameters or buffers by _make (declared for type checkers)
    beta: torch.Tensor
    threshold: torch.Tensor
    reset_value: torch.Tensor
    amplitude: torch.Tensor
    reset: ResetMode

    def __init__(
        self,
        features: int | tuple[int, ...] | None = None,
        beta: float = 0.9,
        threshold: float = 1.0,
        reset: str = "subtract",
        detach_reset: bool = True,
        surrogate: str | Surrogate | DerivativeFn = "atan",
        slope: float | None = None,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        learn_reset: bool = False,
        graded: bool = False,
        refractory: int = 0,
        reset_value: float = 0.0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.features = _shape_tuple(features)
        if self._beta_low < self._beta_high:  # IF fixes beta = 1
            check_open_interval("beta (membrane decay)", beta, self._beta_low, self._beta_high)
        check_open_interval("threshold", threshold, 0.0, float("inf"))
        if reset not in RESET_MODES:
            raise ValueError(f"unknown reset {reset!r}; valid: {', '.join(RESET_MODES)}")
        if int(refractory) != refractory or refractory < 0:
            raise ValueError(f"refractory must be an integer number of steps >= 0, got {refractory!r}")
        self.reset = reset  # type: ignore[assignment]  # checked against RESET_MODES above
        self.detach_reset = bool(detach_reset)
        self.surrogate = get_surrogate(surrogate, slope)
        self.refractory = int(refractory)
        self.fused = bool(fused)
        shape = self.features  # learnable parameters are per neuron (scalar when features is None)
        self._make("beta", beta, shape if learn_beta else (), learn_beta, UNIT_INTERVAL)
        self._make("threshold", threshold, shape if learn_threshold else (), learn_threshold, POSITIVE)
        self._make("reset_value", reset_value, shape if learn_reset else (), learn_reset, EUCLIDEAN)
        self.graded = bool(graded)
        if graded:
            self._make("amplitude", 1.0, shape, True, EUCLIDEAN)

    # -- parameters as used in the dynamics (clamped into their domain) ---------------------------------------
    def beta_value(self) -> torch.Tensor:
        beta = self.beta
        if "beta" in self._parameters:  # learnable (also when torch.func.functional_call swaps in a tensor)
            beta = beta.clamp(EPS, 1.0 - EPS)
        return beta

    def threshold_value(self) -> torch.Tensor:
        thr = self.threshold
        if "threshold" in self._parameters:
            thr = thr.clamp(min=EPS)
        return thr

    def _out(self, spikes: torch.Tensor) -> torch.Tensor:
        return spikes * self.amplitude if self.graded else spikes

    def init_state(self, batch_size: int, *, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> LIFState:
        """The resting state (membrane at 0) for a batch."""
        if not self.features:
            raise ValueError("init_state needs the layer's features; pass features= when creating it")
        z = torch.zeros((batch_size, *self.features), dtype=dtype, device=device)
        if self.refractory:
            return LIFState(z, torch.zeros_like(z), torch.zeros_like(z))
        return LIFState(z)

    def run(self, x: torch.Tensor, state: LIFState | None = None) -> NeuronOutput:
        """All T steps: ``x [T, B, *features]`` -> spikes, membrane ``[T, B, *features]`` and the final state."""
        check_sequence(x, self.features)
        if state is not None and tuple(state.v.shape) != tuple(x.shape[1:]):
            raise ValueError(f"state.v has shape {tuple(state.v.shape)}, expected {tuple(x.shape[1:])} = [B, features]")
        beta, thr = self.beta_value(), self.threshold_value()
        if self.refractory:
            return self._run_refractory(x, state, beta, thr)
        u0 = None if state is None else state.v
        kernel = lif_fused if self.fused else lif_reference
        spikes, mem = kernel(x, u0, beta, thr, self.reset_value, self.reset, self.detach_reset, self.surrogate)
        return NeuronOutput(self._out(spikes), mem, LIFState(mem[-1]))

    def forward(self, x: torch.Tensor, state: LIFState | None = None) -> tuple[torch.Tensor, LIFState]:
        """``(spikes [T, B, *features], final state)``; see :meth:`run` for the membrane trace too."""
        out = self.run(x, state)
        return out.spikes, out.state  # type: ignore[return-value]

    def step(self, x: torch.Tensor, state: LIFState | None = None) -> tuple[torch.Tensor, LIFState]:
        """One time step: ``x [B, *features]`` -> ``(spikes [B, *features], new state)``."""
        check_step(x, self.features)
        if self.refractory:
            out = self.run(x.unsqueeze(0), state)
            return out.spikes[0], out.state  # type: ignore[return-value]
        u = torch.zeros_like(x) if state is None else state.v
        s, u = lif_step(x, u, self.beta_value(), self.threshold_value(), self.reset_value, self.reset,
                        self.detach_reset, self.surrogate)
        return self._out(s), LIFState(u)

    def _run_refractory(self, x: torch.Tensor, state: LIFState | None, beta: torch.Tensor,
                        thr: torch.Tensor) -> NeuronOutput:
        """Reference path with an absolute refractory period of ``self.refractory`` steps.

        While the counter ``c > 0`` the input is ignored and spikes are blocked; a spike sets ``c`` to the
        refractory period, otherwise ``c`` counts down. The reset uses the emitted spike ``r[t] = s[t-1]``.
        """
        if state is None or state.spikes is None or state.refractory is None:
            v = torch.zeros_like(x[0]) if state is None else state.v
            last, count = torch.zeros_like(x[0]), torch.zeros_like(x[0])
        else:
            v, last, count = state.v, state.spikes, state.refractory
        spikes, mems = [], []
        for t in range(x.shape[0]):
            free = (count <= 0).to(x.dtype)
            r = last.detach() if self.detach_reset else last
            v = lif_update(v, x[t] * free, r, beta, thr, self.reset_value, self.reset)
            s = self.surrogate(v - thr) * free
            count = torch.where(s > 0, torch.full_like(count, self.refractory), (count - 1).clamp(min=0))
            last = s
            spikes.append(s)
            mems.append(v)
        return NeuronOutput(self._out(torch.stack(spikes)), torch.stack(mems), LIFState(v, last, count))

    def extra_repr(self) -> str:
        return (f"features={self.features}, reset={self.reset!r}, surrogate={self.surrogate.name}"
                f"(slope={self.surrogate.slope}), refractory={self.refractory}, fused={self.fused}")


class IF(LIF):
    """Integrate-and-fire layer: :class:`LIF` without leak (``beta = 1``)."""

    _beta_low = _beta_high = 1.0

    def __init__(self, features: int | tuple[int, ...] | None = None, threshold: float = 1.0, **kwargs) -> None:
        if "beta" in kwargs or "learn_beta" in kwargs:
            raise ValueError("IF has no decay (beta = 1); use LIF for a leaky neuron")
        super().__init__(features, beta=1.0, threshold=threshold, **kwargs)


class Synaptic(LIF):
    """Current-based (CuBa) LIF: ``i[t] = alpha i[t-1] + x[t]`` feeds the LIF membrane (two decays)."""

    alpha: torch.Tensor  # registered in __init__ by _make

    def __init__(self, features: int | tuple[int, ...] | None = None, alpha: float = 0.8, beta: float = 0.9,
                 learn_alpha: bool = False, **kwargs) -> None:
        super().__init__(features, beta=beta, **kwargs)
        if self.refractory:
            raise ValueError("Synaptic does not support a refractory period; use LIF")
        check_open_interval("alpha (synaptic decay)", alpha, 0.0, 1.0)
        self._make("alpha", alpha, self.features if learn_alpha else (), learn_alpha, UNIT_INTERVAL)

    def alpha_value(self) -> torch.Tensor:
        a = self.alpha
        return a.clamp(EPS, 1.0 - EPS) if "alpha" in self._parameters else a

    def init_state(self, batch_size: int, *, dtype: torch.dtype = torch.float32,  # type: ignore[override]
                   device: torch.device | str | None = None) -> SynapticState:
        v = super().init_state(batch_size, dtype=dtype, device=device).v
        return SynapticState(torch.zeros_like(v), v)

    def run(self, x: torch.Tensor, state: SynapticState | None = None) -> NeuronOutput:  # type: ignore[override]
        check_sequence(x, self.features)
        i0 = None if state is None else state.i
        current = (lowpass if self.fused else lowpass_reference)(x, self.alpha_value(), i0)
        out = super().run(current, None if state is None else LIFState(state.v))
        return NeuronOutput(out.spikes, out.membrane, SynapticState(current[-1], out.membrane[-1]))

    def forward(self, x: torch.Tensor, state: SynapticState | None = None):  # type: ignore[override]
        out = self.run(x, state)
        return out.spikes, out.state

    def step(self, x: torch.Tensor, state: SynapticState | None = None):  # type: ignore[override]
        check_step(x, self.features)
        i = x if state is None else self.alpha_value() * state.i + x
        s, lif_state = super().step(i, None if state is None else LIFState(state.v))
        return s, SynapticState(i, lif_state.v)


class ALIF(LIF):
    """Adaptive-threshold LIF (LSNN-style): each spike raises the threshold, which relaxes with decay ``rho``.

    ``a[t] = rho a[t-1] + r[t]``, ``theta[t] = thr + gamma a[t]``, membrane as :class:`LIF` (reset by the base
    threshold), ``s[t] = H(u[t] - theta[t])``. ``rho`` is a unit-interval parameter, ``gamma >= 0`` euclidean.
    """

    rho: torch.Tensor  # registered in __init__ by _make
    gamma: torch.Tensor

    def __init__(self, features: int | tuple[int, ...] | None = None, beta: float = 0.9, rho: float = 0.95,
                 gamma: float = 0.5, learn_adaptation: bool = False, **kwargs) -> None:
        super().__init__(features, beta=beta, **kwargs)
        if self.refractory:
            raise ValueError("ALIF does not support a refractory period; use LIF")
        check_open_interval("rho (adaptation decay)", rho, 0.0, 1.0)
        if not gamma >= 0:
            raise ValueError(f"gamma (adaptation strength) must be >= 0, got {gamma!r}")
        shape = self.features if learn_adaptation else ()
        self._make("rho", rho, shape, learn_adaptation, UNIT_INTERVAL)
        self._make("gamma", gamma, shape, learn_adaptation, EUCLIDEAN)

    def init_state(self, batch_size: int, *, dtype: torch.dtype = torch.float32,  # type: ignore[override]
                   device: torch.device | str | None = None) -> ALIFState:
        v = super().init_state(batch_size, dtype=dtype, device=device).v
        return ALIFState(v, torch.zeros_like(v), torch.zeros_like(v))

    def _drive(self, x_t: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The input current of step t (feed-forward: ``x[t]``; :class:`RecurrentALIF` adds ``V s[t-1]``)."""
        return x_t

    def _step(self, x: torch.Tensor, v: torch.Tensor, a: torch.Tensor, last: torch.Tensor,
              beta: torch.Tensor, thr: torch.Tensor, rho: torch.Tensor) -> tuple[torch.Tensor, ...]:
        r = last.detach() if self.detach_reset else last
        a = rho * a + r
        v = lif_update(v, x, r, beta, thr, self.reset_value, self.reset)
        s = self.surrogate(v - (thr + self.gamma * a))
        return s, v, a

    def run(self, x: torch.Tensor, state: ALIFState | None = None) -> NeuronOutput:  # type: ignore[override]
        check_sequence(x, self.features)
        beta, thr = self.beta_value(), self.threshold_value()
        rho = self.rho.clamp(EPS, 1 - EPS) if "rho" in self._parameters else self.rho
        if state is None:
            v = a = last = torch.zeros_like(x[0])
        else:
            v, a, last = state
        spikes, mems = [], []
        for t in range(x.shape[0]):
            last, v, a = self._step(self._drive(x[t], last), v, a, last, beta, thr, rho)
            spikes.append(last)
            mems.append(v)
        return NeuronOutput(self._out(torch.stack(spikes)), torch.stack(mems), ALIFState(v, a, last))

    def forward(self, x: torch.Tensor, state: ALIFState | None = None):  # type: ignore[override]
        out = self.run(x, state)
        return out.spikes, out.state

    def step(self, x: torch.Tensor, state: ALIFState | None = None):  # type: ignore[override]
        check_step(x, self.features)
        out = self.run(x.unsqueeze(0), state)
        return out.spikes[0], out.state


def _recurrent_matrix(owner: str, features: int, generator: torch.Generator | None, scale: float) -> nn.Parameter:
    """A learned ``features x features`` recurrent matrix, uniform in ``+-scale / sqrt(features)``."""
    if not isinstance(features, int):
        raise ValueError(f"{owner} needs an int number of features, got {features!r}")
    bound = scale / features**0.5
    w = (torch.rand(features, features, generator=generator) * 2 - 1) * bound
    return declare(nn.Parameter(w), EUCLIDEAN)


class RecurrentLIF(LIF):
    """LIF layer with learned recurrent weights: input ``x[t] + V s[t-1]`` (``V``: ``features x features``)."""

    recurrent: nn.Parameter  # V, registered in __init__ (declared for type checkers)

    def __init__(self, features: int, beta: float = 0.9, generator: torch.Generator | None = None,
                 recurrent_scale: float = 1.0, **kwargs) -> None:
        recurrent = _recurrent_matrix("RecurrentLIF", features, generator, recurrent_scale)
        super().__init__(features, beta=beta, **kwargs)
        if self.refractory:
            raise ValueError("RecurrentLIF does not support a refractory period; use LIF")
        self.recurrent = recurrent

    def init_state(self, batch_size: int, *, dtype: torch.dtype = torch.float32,  # type: ignore[override]
                   device: torch.device | str | None = None) -> RecurrentState:
        v = super().init_state(batch_size, dtype=dtype, device=device).v
        return RecurrentState(v, torch.zeros_like(v))

    def run(self, x: torch.Tensor, state: RecurrentState | None = None) -> NeuronOutput:  # type: ignore[override]
        check_sequence(x, self.features)
        beta, thr = self.beta_value(), self.threshold_value()
        if state is None:
            v = last = torch.zeros_like(x[0])
        else:
            v, last = state
        spikes, mems = [], []
        for t in range(x.shape[0]):
            drive = x[t] + last @ self.recurrent.t()
            r = last.detach() if self.detach_reset else last
            v = lif_update(v, drive, r, beta, thr, self.reset_value, self.reset)
            last = self.surrogate(v - thr)
            spikes.append(last)
            mems.append(v)
        return NeuronOutput(self._out(torch.stack(spikes)), torch.stack(mems), RecurrentState(v, last))

    def forward(self, x: torch.Tensor, state: RecurrentState | None = None):  # type: ignore[override]
        out = self.run(x, state)
        return out.spikes, out.state

    def step(self, x: torch.Tensor, state: RecurrentState | None = None):  # type: ignore[override]
        check_step(x, self.features)
        out = self.run(x.unsqueeze(0), state)
        return out.spikes[0], out.state


class RecurrentALIF(ALIF):
    """Adaptive LIF layer with learned recurrent weights (LSNN): :class:`ALIF` driven by ``x[t] + V s[t-1]``."""

    recurrent: nn.Parameter  # V, registered in __init__ (declared for type checkers)

    def __init__(self, features: int, beta: float = 0.9, generator: torch.Generator | None = None,
                 recurrent_scale: float = 1.0, **kwargs) -> None:
        recurrent = _recurrent_matrix("RecurrentALIF", features, generator, recurrent_scale)
        super().__init__(features, beta=beta, **kwargs)  # refuses a refractory period (ALIF)
        self.recurrent = recurrent

    def _drive(self, x_t: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return x_t + last @ self.recurrent.t()


class LeakyIntegrator(_ParamsMixin):
    """Non-spiking leaky read-out ``y[t] = beta y[t-1] + x[t]`` (a low-pass synaptic filter); fused."""

    beta: torch.Tensor  # registered in __init__ by _make

    def __init__(self, features: int | tuple[int, ...] | None = None, beta: float = 0.9,
                 learn_beta: bool = False) -> None:
        super().__init__()
        self.features = _shape_tuple(features)
        check_open_interval("beta (read-out decay)", beta, 0.0, 1.0)
        self._make("beta", beta, self.features if learn_beta else (), learn_beta, UNIT_INTERVAL)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [T, B, *features]`` -> ``(y [T, B, *features], y[-1])``."""
        check_sequence(x, self.features)
        beta = self.beta.clamp(EPS, 1 - EPS) if "beta" in self._parameters else self.beta
        y = lowpass(x, beta, state)
        return y, y[-1]


NEURONS: dict[str, type[LIF]] = {
    "if": IF,
    "lif": LIF,
    "synaptic": Synaptic,
    "alif": ALIF,
    "rlif": RecurrentLIF,
    "ralif": RecurrentALIF,
}

#: neuron layers with a recurrent matrix ``recurrent`` (input ``x[t] + V s[t-1]``)
RECURRENT_NEURONS: tuple[type[RecurrentLIF], type[RecurrentALIF]] = (RecurrentLIF, RecurrentALIF)


#: neuron models in their own modules (issue 17): built through :func:`make_neuron` like the ones above
MODEL_NEURONS: tuple[str, ...] = ("izhikevich", "srm", "dendritic")


def _model_neuron(kind: str) -> type[LIF]:
    """The class of a neuron in :data:`MODEL_NEURONS` (imported here: those modules build on this one)."""
    if kind == "izhikevich":
        from .izhikevich import Izhikevich

        return Izhikevich
    if kind == "srm":
        from .srm import SRM

        return SRM
    from .dendritic import TwoCompartment

    return TwoCompartment


def make_neuron(kind: str, features: int | tuple[int, ...] | None = None, **kwargs) -> LIF:
    """Build a neuron layer by name (``if``, ``lif``, ``synaptic``, ``alif``, ``rlif``, ``ralif``,
    ``izhikevich``, ``srm``, ``dendritic``)."""
    if kind in MODEL_NEURONS:
        return _model_neuron(kind)(features, **kwargs)
    if kind not in NEURONS:
        raise ValueError(f"unknown neuron {kind!r}; valid: {', '.join((*NEURONS, *MODEL_NEURONS))}")
    return NEURONS[kind](features, **kwargs)
