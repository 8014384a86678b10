"""Every example under examples/ runs to completion (CI runs them small: SPIKEFED_EXAMPLE_SMALL=1 makes each use
fewer rounds / epochs; the code path is the same). A new example without a case here fails the coverage test.

The Python examples run in a fork server (tests/forkserver.py): each is still its own process, started as
``python examples/NAME.py`` would be, but torch and spikefed are imported once per test worker, not once per
example."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the fork server (importlib import mode)
from forkserver import ForkServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
#: the examples that are not Python scripts, and how CI runs them
OTHER = {
    "faults.yaml": ["-m", "spikefed.cli", "run", "examples/faults.yaml", "--set", "federation.rounds=2",
                    "--set", "partition.num_clients=6", "--set", "model.hidden=[32]"],
    "flower_demo.sh": None,  # a shell script: bash, with the spikefed and flwr commands on PATH
}
TIMEOUT = 300


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(SPIKEFED_EXAMPLE_SMALL="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    return env


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="session")
def python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    """``python`` for the examples: one fork server per test worker, with the examples' environment (session
    scope: the longest-first order interleaves these tests with other modules')."""
    server = ForkServer(_env(), ROOT, tmp_path_factory.mktemp("forkserver"))
    yield server
    server.close()


def test_every_example_has_a_case() -> None:
    files = {p.name for p in EXAMPLES.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert files == set(SCRIPTS) | set(OTHER), "add the new example to tests/test_examples.py"


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_python_example_runs(name: str, tmp_path: Path, python: ForkServer) -> None:
    args = [str(EXAMPLES / name)]
    if name == "custom_federation.py":
        args += ["--out", str(tmp_path)]
    done = python.run(args, cwd=ROOT, timeout=TIMEOUT)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert done.stdout.strip(), f"{name} printed nothing"


@pytest.mark.slow
def test_faults_config_runs(tmp_path: Path, python: ForkServer) -> None:
    done = python.run([*OTHER["faults.yaml"], "--out", str(tmp_path / "run"), "--json"], cwd=ROOT, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "run" / "summary.json").is_file()


@pytest.mark.slow
def test_flower_demo_script_runs(tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    if not (bindir / "flower-superlink").exists() and shutil.which("flower-superlink") is None:
        pytest.skip("Flower is not installed (pip install 'spikefed[dev]')")
    done = _run(["bash", str(EXAMPLES / "flower_demo.sh")], tmp_path)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert done.stdout.count('"final_accuracy"') == 2  # the demo and the hand-started run each print a summary
