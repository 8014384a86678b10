"""Seconds per federated round: spikefed cohort engine vs a sequential per-client loop vs Flower's simulation.

Workload (the same for all three): digits (1,437 training samples) split IID into exactly K clients, all of which
train every round (at K = 1,000 each holds 1 or 2 samples); spiking MLP 64-256-10 (LIF, T = 25, direct input),
1 local epoch, batch 32, Adam; FedAvg weighted by sample count. Client k in round r draws its batches from
``derive_seed(seed, Purpose.CLIENT, r, k)`` everywhere, so all three do the same arithmetic; the script reports
each final global model's largest difference from the cohort engine's.

What is timed (perf_counter, one process, one run, same machine)
    1. ``cohort``      ``Simulation(build_spec(settings)).run_round()`` with ``federation.engine = "cohort"``:
                       sampling, broadcast encode/decode, ``train_cohort`` on all K clients (one batched
                       computation), encode/decode/validation of every client delta, FedAvg. No evaluation
                       (``eval_every`` is out of reach).
    2. ``sequential``  the same with ``engine = "sequential"``: ``train_sequential``, one client after another.
    3. ``flower``      ``flwr.simulation.run_simulation`` (Ray backend, ``num_cpus = 1`` per client, so one actor
                       per core) with K SuperNodes running a Message-API ``ClientApp`` whose train function calls
                       ``train_sequential`` for its own client, and ``flwr.serverapp.strategy.FedAvg``
                       (``fraction_evaluate = 0``). A round is timed from the strategy's ``configure_train`` to the
                       end of its ``aggregate_train``: sampling, messages, Ray scheduling, client training,
                       serialization and aggregation; the ServerApp's logging between rounds is left out. Each Ray
                       actor builds the federation once (data and model stay resident, as on a real device).
    4. ``snntorch``    the stack a user writes without a framework: the same MLP as ``snntorch.Leaky`` layers
                       stepped over T (``fl_peers.SnnTorchNet``, spikefed's initial weights), each client trained in
                       turn in a plain Python loop (same shards, same seeded batches, snnTorch's mse_count_loss,
                       Adam), FedAvg of the state dicts.
    5. ``flower_snntorch``  Flower's simulation as in 3, with that snnTorch client in the ClientApp.
    Each engine runs one warm-up round (Flower: Ray and actor start-up, first imports), then ``--rounds`` timed
    rounds (table: median; speedup = median(peer) / median(cohort)). A configuration whose warm-up round exceeds
    ``--max-seconds`` is skipped, and the notes say so.
    Threads: spikefed runs with torch's default threads (``--threads``), each Flower actor with one (Ray sets
    OMP_NUM_THREADS), so all use every core. Multi-threaded torch slows down several-fold on a busy machine.

Floor: the bytes a single-pass LIF round must move, over a measured copy bandwidth (``torch`` copy of a 256 MiB
float32 tensor: read + write bytes per second). Counted, in float32: every trained sample reads its input and
writes then reads back each activation of each layer (pre-activation, membrane, spikes) once per time step
(forward writes, backward reads); every optimizer step reads and writes the weights, writes and reads the
gradient, reads and writes Adam's two moments (8 passes over the P parameters); every client writes its upload
once and the server reads it once (2 K P). ``floor_ratio`` = cohort seconds per round / floor.

Compute floor (``floors.py``): the FLOPs of the round's matrix products (forward, input-gradient and
weight-gradient products of every Linear over T x samples; the first layer, whose direct input is the same at
every step, once per sample and without an input gradient) over a GEMM rate measured in the same run
(``torch.bmm`` of the round's own stacked float32 shapes, the same threads). Printed with the bandwidth floor,
and ``ratio_to_max_floor`` = cohort seconds per round / max(bandwidth floor, compute floor).

Run
    .venv/bin/pip install -e '.[flower]' -c constraints.txt        # Flower + Ray (optional extra)
    .venv/bin/python benchmarks/fl_round.py                        # K = 10, 100, 1000; 3 timed rounds
    .venv/bin/python benchmarks/fl_round.py --clients 10,100 --rounds 1 --skip-flower --json /tmp/x.json
Prints a Markdown table, writes ``--json`` (default benchmarks/results/fl_round.json), then the line
``bandwidth_floor_s=<a> compute_floor_s=<b> gemm_gflop_per_s=<c> ratio_to_max_floor=<d>`` and last the line
``speedup_vs_flower_snntorch=<x> speedup_vs_flower=<y> speedup_vs_sequential=<z> floor_ratio=<w>`` at 100 clients
per round ("nan" where a peer did not run). ``--kernel`` sets ``local.kernel`` of the spikefed engines.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floors import gemm_flops, gemm_rate  # noqa: E402

from spikefed.experiment.config import RunSettings
from spikefed.experiment.runner import build_spec
from spikefed.federated.cohort import ClientData, train_sequential
from spikefed.federated.cohort_widths import batch_widths
from spikefed.federated.simulation import Simulation
from spikefed.seeding import Purpose, torch_generator
from spikefed.federated.types import FitInstructions, params_of
from spikefed.runtime import configure_allocator

SEED = 0
NEVER = 10**9  # federation.rounds / eval_every: no evaluation inside the timed rounds
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "fl_round.json"
KERNEL = "loop"  # local.kernel of the spikefed engines (--kernel)


def make_settings(k: int, engine: str = "cohort") -> RunSettings:
    return RunSettings.model_validate({
        "seed": SEED,
        "partition": {"method": "iid", "num_clients": k},
        "model": {"kind": "mlp", "hidden": [256], "neuron": "lif"},
        "local": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "num_steps": 25, "encoder": "direct",
                  "kernel": KERNEL},
        "federation": {"rounds": NEVER, "eval_every": NEVER, "fraction": 1.0, "min_clients": k,
                       "strategy": "fedavg", "engine": engine},
    })


def time_rounds(timed_round: Callable[[], float], rounds: int, max_seconds: float) -> dict[str, Any]:
    """One warm-up round (skipped beyond ``max_seconds``), then ``rounds`` timed ones: their median."""
    warmup = timed_round()
    if warmup > max_seconds:
        return {"status": "skipped", "warmup_s": warmup,
                "reason": f"warm-up round took {warmup:.1f} s > --max-seconds {max_seconds:g}"}
    times = [timed_round() for _ in range(rounds)]
    return {"status": "ok", "warmup_s": warmup, "rounds_s": times, "median_s": statistics.median(times)}


def time_spikefed(k: int, engine: str, rounds: int, max_seconds: float) -> dict[str, Any]:
    sim = Simulation(build_spec(make_settings(k, engine)))

    def timed_round() -> float:
        t0 = time.perf_counter()
        sim.run_round()
        return time.perf_counter() - t0

    res = time_rounds(timed_round, rounds, max_seconds)
    return {**res, "final_params": sim.state.global_params} if res["status"] == "ok" else res


def time_snntorch(k: int, rounds: int, max_seconds: float) -> dict[str, Any]:
    """The plain snnTorch per-client loop (``fl_peers.snntorch_round``), timed like the spikefed engines."""
    from fl_peers import make_net, snntorch_round, snntorch_state

    spec, clients = actor_federation(k)
    params = snntorch_state(params_of(spec.model))
    net = make_net(params)
    done = 0

    def timed_round() -> float:
        nonlocal params, done
        t0 = time.perf_counter()
        done += 1
        params = snntorch_round(net, params, clients, spec.local, SEED, done)
        return time.perf_counter() - t0

    return time_rounds(timed_round, rounds, max_seconds)


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes per second a torch copy moves (read + write) for a ``mib`` MiB float32 tensor: best of ``repeats``."""
    src = torch.ones(mib * 2**18)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * 4 / best


def floor_bytes(k: int) -> dict[str, int]:
    """The bytes a single-pass LIF round of the K-client workload moves (see the module docstring)."""
    spec = build_spec(make_settings(k))
    cfg, sizes = spec.local, [64, 256, 10]
    counts = [len(p) for p in spec.parts]
    samples = cfg.epochs * sum(counts)
    steps = cfg.epochs * sum(-(-n // cfg.batch_size) for n in counts)
    p = sum(t.numel() for t in spec.model.parameters())
    activations = samples * cfg.num_steps * (sizes[0] + 2 * 3 * sum(sizes[1:])) * 4
    optimizer = steps * 8 * p * 4
    uplink = 2 * k * p * 4
    return {"activations": activations, "optimizer": optimizer, "uplink": uplink,
            "total": activations + optimizer + uplink}


def compute_floor(k: int) -> dict[str, Any]:
    """The round's GEMM FLOPs, the GEMM rate measured on its own shapes, and their ratio (``floors.py``)."""
    spec = build_spec(make_settings(k))
    cfg, sizes = spec.local, [64, 256, 10]
    counts = [len(p) for p in spec.parts]
    samples = cfg.epochs * sum(counts)
    # the shape the GEMM rate is timed on: the largest client's first batch at the width the cohort engine runs
    # it (width groups: a batch of s samples at ceil(s / 8) * 8, at most batch_size; federated/cohort_widths.py)
    width = batch_widths([min(cfg.batch_size, max(counts))], cfg)[0]
    flops = gemm_flops(samples, cfg.num_steps, sizes)
    rate, products = gemm_rate(k, width, cfg.num_steps, sizes)
    return {"gemm_flops": flops, "gemm_flops_per_s": rate, "compute_floor_s": flops / rate, "products": products}


# -- Flower client side (runs inside the Ray actors; importable as module ``fl_round``) ------------------------

_ACTOR_FEDERATIONS: dict[int, tuple[Any, list[ClientData]]] = {}


def actor_federation(k: int) -> tuple[Any, list[ClientData]]:
    """The federation of K clients, built once per actor process (same seed, so the same shards and model)."""
    if k not in _ACTOR_FEDERATIONS:
        configure_allocator()
        spec = build_spec(make_settings(k))
        clients = [ClientData(cid, spec.data.x_train[torch.as_tensor(idx, dtype=torch.int64)],
                              spec.data.y_train[torch.as_tensor(idx, dtype=torch.int64)])
                   for cid, idx in enumerate(spec.parts)]
        _ACTOR_FEDERATIONS[k] = (spec, clients)
    return _ACTOR_FEDERATIONS[k]


def flower_train(msg: Any, context: Any) -> Any:
    """Flower ClientApp train: one client's local epoch via spikefed's ``train_sequential``."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    cid = int(context.node_config["partition-id"])
    spec, clients = actor_federation(int(context.node_config["num-partitions"]))
    config = msg.content["config"]
    rnd = int(config["server-round"]) + int(config["round-offset"])
    global_params = dict(msg.content["arrays"].to_torch_state_dict())
    gen = torch_generator(SEED, Purpose.CLIENT, rnd, cid)
    upd = train_sequential(spec.model, global_params, [clients[cid]], [gen], spec.local, FitInstructions(rnd))[0]
    metrics = MetricRecord({"num-examples": upd.num_samples, "loss": float(upd.metrics["loss"])})
    return Message(RecordDict({"arrays": ArrayRecord(upd.params), "metrics": metrics}), reply_to=msg)


def make_client_app() -> Any:
    from flwr.clientapp import ClientApp

    app = ClientApp()
    app.train()(flower_train)
    return app


# -- Flower server side (this process) --------------------------------------------------------------------

def time_flower(k: int, rounds: int, max_seconds: float, verbose: bool, client: str = "spikefed"
                ) -> dict[str, Any]:
    """Flower's simulation with ``client`` (``spikefed``: train_sequential; ``snntorch``: fl_peers) in the
    ClientApp."""
    import ray
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    # Ray pickles the ClientApp; its train function must come from an importable module, not __main__, so that
    # the actors import it (and keep their cached federation) instead of receiving a copy with every message.
    if str(Path(__file__).resolve().parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    client_module = importlib.import_module("fl_round" if client == "spikefed" else "fl_peers")
    make_app = client_module.make_client_app if client == "spikefed" else client_module.make_snntorch_client_app
    round_times: list[float] = []
    out: dict[str, Any] = {}

    class TimedFedAvg(FedAvg):
        def configure_train(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
            self.t_start = time.perf_counter()
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
            replies = list(replies)
            if len(replies) != k or any(m.has_error() for m in replies):
                raise RuntimeError(f"round {server_round}: {len(replies)} replies from {k} clients, or errors")
            result = super().aggregate_train(server_round, replies)
            round_times.append(time.perf_counter() - self.t_start)
            return result

    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Any) -> None:
        first = params_of(build_spec(make_settings(k)).model)
        if client != "spikefed":
            first = importlib.import_module("fl_peers").snntorch_state(first)
        init = ArrayRecord(first)
        strategy = TimedFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=k, min_train_nodes=k)
        res = strategy.start(grid, init, num_rounds=1, train_config=ConfigRecord({"round-offset": 0}))
        if round_times[0] > max_seconds:
            return out.update(status="skipped", reason=f"warm-up round took {round_times[0]:.1f} s > --max-seconds "
                                                       f"{max_seconds:g}")
        res = strategy.start(grid, res.arrays, num_rounds=rounds, train_config=ConfigRecord({"round-offset": 1}))
        if client == "spikefed":
            out["final_params"] = dict(res.arrays.to_torch_state_dict())

    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"logging_level": logging.INFO if verbose else logging.ERROR, "log_to_driver": verbose}}
    try:
        run_simulation(server, make_app(), num_supernodes=k, backend_config=backend)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    if len(round_times) != (1 if out.get("status") == "skipped" else rounds + 1):
        return {"status": "failed", "reason": f"Flower completed {len(round_times)} of {rounds + 1} rounds"}
    out.update(status=out.get("status", "ok"), warmup_s=round_times[0])
    if out["status"] == "ok":
        out.update(rounds_s=round_times[1:], median_s=statistics.median(round_times[1:]))
    return out


def flower_unavailable() -> str | None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray  # noqa: F401
        from flwr.simulation import run_simulation  # noqa: F401
    except ImportError as e:
        return f"Flower simulation not installed ({e}); pip install -e '.[flower]' -c constraints.txt"
    return None


def median_of(entry: dict[str, Any] | None) -> float:
    return entry["median_s"] if entry and entry.get("status") == "ok" else math.nan


def cell(entry: dict[str, Any] | None) -> str:
    return "not run" if entry is None else f"{entry['median_s']:.3f}" if entry["status"] == "ok" else entry["status"]


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="10,100,1000", help="comma-separated clients per round")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per configuration (after one warm-up)")
    ap.add_argument("--skip-flower", action="store_true", help="do not run Flower")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="skip a configuration whose warm-up exceeds it")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads of the spikefed engines (0: torch's default); 1 is steadier on a busy machine")
    ap.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    ap.add_argument("--kernel", default="loop", choices=("loop", "compiled", "numba", "auto"),
                    help="local.kernel of the cohort engine (the sequential engine and the Flower clients run "
                         "the model's own neurons: the loop kernel)")
    args = ap.parse_args(argv)
    global KERNEL
    KERNEL = args.kernel
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    if args.rounds < 1 or not clients or min(clients) < 1:
        ap.error("--rounds and every --clients value must be >= 1")
    configure_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    flower_reason = "--skip-flower" if args.skip_flower else flower_unavailable()
    if flower_reason is None and not args.verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)

    bandwidth = copy_bandwidth()
    results: dict[int, dict[str, Any]] = {}
    for k in clients:
        row: dict[str, Any] = {}
        for engine in ("cohort", "sequential"):
            print(f"[{k} clients] spikefed {engine} ...", file=sys.stderr, flush=True)
            row[engine] = time_spikefed(k, engine, args.rounds, args.max_seconds)
        print(f"[{k} clients] snnTorch loop ...", file=sys.stderr, flush=True)
        row["snntorch"] = time_snntorch(k, args.rounds, args.max_seconds)
        if flower_reason is None:
            for peer, client in (("flower", "spikefed"), ("flower_snntorch", "snntorch")):
                print(f"[{k} clients] Flower ({client} client) ...", file=sys.stderr, flush=True)
                try:
                    row[peer] = time_flower(k, args.rounds, args.max_seconds, args.verbose, client)
                except Exception as e:  # noqa: BLE001 - report and go on with the other configurations
                    row[peer] = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
        base = row["cohort"].pop("final_params", None)
        for entry in list(row.values()):
            if "final_params" in entry and base is not None:
                final = entry.pop("final_params")
                entry["max_abs_diff_vs_cohort"] = max(float((final[n] - base[n]).abs().max()) for n in base)
        cohort = median_of(row["cohort"])
        row["speedup_vs_sequential"] = median_of(row["sequential"]) / cohort
        row["speedup_vs_flower"] = median_of(row.get("flower")) / cohort
        row["speedup_vs_snntorch"] = median_of(row.get("snntorch")) / cohort
        row["speedup_vs_flower_snntorch"] = median_of(row.get("flower_snntorch")) / cohort
        row["floor_bytes"] = floor_bytes(k)
        row["floor_s"] = row["floor_bytes"]["total"] / bandwidth
        row["floor_ratio"] = cohort / row["floor_s"]
        row.update(compute_floor(k))
        row["ratio_to_max_floor"] = cohort / max(row["floor_s"], row["compute_floor_s"])
        results[k] = row

    print(f"\nload average {os.getloadavg()[0]:.2f} (1 min) at the end; "
          f"seconds per round (median of {args.rounds} after 1 warm-up); digits, spiking MLP 64-256-10, T=25, "
          f"1 local epoch, batch 32, Adam, FedAvg; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    peers = ("sequential", "flower", "snntorch", "flower_snntorch")
    print("| clients per round | cohort s/round | sequential | Flower (spikefed client) | snnTorch loop "
          "| Flower + snnTorch | floor s | floor ratio | speedup vs sequential | vs Flower | vs snnTorch "
          "| vs Flower + snnTorch |")
    print("|---:|" + "---:|" * 11)
    for k, row in results.items():
        speedups = [f"{row['speedup_vs_' + p]:.1f}x" if math.isfinite(row["speedup_vs_" + p]) else "n/a"
                    for p in peers]
        print(f"| {k:,} | {cell(row['cohort'])} | " + " | ".join(cell(row.get(p)) for p in peers)
              + f" | {row['floor_s']:.4f} | {row['floor_ratio']:.1f} | " + " | ".join(speedups) + " |")
    print(f"\nfloor: copy bandwidth {bandwidth / 1e9:.2f} GB/s (read + write); bytes per round: "
          + "; ".join(f"{k:,} clients {fb['total'] / 1e6:.0f} MB (activations {fb['activations'] / 1e6:.0f}, "
                      f"optimizer {fb['optimizer'] / 1e6:.0f}, uplink {fb['uplink'] / 1e6:.0f})"
                      for k, fb in ((k, row["floor_bytes"]) for k, row in results.items())))
    for k, row in results.items():
        print(f"compute floor, {k:,} clients: {row['gemm_flops'] / 1e9:.2f} GFLOP of matrix products at "
              f"{row['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s (torch.bmm, the round's shapes) = "
              f"{row['compute_floor_s']:.4f} s ({row['compute_floor_s'] / median_of(row['cohort']):.0%} of the cohort "
              f"round); bandwidth floor {row['floor_s']:.4f} s; cohort / max(floors) = {row['ratio_to_max_floor']:.1f}")
    print("\n" + (f"- Flower not run: {flower_reason}\n" if flower_reason else "")
          + ("" if 100 in results else "- 100 clients per round not measured: the last line reads nan\n"), end="")
    for k, row in results.items():
        for peer, entry in row.items():
            if isinstance(entry, dict) and entry.get("status", "ok") != "ok":
                print(f"- {k:,} clients, {peer}: {entry['status']} ({entry['reason']})")
            if isinstance(entry, dict) and "max_abs_diff_vs_cohort" in entry:
                print(f"- {k:,} clients, {peer}: max |w - w_cohort| after {args.rounds + 1} rounds = "
                      f"{entry['max_abs_diff_vs_cohort']:.2e}")

    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
            "load_average": os.getloadavg(), "copy_bandwidth_bytes_per_s": bandwidth,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "rounds": args.rounds, "max_seconds": args.max_seconds, "flower_skipped_reason": flower_reason,
            "kernel": args.kernel}
    if flower_reason is None:
        meta.update(flwr=importlib.import_module("flwr").__version__, ray=importlib.import_module("ray").__version__)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(json_safe({"meta": meta, "results": results}), indent=2) + "\n")
    print(f"\nraw numbers: {args.json}")  # the floor line and the last line follow
    at100 = results.get(100, {})
    print(f"bandwidth_floor_s={at100.get('floor_s', math.nan):.4f} "
          f"compute_floor_s={at100.get('compute_floor_s', math.nan):.4f} "
          f"gemm_gflop_per_s={at100.get('gemm_flops_per_s', math.nan) / 1e9:.1f} "
          f"ratio_to_max_floor={at100.get('ratio_to_max_floor', math.nan):.2f}")
    print(f"speedup_vs_flower_snntorch={at100.get('speedup_vs_flower_snntorch', math.nan):.2f} "
          f"speedup_vs_flower={at100.get('speedup_vs_flower', math.nan):.2f} "
          f"speedup_vs_sequential={at100.get('speedup_vs_sequential', math.nan):.2f} "
          f"floor_ratio={at100.get('floor_ratio', math.nan):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
