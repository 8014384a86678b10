"""``torchrun ... -m spikefed run``: set up and tear down the process group around a :class:`~.runner.Run`.

:func:`torchrun_env` reads the launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); :func:`open_run` starts the group (gloo on CPU, NCCL for a CUDA device), makes every rank use
rank 0's resolved settings (sent as JSON and validated against the schema) and, on ``--resume``, rank 0's
checkpoint (sent as bytes, read in the verified format into a private temporary file), and builds the run on
every rank: the same federation and stages, a :class:`~spikefed.federated.distributed.DistributedSimulation`
that splits local training across the ranks, and files written by rank 0 only. A rank that fails to start
makes every rank stop with its message (no rank waits for one that gave up).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..federated.distributed import DistributedSimulation, RankGroup, backend_for, start_group, stop_group
from ..federated.simulation import FederationSpec
from .config import ConfigError, RunSettings
from .runner import Run

__all__ = ["DEFAULT_TIMEOUT", "TorchrunEnv", "open_run", "run_device", "run_distributed", "torchrun_env"]

#: seconds a collective waits for the other ranks before the run stops (a dead rank is noticed at once: its
#: connections close; the timeout covers a rank that hangs)
DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True)
class TorchrunEnv:
    """This process's place in a torchrun launch."""

    rank: int
    world: int
    local_rank: int
    addr: str
    port: int


def torchrun_env(environ: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """The launch this process belongs to, or ``None`` outside torchrun (or with a world of one process).
    ``ConfigError`` naming the variable for a malformed environment."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return None

    def number(name: str, default: str | None = None) -> int:
        raw = env.get(name, default)
        if raw is None:
            raise ConfigError(f"torchrun environment: {name} is not set (RANK and WORLD_SIZE need it too)")
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"torchrun environment: {name}={raw!r} is not an integer") from None

    world, rank = number("WORLD_SIZE"), number("RANK")
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"torchrun environment: RANK={rank} is outside WORLD_SIZE={world}")
    if world == 1:
        return None
    port = number("MASTER_PORT")
    if not 0 < port < 65536:
        raise ConfigError(f"torchrun environment: MASTER_PORT={port} is not a port")
    return TorchrunEnv(rank, world, number("LOCAL_RANK", "0"), env.get("MASTER_ADDR") or "127.0.0.1", port)


def run_device(settings: Any) -> str | None:
    """The run's configured device (``runtime.device``, or a top-level ``device``, where the config has one; None
    otherwise), for the backend."""
    runtime = getattr(settings, "runtime", None)
    value = getattr(runtime, "device", None) if runtime is not None else getattr(settings, "device", None)
    return value if isinstance(value, str) else None


def open_run(settings: RunSettings | None, out_dir: Path, resume: bool, env: TorchrunEnv,
             timeout: float = DEFAULT_TIMEOUT, *, start_error: str | None = None,
             spec: Callable[[RunSettings], FederationSpec] | None = None) -> tuple[Run, RankGroup]:
    """Start the process group and build the run on this rank (every rank calls it). ``settings`` must be given
    on rank 0 (other ranks receive its settings; theirs may be ``None``); ``start_error``: this rank could not
    read its settings (on rank 0 every rank stops with it). ``spec`` (tests, Python API): builds the federation
    from the settings instead of the config. Raises ``ConfigError``/``ValueError`` (the same message on every
    rank) when any rank cannot start; the group is then stopped."""
    if not timeout > 0:
        raise ConfigError(f"--dist-timeout must be > 0 seconds, got {timeout}")
    device = run_device(settings) if settings is not None else None
    group = start_group(backend_for(device), timeout, rank=env.rank, world=env.world, local_rank=env.local_rank,
                        addr=env.addr, port=env.port)
    private: Path | None = None
    try:
        primary_error = start_error or (None if settings is not None else "no settings")
        if group.primary:
            group.agree(primary_error is None, primary_error or "", "the settings")
        else:
            group.agree(True, "", "the settings")
        assert settings is not None or not group.primary
        text = group.broadcast_bytes(settings.model_dump_json().encode() if group.primary and settings else None,
                                     "the settings")
        settings = RunSettings.model_validate_json(text)  # rank 0's, parsed against the schema
        source, note = None, ""
        if resume:
            data, note = _read_checkpoint(Path(out_dir)) if group.primary else (b"", "")
            group.agree(not note, note, "the checkpoint")
            data = group.broadcast_bytes(data if group.primary else None, "the checkpoint")
            if not group.primary:
                private = Path(tempfile.mkdtemp(prefix=f"spikefed-rank{group.rank}-"))
                source = private / "checkpoint.pt"
                source.write_bytes(data)
        run, note = None, ""
        try:
            run = Run(settings, out_dir, resume, spec(settings) if spec is not None else None,
                      simulation=lambda s: DistributedSimulation(s, group), writer=group.primary,
                      checkpoint_source=source)
        except (ConfigError, ValueError) as e:
            note = str(e)
        group.agree(run is not None, note, "the start of the run")
        assert run is not None
        return run, group
    except RuntimeError as e:  # a rank could not start (agree): every rank stops with the same message
        stop_group()
        raise ConfigError(str(e)) from None
    except BaseException:
        stop_group()
        raise
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


def _read_checkpoint(out_dir: Path) -> tuple[bytes, str]:
    """Rank 0's checkpoint bytes, or an error message."""
    path = out_dir / "checkpoint.pt"
    try:
        return path.read_bytes(), ""
    except OSError as e:
        return b"", f"--resume {out_dir}: cannot read checkpoint.pt ({e.strerror or e})"


def run_distributed(settings: RunSettings | None, out_dir: Path, resume: bool = False,
                    env: TorchrunEnv | None = None, timeout: float = DEFAULT_TIMEOUT,
                    on_round: Callable[[dict[str, Any]], None] | None = None,
                    spec: Callable[[RunSettings], FederationSpec] | None = None) -> dict[str, Any]:
    """Run (or resume) to ``federation.rounds`` on this rank; returns the summary (written by rank 0 only).
    ``on_round`` is called on rank 0 only."""
    env = env or torchrun_env()
    if env is None:
        raise ConfigError("run_distributed needs a torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT)")
    run, group = open_run(settings, out_dir, resume, env, timeout, spec=spec)
    try:
        while not run.done:
            row = run.step()
            if on_round is not None and group.primary:
                on_round(row)
        return run.finish()
    finally:
        stop_group()
