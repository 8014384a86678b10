"""The ``spikefed`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .experiment.config import ConfigError, TrainSettings, build_settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Federated learning of spiking neural networks on neuromorphic edge devices.")
err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """spikefed: spiking neural networks, federated."""


def _fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)  # one line, never wrapped
    raise typer.Exit(code)


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="YAML or TOML config file (optional)"),
    set_: list[str] = typer.Option([], "--set", help="override a setting: --set train.epochs=10"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object with the results to stdout"),
) -> None:
    """Train a spiking MLP centrally on the bundled digits data set (progress bar, final table)."""
    try:
        settings = build_settings(TrainSettings, config, set_)
    except ConfigError as e:
        _fail(str(e))
        return
    from .experiment.centralized import run_centralized
    from .runtime import configure_allocator

    configure_allocator()

    epochs = settings.train.epochs
    with Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=err, transient=json_out, disable=not err.is_terminal and json_out) as bar:
        task = bar.add_task("epochs", total=epochs, info="")

        def on_epoch(epoch: int, row: dict) -> None:
            bar.update(task, advance=1,
                       info=f"loss {row['train_loss']:.4f}  train acc {row['train_accuracy']:.3f}")

        try:
            result = run_centralized(settings, on_epoch=on_epoch)
        except (ValueError, FloatingPointError) as e:
            _fail(str(e), 1)
            return
    if json_out:
        print(json.dumps({k: v for k, v in result.items() if k != "history"}))
        return
    table = Table(title="spikefed train: spiking MLP on digits", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("test accuracy", f"{result['test_accuracy']:.4f}")
    table.add_row("test loss", f"{result['test_loss']:.4f}")
    table.add_row("train accuracy", f"{result['train_accuracy']:.4f}")
    table.add_row("firing rate (hidden, per step)", f"{result['firing_rate']:.4f}")
    table.add_row("spikes per sample", f"{result['spikes_per_sample']:.1f}")
    table.add_row("parameters", f"{result['parameters']:,}")
    table.add_row("epochs / seed", f"{result['epochs']} / {result['seed']}")
    table.add_row("wall time", f"{result['seconds']:.1f} s")
    Console().print(table)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
