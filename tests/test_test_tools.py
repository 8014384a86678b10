"""The suite's own tools: the fork server (tests/forkserver.py) runs a program as ``python`` does, the
durations recorder (tests/durations_update.py) sums a ``--durations`` report, and tests/session_once.py makes a
shared directory once. References: the real interpreter
started by ``subprocess.run`` on the same script; sums computed by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # importlib import mode
from durations_update import parse  # noqa: E402
from forkserver import ForkServer  # noqa: E402
from session_once import once  # noqa: E402

PROGRAM = """\
import os, random, sys, tempfile
print("argv", sys.argv[1:], "path0", os.path.basename(sys.path[0]), "name", __name__)
print("cwd", os.path.basename(os.getcwd()), "env", os.environ.get("ANSWER"))
print("stdin", repr(sys.stdin.read()))
print("to stderr", file=sys.stderr)
import atexit
atexit.register(lambda: print("atexit ran"))
what = sys.argv[1]
if what == "raise":
    raise ValueError("boom")
if what == "exit-text":
    sys.exit("stopped: bad input")
if what == "exit-code":
    sys.exit(3)
if what == "kill":
    os.kill(os.getpid(), 9)
print("random", random.random())
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("fork")
    env = {k: v for k, v in os.environ.items() if k != "ANSWER"}
    s = ForkServer(env, base, base, preload=("json", "json.tool"))  # a preloaded module run with -m too
    yield s
    s.close()


@pytest.mark.parametrize("what", ["ok", "raise", "exit-text", "exit-code", "kill"])
def test_fork_server_runs_a_script_as_python_does(server: ForkServer, tmp_path: Path, what: str) -> None:
    (tmp_path / "prog").mkdir()
    script = tmp_path / "prog" / "p.py"
    script.write_text(PROGRAM)
    env = {**server.env, "ANSWER": "42"}
    real = subprocess.run([sys.executable, str(script), what, "x y"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)
    forked = server.run([str(script), what, "x y"], cwd=tmp_path, env=env, timeout=60)
    assert forked.returncode == real.returncode
    strip = lambda text: [ln for ln in text.splitlines() if not ln.startswith("random")]  # noqa: E731
    assert strip(forked.stdout) == strip(real.stdout)
    assert forked.stderr.splitlines()[-1:] == real.stderr.splitlines()[-1:]
    assert ("Traceback" in forked.stderr) == ("Traceback" in real.stderr)


def test_fork_server_children_draw_fresh_random_numbers(server: ForkServer, tmp_path: Path) -> None:
    script = tmp_path / "r.py"
    script.write_text("import random, numpy\nprint(random.random(), numpy.random.random())\n")
    outs = {server.run([str(script)], cwd=tmp_path).stdout for _ in range(3)}
    assert len(outs) == 3  # a forked child does not replay its parent's generator state


def test_fork_server_runs_a_module_and_refuses_a_different_thread_count(server: ForkServer, tmp_path: Path) -> None:
    done = server.run(["-m", "json.tool", "--compact"], cwd=tmp_path, timeout=60)
    real = subprocess.run([sys.executable, "-m", "json.tool", "--compact"], cwd=tmp_path, env=server.env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (real.returncode, real.stdout, real.stderr)
    with pytest.raises(RuntimeError, match="OMP_NUM_THREADS"):
        server.run(["-m", "json.tool"], cwd=tmp_path, env={**server.env, "OMP_NUM_THREADS": "7"})


def test_fork_server_timeout_kills_the_program(server: ForkServer, tmp_path: Path) -> None:
    script = tmp_path / "sleep.py"
    script.write_text("import time\nprint('start', flush=True)\ntime.sleep(60)\n")
    with pytest.raises(subprocess.TimeoutExpired) as info:
        server.run([str(script)], cwd=tmp_path, timeout=1)
    assert info.value.output == "start\n"


def test_durations_are_summed_per_test_from_a_pytest_report() -> None:
    report = """\
============================= slowest 5 durations =============================
120.50s call     tests/a.py::test_x[1]
3.25s setup    tests/a.py::test_x[1]
0.25s teardown tests/a.py::test_x[1]
7.00s call     tests/b.py::test_y
2 passed in 130.00s
"""
    assert parse(report.splitlines()) == {"tests/a.py::test_x[1]": 124.0, "tests/b.py::test_y": 7.0}


def test_session_once_makes_a_directory_once_and_retries_after_a_failure(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    calls: list[Path] = []

    def make(where: Path) -> None:
        calls.append(where)
        (where / "x").write_text(str(len(calls)))

    first = once(tmp_path_factory, "tools-test", make)
    again = once(tmp_path_factory, "tools-test", make)
    assert first == again and len(calls) == 1 and (first / "x").read_text() == "1"

    def broken(where: Path) -> None:
        (where / "half").write_text("")
        raise RuntimeError("failed")

    with pytest.raises(RuntimeError):
        once(tmp_path_factory, "tools-broken", broken)
    fixed = once(tmp_path_factory, "tools-broken", make)  # tried again, from an empty directory
    assert sorted(p.name for p in fixed.iterdir()) == ["x"] and len(calls) == 2
