"""``flower-supernode`` with a chosen heartbeat interval (``spikefed flower demo --heartbeat S``).

Flower (1.41) notices a dead or hung SuperNode only through its heartbeats: the node announces an interval
(``HEARTBEAT_DEFAULT_INTERVAL`` = 30 s, fixed in flwr, no command-line option), sends a heartbeat about every
0.8 x (interval - 5 s) and the SuperLink lists it offline 2 x interval after the last one, so a killed node is
waited for about 60 s. The SuperLink accepts any interval in [10, 1800] s from the node. This shell sets the
interval of the node process (the value the node announces and the pace of its heartbeat thread) and then runs
Flower's own ``flower-supernode`` entry point with the remaining arguments, unchanged:

    python -m spikefed.deploy.flower_supernode --heartbeat 10 --insecure --superlink 127.0.0.1:9092 ...

With 10 s a dead node is listed offline within about 20 s. A shorter interval costs one small request per node
every few seconds; it does not change what a round computes.
"""

from __future__ import annotations

import importlib
import sys

#: the interval bounds the SuperLink accepts (flwr.common.constant.HEARTBEAT_MIN_INTERVAL / _MAX_INTERVAL)
MIN_HEARTBEAT_S, MAX_HEARTBEAT_S = 10.0, 1800.0
#: the flwr modules that read the interval as a module constant (flwr 1.41)
HEARTBEAT_MODULES = ("flwr.supernode.fleet_http_connection", "flwr.supercore.heartbeat")


class HeartbeatError(ValueError):
    """A heartbeat interval outside Flower's bounds, or a Flower whose SuperNode cannot take one."""


def check_heartbeat(seconds: float) -> float:
    """``seconds`` as a float if the SuperLink accepts it as a heartbeat interval, else :class:`HeartbeatError`."""
    value = float(seconds)
    if not MIN_HEARTBEAT_S <= value <= MAX_HEARTBEAT_S:
        raise HeartbeatError(f"--heartbeat must be between {MIN_HEARTBEAT_S:g} and {MAX_HEARTBEAT_S:g} seconds "
                             f"(the SuperLink refuses other intervals), got {seconds!r}")
    return value


def set_heartbeat(seconds: float) -> None:
    """Make this process's SuperNode announce and keep ``seconds`` as its heartbeat interval."""
    value = check_heartbeat(seconds)
    modules = []
    for name in HEARTBEAT_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise HeartbeatError(f"--heartbeat needs flwr 1.41 (no module {name}: {e})") from None
        if not isinstance(getattr(module, "HEARTBEAT_DEFAULT_INTERVAL", None), (int, float)):
            raise HeartbeatError(f"--heartbeat needs flwr 1.41 ({name} has no HEARTBEAT_DEFAULT_INTERVAL)")
        modules.append(module)
    for module in modules:
        module.HEARTBEAT_DEFAULT_INTERVAL = value  # type: ignore[attr-defined]


def split_argv(argv: list[str]) -> tuple[float, list[str]]:
    """``(interval, flower-supernode arguments)`` from ``--heartbeat S rest...`` (the option must come first)."""
    if len(argv) < 2 or argv[0] != "--heartbeat":
        raise HeartbeatError("usage: python -m spikefed.deploy.flower_supernode --heartbeat SECONDS "
                             "[flower-supernode arguments]")
    try:
        value = float(argv[1])
    except ValueError:
        raise HeartbeatError(f"--heartbeat must be a number of seconds, got {argv[1]!r}") from None
    return check_heartbeat(value), argv[2:]


def main(argv: list[str] | None = None) -> None:
    try:
        seconds, rest = split_argv(list(sys.argv[1:] if argv is None else argv))
        set_heartbeat(seconds)
    except HeartbeatError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


if __name__ == "__main__":
    main()
