"""benchmarks/gpu.py: exits 0 with a clear message without CUDA, runs (tiny) on the CPU with --device cpu, and
benchmarks/threads.py runs (tiny) and finds the numbers independent of the thread count."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900, cwd=ROOT, env=ENV)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_benchmark_without_cuda_says_so() -> None:
    r = _run(str(ROOT / "benchmarks" / "gpu.py"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "no CUDA device: nothing to measure"


@pytest.mark.slow
def test_gpu_benchmark_cpu_smoke() -> None:
    r = _run(str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--clients", "4", "--rounds", "1",
             "--kernel", "loop")
    assert r.returncode == 0, r.stderr[-2000:]
    last = r.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"gpu_cohort_vs_sequential=(\d+\.\d\d) gpu_cohort_vs_flower=nan "
                     r"gpu_round_vs_centralized_epoch=(\d+\.\d\d)", last)
    assert m, last
    assert float(m.group(1)) > 0 and float(m.group(2)) > 0
    assert "| cohort |" in r.stdout and "| centralized |" in r.stdout


@pytest.mark.slow
def test_threads_benchmark_tiny() -> None:
    r = _run(str(ROOT / "benchmarks" / "threads.py"), "--clients", "4", "--rounds", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    last = r.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"threads_idle_1=\S+ threads_idle_2=\S+ threads_idle_default=\S+ threads_busy_1=\S+ "
                        r"threads_busy_2=\S+ threads_busy_default=\S+ auto_busy=\d+ bit_identical=True", last), last
