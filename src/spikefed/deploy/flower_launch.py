"""Local Flower deployments as real processes: SuperLink + N SuperNodes on 127.0.0.1, ``flwr run``, clean-up.

Every process is started in its own session (process group) and recorded; :meth:`LocalFederation.stop`
terminates each one together with every descendant it spawned (Flower's SuperExec, ServerApp and ClientApp
processes; found through ``/proc``), waits a bounded time and kills what is left. Every wait is bounded.
Flower state lives in a private ``FLWR_HOME`` inside the work directory, so parallel runs never collide.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .flower import RUN_CONFIG_DEFAULTS
from .processes import (STOP_GRACE_S, cmdline, descendants, die_with_parent, kill_tree, pid_alive,
                        processes_with_env)

#: the app definition written for ``flwr run`` (the same as ``[tool.flwr.app]`` in the repository's pyproject.toml)
APP_PUBLISHER = "spikefed"
APP_COMPONENTS = {"serverapp": "spikefed.deploy.flower_app:server_app",
                  "clientapp": "spikefed.deploy.flower_app:client_app"}


class LaunchError(RuntimeError):
    """A local deployment that failed: a process that did not start, an unreachable SuperLink, a failed run."""


class ServerGone(LaunchError):
    """The ServerApp or the SuperLink died before the run ended (the run can be resumed from its checkpoint).
    ``run_id``: Flower's id of the run that lost its ServerApp; ``leftover``: ServerApp processes still alive."""

    def __init__(self, message: str, run_id: str | None = None, leftover: set[int] | None = None) -> None:
        super().__init__(message)
        self.run_id, self.leftover = run_id, set(leftover or ())


#: how often the demo restarts a dead ServerApp / SuperLink and resumes before it gives up
MAX_SERVER_RESTARTS = 3


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now (bound and released; the OS does not hand it out again soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, alive: Callable[[], bool] | None = None) -> None:
    """Until ``host:port`` accepts TCP connections; ``LaunchError`` after ``timeout`` s (or if ``alive`` fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise LaunchError(f"the process that should listen on {host}:{port} exited")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise LaunchError(f"SuperLink {host}:{port} unreachable within {timeout:g} s")


def app_pyproject() -> str:
    """The ``pyproject.toml`` of the Flower app (project metadata + ``[tool.flwr.app]``)."""
    import tomli_w

    doc = {"build-system": {"requires": ["setuptools>=77"], "build-backend": "setuptools.build_meta"},
           "project": {"name": "spikefed", "version": "0.1.0",
                       "description": "Federated learning of spiking neural networks (Flower app)",
                       "license": "Apache-2.0", "dependencies": []},
           "tool": {"flwr": {"app": {"publisher": APP_PUBLISHER, "fab-include": ["README.md"],
                                     "components": dict(APP_COMPONENTS), "config": dict(RUN_CONFIG_DEFAULTS)}}}}
    return tomli_w.dumps(doc)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class LocalFederation:
    """A SuperLink and ``num_nodes`` SuperNodes on 127.0.0.1 (TLS and SuperNode authentication optional)."""

    work: Path
    num_nodes: int
    tls: bool = False
    auth: bool = False
    node_configs: list[str] | None = None  # one ``--node-config`` string per node (default: partition i of N)
    node_env: Mapping[int, Mapping[str, str]] | None = None  # extra environment of node i (tests)
    start_timeout: float = 60.0
    heartbeat: float | None = None  # SuperNode heartbeat interval in s (None: Flower's 30 s); flower_supernode.py
    procs: list[Proc] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    reported: set[int] = field(default_factory=set)  # PIDs of processes whose exit was reported

    def __post_init__(self) -> None:
        self.work = Path(self.work).resolve()
        self.home = self.work / "flwr-home"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.certs: Any = None
        self.env = {**os.environ, "FLWR_HOME": str(self.home), "PYTHONUNBUFFERED": "1",
                    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}

    # -- processes ------------------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], extra_env: Mapping[str, str] | None = None) -> Proc:
        exe = shutil.which(argv[0], path=self.env["PATH"])
        if exe is None:
            raise LaunchError(f"{argv[0]} not found; install Flower: pip install 'flwr>=1.40,<1.42'")
        log = self.work / f"{name}.log"
        with open(log, "wb") as out:
            p = subprocess.Popen([exe, *argv[1:]], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**self.env, **(extra_env or {})}, cwd=self.work, start_new_session=True,
                                 preexec_fn=die_with_parent)
        proc = Proc(name, p, log)
        self.procs.append(proc)
        self.seen.add(p.pid)
        return proc

    def start(self) -> None:
        """Start the SuperLink, wait until it listens, then start the SuperNodes (all bounded)."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        if self.tls:
            from .flower_certs import make_certs

            self.certs = make_certs(self.work / "certs")
        self.start_superlink()
        self._write_connection()
        if self.auth:
            self._register_nodes()
        for i in range(len(self._node_configs())):
            self.start_node(i)

    def _node_configs(self) -> list[str]:
        return self.node_configs or [f"partition-id={i} num-partitions={self.num_nodes}"
                                     for i in range(self.num_nodes)]

    def start_superlink(self) -> Proc:
        """Start the SuperLink on this federation's port and wait until it listens."""
        link = ["flower-superlink", "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
                "--port", str(self.port)]
        if self.tls:
            link += ["--ssl-ca-certfile", str(self.certs.ca_cert), "--ssl-certfile", str(self.certs.server_cert),
                     "--ssl-keyfile", str(self.certs.server_key)]
        else:
            link.append("--insecure")
        if self.auth:
            link.append("--enable-supernode-auth")
        sl = self._spawn("superlink", link)
        wait_for_port("127.0.0.1", self.port, self.start_timeout, alive=lambda: sl.popen.poll() is None)
        return sl

    def start_node(self, i: int) -> Proc:
        """Start SuperNode ``i`` (again: a restarted node registers anew and serves the same partition)."""
        node_sec = ["--root-certificates", str(self.certs.ca_cert)] if self.tls else ["--insecure"]
        argv = ["flower-supernode", *node_sec, "--superlink", self.address, "--port", str(free_port()),
                "--max-retries", "30", "--max-wait-time", str(int(self.start_timeout))]
        if self.heartbeat is not None:  # Flower's own entry point, run after the interval is set
            argv = [sys.executable, "-m", "spikefed.deploy.flower_supernode", "--heartbeat", str(self.heartbeat),
                    *argv[1:]]
        cfg = self._node_configs()[i]
        if cfg:
            argv += ["--node-config", cfg]
        if self.auth:
            argv += ["--auth-supernode-private-key", str(self.work / "keys" / f"node{i}")]
        return self._spawn(f"supernode{i}", argv, (self.node_env or {}).get(i))

    def current(self, name: str) -> Proc | None:
        """The latest process started under ``name`` (``superlink``, ``supernode1``)."""
        return next((p for p in reversed(self.procs) if p.name == name), None)

    def alive(self, name: str) -> bool:
        proc = self.current(name)
        return proc is not None and proc.popen.poll() is None

    def restart_superlink(self) -> None:
        """A SuperLink that died: start a new one on the same port; the SuperNodes that were alive are restarted
        too (they exit when their SuperLink is gone: Flower's SuperNode does not re-register), so they connect
        to the new one. A SuperNode that was already dead stays dead."""
        alive = [i for i in range(len(self._node_configs())) if self.alive(f"supernode{i}")]
        for i in alive:
            proc = self.current(f"supernode{i}")
            assert proc is not None
            self._remember_descendants()
            self.reported.add(proc.popen.pid)  # stopped on purpose: not a node failure to report
            kill_tree(proc.popen.pid)
            proc.popen.wait(timeout=STOP_GRACE_S)
        old = self.current("superlink")
        if old is not None and old.popen.poll() is None:
            kill_tree(old.popen.pid)
        self.start_superlink()
        if self.auth:
            self._register_nodes()
        for i in alive:
            self.start_node(i)

    def _write_connection(self) -> None:
        lines = ["[superlink]", 'default = "spikefed-local"', "", "[superlink.spikefed-local]",
                 f'address = "{self.address}"']
        lines += [f'root-certificates = "{self.certs.ca_cert}"'] if self.tls else ["insecure = true"]
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    def _register_nodes(self) -> None:
        """SuperNode authentication: one ECDSA key pair per node, public keys registered with the SuperLink."""
        from .flower_certs import make_node_key

        keys = self.work / "keys"
        keys.mkdir(exist_ok=True)
        for i in range(self.num_nodes):
            public = make_node_key(keys / f"node{i}")
            self.flwr(["supernode", "register", str(public), "spikefed-local"], timeout=60.0, check=True)

    def flwr(self, args: list[str], timeout: float, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI with this federation's FLWR_HOME (bounded by ``timeout``)."""
        exe = shutil.which("flwr", path=self.env["PATH"])
        if exe is None:
            raise LaunchError("flwr not found; install Flower: pip install 'flwr>=1.40,<1.42'")
        p = subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=self.env, cwd=self.work, start_new_session=True, preexec_fn=die_with_parent)
        self.seen.add(p.pid)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(p.pid)
            p.communicate()
            raise LaunchError(f"flwr {' '.join(args[:2])} did not finish within {timeout:g} s") from None
        if check and p.returncode != 0:
            raise LaunchError(f"flwr {' '.join(args[:2])} failed: {out.strip().splitlines()[-1] if out else ''}")
        return subprocess.CompletedProcess(p.args, p.returncode, out, "")

    def run_app(self, run_config: Mapping[str, Any], timeout: float,
                on_line: Callable[[str], None] | None = None, out_dir: Path | None = None) -> dict[str, Any]:
        """``flwr run <app> spikefed-local --stream`` with ``run_config`` (TOML file); returns the run's
        ``summary.json``. ``LaunchError`` with the ServerApp's one-line error if the run failed."""
        import tomli_w

        app_dir = self.work / "app"
        app_dir.mkdir(exist_ok=True)
        (app_dir / "pyproject.toml").write_text(app_pyproject())
        (app_dir / "README.md").write_text("spikefed Flower app (generated by spikefed flower demo)\n")
        out_dir = out_dir if out_dir is not None else self.work / "out"
        cfg = {**run_config, "out-dir": str(out_dir)}
        for stale in ("summary.json", "error.txt"):  # of an earlier run in this directory (a resume follows)
            (out_dir / stale).unlink(missing_ok=True)
        (self.work / "run-config.toml").write_text(tomli_w.dumps(cfg))
        exe = shutil.which("flwr", path=self.env["PATH"])
        if exe is None:
            raise LaunchError("flwr not found; install Flower: pip install 'flwr>=1.40,<1.42'")
        p = subprocess.Popen([exe, "run", str(app_dir), "spikefed-local", "--stream", "--run-config",
                              str(self.work / "run-config.toml")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=self.env, cwd=self.work, start_new_session=True, bufsize=1,
                             preexec_fn=die_with_parent)
        self.seen.add(p.pid)
        deadline = time.monotonic() + timeout
        run_id = None
        lines: list[str] = []
        assert p.stdout is not None
        pending: queue.Queue[str] = queue.Queue()
        apps: set[int] = set()  # the ServerApp process(es) of this run, once seen
        threading.Thread(target=lambda: [pending.put(ln) for ln in p.stdout], daemon=True).start()  # type: ignore
        while True:
            self._remember_descendants()
            while not pending.empty():
                line = pending.get().rstrip("\n")
                lines.append(line)
                m = re.search(r"started run (\d+)", line)
                if m:
                    run_id = m.group(1)
                if on_line is not None:
                    on_line(line)
            if (out_dir / "summary.json").exists() or (out_dir / "error.txt").exists():
                self._await_serverapp(apps)  # the report is written after summary.json: let it finish
                time.sleep(0.5)  # the ServerApp wrote its result: give the log stream a moment, then stop it
                kill_tree(p.pid)
                break
            if time.monotonic() > deadline:
                kill_tree(p.pid)
                raise LaunchError(f"the run did not finish within {timeout:g} s (logs: {self.work})")
            for proc in self.procs:
                if proc.popen.poll() is None or proc.popen.pid in self.reported:
                    continue
                self.reported.add(proc.popen.pid)
                if proc.name == "superlink":
                    kill_tree(p.pid)
                    raise ServerGone(f"the SuperLink exited with code {proc.popen.returncode} (log: {proc.log})",
                                     run_id, apps)
                if on_line is not None:  # a node that dies is reported; the federation goes on without it
                    on_line(f"spikefed demo: {proc.name} exited with code {proc.popen.returncode}; the "
                            f"federation goes on with the other nodes (log: {proc.log})")
            link = self.current("superlink")
            if link is not None:
                now = {d for d in descendants(link.popen.pid) if "flwr-serverapp" in cmdline(d)}
                if apps and not now and not (out_dir / "summary.json").exists() \
                        and not (out_dir / "error.txt").exists():
                    kill_tree(p.pid)
                    raise ServerGone("the ServerApp exited without a result", run_id)
                apps = now
            if p.poll() is not None and not apps:  # the stream ended and no ServerApp runs (or was ever seen)
                break
            time.sleep(0.2)
        p.wait(timeout=STOP_GRACE_S)
        while not pending.empty() and on_line is not None:
            on_line(pending.get().rstrip("\n"))
        error = out_dir / "error.txt"
        if error.exists():
            raise LaunchError(f"the ServerApp failed: {error.read_text().strip()}")
        summary = out_dir / "summary.json"
        if summary.exists():
            return json.loads(summary.read_text())
        status = self.run_status(run_id) if run_id is not None else {}
        if status.get("status") == "finished:completed":  # a remote SuperLink: out-dir lies on its machine
            return {"run_id": run_id, "status": status["status"], "out_dir": str(out_dir),
                    "final_accuracy": _final_accuracy(lines)}
        tail = next((ln for ln in reversed(lines) if ln.strip()), "")
        detail = status.get("status-details") or re.sub(r"\x1b\[[0-9;]*m", "", tail).strip()
        raise LaunchError(f"the run ended without a result (run {run_id}, {status.get('status', 'unknown')}): "
                          f"{detail}")

    def _await_serverapp(self, apps: set[int], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(pid_alive(a) for a in apps):
            time.sleep(0.2)

    def run_status(self, run_id: str) -> dict[str, Any]:
        """``flwr ls --run-id`` of a run (status, status-details), ``{}`` if it cannot be read."""
        res = self.flwr(["ls", "spikefed-local", "--run-id", run_id, "--format", "json"], timeout=60.0)
        try:
            runs = json.loads(res.stdout).get("runs", [])
        except (json.JSONDecodeError, AttributeError):
            return {}
        return runs[0] if runs else {}

    # -- clean-up -------------------------------------------------------------------------------------------
    def _remember_descendants(self) -> None:
        for proc in self.procs:
            self.seen.update(descendants(proc.popen.pid))

    def stop(self) -> list[int]:
        """Terminate every started process and its descendants (SIGTERM, bounded wait, SIGKILL); returns the
        PIDs that were seen (all gone afterwards).

        Flower starts its SuperExec detached, and a SuperNode may start one while being stopped, so a process
        tree scan alone can miss one whose parent is already gone: every process of this federation also
        carries ``FLWR_HOME=<work>/flwr-home`` (a private directory) in its environment, and any live process
        with it is stopped by PID too (bounded: a few passes)."""
        self._remember_descendants()
        live = [proc for proc in self.procs if proc.popen.poll() is None]  # a reaped PID may be reused
        for proc in live:
            kill_tree(proc.popen.pid, self.seen)
        if not live and self.seen:
            kill_tree(sorted(self.seen)[0], self.seen)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        for _ in range(3):
            stray = processes_with_env("FLWR_HOME", str(self.home))
            if not stray:
                break
            self.seen.update(stray)
            for pid in stray:
                kill_tree(pid)
        return sorted(self.seen)

    def __enter__(self) -> "LocalFederation":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _final_accuracy(lines: list[str]) -> float | None:
    for line in reversed(lines):
        m = re.search(r"final accuracy ([0-9.]+)", line)
        if m:
            return float(m.group(1))
    return None


def submit(work: Path, superlink: str, run_config: Mapping[str, Any], out_dir: Path, root_certificates: Path | None,
           connect_timeout: float, timeout: float, on_line: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the app on an existing SuperLink (``spikefed flower run``): check that it is reachable (bounded),
    write a private FLWR_HOME connection, ``flwr run --stream``, and return the summary."""
    host, sep, port = superlink.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise LaunchError(f"--superlink must be host:port, got {superlink!r}")
    wait_for_port(host.strip("[]"), int(port), connect_timeout)
    fed = LocalFederation(work, 0)
    fed.work.mkdir(parents=True, exist_ok=True)
    fed.home.mkdir(parents=True, exist_ok=True)
    fed.address = superlink
    if root_certificates is not None:
        from .flower_certs import Certs

        fed.tls = True
        fed.certs = Certs(Path(root_certificates).resolve(), Path(), Path(), Path())
    fed._write_connection()
    try:
        return fed.run_app(run_config, timeout, on_line, out_dir)
    finally:
        fed.stop()


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return re.sub(r"\x1b\[[0-9;]*m", "", lines[-1]).strip() if lines else ""


def run_demo(work: Path, num_nodes: int, run_config: Mapping[str, Any], timeout: float, tls: bool = False,
             auth: bool = False, on_line: Callable[[str], None] | None = None,
             node_configs: list[str] | None = None, record: list[int] | None = None,
             node_env: Mapping[int, Mapping[str, str]] | None = None,
             federation: list[LocalFederation] | None = None, heartbeat: float | None = None) -> dict[str, Any]:
    """Start a local federation, run the app, stop everything (also on error / Ctrl-C); returns the summary
    with the PIDs that were started (``pids``) so callers can check none is left (``record``, if given,
    receives them too, also when the run fails).

    Faults: a SuperNode that dies is reported and the run goes on with the others (the ServerApp records it as
    dropped). A ServerApp or SuperLink that dies is restarted (at most :data:`MAX_SERVER_RESTARTS` times; a dead
    SuperLink with the SuperNodes that were alive) and the run resumes from its last checkpoint
    (``resume = true``). ``run_config["resume"]`` set: continue the run in ``work/out`` from the start.
    ``federation`` (tests): receives the :class:`LocalFederation` once started, to kill or restart its nodes.
    ``heartbeat``: the SuperNodes' heartbeat interval in seconds (10-1800; None: Flower's 30 s, so a dead node
    is noticed after about 60 s; 10: about 20 s), see :mod:`spikefed.deploy.flower_supernode`."""
    if heartbeat is not None:
        from .flower_supernode import HeartbeatError, check_heartbeat

        try:
            heartbeat = check_heartbeat(heartbeat)
        except HeartbeatError as e:
            raise LaunchError(str(e)) from None
    fed = LocalFederation(work, num_nodes, tls=tls, auth=auth, node_configs=node_configs, node_env=node_env,
                          heartbeat=heartbeat)
    previous = signal.getsignal(signal.SIGTERM)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    deadline = time.monotonic() + timeout
    restarts: list[str] = []
    try:
        fed.start()
        if federation is not None:
            federation.append(fed)
        cfg = dict(run_config)
        while True:
            try:
                summary = fed.run_app(cfg, max(1.0, deadline - time.monotonic()), on_line)
                break
            except ServerGone as e:
                if len(restarts) >= MAX_SERVER_RESTARTS:
                    raise LaunchError(f"{e}; gave up after {len(restarts)} restarts") from None
                restarts.append(str(e))
                checkpoint = fed.work / "out" / "checkpoint.pt"
                if on_line is not None:
                    on_line(f"spikefed demo: {e}; restarting it and resuming from "
                            f"{checkpoint if checkpoint.exists() else 'the start'}")
                for pid in e.leftover:
                    kill_tree(pid)
                if not fed.alive("superlink"):
                    fed.restart_superlink()
                elif e.run_id is not None:  # the orphaned run would stay 'running' until Flower times it out
                    fed.flwr(["stop", e.run_id, "spikefed-local"], timeout=60.0)
                cfg = {**run_config, "resume": checkpoint.exists()}
    finally:
        pids = fed.stop()
        signal.signal(signal.SIGTERM, previous)
        if record is not None:
            record.extend(pids)
    summary["pids"] = pids
    summary["server_restarts"] = restarts
    return summary
