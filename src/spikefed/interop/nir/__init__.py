"""Export spikefed models to NIR (Neuromorphic Intermediate Representation) and import NIR graphs back.

NIR describes networks as graphs of continuous-time nodes; spikefed simulates discrete time steps of length
``dt``. The mapping used here is one forward-Euler step of the NIR equations (see ``docs/nir.md``):

LIF / LI (``nir.LIF``, ``nir.LI``)::

    tau dv/dt = (v_leak - v) + R I
    Euler:  v[t] = v[t-1] + dt/tau (v_leak - v[t-1] + R I[t])
                 = (1 - dt/tau) v[t-1] + (dt R / tau) I[t] + dt v_leak / tau
    spikefed: u[t] = beta u[t-1] + x[t]
    =>  tau = dt / (1 - beta),   R = tau / dt,   v_leak = 0          (so 1 - dt/tau = beta and dt R / tau = 1)

IF / I (``nir.IF``, ``nir.I``): ``dv/dt = R I``, Euler ``v[t] = v[t-1] + dt R I[t]`` => ``R = 1 / dt``.

CubaLIF / CubaLI (``nir.CubaLIF``, ``nir.CubaLI``)::

    tau_syn dI/dt = -I + w_in S         Euler: I[t] = (1 - dt/tau_syn) I[t-1] + (dt w_in / tau_syn) S[t]
    tau_mem dv/dt = (v_leak - v) + R I  Euler: v[t] = (1 - dt/tau_mem) v[t-1] + (dt R / tau_mem) I[t]
    spikefed: i[t] = alpha i[t-1] + x[t],  u[t] = beta u[t-1] + i[t]
    =>  tau_syn = dt / (1 - alpha), w_in = tau_syn / dt, tau_mem = dt / (1 - beta), R = tau_mem / dt, v_leak = 0

The synaptic current is updated first and the membrane uses the current of the same step (as spikefed does).
Spikes are ``z = 1[v > v_threshold]`` (strict, as spikefed's Heaviside), then ``v = v_reset`` where ``z = 1``:
that is spikefed's ``reset="zero"`` with ``reset_value = v_reset``. spikefed reports the membrane *before* the
reset (the value that crossed the threshold); NIR's state after the step is the reset value; spikes agree.

Exactness of ``beta -> tau -> beta``: the continuous fields are computed and stored in float64, so
``1 - dt / tau`` rounded back to float32 gives the original float32 decay exactly. In addition the exact discrete
values (and everything NIR has no field for) are kept in each node's ``metadata["spikefed"]``; the importer uses
them when they agree with the NIR fields (to 1e-6) and falls back to the fields (with a warning) when another
tool changed them. The NIR-standard fields are always correct for other tools.

What NIR cannot express, and how it is handled (see ``docs/nir.md``):

- ``reset="subtract"`` (spikefed's default): error naming the layer, unless ``to_nir(..., reset="metadata")``:
  then a standard node with ``v_reset = reset_value`` is written (what other tools simulate) and the subtractive
  reset is kept in the metadata, so a spikefed round trip is exact.
- ``reset="none"``: exact in NIR as an integrator (``LI`` / ``I`` / ``CubaLI``) followed by a ``Threshold`` node.
- refractory period: error naming the layer, unless ``refractory="metadata"`` (kept in metadata only).
- ``detach_reset``, surrogate gradient (name, slope), ``fused``, ``learn_*`` flags: training-only, not part of
  NIR; kept in metadata and restored on import (a callable surrogate is not serialisable: re-imported as atan).
- graded spikes: an exact ``Scale`` node after the neuron (the reset still uses the binary spike).
- :class:`~spikefed.snn.neurons.RecurrentLIF`: a graph cycle ``neuron -> Linear(V) -> neuron``; a cycle carries a
  one-step delay (the recurrent input at ``t`` is ``V s[t-1]``).
- ``nn.MaxPool2d`` of binary spikes: exact as ``SumPool2d`` followed by ``Threshold(0.5)`` (the max of 0/1 values
  is 1 iff their sum is > 0.5); of non-binary inputs: error.
- :class:`~spikefed.snn.neurons.ALIF`: no NIR equivalent, ``UnsupportedLayerError`` naming the layer.

Package layout (registries instead of type switches; every lookup walks the MRO, so subclasses are covered):

- :mod:`.runtime`: torch modules for NIR nodes spikefed has no layer for (``Threshold``, ``Scale``, ...).
- :mod:`.executor`: :class:`GraphExecutor` and how it runs each module type (``register_layer``).
- export: :mod:`.export_base` (context, converter registry ``register_converter``), :mod:`.export_layers`,
  :mod:`.export_cells` (the built-in converters), :mod:`.export` (model views, :func:`to_nir`, :func:`save_nir`).
- import: :mod:`.import_base` (builder registry by NIR node type ``register_builder``), :mod:`.import_layers`,
  :mod:`.import_cells` (the built-in builders), :mod:`.fusion` (multi-node encodings -> one layer),
  :mod:`.structure` (chains -> SpikingMLP / SpikingConvNet / RecurrentRegressor), :mod:`.importer`
  (:func:`from_nir`, :func:`load_nir`).
- :mod:`.common`: errors, metadata constants, the optional ``nir`` import.
"""

from .common import (
    FORMAT_VERSION,
    META_KEY,
    REFRACTORY_POLICIES,
    RESET_POLICIES,
    NIRConversionError,
    UnsupportedLayerError,
)
from .executor import LAYER_RULES, GraphExecutor, LayerRule, apply_folded, register_layer
from .export import MODEL_VIEWS, register_model_view, save_nir, to_nir
from .export_base import CONVERTERS, ExportContext, Refusal, converter_for, register_converter
from .import_base import BUILDERS, ImportContext, ImportNode, builder_for, register_builder
from .importer import from_nir, load_nir
from .runtime import CurrentIntegrator, Flatten, Gained, PerfectIntegrator, Scale, SumPool2d, Threshold

__all__ = [
    "CurrentIntegrator", "Flatten", "Gained", "GraphExecutor", "NIRConversionError", "PerfectIntegrator",
    "Scale", "SumPool2d", "Threshold", "UnsupportedLayerError", "from_nir", "load_nir", "save_nir", "to_nir",
    "META_KEY", "RESET_POLICIES", "REFRACTORY_POLICIES", "FORMAT_VERSION",
    # extension points
    "BUILDERS", "CONVERTERS", "ExportContext", "ImportContext", "ImportNode", "LAYER_RULES", "LayerRule",
    "MODEL_VIEWS", "Refusal", "apply_folded", "builder_for", "converter_for", "register_builder",
    "register_converter", "register_layer", "register_model_view",
]
