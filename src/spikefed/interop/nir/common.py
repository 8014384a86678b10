"""Shared pieces of the NIR package: errors, metadata constants, the optional ``nir`` import, type registries."""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = [
    "FORMAT_VERSION", "META_ATOL", "META_KEY", "META_RTOL", "NIRConversionError", "REFRACTORY_POLICIES",
    "RESET_POLICIES", "SNAP_ATOL", "SUPPORTED_LAYERS", "UnsupportedLayerError", "lookup", "nir_package",
]

#: Key of spikefed's entry in every node's (and the graph's) NIR ``metadata`` dict.
META_KEY = "spikefed"
#: Version of the metadata layout written by :func:`~spikefed.interop.nir.to_nir`.
FORMAT_VERSION = 1
#: ``to_nir(reset=...)``: what to do with a reset NIR cannot express (``subtract``).
RESET_POLICIES: tuple[str, ...] = ("error", "metadata")
#: ``to_nir(refractory=...)``: what to do with a refractory period (NIR has none).
REFRACTORY_POLICIES: tuple[str, ...] = ("error", "metadata")

#: Relative / absolute tolerance within which metadata values are taken to agree with the NIR fields.
META_RTOL, META_ATOL = 1e-6, 1e-9
#: Input gains / leak biases this close to 1 / 0 (float64 rounding of R = tau/dt) are snapped to exactly 1 / 0.
SNAP_ATOL = 1e-12

#: The layer types spikefed runs and exports out of the box (named in error messages).
SUPPORTED_LAYERS = ("nn.Linear, nn.Conv2d, nn.MaxPool2d (of binary spikes), nn.AvgPool2d, nn.Flatten, LIF, IF, "
                    "Synaptic, RecurrentLIF, LeakyIntegrator, Delay and this module's Threshold, Scale, Flatten, "
                    "SumPool2d, PerfectIntegrator, CurrentIntegrator, Gained")


class NIRConversionError(ValueError):
    """A model or graph cannot be converted as asked (the message names the layer or node and the fix)."""


class UnsupportedLayerError(NotImplementedError):
    """A layer or NIR node type has no counterpart on the other side (the message names it)."""


def nir_package() -> Any:
    """The ``nir`` package (an optional dependency)."""
    try:
        import nir
    except ImportError as exc:  # pragma: no cover - nir is installed in the dev environment
        raise ImportError("NIR export/import needs the 'nir' package: pip install 'spikefed[nir]'") from exc
    return nir


_V = TypeVar("_V")


def lookup(registry: dict[type, _V], obj: Any) -> _V | None:
    """The entry of the most specific class of ``obj`` that ``registry`` has (walking ``type(obj).__mro__``), so
    subclasses of a registered type are covered; ``None`` when no class of ``obj`` is registered."""
    for cls in type(obj).__mro__:
        entry = registry.get(cls)
        if entry is not None:
            return entry
    return None
