"""Online learning benchmark: e-prop vs BPTT, accuracy on digits and training memory vs sequence length T.

What is measured
    Accuracy: SpikingMLP 64-H-10 with a leaky read-out (``readout="membrane"``), loss ``ce_membrane`` with
    ``membrane_reduction=time_mean`` (the per-step cross-entropy e-prop needs), Adam, seeded; trained with BPTT
    (autograd) and with e-prop (``method=eprop``) from the same initial weights on the same batches, for four
    hidden layers: LIF (detached reset: e-prop is exact, so both must reach the same accuracy), ALIF with
    spikes feeding the threshold (``detach_reset=False``: Bellec's adaptive eligibility, reset path dropped),
    recurrent LIF (paths through other neurons' spikes dropped), recurrent ALIF (LSNN, spikes feeding the
    threshold) and LIF with random feedback. Test accuracy on
    the held-out 20 % of the bundled digits, direct (constant-current) coding, T = 25, for each of ``--seeds``
    (the seed sets the weights and the batch order; the split is fixed).

    Memory: one training batch (B = 32, rate-coded digits) at T in {25, 100, 400}:
    - BPTT: bytes of the tensors autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``,
      deduplicated by storage, only those still alive when the forward and loss are done, i.e. what the graph
      holds at the start of backward: its peak). The rate-coded input is among them (the first Linear saves it).
    - e-prop: bytes of the state carried from step to step (:func:`spikefed.snn.online.state_bytes`: neuron
      state, eligibility vectors and traces, accumulated gradients), its maximum over the steps. e-prop builds no
      autograd graph (checked: nothing is saved); the per-step temporaries (a few ``[B, H, P]`` blocks) do not
      depend on T and are not counted. The input sequence is the data, counted for neither (e-prop could
      stream it step by step).
    Both are reported as the ratio T=400 / T=25. Wall time per batch is reported too (one run, not a median).

Run
    .venv/bin/python benchmarks/eprop.py            # defaults: hidden 64, 10 epochs, 2 seeds, ~2-3 min
    .venv/bin/python benchmarks/eprop.py --epochs 2 # quick check
Results go to stdout (Markdown tables) and to ``--json`` (default benchmarks/results/eprop.json); the last line is
``eprop_memory_ratio_T400_vs_T25=<x> bptt_memory_ratio_T400_vs_T25=<y>`` (LIF hidden layer).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from spikefed.data import load_digits_split
from spikefed.snn import losses
from spikefed.snn.models import SpikingMLP
from spikefed.snn.online import eprop_init, eprop_modules, eprop_step, loss_weights, state_bytes
from spikefed.snn.train import TrainConfig, encode_inputs, evaluate, fit

from memprobe import saved_bytes

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "eprop.json"
MODELS = {  # name -> (neuron, neuron kwargs, e-prop feedback)
    "lif": ("lif", {}, "symmetric"),
    "alif": ("alif", {"detach_reset": False}, "symmetric"),
    "rlif": ("rlif", {}, "symmetric"),
    "ralif": ("ralif", {"detach_reset": False}, "symmetric"),
    "lif_random_feedback": ("lif", {}, "random"),
}


def make_model(name: str, hidden: int, seed: int) -> SpikingMLP:
    neuron, kw, _ = MODELS[name]
    return SpikingMLP([64, hidden, 10], neuron=neuron, readout="membrane",
                      generator=torch.Generator().manual_seed(seed), **kw)


def accuracy(args, data, seed: int) -> list[dict]:
    rows = []
    for name, (_, _, feedback) in MODELS.items():
        for method in ("bptt", "eprop"):
            if method == "bptt" and feedback == "random":
                continue  # the same network as "lif" under BPTT
            cfg = TrainConfig(epochs=args.epochs, batch_size=32, lr=args.lr, num_steps=args.steps,
                              loss="ce_membrane", membrane_reduction="time_mean", method=method,
                              eprop_feedback=feedback)
            model = make_model(name, args.hidden, seed)
            start = time.perf_counter()
            hist = fit(model, data.x_train, data.y_train, cfg, torch.Generator().manual_seed(seed))
            seconds = time.perf_counter() - start
            test = evaluate(model, data.x_test, data.y_test, cfg)
            rows.append({"model": name, "method": method, "seed": seed, "test_accuracy": test.accuracy,
                         "train_loss": hist[-1]["train_loss"], "seconds": seconds})
            print(f"  seed {seed} {name:20s} {method:5s} test accuracy {test.accuracy:.4f}  ({seconds:.1f} s)",
                  flush=True)
    return rows


def bptt_saved_bytes(model: SpikingMLP, x: torch.Tensor, y: torch.Tensor) -> int:
    """What BPTT's graph holds at the start of backward (then runs the backward)."""
    nbytes, loss = saved_bytes(lambda: losses.ce_membrane_loss(model(x).output, y, "time_mean"))
    loss.backward()
    return nbytes


def eprop_state_bytes(model: SpikingMLP, x: torch.Tensor, y: torch.Tensor) -> tuple[int, float]:
    """Largest carried state over the steps of one e-prop pass, and the pass's wall time."""
    layer, readout = eprop_modules(model)
    weights = loss_weights(x.shape[0], "time_mean")
    saved = []
    peak = 0
    start = time.perf_counter()
    with torch.no_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        state = eprop_init(layer, readout, x.shape[1])
        for t in range(x.shape[0]):
            state = eprop_step(layer, readout, state, x[t], y, weights[t])
            peak = max(peak, state_bytes(state))
    seconds = time.perf_counter() - start
    if saved:
        raise RuntimeError("e-prop saved tensors for backward: it must build no autograd graph")
    return peak, seconds


def memory(args, data) -> list[dict]:
    rows = []
    xb, yb = data.x_train[:32], data.y_train[:32]
    for name in ("lif", "alif", "rlif", "ralif"):
        for steps in (25, 100, 400):
            cfg = TrainConfig(num_steps=steps, encoder="rate", loss="ce_membrane", membrane_reduction="time_mean")
            x = encode_inputs(xb, cfg, torch.Generator().manual_seed(0))
            model = make_model(name, args.hidden, 0)
            start = time.perf_counter()
            bptt = bptt_saved_bytes(model, x, yb)
            t_bptt = time.perf_counter() - start
            ep, t_eprop = eprop_state_bytes(model, x, yb)
            rows.append({"model": name, "T": steps, "bptt_saved_bytes": bptt, "eprop_state_bytes": ep,
                         "bptt_seconds_per_batch": t_bptt, "eprop_seconds_per_batch": t_eprop})
            print(f"  {name:5s} T={steps:3d}  BPTT saved {bptt:>11,d} B   e-prop state {ep:>10,d} B", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=25, help="T of the accuracy runs")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the accuracy runs")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_digits_split(seed=0)
    print("accuracy (digits, test split)")
    acc = [row for seed in args.seeds for row in accuracy(args, data, seed)]
    print("memory (one batch of 32, rate coding)")
    mem = memory(args, data)

    print("\n| hidden layer | BPTT test acc. | e-prop test acc. | BPTT s | e-prop s |\n|---|---:|---:|---:|---:|")

    def cell(name: str, method: str, key: str, fmt: str) -> str:
        if method == "bptt" and MODELS[name][2] == "random":
            name = "lif"  # random feedback changes only e-prop; BPTT of that network is the LIF row
        vals = [r[key] for r in acc if r["model"] == name and r["method"] == method]
        return " / ".join(format(v, fmt) for v in vals)

    for name in MODELS:
        print(f"| {name} | {cell(name, 'bptt', 'test_accuracy', '.4f')} | {cell(name, 'eprop', 'test_accuracy', '.4f')}"
              f" | {cell(name, 'bptt', 'seconds', '.1f')} | {cell(name, 'eprop', 'seconds', '.1f')} |")
    print("\n| hidden layer | T | BPTT saved for backward (B) | e-prop state (B) | BPTT s/batch | e-prop s/batch |"
          "\n|---|---:|---:|---:|---:|---:|")
    for r in mem:
        print(f"| {r['model']} | {r['T']} | {r['bptt_saved_bytes']:,} | {r['eprop_state_bytes']:,} | "
              f"{r['bptt_seconds_per_batch']:.3f} | {r['eprop_seconds_per_batch']:.3f} |")
    ratios = {}
    for name in ("lif", "alif", "rlif", "ralif"):
        rows = {r["T"]: r for r in mem if r["model"] == name}
        ratios[name] = {"eprop": rows[400]["eprop_state_bytes"] / rows[25]["eprop_state_bytes"],
                        "bptt": rows[400]["bptt_saved_bytes"] / rows[25]["bptt_saved_bytes"]}
    result = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "accuracy": acc, "memory": mem, "memory_ratio_T400_vs_T25": ratios}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    print(f"eprop_memory_ratio_T400_vs_T25={ratios['lif']['eprop']:.2f} "
          f"bptt_memory_ratio_T400_vs_T25={ratios['lif']['bptt']:.2f}")


if __name__ == "__main__":
    main()
