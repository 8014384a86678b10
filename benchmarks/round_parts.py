"""The parts of the cohort round's local training, each against its own floor (CPU seconds, one thread).

What is measured: the tensor work of one local step of the ``fl_round.py`` workload at ``--clients`` K (64-256-10
LIF MLP, T = 25, direct input; every client one step on ``--width`` samples, the width the cohort engine runs a
100-client round's 14-15-sample batches at), on synthetic tensors of exactly the round's shapes, float32:

    hidden product     forward ``[K, B, 64] x [K, 64, 256]`` + weight gradient (once per step: direct input)
    hidden LIF         forward + backward of the hidden layer's LIF over T (``--kernels``: the loop kernel on
                       the expanded input, and the numba constant-input kernel, ``snn/kernels_constant.py``)
    readout products   forward ``[K, T*B, 256] x [K, 256, 10]``, input gradient ``[K, T*B, 10] x [K, 10, 256]``,
                       weight gradient ``[K, 10, T*B] x [K, T*B, 256]``
    readout LIF        forward + backward of the output layer's LIF ``[T, K, B, 10]`` (loop kernel)
    loss               spike counts' cross-entropy, forward + backward
    Adam               one fused Adam step over the four stacked parameters

Each part's own floor: products = FLOPs / a GEMM rate measured on a square stacked product (``[K, 256, 256]``
squared, the best this CPU's BLAS does with one thread); elementwise parts = the bytes they must move (inputs
read once, outputs written once) / the single-thread copy bandwidth measured here. Every part is timed with
``time.process_time`` (CPU seconds: steady on a shared machine), median of ``--repeats``, parts interleaved.

Run: ``python benchmarks/round_parts.py [--clients 100 --width 16 --repeats 9]``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import torch
from torch.optim.adam import adam as adam_functional

from spikefed.runtime import configure_allocator
from spikefed.snn.kernels import lif_fused
from spikefed.snn.surrogate import get_surrogate

T, N_IN, N_HID, N_OUT = 25, 64, 256, 10


def cpu_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    runs = []
    for _ in range(repeats):
        c = time.process_time()
        fn()
        runs.append(time.process_time() - c)
    return statistics.median(runs) * 1e3


def copy_bandwidth(mib: int = 128) -> float:
    """Single-thread copy bandwidth (read + write bytes per second), best of 5."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(cpu_ms(lambda: dst.copy_(src), 1) for _ in range(5))
    return 2 * src.numel() * 4 / (best / 1e3)


def gemm_peak(k: int) -> float:
    a, b = torch.randn(k, 256, 256), torch.randn(k, 256, 256)
    best = min(cpu_ms(lambda: torch.bmm(a, b), 1) for _ in range(5))
    return 2 * k * 256**3 / (best / 1e3)


def parts(k: int, b: int) -> dict[str, tuple[Callable[[], object], float, str]]:
    """Each part: (callable, its floor's numerator: FLOPs for products, bytes for the rest, 'flop' | 'byte')."""
    g = torch.Generator().manual_seed(0)
    sur = get_surrogate("atan")
    x = torch.rand(k, b, N_IN, generator=g)
    w1, b1 = torch.randn(k, N_HID, N_IN, generator=g) * 0.3, torch.randn(k, N_HID, generator=g) * 0.1
    w2, b2 = torch.randn(k, N_OUT, N_HID, generator=g) * 0.1, torch.randn(k, N_OUT, generator=g) * 0.1
    z1 = torch.baddbmm(b1.unsqueeze(1), x, w1.transpose(1, 2))
    s_hid = (torch.rand(k, T * b, N_HID, generator=g) < 0.2).float()
    g_out = torch.randn(k, T * b, N_OUT, generator=g)
    g_hid = torch.randn(k, T, b, N_HID, generator=g).transpose(0, 1)
    z2 = torch.randn(k, T, b, N_OUT, generator=g).transpose(0, 1) + 0.5
    y = torch.randint(0, N_OUT, (k * b,), generator=g)
    params = [w1, b1, w2, b2]
    state = [[torch.zeros_like(p), torch.zeros_like(p)] for p in params]
    grads = [torch.randn_like(p) * 1e-3 for p in params]
    steps = [torch.tensor(1.0) for _ in params]
    hid = k * b * N_HID * T * 4  # bytes of one [T, K, B, 256] float32 tensor
    out = k * b * N_OUT * T * 4
    p_bytes = sum(p.numel() for p in params) * 4

    def hidden_product() -> None:
        torch.baddbmm(b1.unsqueeze(1), x, w1.transpose(1, 2))
        torch.bmm(z1.transpose(1, 2), x)

    def hidden_lif(kernel: str) -> Callable[[], None]:
        def run() -> None:
            z = z1.detach().requires_grad_(True)
            if kernel == "numba-constant":
                from spikefed.snn.kernels_constant import lif_constant_input

                p = [torch.tensor(v) for v in (0.0, 0.9, 1.0, 0.0)]
                s = lif_constant_input(z, T, *p, 0, sur)
            else:
                s, _ = lif_fused(z.unsqueeze(0).expand(T, *z.shape), None, 0.9, 1.0, 0.0, "subtract", True, sur,
                                 kernel)
            s.backward(g_hid)
        return run

    def readout_lif() -> None:
        zz = z2.detach().requires_grad_(True)
        s, _ = lif_fused(zz, None, 0.9, 1.0, 0.0, "subtract", True, sur, "loop")
        s.sum(0).sum().backward()

    def loss() -> None:
        c = (z2.detach() > 1.0).float().requires_grad_(True)
        torch.nn.functional.cross_entropy(c.sum(0).reshape(k * b, N_OUT), y).backward()

    def adam() -> None:
        adam_functional(params, grads, [s[0] for s in state], [s[1] for s in state], [], steps, fused=True,
                              amsgrad=False, beta1=0.9, beta2=0.999, lr=1e-3, weight_decay=0.0, eps=1e-8,
                              maximize=False)

    table: dict[str, tuple[Callable[[], object], float, str]] = {
        "hidden product (fwd + weight grad)": (hidden_product, 2 * 2 * k * b * N_IN * N_HID, "flop"),
        "readout forward [K,T*B,256]x[K,256,10]": (lambda: torch.baddbmm(b2.unsqueeze(1), s_hid, w2.transpose(1, 2)),
                                                   2 * k * T * b * N_HID * N_OUT, "flop"),
        "readout input grad [K,T*B,10]x[K,10,256]": (lambda: torch.bmm(g_out, w2), 2 * k * T * b * N_HID * N_OUT,
                                                     "flop"),
        "readout weight grad [K,10,T*B]x[K,T*B,256]": (lambda: torch.bmm(g_out.transpose(1, 2), s_hid),
                                                       2 * k * T * b * N_HID * N_OUT, "flop"),
        # own floor of the hidden LIF: spikes written once, their gradient read once
        "hidden LIF fwd+bwd, loop kernel": (hidden_lif("loop"), 2 * hid, "byte"),
        "readout LIF fwd+bwd, loop kernel": (readout_lif, 4 * out, "byte"),
        "loss fwd+bwd": (loss, 2 * out, "byte"),
        "Adam (fused, 4 stacks)": (adam, 7 * p_bytes, "byte"),
    }
    try:
        from spikefed.snn.kernels_numba import numba_reason
        if numba_reason() is None:
            table["hidden LIF fwd+bwd, numba constant-input kernel"] = (hidden_lif("numba-constant"), 2 * hid, "byte")
    except ImportError:
        pass
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--width", type=int, default=16, help="samples per client per step (the engine's width)")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args(argv)
    if args.clients < 1 or args.width < 1 or args.repeats < 1:
        ap.error("--clients, --width and --repeats must be >= 1")
    configure_allocator()
    torch.set_num_threads(1)
    bw, peak = copy_bandwidth(), gemm_peak(args.clients)
    table = parts(args.clients, args.width)
    times: dict[str, list[float]] = {name: [] for name in table}
    for _ in range(3):  # interleaved: a change in the machine's load hits every part alike
        for name, (fn, _, _) in table.items():
            times[name].append(cpu_ms(fn, args.repeats))
    print(f"{args.clients} clients x {args.width} samples, T={T}, 1 thread; single-thread copy bandwidth "
          f"{bw / 1e9:.1f} GB/s, GEMM peak (square [K,256,256] bmm) {peak / 1e9:.1f} GFLOP/s")
    print("| part | CPU ms | own floor ms | ratio | floor from |")
    print("|---|---:|---:|---:|---|")
    for name, (_, amount, kind) in table.items():
        ms = statistics.median(times[name])
        floor = amount / (peak if kind == "flop" else bw) * 1e3
        what = f"{amount / 1e6:.0f} MFLOP at the GEMM peak" if kind == "flop" else f"{amount / 1e6:.1f} MB at copy bw"
        print(f"| {name} | {ms:.2f} | {floor:.2f} | {ms / floor:.1f}x | {what} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
