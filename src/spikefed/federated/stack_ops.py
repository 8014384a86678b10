"""Single-pass checks and float64 sums over a round's stacks ``[K, ...]`` of client values.

The server's bookkeeping reads every client's parameters a few times per round: finiteness at the trust boundary
and again in validation, the weighted mean, the client drift. Written as whole-stack tensor expressions these
cost several full passes each and, in float64, temporaries the size of the stack (``[1000, 19210]`` float64 is
154 MB, page-faulted in afresh every round). The helpers here read the stack once per question and keep every
float64 temporary to a cache-sized block of rows (:data:`ROW_BLOCK_BYTES`):

- :func:`finite_rows` / :func:`all_finite`: a sum is finite only if every summand is (``nan`` and ``inf``
  propagate through float addition), so one row sum answers "all finite?" for almost every row; a row whose sum
  is not finite (a non-finite value, or a sum that overflowed) is checked element by element. Exact, one pass.
- :func:`weighted_sum64`: ``sum_k p_k x_k`` in float64, accumulated block of rows by block of rows with one
  ``addmv`` each (the same float64 products and sums as one ``tensordot``, up to their order).
- :func:`drift_sums`: the three float64 reductions the client drift needs (``||dbar||^2``, ``||d_k||^2`` and
  ``d_k . dbar``), per parameter in two passes over blocks of rows, without a ``[K, P]`` float64 matrix.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

#: bytes of float64 per block of rows (a block converted to float64 stays in the cache)
ROW_BLOCK_BYTES = 2**21


def _rows(flat: torch.Tensor) -> int:
    """Rows of ``flat [K, n]`` per float64 block."""
    return max(1, ROW_BLOCK_BYTES // (8 * max(int(flat.shape[1]), 1)))


def as_rows(stack: torch.Tensor) -> torch.Tensor:
    """``stack [K, ...]`` as ``[K, n]`` (a view where the layout allows)."""
    return stack.reshape(stack.shape[0], -1)


def finite_rows(stack: torch.Tensor) -> torch.Tensor:
    """Bool ``[K]``: row ``k`` of ``stack [K, ...]`` holds only finite values (the same answer as
    ``torch.isfinite(stack).flatten(1).all(1)``; see the module docstring for why one row sum decides)."""
    flat = as_rows(stack)
    ok = torch.isfinite(flat.sum(1))
    if not bool(ok.all()):
        bad = (~ok).nonzero().flatten()
        ok[bad] = torch.isfinite(flat.index_select(0, bad)).all(1)
    return ok


def all_finite(t: torch.Tensor) -> bool:
    """``bool(torch.isfinite(t).all())`` in one pass for finite data (a finite sum decides)."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def weighted_sum64(stack: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``sum_k p_k stack[k]`` in float64 (shape ``stack.shape[1:]``), ``p`` float64 ``[K]`` on the stack's device."""
    flat = as_rows(stack)
    out = torch.zeros(flat.shape[1], dtype=torch.float64, device=flat.device)
    rows = _rows(flat)
    for lo in range(0, flat.shape[0], rows):
        out.addmv_(flat[lo:lo + rows].to(torch.float64).t(), p[lo:lo + rows])
    return out.view(stack.shape[1:])


def drift_sums(stacks: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], w: torch.Tensor
               ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """For deltas ``d_k = stacks[.][k] - base[.]`` over all parameters (names of ``base``) and float64 weights
    ``w [K]``: ``(||dbar||^2, ||d_k||^2 [K], d_k . dbar [K])`` with ``dbar = sum_k w_k d_k``, all in float64.

    Per parameter: one pass over blocks of rows accumulates its part of ``dbar`` and of ``||d_k||^2``, a second
    pass its part of ``d_k . dbar`` (the dot product splits over parameters)."""
    k = int(w.shape[0])
    dev = w.device
    norm_sq = torch.zeros(k, dtype=torch.float64, device=dev)
    dots = torch.zeros(k, dtype=torch.float64, device=dev)
    mean_sq = 0.0
    for name, b in base.items():
        flat = as_rows(stacks[name]).to(dev)
        ref = b.detach().reshape(-1).to(device=dev, dtype=torch.float64)
        rows = _rows(flat)
        mean = torch.zeros_like(ref)
        for lo in range(0, k, rows):
            d = flat[lo:lo + rows].to(torch.float64, copy=True).sub_(ref)
            mean.addmv_(d.t(), w[lo:lo + rows])
            norm_sq[lo:lo + rows] += d.mul_(d).sum(1)
        for lo in range(0, k, rows):
            d = flat[lo:lo + rows].to(torch.float64, copy=True).sub_(ref)
            dots[lo:lo + rows] += d.mv(mean)
        mean_sq += float(mean.dot(mean))
    return mean_sq, norm_sq, dots
