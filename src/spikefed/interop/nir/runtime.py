"""Torch modules that execute NIR nodes spikefed has no layer of its own for (all on time-major ``[T, B, ...]``)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...snn.kernels import lowpass

__all__ = [
    "CurrentIntegrator", "Flatten", "Gained", "PerfectIntegrator", "Scale", "SumPool2d", "Threshold", "fold",
    "layer_label", "to_buffer", "unfold", "unwrap",
]


def to_buffer(value: torch.Tensor | float) -> torch.Tensor:
    """A buffer copy of ``value``: a floating tensor keeps its dtype, anything else gets the default dtype."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().clone()
    return torch.as_tensor(value, dtype=torch.get_default_dtype()).clone()


def fold(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[T, B, ...]`` -> ``([T*B, ...], (T, B))``."""
    t, b = x.shape[:2]
    return x.reshape(t * b, *x.shape[2:]), (t, b)


def unfold(x: torch.Tensor, tb: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`fold`."""
    return x.reshape(*tb, *x.shape[1:])


class Threshold(nn.Module):
    """NIR ``Threshold``: ``z = 1[x > threshold]`` elementwise (no state), on ``[T, B, *shape]``."""

    def __init__(self, threshold: torch.Tensor | float) -> None:
        super().__init__()
        self.register_buffer("threshold", to_buffer(threshold))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spikes ``1[x > threshold]`` in ``x``'s dtype."""
        return torch.gt(x, self.threshold).to(x.dtype)


class Scale(nn.Module):
    """NIR ``Scale``: ``y = x * scale`` elementwise, on ``[T, B, *shape]``."""

    def __init__(self, scale: torch.Tensor | float) -> None:
        super().__init__()
        self.register_buffer("scale", to_buffer(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * scale``."""
        return x * self.scale


class Flatten(nn.Module):
    """NIR ``Flatten``: merges per-sample dims ``start_dim..end_dim`` (indices exclude time and batch)."""

    def __init__(self, start_dim: int = 0, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [T, B, *shape]`` with ``shape[start_dim:end_dim+1]`` merged into one dim."""
        end = self.end_dim + 2 if self.end_dim >= 0 else self.end_dim
        return x.flatten(self.start_dim + 2, end)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class SumPool2d(nn.Module):
    """NIR ``SumPool2d``: sum over each pooling window (zero padding), on ``[T, B, C, H, W]``."""

    def __init__(self, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int] = (0, 0)) -> None:
        super().__init__()
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.stride = tuple(int(s) for s in stride)
        self.padding = tuple(int(p) for p in padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Window sums (an average pool with divisor 1, so sums of small integers stay exact)."""
        flat, tb = fold(x)
        y = F.avg_pool2d(flat, self.kernel_size, self.stride, self.padding, divisor_override=1)
        return unfold(y, tb)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class PerfectIntegrator(nn.Module):
    """NIR ``I`` (non-leaky, non-spiking): ``y[t] = y[t-1] + gain x[t]`` with ``gain = dt R``."""

    def __init__(self, gain: torch.Tensor | float = 1.0) -> None:
        super().__init__()
        self.register_buffer("gain", to_buffer(gain))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [T, B, *shape]`` -> ``(y [T, B, *shape], y[-1])``."""
        y = lowpass(x * self.gain, 1.0, state)
        return y, y[-1]


class CurrentIntegrator(nn.Module):
    """NIR ``CubaLI`` (non-spiking): ``i[t] = alpha i[t-1] + gain x[t]``, ``y[t] = beta y[t-1] + i[t]``."""

    def __init__(self, alpha: torch.Tensor | float, beta: torch.Tensor | float,
                 gain: torch.Tensor | float = 1.0) -> None:
        super().__init__()
        self.register_buffer("alpha", to_buffer(alpha))
        self.register_buffer("beta", to_buffer(beta))
        self.register_buffer("gain", to_buffer(gain))

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x [T, B, *shape]`` -> ``(y [T, B, *shape], (i[-1], y[-1]))``."""
        i0, y0 = (None, None) if state is None else state
        i = lowpass(x * self.gain, self.alpha, i0)
        y = lowpass(i, self.beta, y0)
        return y, (i[-1], y[-1])


class Gained(nn.Module):
    """A neuron or integrator whose input is first mapped elementwise: ``x -> gain * x + bias``.

    Created on import when a NIR node's input gain ``dt R / tau`` is not 1 or its leak ``v_leak`` is not 0
    (graphs written by other tools); spikefed's own exports never need it. ``gain``/``bias`` of ``None`` are
    skipped (no arithmetic), so a unit gain is exact.
    """

    def __init__(self, layer: nn.Module, gain: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("gain", None if gain is None else to_buffer(gain))
        self.register_buffer("bias", None if bias is None else to_buffer(bias))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``gain * x + bias`` (each part only when set)."""
        if self.gain is not None:
            x = x * self.gain
        if self.bias is not None:
            x = x + self.bias
        return x


def unwrap(op: nn.Module) -> nn.Module:
    """The layer inside a :class:`Gained` wrapper (one level), else ``op`` itself."""
    return op.layer if isinstance(op, Gained) else op


def layer_label(name: str, op: nn.Module) -> str:
    """``layer 'name' (Type)`` for error messages (the wrapped type for :class:`Gained`)."""
    return f"layer {name!r} ({type(unwrap(op)).__name__})"
