"""Where a run computes: runtime.device (cpu, cuda, cuda:N, auto), runtime.threads and local.kernel
(docs/performance.md).

Run:  .venv/bin/python examples/device_threads.py  [--device auto] [--kernel loop|compiled|numba|auto]
      (SPIKEFED_EXAMPLE_SMALL=1 runs a small version, as CI does)

The script resolves the device and the thread policy as the ``spikefed`` command does, federates the digits
data set there with the Python API (``federate(..., device=...)``) and prints where it ran, the accuracy and the
measured upload bytes (the same on every device: the wire format is serialized on the CPU). With
``--kernel compiled`` the cohort engine's LIF / low-pass time loops run through ``torch.compile`` (the first
round compiles, ~50 s on 2 cores); with ``--device cpu --kernel numba`` they run as one numba call per direction
(CPU only: ``--device auto`` with numba is refused, since auto may pick CUDA).
"""

import argparse
import os
import tempfile

import spikefed
from spikefed.runtime import apply_threads, resolve_device

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"
parser = argparse.ArgumentParser()
parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda if present, else cpu)")
parser.add_argument("--kernel", default="loop", choices=("loop", "compiled", "numba", "auto"))
parser.add_argument("--threads", default="auto", help="auto, torch or a number")
args = parser.parse_args()

device = resolve_device(args.device)  # a clear DeviceError for an unknown name or absent CUDA
threads = apply_threads(int(args.threads) if args.threads.isdigit() else args.threads)
print(f"device {args.device} -> {device}; {threads} torch thread(s) (runtime.threads={args.threads}); "
      f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

with tempfile.TemporaryDirectory() as out:
    result = spikefed.federate(
        overrides=["partition.num_clients=10", "model.hidden=[64]", "local.epochs=1",
                   f"federation.rounds={2 if SMALL else 10}", "federation.fraction=1.0",
                   f"local.kernel={args.kernel}"],
        device=args.device, out=out)
    s = result.summary
    print(f"trained on {device} with kernel {args.kernel}: final accuracy {s['final_accuracy']:.3f}, "
          f"{s['total_bytes_up']:,} bytes up in {result.round} rounds")
