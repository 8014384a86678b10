"""The compute floor of one conv-net round, and how each engine (and each convolution rule) stands against it.

For each conv net at ``--clients`` clients (default 100), one round of local training (one epoch, batch 32, Adam):

- ``scenario``: benchmarks/scenario.py's DelayedConvNet (conv 3x3 2 -> 4 channels on 16x16, LIF, max-pool,
  Delay, Linear, LIF; 6 bins) on its own Dirichlet(0.3) partition of event MNIST into ``--clients`` clients;
- ``conv``: benchmarks/cohort_models.py's SpikingConvNet (2x32x32 frames, channels (8, 16), T = 10, 50 samples
  per client).

Floor. FLOPs of every convolution and linear layer per sample and step (forward hooks on one sample): forward
``2 * MACs``, weight gradient ``2 * MACs``, input gradient ``2 * MACs`` (not for a layer fed by the data, whose
input needs no gradient), times T x the clients' real samples (no padding). Rates, measured in this run on this
machine: ``gemm`` (a 1024 x 1024 float32 matmul) and, per layer shape, ``conv`` (the fastest of: the layer's
forward + backward at the engine's own batch of 32 x T images, and at a batch 8x larger). ``floor_gemm`` =
FLOPs / gemm rate; ``floor_conv`` = the sum over layers of the layer's FLOPs / its own conv rate. Then each
engine's seconds per round (warm-up round first, one timed round) as a multiple of the floor: if the sequential
engine is within k x of a floor, no batching can gain more than k x on that part of the work.

Convolution rules. For each conv layer shape, K clients x 32 x T images, forward + backward: ``loop`` (K ordinary
convolutions, the cohort engine's default rule and the sequential engine's work), ``grouped`` (PyTorch's vmap
rule, one grouped convolution), ``unfold_bmm`` (im2col + one batched matmul over the client axis) and
``grouped_cl`` (the grouped convolution in channels-last memory).

Batch widths (``--buckets 0 8 ...``, only this table): the cohort round per batch-width rule of
:mod:`spikefed.federated.cohort_widths` (0: every batch padded to ``batch_width``, the rule before width groups),
the padded share of the computed samples, against the sequential engine, interleaved ``--repeats`` times.

Run:  .venv/bin/python benchmarks/conv_floor.py [--nets scenario,conv] [--clients 100] [--threads 1]
      .venv/bin/python benchmarks/conv_floor.py --buckets 0 1 4 8 16 [--repeats 3]
Last line:  ``<net>_seq_over_floor=<x> <net>_cohort_over_floor=<y> <net>_cohort_vs_sequential=<r>`` per net
(floors by the conv rate).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cohort_models  # noqa: E402  (the conv workload of cohort_models.py, not a copy of it)
import scenario  # noqa: E402  (the scenario's conv net and partition)

from spikefed.experiment.runner import build_spec  # noqa: E402
from spikefed.federated.cohort import ClientData, client_schedule, train_cohort, train_sequential  # noqa: E402
from spikefed.federated.cohort_widths import WIDTH_STEP, padded_fraction  # noqa: E402
from spikefed.federated.simulation import build_client, client_generator  # noqa: E402
from spikefed.federated.types import FitInstructions, params_of  # noqa: E402
from spikefed.runtime import configure_allocator  # noqa: E402
from spikefed.seeding import Purpose, derive_seed  # noqa: E402
from spikefed.snn.train import TrainConfig  # noqa: E402


def best_of(fn: Callable[[], Any], repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def workload(net: str, k: int) -> tuple[nn.Module, list[ClientData], TrainConfig]:
    if net == "conv":
        return cohort_models.workload("conv", k)
    args = argparse.Namespace(clients=k, per_round=k, bins=6, rounds=1, epochs=1, lr=5e-3, set=[])
    spec = build_spec(scenario.settings_for(args, 0))
    model = scenario.DelayedConvNet(4, torch.Generator().manual_seed(derive_seed(0, Purpose.INIT)))
    return model, [build_client(spec, c) for c in range(k)], spec.local


def layers(model: nn.Module, sample: torch.Tensor, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Every Conv2d / Linear of ``model`` with its input shape per image and MACs per sample and step."""
    found: list[dict[str, Any]] = []

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            macs = out[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            found.append({"kind": "conv", "module": m, "in": tuple(inp[0].shape[1:]), "macs": macs})
        else:
            macs = m.in_features * m.out_features
            found.append({"kind": "linear", "module": m, "in": (m.in_features,), "macs": macs})

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():  # one image at one step: the first T*1 calls record the shapes
        x = sample[:1].float()
        x = x.movedim(1, 0) if cfg.encoder == "events" else x.unsqueeze(0).expand(cfg.num_steps, *x.shape)
        model(x[:1])
    for h in hooks:
        h.remove()
    for i, layer in enumerate(found):
        layer["input_grad"] = i > 0  # the first layer reads the data, which needs no gradient
    return found


def layer_rate(layer: dict[str, Any], images: int) -> float:
    """FLOP/s of the layer's forward + backward on ``images`` images (batch ``images`` and 8x larger, best)."""
    m, best = layer["module"], 0.0
    for n in (images, 8 * images):
        x = (torch.rand(n, *layer["in"]) < 0.2).float().requires_grad_(layer["input_grad"])
        w = m.weight.detach().clone().requires_grad_(True)
        b = m.bias.detach().clone().requires_grad_(True) if m.bias is not None else None
        ins = [t for t in (w, b, x) if t is not None and t.requires_grad]

        def run() -> None:
            if layer["kind"] == "conv":
                out = F.conv2d(x, w, b, m.stride, m.padding, m.dilation, m.groups)
            else:
                out = F.linear(x, w, b)
            torch.autograd.grad(out, ins, torch.ones_like(out))

        flops = n * layer["macs"] * (6 if layer["input_grad"] else 4)
        best = max(best, flops / best_of(run))
    return best


def conv_rules(layer: dict[str, Any], k: int, n: int) -> dict[str, float]:
    """Seconds of forward + backward of one conv layer shape over k clients' own kernels, n images each."""
    m = layer["module"]
    cin, h, w_ = layer["in"]
    cout, kh, kw = m.out_channels, *m.kernel_size
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(k, n, cin, h, w_, generator=gen) < 0.2).float().requires_grad_(layer["input_grad"])
    w = m.weight.detach().unsqueeze(0).repeat(k, 1, 1, 1, 1).requires_grad_(True)
    b = m.bias.detach().unsqueeze(0).repeat(k, 1).requires_grad_(True)
    ins = [w, b] + ([x] if layer["input_grad"] else [])
    kw_ = {"stride": m.stride, "padding": m.padding}
    ho, wo = F.conv2d(x[0, :1], w[0], b[0], **kw_).shape[-2:]
    go = torch.randn(k, n, cout, ho, wo, generator=gen)

    def loop() -> None:
        outs = [F.conv2d(x[i], w[i], b[i], **kw_) for i in range(k)]
        torch.autograd.grad(outs, ins, list(go))

    def grouped() -> None:
        out = torch.func.vmap(lambda xx, ww, bb: F.conv2d(xx, ww, bb, **kw_))(x, w, b)
        torch.autograd.grad(out, ins, go)

    def unfold_bmm() -> None:
        cols = F.unfold(x.reshape(k * n, cin, h, w_), (kh, kw), padding=m.padding, stride=m.stride)
        cols = cols.view(k, n, cin * kh * kw, ho * wo).transpose(1, 2).reshape(k, cin * kh * kw, n * ho * wo)
        out = torch.baddbmm(b.unsqueeze(2), w.reshape(k, cout, -1), cols).view(k, cout, n, ho, wo).transpose(1, 2)
        torch.autograd.grad(out, ins, go)

    def grouped_cl() -> None:
        cl = torch.channels_last
        xg = x.transpose(0, 1).reshape(n, k * cin, h, w_).contiguous(memory_format=cl)
        out = F.conv2d(xg, w.reshape(k * cout, cin, kh, kw).contiguous(memory_format=cl), b.reshape(-1),
                       groups=k, **kw_)
        torch.autograd.grad(out, ins, go.transpose(0, 1).reshape(n, k * cout, ho, wo).contiguous(memory_format=cl))

    return {name: best_of(fn) for name, fn in
            (("loop", loop), ("grouped", grouped), ("unfold_bmm", unfold_bmm), ("grouped_cl", grouped_cl))}


def engine_seconds(model: nn.Module, clients: list[ClientData], cfg: TrainConfig, engine: str,
                   conv: str = "loop", bucket: int = WIDTH_STEP, rounds: int = 2,
                   clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of the last of ``rounds`` rounds (the first a warm-up) by ``clock`` (wall or process CPU time)."""
    g = params_of(model)
    seconds = 0.0
    for _ in range(rounds):
        gens = [client_generator(0, 1, c.client_id) for c in clients]
        t = clock()
        if engine == "sequential":
            train_sequential(model, g, clients, gens, cfg, FitInstructions(1))
        else:
            train_cohort(model, g, clients, gens, cfg, FitInstructions(1), conv=conv, bucket=bucket)
        seconds = clock() - t
    return seconds


def bucket_table(net: str, model: nn.Module, clients: list[ClientData], cfg: TrainConfig, buckets: list[int],
                 repeats: int) -> str:
    """Cohort seconds per round for each batch-width rule (``bucket``: 0 pads every batch to ``batch_width``, the
    rule before width groups; q >= 1 rounds each batch up to a multiple of q), with the padded share of the
    computed samples, against the sequential engine; the engines interleaved ``repeats`` times in this
    process (best of the repeats, as the load moves). Timed twice per run: wall clock, and the process's CPU
    time (with one torch thread: the work itself, less what the other processes of a loaded machine add)."""
    gens = [client_generator(0, 1, c.client_id) for c in clients]
    schedules = [client_schedule(c.num_samples, cfg, gen) for c, gen in zip(clients, gens)]
    names = ["sequential", *(f"cohort, bucket={q}" for q in buckets)]

    def one(name: str, clock: Callable[[], float]) -> float:
        q = int(name.rsplit("=", 1)[-1]) if "bucket" in name else WIDTH_STEP
        return engine_seconds(model, clients, cfg, name.split(",")[0], bucket=q, rounds=1, clock=clock)

    for name in names:  # warm-up
        one(name, time.perf_counter)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    loads = []
    for _ in range(repeats):
        for name in names:
            wall[name].append(one(name, time.perf_counter))
            cpu[name].append(one(name, time.process_time))
        loads.append(os.getloadavg()[0])
    seq, seq_cpu = min(wall["sequential"]), min(cpu["sequential"])
    print(f"\n## {net}: batch widths, {repeats} interleaved repeats, load {min(loads):.1f}-{max(loads):.1f}\n\n"
          "| engine | padded share of computed samples | wall s / round (best; all) | sequential / this (wall) "
          "| CPU s / round (best) | sequential / this (CPU) |\n|---|---|---|---|---|---|")
    for name in names:
        pad = "-" if name == "sequential" else f"{padded_fraction(schedules, cfg, int(name.rsplit('=', 1)[-1])):.3f}"
        print(f"| {name} | {pad} | {min(wall[name]):.3f}; {' '.join(f'{t:.3f}' for t in wall[name])} | "
              f"{seq / min(wall[name]):.2f} | {min(cpu[name]):.3f} | {seq_cpu / min(cpu[name]):.2f} |", flush=True)
    runs = wall
    return " ".join(f"{net}_bucket{q}_vs_sequential={seq / min(runs[f'cohort, bucket={q}']):.2f}" for q in buckets)


#: profiler rows of each part of a round: (group, op names, counted by "total" (with children) or "self")
GROUPS = (
    ("conv forward", ("aten::mkldnn_convolution",), "total"),
    ("conv backward", ("aten::convolution_backward",), "total"),
    ("max-pool", ("aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward"), "total"),
    ("LIF", ("LIFFunction", "LIFFunctionBackward"), "total"),
    ("delay (gather / scatter)", ("aten::gather", "aten::scatter_add_"), "self"),
    ("linear (mm)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"), "self"),
    ("torch.optim Adam", ("Optimizer.step#Adam.step",), "total"),
)


def profile_split(model: nn.Module, clients: list[ClientData], cfg: TrainConfig, engine: str) -> dict[str, float]:
    """CPU seconds of one round per part (torch.profiler, after the timed rounds); ``rest`` is everything else:
    the loss, the cohort's own optimizer, batch gathering, elementwise glue and Python per-op overhead."""
    from torch.profiler import ProfilerActivity, profile

    g = params_of(model)
    gens = [client_generator(0, 1, c.client_id) for c in clients]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        if engine == "sequential":
            train_sequential(model, g, clients, gens, cfg, FitInstructions(1))
        else:
            train_cohort(model, g, clients, gens, cfg, FitInstructions(1))
    events = list(prof.events())
    split = {"total": sum(e.self_cpu_time_total for e in events) / 1e6}
    for group, names, how in GROUPS:
        seconds = 0.0
        for e in events:
            if e.name not in names:
                continue
            parent, nested = e.cpu_parent, False
            while parent is not None and not nested:  # a vmap rule re-enters the same op: count the outer call
                nested, parent = parent.name in names, parent.cpu_parent
            if not nested:
                seconds += e.cpu_time_total if how == "total" else e.self_cpu_time_total
        split[group] = seconds / 1e6
    split["rest"] = split["total"] - sum(split[group] for group, _, _ in GROUPS)
    return split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="scenario,conv")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=14, help="clients per stacked convolution in the rule table")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no thread contention under load)")
    ap.add_argument("--buckets", type=int, nargs="+", default=None, metavar="Q", help="only the batch-width table: "
                    "cohort rounds with each bucket Q (0: pad every batch to batch_width, the earlier rule) against "
                    "the sequential engine, interleaved --repeats times")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    configure_allocator()
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    gemm = 2 * 1024**3 / best_of(lambda: a @ b, 5)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.machine()}, "
          f"load {os.getloadavg()[0]:.1f}; gemm rate {gemm / 1e9:.1f} GFLOP/s\n", flush=True)
    summary = []
    for net in args.nets.split(","):
        model, clients, cfg = workload(net, args.clients)
        if args.buckets:
            summary.append(bucket_table(net, model, clients, cfg, args.buckets, args.repeats))
            continue
        images = cfg.num_steps * sum(c.num_samples for c in clients) * cfg.epochs
        found = layers(model, clients[0].x, cfg)
        print(f"## {net}: {len(clients)} clients, {sum(c.num_samples for c in clients)} samples, T = "
              f"{cfg.num_steps}\n\n| layer | input | MACs / image | GFLOP / round | rate GFLOP/s |\n"
              "|---|---|---|---|---|")
        flops_total, floor_conv = 0.0, 0.0
        for layer in found:
            flops = images * layer["macs"] * (6 if layer["input_grad"] else 4)
            rate = layer_rate(layer, cfg.batch_size * cfg.num_steps)
            flops_total += flops
            floor_conv += flops / rate
            print(f"| {layer['kind']} | {layer['in']} | {layer['macs']} | {flops / 1e9:.3f} | {rate / 1e9:.1f} |")
        floor_gemm = flops_total / gemm
        print(f"\nfloor: {flops_total / 1e9:.2f} GFLOP per round; {floor_conv:.3f} s at the layers' own rates, "
              f"{floor_gemm:.3f} s at the gemm rate\n", flush=True)
        print("| conv layer | clients x images | " + " | ".join(("loop", "grouped", "unfold_bmm", "grouped_cl"))
              + " |\n|---|---|---|---|---|---|")
        for layer in found:
            if layer["kind"] == "conv":
                r = conv_rules(layer, args.chunk, cfg.batch_size * cfg.num_steps)
                print(f"| {layer['in']} -> {layer['module'].out_channels} | {args.chunk} x "
                      f"{cfg.batch_size * cfg.num_steps} | " + " | ".join(f"{v * 1e3:.1f} ms" for v in r.values())
                      + " |", flush=True)
        seq = engine_seconds(model, clients, cfg, "sequential")
        loop = engine_seconds(model, clients, cfg, "cohort", "loop")
        grouped = engine_seconds(model, clients, cfg, "cohort", "grouped")
        print("\n| engine | s / round | / floor (conv rate) | / floor (gemm rate) |\n|---|---|---|---|")
        for name, s in (("sequential", seq), ("cohort, conv=loop", loop), ("cohort, conv=grouped", grouped)):
            print(f"| {name} | {s:.3f} | {s / floor_conv:.1f} | {s / floor_gemm:.1f} |")
        print(f"\n{net}: cohort vs sequential {seq / loop:.2f}x (loop), {seq / grouped:.2f}x (grouped); "
              f"load {os.getloadavg()[0]:.1f}\n", flush=True)
        splits = {e: profile_split(model, clients, cfg, e) for e in ("sequential", "cohort")}
        print("| part (profiled round, CPU s) | sequential | cohort, conv=loop |\n|---|---|---|")
        for part in [group for group, _, _ in GROUPS] + ["rest", "total"]:
            print(f"| {part} | {splits['sequential'][part]:.3f} | {splits['cohort'][part]:.3f} |")
        kernels = sum(splits["sequential"][group] for group, _, _ in GROUPS[:6])
        print(f"\nsequential: {kernels:.3f} s of {splits['sequential']['total']:.3f} s in the layers' kernels "
              f"(conv, pool, LIF, delay, linear); batching that keeps those kernels' speed gains at most "
              f"{splits['sequential']['total'] / kernels:.2f}x\n", flush=True)
        summary.append(f"{net}_seq_over_floor={seq / floor_conv:.2f} {net}_cohort_over_floor={loop / floor_conv:.2f} "
                       f"{net}_cohort_vs_sequential={seq / loop:.2f}")
    print(" ".join(summary))


if __name__ == "__main__":
    main()
