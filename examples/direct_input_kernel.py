"""The direct-coded hidden layer in one numba pass each way (``local.kernel=numba``, docs/performance.md).

Run:  .venv/bin/python examples/direct_input_kernel.py
      (SPIKEFED_EXAMPLE_SMALL=1 runs a small version, as CI does; needs the optional extra spikefed[numba])

With direct coding the first layer's input current is the same at every time step. The loop kernel expands it
over T and streams the membrane, the spikes and several temporaries through memory in both directions; the
numba constant-input kernel (``spikefed.snn.kernels_constant``) reads the one current, writes only the spikes,
and in the backward recomputes the membrane block by block and returns the gradient already summed over T.

The script federates the digits data set twice on the cohort engine, once per kernel, from the same seed, and
prints the CPU seconds of the rounds (after the first, which loads or compiles the numba code), the accuracy of
each and the largest difference between the two global models (float32 rounding, amplified where a spike flips
on it).
"""

import os
import tempfile
import time

import torch

import spikefed
from spikefed.snn.kernels_numba import numba_reason

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"
ROUNDS = 2 if SMALL else 6

reason = numba_reason()
if reason is not None:
    print(f"local.kernel=numba cannot run here: {reason}")
    raise SystemExit(0)

torch.set_num_threads(1)  # CPU seconds of one thread: comparable on a busy machine
results = {}
common = ["partition.num_clients=20", "model.hidden=[128]", "local.epochs=1", "local.num_steps=25",
          "local.encoder=direct", "federation.fraction=1.0", "runtime.threads=torch"]
for kernel in ("loop", "numba"):
    with tempfile.TemporaryDirectory() as out:
        # one warm-up round: the numba kernels load (or, the first time, compile) their machine code
        spikefed.federate(overrides=[*common, "federation.rounds=1", f"local.kernel={kernel}"], out=out + "/warm")
        cpu = time.process_time()
        result = spikefed.federate(overrides=[*common, f"federation.rounds={ROUNDS}", f"local.kernel={kernel}"],
                                   out=out + "/run")
        cpu = time.process_time() - cpu
    results[kernel] = (result.model.state_dict(), cpu)
    print(f"kernel {kernel:5s}: {ROUNDS} rounds in {cpu:.2f} CPU s, "
          f"final accuracy {result.summary['final_accuracy']:.3f}")

(a, ta), (b, tb) = results["loop"], results["numba"]
diff = max(float((a[n] - b[n]).abs().max()) for n in a)
print(f"loop / numba CPU seconds: {ta / tb:.2f}x; largest weight difference between the two models: {diff:.1e}")
