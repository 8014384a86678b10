"""Training-step benchmark: spikefed fused LIF vs spikefed step-by-step reference vs snnTorch.

What is measured
    One training iteration (zero_grad, forward, cross-entropy on spike counts summed over T, backward, Adam
    step) of a LIF MLP 64-256-10 (beta 0.9, threshold 1, reset by subtraction) on a seeded direct-current input
    ``[T, B, 64]``, for three implementations sharing the same initial weights:

    1. ``spikefed-fused``      SpikingMLP with the fused multi-step LIF kernel (default path);
    2. ``spikefed-reference``  SpikingMLP(fused=False), the step-by-step autograd reference;
    3. ``snntorch``            two nn.Linear + two snntorch.Leaky stepped over T in a Python loop.

    Before timing, the forward spikes of all three are checked to be bit-identical (exit code 1 if not).
    Timing: 5 warm-up iterations each, then ``--rounds`` rounds of ``--iters`` iterations per implementation
    (the order rotates between rounds); per-iteration wall times (perf_counter) give median, min and IQR.
    Memory: bytes saved for backward by one hidden LIF layer (256 neurons) on a precomputed input ``h [T,B,N]``,
    collected with ``torch.autograd.graph.saved_tensors_hooks`` (tensors the graph still holds after the forward,
    deduplicated by storage); also reported in units of one float32 ``[T, B, N]`` tensor.

Run
    .venv/bin/python benchmarks/snn_step.py                       # defaults: T=25, B=128, 30 iters x 5 rounds
    .venv/bin/python benchmarks/snn_step.py --iters 5 --rounds 2  # quick check
Results go to stdout (Markdown table) and to ``--json`` (default benchmarks/results/snn_step.json); the last line
printed is ``speedup_vs_snntorch=<median snnTorch / median spikefed-fused>``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import snntorch
import torch
import torch.nn.functional as F
from torch import nn

import spikefed.runtime
from spikefed.snn.models import SpikingMLP
from spikefed.snn.neurons import LIF

from memprobe import saved_bytes

BETA, THRESHOLD, IN_FEATURES, CLASSES, WARMUP = 0.9, 1.0, 64, 10, 5
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "snn_step.json"


def leaky_loop(lif: snntorch.Leaky, h: torch.Tensor) -> torch.Tensor:
    """The usual snnTorch stepping: ``h [T, B, N]`` -> stacked spikes ``[T, B, N]``."""
    mem = lif.init_leaky()
    spikes = []
    for t in range(h.shape[0]):
        spk, mem = lif(h[t], mem)
        spikes.append(spk)
    return torch.stack(spikes)


class SnnTorchMLP(nn.Module):
    """64-hidden-10 LIF MLP written the snnTorch way (per-step Linear + Leaky)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(IN_FEATURES, hidden), nn.Linear(hidden, CLASSES)
        self.lif1 = snntorch.Leaky(beta=BETA, threshold=THRESHOLD, reset_mechanism="subtract")
        self.lif2 = snntorch.Leaky(beta=BETA, threshold=THRESHOLD, reset_mechanism="subtract")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (output spikes [T,B,10], hidden spikes [T,B,hidden])."""
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        out, hid = [], []
        for t in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[t]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            hid.append(spk1)
            out.append(spk2)
        return torch.stack(out), torch.stack(hid)


def build_models(hidden: int) -> dict[str, nn.Module]:
    fused = SpikingMLP([IN_FEATURES, hidden, CLASSES], beta=BETA, threshold=THRESHOLD,
                       generator=torch.Generator().manual_seed(0), fused=True)
    reference = SpikingMLP([IN_FEATURES, hidden, CLASSES], beta=BETA, threshold=THRESHOLD,
                           generator=torch.Generator().manual_seed(1), fused=False)
    reference.load_state_dict(fused.state_dict())
    snn = SnnTorchMLP(hidden)
    with torch.no_grad():
        for src, dst in zip(fused.linears, (snn.fc1, snn.fc2)):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return {"spikefed-fused": fused, "spikefed-reference": reference, "snntorch": snn}


def forward_spikes(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(output spikes, hidden spikes) of any of the three models."""
    out = model(x)
    return out if isinstance(model, SnnTorchMLP) else (out.output, out.hidden[0])


def same(what: str, a: torch.Tensor, b: torch.Tensor) -> bool:
    """torch.equal with a diagnostic: number of differing entries and the first one (t, b, n)."""
    if torch.equal(a, b):
        return True
    diff = (a != b).nonzero()
    print(f"  MISMATCH {what}: {diff.shape[0]} of {a.numel()} entries differ, first at (t,b,n)="
          f"{tuple(diff[0].tolist())}: {a[tuple(diff[0])].item()} vs {b[tuple(diff[0])].item()}")
    return False


def check_spikes(models: dict[str, nn.Module], x: torch.Tensor) -> bool:
    with torch.no_grad():
        spikes = {name: forward_spikes(m, x) for name, m in models.items()}
    out0, hid0 = spikes["spikefed-fused"]
    ok = True
    for name in ("spikefed-reference", "snntorch"):
        ok &= same(f"output spikes fused vs {name}", out0, spikes[name][0])
        ok &= same(f"hidden spikes fused vs {name}", hid0, spikes[name][1])
    print(f"forward spikes identical (output and hidden, all three): {ok}  "
          f"[hidden rate {hid0.mean().item():.3f}, output rate {out0.mean().item():.3f}]")
    return ok


def measure_memory(args) -> tuple[dict[str, int], bool]:
    g = torch.Generator().manual_seed(2)
    h = (torch.randn(args.steps, args.batch, args.hidden, generator=g) * 0.5).requires_grad_()
    leaky = snntorch.Leaky(beta=BETA, threshold=THRESHOLD, reset_mechanism="subtract")
    runs = {
        "spikefed-fused": lambda x: LIF(args.hidden, beta=BETA, threshold=THRESHOLD).run(x).spikes,
        "spikefed-reference": lambda x: LIF(args.hidden, beta=BETA, threshold=THRESHOLD, fused=False).run(x).spikes,
        "snntorch": lambda x: leaky_loop(leaky, x),
    }
    result, spikes = {}, {}
    for name, run in runs.items():
        result[name], out = saved_bytes(run, h)
        spikes[name] = out.detach()
    ok = all([same(f"LIF-only spikes fused vs {n}", spikes["spikefed-fused"], spikes[n])
              for n in ("spikefed-reference", "snntorch")])
    print(f"LIF-layer-only spikes on the same h identical: {ok}")
    return result, ok


def time_all(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, args) -> dict[str, list[float]]:
    optims = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}

    def step(name: str) -> None:
        optims[name].zero_grad(set_to_none=True)
        out, _ = forward_spikes(models[name], x)
        F.cross_entropy(out.sum(0), y).backward()
        optims[name].step()

    for name in models:
        for _ in range(WARMUP):
            step(name)
    names, times = list(models), {name: [] for name in models}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            gc.collect()
            for _ in range(args.iters):
                t0 = time.perf_counter()
                step(name)
                times[name].append(time.perf_counter() - t0)
    return times


def summarize(ms: list[float]) -> dict[str, float]:
    q1, q2, q3 = statistics.quantiles(ms, n=4) if len(ms) > 1 else (ms[0],) * 3
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "q1_ms": q1, "q3_ms": q3, "iqr_ms": q3 - q1}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=25, help="time steps T")
    p.add_argument("--batch", type=int, default=128, help="batch size B")
    p.add_argument("--hidden", type=int, default=256, help="hidden LIF neurons N")
    p.add_argument("--iters", type=int, default=30, help="timed iterations per implementation per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds (implementation order rotates)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    p.add_argument("--no-malloc-tuning", action="store_true", help="skip spikefed.runtime.configure_allocator()")
    args = p.parse_args()
    if args.no_malloc_tuning:
        malloc = "off (--no-malloc-tuning)"
    else:
        malloc = "on" if spikefed.runtime.configure_allocator() else "requested, not applied"
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, snntorch {snntorch.__version__}, threads {torch.get_num_threads()}, "
          f"malloc tuning: {malloc}")
    print(f"LIF MLP {IN_FEATURES}-{args.hidden}-{CLASSES}, T={args.steps}, B={args.batch}, "
          f"{args.rounds} rounds x {args.iters} iters (+{WARMUP} warm-up)")

    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.steps, args.batch, IN_FEATURES, generator=g) * 0.5
    y = torch.randint(0, CLASSES, (args.batch,), generator=g)
    models = build_models(args.hidden)
    spikes_ok = check_spikes(models, x)
    mem, lif_ok = measure_memory(args)
    if not (spikes_ok and lif_ok):
        print("ERROR: spikes differ between implementations; not timing.")
        return 1

    times = time_all(models, x, y, args)
    unit = args.steps * args.batch * args.hidden * 4  # one float32 [T, B, N] tensor
    stats = {name: summarize([t * 1e3 for t in ts]) for name, ts in times.items()}
    base = stats["snntorch"]["median_ms"]
    print("\n| implementation | median ms/iter | min ms | IQR ms | speedup vs snnTorch "
          "| saved bytes per LIF layer | in units of [T,B,N] |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, s in stats.items():
        s["speedup_vs_snntorch"] = base / s["median_ms"]
        s["saved_bytes_per_lif_layer"] = mem[name]
        s["saved_in_tbn_units"] = mem[name] / unit
        print(f"| {name} | {s['median_ms']:.2f} | {s['min_ms']:.2f} | {s['iqr_ms']:.2f} | "
              f"{s['speedup_vs_snntorch']:.2f}x | {mem[name]:,} | {s['saved_in_tbn_units']:.2f} |")

    speedup = stats["spikefed-fused"]["speedup_vs_snntorch"]
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__, "snntorch": snntorch.__version__, "threads": torch.get_num_threads(),
        "malloc_tuning": malloc, "spikes_identical": True, "tbn_float32_bytes": unit,
        "results": stats, "speedup_vs_snntorch": round(speedup, 2),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}\nspeedup_vs_snntorch={speedup:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
