"""A fork server for tests that run Python programs as real processes (examples, ``python -m spikefed ...``).

Each ``python script.py`` started from a test pays the import of torch, numpy, scikit-learn and spikefed again
(3-5 s each on a loaded 2-core machine). The server is one process that imports those once and then, per request,
forks a child that runs the program as ``python`` would: ``sys.argv`` and ``sys.path[0]`` set the same way, run as
``__main__`` by ``runpy``, stdin from ``/dev/null``, stdout and stderr into files, the exit status of
``SystemExit``/an uncaught exception, atexit handlers run by a normal interpreter exit. Each child is its own
process, so nothing one program does reaches the next; the Python, NumPy and ``tempfile`` random states are
re-seeded from the OS as a fresh process would have them.

Only environment variables that nothing preloaded reads at import time may differ between a request and the
server: the server refuses a request whose ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``PYTHONPATH``/
``PYTHONHASHSEED`` differ from its own (torch reads the thread count once, at import).

Run as a script, it is the server: one JSON request per stdin line, one JSON reply per stdout line.
Imported, :class:`ForkServer` is the test side, and :func:`run_python` is ``subprocess.run([sys.executable,
*args], capture_output=True, text=True)`` through one server per test process (started at first use, one per
distinct import-time environment, stopped at exit).
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import tempfile
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: variables fixed at the server's start (read at import by the preloaded libraries)
IMPORT_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH", "PYTHONHASHSEED")
#: what the server imports once (each child starts with these loaded)
PRELOAD = ("numpy", "torch", "sklearn.datasets", "yaml", "pydantic", "rich", "typer", "spikefed",
           "spikefed.experiment.runner", "spikefed.cli")


def _child(req: dict[str, Any]) -> int:
    """In the forked child: become ``python [-m] prog args`` and return its exit status."""
    import random
    import runpy
    import traceback

    os.setpgrp()  # a timeout kills the program and what it started in its group
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in (null, out, err):
        os.close(fd)
    # the standard streams as the interpreter makes them for files: stdout block-buffered, stderr line-buffered,
    # both written through with PYTHONUNBUFFERED (python -u)
    unbuffered = bool(req["env"].get("PYTHONUNBUFFERED"))
    enc = sys.__stdout__.encoding if sys.__stdout__ is not None else "utf-8"
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = io.TextIOWrapper(open(1, "wb", buffering=0 if unbuffered else -1, closefd=False),  # noqa: SIM115
                                  encoding=enc, write_through=unbuffered)
    sys.stderr = io.TextIOWrapper(open(2, "wb", buffering=0 if unbuffered else -1, closefd=False),  # noqa: SIM115
                                  encoding=enc, errors="backslashreplace", line_buffering=True,
                                  write_through=unbuffered)
    os.environ.clear()
    os.environ.update(req["env"])
    os.chdir(req["cwd"])
    random.seed()  # a fresh process draws these from the OS
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    try:
        if req.get("module"):
            # ``python -m pkg.mod`` executes pkg.mod afresh as __main__ with no pkg.mod imported: drop the
            # preloaded one (what it imported stays loaded)
            parent, _, leaf = req["module"].rpartition(".")
            if sys.modules.pop(req["module"], None) is not None and parent in sys.modules:
                vars(sys.modules[parent]).pop(leaf, None)
            sys.argv = [req["module"], *req["args"]]
            sys.path[0] = os.getcwd()
            runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
        else:
            script = os.path.abspath(req["script"])
            sys.argv = [req["script"], *req["args"]]
            sys.path[0] = os.path.dirname(script)
            runpy.run_path(script, run_name="__main__")
        return 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return int(stop.code or 0)
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - as the interpreter reports an uncaught exception
        traceback.print_exc()
        return 1


def _serve(preload: tuple[str, ...]) -> None:
    import importlib

    for name in preload:
        importlib.import_module(name)
    reply = sys.stdout
    reply.write(json.dumps({"ready": True, "threads": len(os.listdir("/proc/self/task"))}) + "\n")
    reply.flush()
    for line in sys.stdin:
        req = json.loads(line)
        bad = [k for k in IMPORT_ENV if req["env"].get(k) != os.environ.get(k)]
        if bad:
            reply.write(json.dumps({"error": f"environment differs from the server's in {bad}"}) + "\n")
            reply.flush()
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = _child(req)
            sys.stdout.flush()
            sys.stderr.flush()
            sys.exit(code)  # a normal interpreter exit: atexit handlers, non-daemon threads joined
        deadline = time.monotonic() + float(req["timeout"])
        status = None
        while status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
            elif time.monotonic() > deadline:
                try:
                    os.killpg(pid, 9)
                except ProcessLookupError:
                    pass
                status = os.waitpid(pid, 0)[1]
                reply.write(json.dumps({"timeout": True, "returncode": -9}) + "\n")
                break
            else:
                time.sleep(0.02)
        else:
            reply.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        reply.flush()


class ForkServer:
    """The test side: ``run(...)`` returns a :class:`subprocess.CompletedProcess` as ``subprocess.run`` would."""

    def __init__(self, env: dict[str, str], cwd: Path, scratch: Path, preload: tuple[str, ...] = PRELOAD) -> None:
        self.env, self.scratch = dict(env), scratch
        self._lock = threading.Lock()
        self._n = 0
        # its own stderr goes to a file: what the preloaded libraries see at import is not a terminal, as for a
        # program whose output a test captures
        with open(scratch / "server.err", "w") as log:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *preload], cwd=cwd,
                                         env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         text=True)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first:
            raise RuntimeError(f"the fork server did not start (exit {self.proc.wait()}): "
                               f"{(scratch / 'server.err').read_text()[-2000:]}")
        self.ready = json.loads(first)

    def run(self, args: list[str], *, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``args`` as ``subprocess.run`` gets them after the interpreter: ``[script, *argv]`` or
        ``["-m", module, *argv]``."""
        env = self.env if env is None else env
        with self._lock:
            self._n += 1
            out, err = self.scratch / f"{self._n}.out", self.scratch / f"{self._n}.err"
            req: dict[str, Any] = {"args": args[2:] if args[0] == "-m" else args[1:], "cwd": str(cwd), "env": env,
                                   "stdout": str(out), "stderr": str(err), "timeout": timeout}
            req["module" if args[0] == "-m" else "script"] = args[1] if args[0] == "-m" else args[0]
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the fork server died (exit {self.proc.wait()})")
            rep = json.loads(line)
        if "error" in rep:
            raise RuntimeError(rep["error"])
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        out.unlink()
        err.unlink()
        if rep.get("timeout"):
            raise subprocess.TimeoutExpired(args, timeout, stdout, stderr)
        return subprocess.CompletedProcess(args, rep["returncode"], stdout, stderr)

    def close(self) -> None:
        """Stop the server (it holds nothing: every child has been waited for)."""
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


_SERVERS: dict[tuple[str | None, ...], ForkServer] = {}


def run_python(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | str | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd,
    timeout=timeout)``, run by this process's fork server for ``env``'s import-time variables."""
    env = dict(os.environ) if env is None else dict(env)
    key = tuple(env.get(k) for k in IMPORT_ENV)
    if key not in _SERVERS:
        scratch = Path(tempfile.mkdtemp(prefix="spikefed-forkserver-"))
        atexit.register(shutil.rmtree, scratch, True)
        _SERVERS[key] = ForkServer(env, Path.cwd(), scratch)
        atexit.register(_SERVERS[key].close)
    return _SERVERS[key].run(args, cwd=Path.cwd() if cwd is None else Path(cwd), env=env, timeout=timeout)


if __name__ == "__main__":
    _serve(tuple(sys.argv[1:]) or PRELOAD)
