"""Izhikevich neuron layer (Izhikevich 2003, "Simple model of spiking neurons"), trainable with a surrogate.

Continuous model (``v`` membrane in mV, ``u`` recovery variable, ``I`` input current, time in ms)::

    dv/dt = 0.04 v^2 + 5 v + 140 - u + I
    du/dt = a (b v - u)
    if v >= v_peak (30 mV):  v <- c,  u <- u + d

Discretisation (forward Euler with step ``dt`` ms, ``substeps`` Euler steps per network time step; the reset
is applied in the step that crosses ``v_peak``)::

    v' = v + dt (0.04 v^2 + 5 v + 140 - u + I)
    u' = u + dt a (b v - u)
    s  = H((v' - v_peak) / v_scale)                  (surrogate derivative in the backward pass)
    v <- (1 - s) v' + s c,   u <- u' + s d

A network step emits a spike if any of its substeps did (``s = max`` over substeps). In a network the input
current is ``I = input_scale * x`` (``x`` the weighted input of the layer). Reset is not differentiated when
``detach_reset`` (the default). Published presets (``a, b, c, d``): ``rs`` regular spiking (0.02, 0.2, -65, 8),
``ib`` intrinsically bursting (0.02, 0.2, -55, 4), ``ch`` chattering (0.02, 0.2, -50, 2), ``fs`` fast spiking
(0.1, 0.2, -65, 2). The resting state is ``v = c_rest = -65``, ``u = b v``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .neurons import LIF, NeuronOutput, check_sequence, check_step

#: published parameters ``(a, b, c, d)`` of the cortical cell classes
PRESETS: dict[str, tuple[float, float, float, float]] = {
    "rs": (0.02, 0.2, -65.0, 8.0),
    "ib": (0.02, 0.2, -55.0, 4.0),
    "ch": (0.02, 0.2, -50.0, 2.0),
    "fs": (0.1, 0.2, -65.0, 2.0),
}
V_REST = -65.0


class IzhikevichState(NamedTuple):
    """Membrane ``v`` (mV) and recovery ``u``."""

    v: torch.Tensor
    u: torch.Tensor


class Izhikevich(LIF):
    """Izhikevich layer (equations in the module docstring).

    Args:
        features: feature shape (int or tuple), checked against the input.
        preset: ``rs``, ``ib``, ``ch`` or ``fs`` (the published ``a, b, c, d``); ``a``..``d`` override it.
        dt: Euler step in ms (> 0); ``substeps``: Euler steps per network step (>= 1).
        input_scale: current per unit of input, ``I = input_scale * x``.
        v_peak: spike cut-off (mV); ``v_scale``: the surrogate sees ``(v - v_peak) / v_scale``.
        surrogate / slope / detach_reset: as for :class:`~spikefed.snn.neurons.LIF`. The LIF options
        ``beta``, ``threshold``, ``reset`` and ``learn_*`` are accepted (so the layer fits ``make_neuron`` and
        ``model.neuron``) but have no meaning here; ``learn_beta``/``learn_threshold`` must stay False.
    """

    def __init__(self, features: int | tuple[int, ...] | None = None, preset: str = "rs",
                 a: float | None = None, b: float | None = None, c: float | None = None, d: float | None = None,
                 dt: float = 0.5, substeps: int = 2, input_scale: float = 10.0, v_peak: float = 30.0,
                 v_scale: float = 10.0, **kwargs: Any) -> None:
        for name in ("learn_beta", "learn_threshold", "learn_reset", "graded"):
            if kwargs.get(name):
                raise ValueError(f"Izhikevich neurons do not support {name}=True")
        if kwargs.get("refractory"):
            raise ValueError("Izhikevich neurons have no refractory option (the recovery variable u does that)")
        super().__init__(features, **kwargs)
        if preset not in PRESETS:
            raise ValueError(f"unknown Izhikevich preset {preset!r}; valid: {', '.join(PRESETS)}")
        pa, pb, pc, pd = PRESETS[preset]
        self.preset = preset
        self.a, self.b = float(pa if a is None else a), float(pb if b is None else b)
        self.c, self.d = float(pc if c is None else c), float(pd if d is None else d)
        for name, value in (("dt", dt), ("input_scale", input_scale), ("v_scale", v_scale)):
            if not float(value) > 0:
                raise ValueError(f"Izhikevich {name} must be > 0, got {value!r}")
        if isinstance(substeps, bool) or int(substeps) != substeps or substeps < 1:
            raise ValueError(f"Izhikevich substeps must be an integer >= 1, got {substeps!r}")
        self.dt, self.substeps = float(dt), int(substeps)
        self.input_scale, self.v_peak, self.v_scale = float(input_scale), float(v_peak), float(v_scale)

    def init_state(self, batch_size: int, *, dtype: torch.dtype = torch.float32,  # type: ignore[override]
                   device: torch.device | str | None = None) -> IzhikevichState:
        if not self.features:
            raise ValueError("init_state needs the layer's features; pass features= when creating it")
        v = torch.full((batch_size, *self.features), V_REST, dtype=dtype, device=device)
        return IzhikevichState(v, self.b * v)

    def _euler(self, current: torch.Tensor, v: torch.Tensor, u: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One Euler step with reset: ``(s, v, u)``; ``current`` already in model units (``I``)."""
        v_new = v + self.dt * (0.04 * v * v + 5.0 * v + 140.0 - u + current)
        u_new = u + self.dt * self.a * (self.b * v - u)
        s = self.surrogate((v_new - self.v_peak) / self.v_scale)
        if self.detach_reset:  # exact reset value; the gradient of a reset neuron's v is 0 (reset not differentiated)
            r = s.detach()
            return s, torch.where(r > 0, torch.full_like(v_new, self.c), v_new), u_new + r * self.d
        return s, v_new + s * (self.c - v_new), u_new + s * self.d

    def run(self, x: torch.Tensor, state: IzhikevichState | None = None) -> NeuronOutput:  # type: ignore[override]
        check_sequence(x, self.features)
        if state is None:
            v = torch.full_like(x[0], V_REST)
            u = self.b * v
        else:
            v, u = state
        spikes, mems = [], []
        for t in range(x.shape[0]):
            current = self.input_scale * x[t]
            fired = None
            for _ in range(self.substeps):
                s, v, u = self._euler(current, v, u)
                fired = s if fired is None else torch.maximum(fired, s)
            assert fired is not None
            spikes.append(fired)
            mems.append(v)
        return NeuronOutput(torch.stack(spikes), torch.stack(mems), IzhikevichState(v, u))

    def forward(self, x: torch.Tensor, state: IzhikevichState | None = None):  # type: ignore[override]
        out = self.run(x, state)
        return out.spikes, out.state

    def step(self, x: torch.Tensor, state: IzhikevichState | None = None):  # type: ignore[override]
        check_step(x, self.features)
        out = self.run(x.unsqueeze(0), state)
        return out.spikes[0], out.state

    def extra_repr(self) -> str:
        return (f"features={self.features}, preset={self.preset}, a={self.a}, b={self.b}, c={self.c}, d={self.d}, "
                f"dt={self.dt}, substeps={self.substeps}, input_scale={self.input_scale}")


def simulate(preset: str, current: float, duration_ms: float, dt: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """One neuron of ``preset`` driven by a constant ``current`` for ``duration_ms``: ``(spike times in ms,
    membrane trace)`` (float64). For firing-pattern checks and the example."""
    steps = int(round(duration_ms / dt))
    if steps < 1:
        raise ValueError(f"duration_ms={duration_ms} is shorter than one step dt={dt}")
    layer = Izhikevich(1, preset=preset, dt=dt, substeps=1, input_scale=1.0).double()
    x = torch.full((steps, 1, 1), float(current), dtype=torch.float64)
    with torch.no_grad():
        out = layer.run(x)
    idx = torch.nonzero(out.spikes[:, 0, 0] > 0).flatten()
    return (idx.double() + 1) * dt, out.membrane[:, 0, 0]
