"""Fold each neuron's input resistance ``R`` into the weights in front of it, so that every neuron node has
``r = 1`` (what other NIR tools can read), and unfold it again on import.

Why: ``tau dv/dt = (v_leak - v) + R I`` with ``I = W x + b`` is the same system as ``r = 1`` with
``I' = (R W) x + R b``, because ``R`` multiplies the input current only (for ``CubaLIF`` it multiplies the
synaptic current, a linear filter of the input, so it moves in front of the filter as well). spikefed's exact
mapping writes ``R = tau / dt`` (see the package docstring); other tools do not all honour that field:

- Norse (``norse.torch.from_nir``) ignores ``r`` (it warns and simulates ``r = 1``);
- snnTorch (``snntorch.import_nirtorch`` / ``from_nir``) assumes ``dt = 1e-4`` and reads ``r dt / tau`` as an
  input scale that it moves into the threshold.

With ``R`` folded into the preceding ``Affine`` / ``Linear`` rows (or ``Conv2d`` output channels), both read the
network as spikefed runs it (given the right ``dt``, see ``docs/nir.md``).

Folding is possible when every node that feeds the neuron is a weight node (``Affine``, ``Linear``, ``Conv2d``;
a recurrent ``Linear`` counts) that feeds nothing else, and, for ``Conv2d``, when ``R`` is the same at every
position of a channel. A neuron that cannot be folded keeps its ``r`` and is listed in the graph metadata
(``metadata["spikefed"]["r_not_folded"]``, comma-separated names).

Exact round trip: with metadata on, each folded weight node keeps its original ``weight``/``bias`` and each neuron
its original ``r`` in ``metadata["spikefed"]``; :func:`unfold_r` (run by ``from_nir``) restores them when the
fields still agree with them (else it warns and keeps the fields, which compute the same thing up to rounding).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from .common import META_ATOL, META_KEY, META_RTOL, nir_package

__all__ = ["FOLD_NODES", "fold_r", "unfold_r"]

#: NIR node types with an input resistance ``r`` that :func:`fold_r` moves into the weights.
FOLD_NODES = ("LIF", "CubaLIF", "LI", "CubaLI", "IF", "I")
_WEIGHT_NODES = ("Affine", "Linear", "Conv2d")


def _kind(node: Any) -> str:
    return type(node).__name__


def _spikefed_meta(node: Any) -> dict[str, Any]:
    meta = getattr(node, "metadata", None) or {}
    entry = meta.get(META_KEY, {})
    return entry if isinstance(entry, dict) else {}


def _with_meta(node: Any, entries: dict[str, Any]) -> dict[str, Any]:
    meta = dict(getattr(node, "metadata", None) or {})
    meta[META_KEY] = {**_spikefed_meta(node), **entries}
    return meta


def _row_scale(weight_node: Any, r: np.ndarray) -> np.ndarray | None:
    """``R`` as one factor per output row / channel of ``weight_node``, or ``None`` when it does not fit."""
    out = int(np.asarray(weight_node.weight).shape[0])
    if _kind(weight_node) == "Conv2d":
        if r.ndim != 3 or r.shape[0] != out:
            return None
        per_channel = r.reshape(out, -1)
        if not np.all(per_channel == per_channel[:, :1]):
            return None
        return per_channel[:, 0]
    if r.ndim != 1 or r.shape[0] != out:
        return None
    return r


def _scaled(weight_node: Any, scale: np.ndarray, keep_original: bool) -> Any:
    w = np.asarray(weight_node.weight)
    shape = (-1,) + (1,) * (w.ndim - 1)
    fields: dict[str, Any] = {"weight": (w.astype(np.float64) * scale.reshape(shape)).astype(w.dtype)}
    bias = getattr(weight_node, "bias", None)
    if bias is not None and _kind(weight_node) != "Linear":
        b = np.asarray(bias)
        fields["bias"] = (b.astype(np.float64) * scale.reshape(b.shape if b.ndim else ())).astype(b.dtype)
    if keep_original:
        original = {"folded_weight": w.copy(), "folded_scale": scale.astype(np.float64)}
        if "bias" in fields:
            original["folded_bias"] = np.asarray(bias).copy()
        fields["metadata"] = _with_meta(weight_node, original)
    return dataclasses.replace(weight_node, **fields)


def fold_r(graph: Any, keep_original: bool = True) -> Any:
    """A copy of ``graph`` with every foldable neuron's ``r`` moved into the weight nodes feeding it (``r = 1``
    afterwards). ``keep_original``: record the original values in the metadata (for :func:`unfold_r`)."""
    nir = nir_package()
    nodes = dict(graph.nodes)
    succ: dict[str, list[str]] = {}
    pred: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    not_folded: list[str] = []
    for name, node in graph.nodes.items():
        if _kind(node) not in FOLD_NODES:
            continue
        r = np.asarray(node.r, dtype=np.float64)
        if np.all(r == 1.0):
            continue
        feeders = pred.get(name, [])
        scales = {}
        for p in feeders:
            src = nodes[p]
            scale = _row_scale(src, r) if _kind(src) in _WEIGHT_NODES and succ.get(p) == [name] else None
            if scale is None:
                break
            scales[p] = scale
        if not feeders or len(scales) != len(feeders):
            not_folded.append(name)
            continue
        for p, scale in scales.items():
            nodes[p] = _scaled(nodes[p], scale, keep_original)
        fields: dict[str, Any] = {"r": np.ones_like(r)}
        if keep_original:
            fields["metadata"] = _with_meta(node, {"folded_r": r})
        nodes[name] = dataclasses.replace(node, **fields)
    gmeta = dict(graph.metadata or {})
    if not_folded and keep_original:
        gmeta[META_KEY] = {**gmeta.get(META_KEY, {}), "r_not_folded": ",".join(not_folded)}
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=gmeta, type_check=True)


def _agrees(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=META_RTOL, atol=META_ATOL))


def unfold_r(graph: Any) -> Any:
    """Undo :func:`fold_r` from the metadata it recorded: the original weights, biases and ``r`` come back
    exactly. A neuron whose recorded values no longer match the fields (another tool edited the graph) is left
    folded, with a warning (the folded graph computes the same up to rounding)."""
    nir = nir_package()
    nodes = dict(graph.nodes)
    pred: dict[str, list[str]] = {}
    for a, b in graph.edges:
        pred.setdefault(b, []).append(a)
    changed = False
    for name, node in graph.nodes.items():
        r0 = _spikefed_meta(node).get("folded_r")
        if r0 is None or _kind(node) not in FOLD_NODES:
            continue
        r0 = np.asarray(r0, dtype=np.float64)
        restored: dict[str, Any] = {}
        ok = _agrees(np.asarray(node.r, np.float64), np.ones_like(r0))
        for p in pred.get(name, []) if ok else []:
            src, meta = nodes[p], _spikefed_meta(nodes[p])
            if "folded_weight" not in meta:
                ok = False
                break
            w0, scale = np.asarray(meta["folded_weight"]), np.asarray(meta["folded_scale"], np.float64)
            shape = (-1,) + (1,) * (w0.ndim - 1)
            ok = _agrees(np.asarray(src.weight, np.float64), w0.astype(np.float64) * scale.reshape(shape))
            fields: dict[str, Any] = {"weight": w0}
            if ok and "folded_bias" in meta:
                b0 = np.asarray(meta["folded_bias"])
                ok = _agrees(np.asarray(src.bias, np.float64), b0.astype(np.float64) * scale.reshape(b0.shape))
                fields["bias"] = b0
            if not ok:
                break
            rest = {k: v for k, v in meta.items() if k not in ("folded_weight", "folded_bias", "folded_scale")}
            fields["metadata"] = {**(src.metadata or {}), META_KEY: rest}
            restored[p] = fields
        if not ok:
            warnings.warn(f"NIR node {name!r}: the weights in front of it no longer match the folded values "
                          "recorded at export; importing the graph's fields as they are", stacklevel=3)
            continue
        for p, fields in restored.items():
            nodes[p] = dataclasses.replace(nodes[p], **fields)
        meta = {k: v for k, v in _spikefed_meta(node).items() if k != "folded_r"}
        nodes[name] = dataclasses.replace(node, r=r0, metadata={**(node.metadata or {}), META_KEY: meta})
        changed = True
    if not changed:
        return graph
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=graph.metadata, type_check=True)
