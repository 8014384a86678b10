"""Import fusion passes: recognise spikefed's multi-node encodings (exact in NIR) and fold them back into single
layers: integrator + ``Threshold`` (no reset), LIF <-> ``Linear`` cycle (``RecurrentLIF``), neuron + ``Scale``
(graded spikes), ``SumPool2d`` + ``Threshold`` (max pool of binary spikes)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .common import META_ATOL, META_RTOL
from .import_base import ImportNode, as_array, resolve
from .runtime import SumPool2d

__all__ = [
    "TO_SPIKING", "ImportGraph", "fuse", "fuse_amplitudes", "fuse_max_pools", "fuse_recurrence", "fuse_thresholds",
]


class ImportGraph:
    """Mutable node/edge lists for the fusion passes."""

    def __init__(self, nodes: dict[str, ImportNode], edges: list[tuple[str, str]]) -> None:
        self.nodes, self.edges = nodes, edges

    def preds(self, n: str) -> list[str]:
        return [a for a, b in self.edges if b == n]

    def succs(self, n: str) -> list[str]:
        return [b for a, b in self.edges if a == n]

    def absorb(self, keep: str, gone: str) -> None:
        """Remove ``gone`` (which follows ``keep``): its outgoing edges now leave ``keep``."""
        new = []
        for a, b in self.edges:
            if (a, b) == (keep, gone):
                continue
            new.append((keep if a == gone else a, b))
        self.edges = new
        del self.nodes[gone]

    def only_link(self, a: str, b: str) -> bool:
        """``a``'s only successor is ``b`` and ``b``'s only predecessor is ``a``."""
        return self.succs(a) == [b] and self.preds(b) == [a]


TO_SPIKING = {"li": "lif", "i": "if", "cubali": "synaptic"}


def fuse_thresholds(g: ImportGraph) -> None:
    """Integrator -> Threshold: a neuron without reset."""
    for name in list(g.nodes):
        node = g.nodes.get(name)
        if node is None or node.kind != "cell" or node.cell is None or node.cell.kind not in TO_SPIKING:
            continue
        succ = g.succs(name)
        if len(succ) != 1 or g.nodes[succ[0]].kind != "threshold" or not g.only_link(name, succ[0]):
            continue
        thr_node = g.nodes[succ[0]]
        cell = node.cell
        thr = np.broadcast_to(as_array(thr_node.nir.threshold), cell.shape)
        if node.meta.get("layer") == "LeakyIntegrator":  # a read-out followed by someone's threshold
            node.meta = {}
        resolved, exact = resolve(name, {"threshold": thr.astype(np.float64)}, node.meta, stacklevel=4)
        cell.values.update(resolved)
        cell.exact |= exact
        if "reset_value" in node.meta:  # irrelevant without a reset; kept for an identical round trip
            cell.values["reset_value"] = np.asarray(node.meta["reset_value"])
            cell.exact.add("reset_value")
        cell.kind = TO_SPIKING[cell.kind]
        cell.reset = "none"
        cell.learn.setdefault("threshold", False)
        g.absorb(name, succ[0])


def fuse_recurrence(g: ImportGraph) -> None:
    """Spiking LIF <-> Linear (or zero-bias Affine) cycle, with unit input gain: RecurrentLIF."""
    for name in list(g.nodes):
        node = g.nodes.get(name)
        if node is None or node.kind != "cell" or node.cell is None or node.cell.kind != "lif":
            continue
        for rec in g.succs(name):
            rnode = g.nodes[rec]
            if rnode.kind != "linear" or g.preds(rec) != [name] or g.succs(rec) != [name]:
                continue
            lin = rnode.module
            assert isinstance(lin, nn.Linear)
            if lin.bias is not None and bool(torch.any(lin.bias != 0)):
                continue
            if node.cell.gain is not None or node.cell.bias is not None:
                continue
            node.cell.kind = "rlif"
            node.cell.recurrent = lin.weight.detach().cpu().numpy()
            g.edges = [e for e in g.edges if rec not in e]
            del g.nodes[rec]
            break


def fuse_amplitudes(g: ImportGraph) -> None:
    """Spiking neuron -> Scale tagged as its graded amplitude."""
    for name in list(g.nodes):
        node = g.nodes.get(name)
        if node is None or node.kind != "cell" or node.cell is None or node.cell.kind not in ("lif", "if",
                                                                                              "synaptic", "rlif"):
            continue
        succ = g.succs(name)
        if len(succ) != 1 or g.nodes[succ[0]].kind != "scale" or not g.only_link(name, succ[0]):
            continue
        snode = g.nodes[succ[0]]
        if snode.meta.get("role") != "amplitude":
            continue
        amp = snode.meta.get("amplitude")
        field_amp = as_array(snode.nir.scale)
        if amp is None or not np.allclose(np.broadcast_to(np.asarray(amp, np.float64), field_amp.shape), field_amp,
                                          rtol=META_RTOL, atol=META_ATOL):
            amp = field_amp
        node.cell.amplitude = np.asarray(amp)
        g.absorb(name, succ[0])


def fuse_max_pools(g: ImportGraph) -> None:
    """SumPool2d -> Threshold tagged as a max pool of binary spikes."""
    for name in list(g.nodes):
        node = g.nodes.get(name)
        if node is None or node.kind != "sumpool" or node.meta.get("layer") != "MaxPool2d":
            continue
        succ = g.succs(name)
        if len(succ) != 1 or g.nodes[succ[0]].meta.get("role") != "maxpool" or not g.only_link(name, succ[0]):
            continue
        sp = node.module
        assert isinstance(sp, SumPool2d)
        node.kind = "maxpool"
        square = [v[0] if v[0] == v[1] else v for v in (sp.kernel_size, sp.stride, sp.padding)]
        node.module = nn.MaxPool2d(*square)
        g.absorb(name, succ[0])


def fuse(g: ImportGraph) -> None:
    """All passes, in order (a reset-free neuron may then be recurrent and graded)."""
    fuse_thresholds(g)
    fuse_recurrence(g)
    fuse_amplitudes(g)
    fuse_max_pools(g)
