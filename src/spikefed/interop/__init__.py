"""Interoperability with other neuromorphic tools.

:mod:`spikefed.interop.nir` exports spikefed models to the Neuromorphic Intermediate Representation (NIR) and
imports NIR graphs back (needs the optional ``nir`` package: ``pip install spikefed[nir]``).
"""

from .nir import (
    CurrentIntegrator,
    Flatten,
    Gained,
    GraphExecutor,
    NIRConversionError,
    PerfectIntegrator,
    Scale,
    SumPool2d,
    Threshold,
    UnsupportedLayerError,
    from_nir,
    load_nir,
    save_nir,
    to_nir,
)

__all__ = [
    "CurrentIntegrator", "Flatten", "Gained", "GraphExecutor", "NIRConversionError", "PerfectIntegrator",
    "Scale", "SumPool2d", "Threshold", "UnsupportedLayerError", "from_nir", "load_nir", "save_nir", "to_nir",
]
