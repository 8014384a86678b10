"""A federation that survives its devices (docs/deployment.md, "Nodes that die, hang or come back").

Runs ``spikefed flower demo --nodes 3 --rounds 5`` and, while it runs, does to real processes what edge devices
do: after round 2 it kills SuperNode 1 with SIGKILL; after round 3 it starts a new SuperNode for partition 1
(it rejoins); it prints the round-by-round timeline from ``metrics.jsonl``. Every process it starts is stopped by
PID. Run: ``python examples/flower_faults.py [WORKDIR]`` (a few minutes on 2 cores). The SuperNodes send a
heartbeat every few seconds (``--heartbeat 10``), so Flower lists the killed node offline after about 20 s
instead of its default 60 s (docs/deployment.md).

With ``SPIKEFED_EXAMPLE_SMALL=1`` (CI) the same steps run on 2 SuperNodes for 3 rounds: the kill after round 1,
the restart after round 2 (tests/deploy/test_flower_faults_real.py runs the 3-node, 5-round case and checks it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from spikefed.deploy.flower_launch import free_port, pid_alive

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"
# SuperNodes, rounds, kill -9 of partition 1 after this round's line, its restart after this one's
NODES, ROUNDS, KILL_AFTER, RESTART_AFTER = (2, 3, 1, 2) if SMALL else (3, 5, 2, 3)


def demo_processes(work: Path, needle: str) -> list[int]:
    """PIDs of the demo's live processes (its private FLWR_HOME in their environment) whose command has needle."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not pid_alive(int(entry)):
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = Path(f"/proc/{entry}/environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if needle in cmd and str(work / "flwr-home") in env:
            found.append(int(entry))
    return found


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="spikefed-faults-")).resolve()
    demo = subprocess.Popen([sys.executable, "-m", "spikefed.cli", "flower", "demo", "--nodes", str(NODES),
                             "--rounds", str(ROUNDS), "--heartbeat", "10", "--json", "--workdir", str(work)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    restarted: subprocess.Popen[bytes] | None = None
    killed = False
    try:
        assert demo.stderr is not None
        for line in demo.stderr:
            print(line, end="", flush=True)
            if f"round {KILL_AFTER}/{ROUNDS}" in line and not killed:
                for pid in demo_processes(work, "partition-id=1 "):
                    os.kill(pid, signal.SIGKILL)
                    print(f"example: kill -9 {pid} (SuperNode of partition 1)", flush=True)
                killed = True
            if f"round {RESTART_AFTER}/{ROUNDS}" in line and restarted is None:
                link = demo_processes(work, "flower-superlink")[0]
                argv = Path(f"/proc/{link}/cmdline").read_bytes().decode().split("\0")
                port = argv[argv.index("--port") + 1]
                restarted = subprocess.Popen(
                    ["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{port}", "--port", str(free_port()),
                     "--node-config", f"partition-id=1 num-partitions={NODES}"],
                    env={**os.environ, "FLWR_HOME": str(work / "flwr-home")}, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True)
                print(f"example: restarted partition 1 as PID {restarted.pid}", flush=True)
        out, _ = demo.communicate(timeout=120)
    finally:
        for p in (demo, restarted):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    print(out.strip())
    for line in (work / "out" / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        f = r["fault_clients"]
        print(f"round {r['round']}: sampled {r['clients']}, accepted {r['accepted']}, dropped {f['dropped']}, "
              f"late {f['late']}, rejoined {f.get('rejoined', [])}, waited {f['waited_s']:.1f} s, "
              f"accuracy {r['accuracy']:.4f}")


if __name__ == "__main__":
    main()
