"""Test-session settings: one torch thread per pytest-xdist worker.

The suite runs with ``-n 2`` on 2 cores; two workers with two intra-op threads each oversubscribe the CPU and
torch's spinning threads then slow everything down several-fold. Subprocesses started by tests (the CLI
tests) inherit ``OMP_NUM_THREADS``.
"""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
