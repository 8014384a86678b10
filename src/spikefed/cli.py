"""The ``spikefed`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .experiment.config import ConfigError, RunSettings, TrainSettings, build_settings

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
                  TimeElapsedColumn(), console=err, transient=json_out,
                  disable=not err.is_terminal and json_out) as bar:
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


def _fmt_bytes(n: float) -> str:
    """Binary units, named as such: 1 KiB = 1024 B, 1 MiB = 1024 KiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _kernel_note(spec: Any, kernel: str) -> str:
    """Which LIF kernel trains (``local.kernel`` applies to the cohort engine's hand-written MLP path only)."""
    from .snn.compiled import resolve_kernel
    from .snn.stacked import mlp_path_reason

    why = "the sequential engine" if spec.engine != "cohort" else mlp_path_reason(spec.model)
    if why is not None:
        return f"kernel loop (local.kernel={kernel} applies to the cohort engine's MLP path; here: {why})"
    return f"kernel {resolve_kernel(kernel, spec.device)} (local.kernel={kernel})"


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="YAML or TOML config file (optional; defaults otherwise)"),
    set_: list[str] = typer.Option([], "--set", help="override a setting: --set federation.rounds=10"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/<timestamp>)"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this directory"),
    json_out: bool = typer.Option(False, "--json", help="print summary.json to stdout"),
    dist_timeout: float = typer.Option(600.0, "--dist-timeout", help="under torchrun: seconds a rank waits for "
                                       "the others before the run stops (a dead rank is noticed at once)"),
) -> None:
    """Simulate a federated experiment (default: 20 clients on digits, Dirichlet 0.5, FedAvg, 30 rounds).
    Under torchrun (``torchrun --nproc_per_node N -m spikefed run ...``) the clients train split across ranks."""
    from .experiment.distributed import torchrun_env
    from .experiment.runner import Run, default_run_dir
    from .experiment.signals import exit_code, terminate_as_interrupt
    from .runtime import apply_threads, configure_allocator

    if resume is not None:
        if config is None and (resume / "config.yaml").is_file():
            config = resume / "config.yaml"  # the run's own resolved config; --set may still extend rounds
        out = resume
    try:
        env = torchrun_env()
    except ConfigError as e:
        _fail(str(e))
        return
    if env is not None:
        _run_distributed(env, config, set_, out, resume, json_out, dist_timeout)
        return
    try:
        settings = build_settings(RunSettings, config, set_)
        out_dir = out if out is not None else default_run_dir()
        configure_allocator()
        threads = apply_threads(settings.runtime.threads)  # before any torch work: a busy core slows every op
        job = Run(settings, out_dir, resume=resume is not None)
    except (ConfigError, ValueError) as e:
        _fail(str(e))
        return
    f = settings.federation
    err.print(f"[bold]spikefed run[/]: {settings.partition.num_clients} clients ({settings.partition.method}), "
              f"{f.strategy}, {f.rounds} rounds, {job.sim.spec.engine} engine -> {out_dir}", highlight=False)
    err.print(f"runtime: device {job.sim.spec.device}, {threads} torch thread(s) (runtime.threads="
              f"{settings.runtime.threads}), {_kernel_note(job.sim.spec, settings.local.kernel)}", highlight=False)
    if job.sim.spec.engine_note:
        err.print(f"engine: {job.sim.spec.engine}, not {f.engine}: {job.sim.spec.engine_note}", highlight=False)
    columns = (TextColumn("[bold]round[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    try:
        with terminate_as_interrupt(), Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task("rounds", total=f.rounds, completed=job.sim.state.round, info="")
            while not job.done:
                try:
                    row = job.step()
                except (ValueError, FloatingPointError) as e:
                    _fail(f"round {job.sim.state.round + 1} failed: {e}", 1)
                acc = row.get("accuracy")
                info = (f"acc {acc:.4f}  " if acc is not None else "") + (
                    f"loss {row['loss']:.3f}  " if row.get("loss") is not None else "") + (
                    f"up {_fmt_bytes(row['bytes_up'])}")
                bar.update(task, advance=1, info=info)
            summary = job.finish()
    except KeyboardInterrupt as e:
        code = exit_code(e)
        how = "terminated (SIGTERM)" if code != 130 else "interrupted"
        print(f"\n{how} after round {job.sim.state.round}; checkpoint saved in {out_dir}.\n"  # never wrapped
              f"resume with: spikefed run --resume {out_dir}\n"
              f"report so far: spikefed report {out_dir}", file=sys.stderr)
        raise typer.Exit(code)
    if json_out:
        print(json.dumps(summary))
        return
    _print_summary(summary, f"spikefed run: {out_dir}")
    Console().print(f"report: {out_dir / 'report.html'}", highlight=False)


def _run_distributed(env: Any, config: Optional[Path], set_: list[str], out: Optional[Path],
                     resume: Optional[Path], json_out: bool, timeout: float) -> None:
    """``spikefed run`` on one rank of a torchrun launch (docs/distributed.md): rank 0 prints and writes."""
    from .experiment.distributed import open_run
    from .experiment.runner import default_run_dir
    from .experiment.signals import exit_code, terminate_as_interrupt
    from .federated.distributed import RankFailure, stop_group
    from .runtime import configure_allocator

    primary = env.rank == 0
    settings, start_error = None, None
    try:
        settings = build_settings(RunSettings, config, set_)
    except ConfigError as e:
        start_error = str(e)
    out_dir = out if out is not None else default_run_dir()  # without --out: rank 0's name is the one written
    configure_allocator()
    try:
        job, group = open_run(settings, out_dir, resume is not None, env, timeout, start_error=start_error)
    except (ConfigError, ValueError, RankFailure) as e:
        _fail(str(e) if primary else f"rank {env.rank} stops: {e}")
        return
    f = job.settings.federation
    if primary:
        err.print(f"[bold]spikefed run[/] (torchrun, {env.world} ranks): {job.settings.partition.num_clients} "
                  f"clients, {f.strategy}, {f.rounds} rounds, {job.sim.spec.engine} engine -> {out_dir}",
                  highlight=False)
    failure = None
    try:
        with terminate_as_interrupt(), Progress(TextColumn("[bold]round[/]"), BarColumn(), MofNCompleteColumn(),
                                                TimeElapsedColumn(), console=err, disable=not primary) as bar:
            task = bar.add_task("rounds", total=f.rounds, completed=job.sim.state.round)
            while not job.done:
                try:
                    job.step()
                except RankFailure as e:
                    failure = (f"round {job.sim.state.round + 1} stopped: {e}; the last complete checkpoint is "
                               f"in {out_dir} (round {job.sim.state.round}); resume with: torchrun ... -m spikefed "
                               f"run --resume {out_dir}")
                    break
                except (ValueError, FloatingPointError, RuntimeError) as e:
                    failure = f"rank {env.rank}: round {job.sim.state.round + 1} failed: {e}"
                    break
                bar.update(task, advance=1)
            summary = job.finish() if failure is None else {}
        if failure is not None:
            _fail(failure, 1)
    except KeyboardInterrupt as e:
        print(f"\nrank {env.rank}: stopped after round {job.sim.state.round}; checkpoint in {out_dir}; resume "
              f"with: torchrun ... -m spikefed run --resume {out_dir}", file=sys.stderr)
        raise typer.Exit(exit_code(e))
    finally:
        stop_group()
    if not primary:
        return
    if json_out:
        print(json.dumps(summary))
        return
    _print_summary(summary, f"spikefed run (torchrun, {env.world} ranks): {out_dir}")


def _print_summary(summary: dict, title: str) -> None:
    """The end-of-run table (:func:`spikefed.experiment.digest.digest`: every value with its unit)."""
    from .experiment.digest import digest

    table = Table(title=title, caption="MiB = 2^20 bytes")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in digest(summary):
        table.add_row(label, value)
    Console(width=max(Console().width, 110)).print(table)


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="run directory (finished, or interrupted: no summary.json needed)"),
    static: bool = typer.Option(False, "--static", help="PNG figures (matplotlib) instead of interactive plotly"),
    no_model: bool = typer.Option(False, "--no-model", help="skip measuring the model of checkpoint.pt "
                                                            "(spike raster, firing rates, energy per layer)"),
) -> None:
    """Render RUN_DIR/report.html from its metrics.jsonl, summary.json (or, for an interrupted run, the rows)
    and checkpoint.pt; print the summary."""
    from .experiment.report import load_run, write_report

    try:
        path = write_report(run_dir, interactive=False if static else None, measure=not no_model)
        run = load_run(run_dir)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
        return
    except ImportError as e:
        _fail(f"{e}; or use --static")
        return
    _print_summary(run.summary, f"spikefed report: {run_dir}" + ("" if run.complete else " (interrupted run)"))
    Console().print(f"report: {path}", highlight=False)


@app.command("compare")
def compare_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="run directories (e.g. the same config over several seeds)"),
    out: Path = typer.Option(Path("compare.html"), "--out", help="the comparison page to write"),
    static: bool = typer.Option(False, "--static", help="PNG figure instead of interactive plotly"),
    json_out: bool = typer.Option(False, "--json", help="print the per-run numbers and their statistics as JSON"),
) -> None:
    """Several runs side by side: key numbers per run, their mean ± sample std and range; writes an HTML page."""
    from .experiment.report.compare import METRICS, compare_runs, render_compare
    from .io import write_atomic

    try:
        cmp = compare_runs(run_dirs)
        write_atomic(out, render_compare(cmp, interactive=False if static else None))
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
        return
    if json_out:
        print(json.dumps({"runs": dict(zip(cmp.names, cmp.values)), "stats": {k: cmp.stats(k) for k in cmp.keys},
                          "html": str(out)}))
        return
    labels = {k: (label, spec) for k, label, spec in METRICS}
    table = Table(title=f"spikefed compare: {len(cmp.runs)} runs", caption="std: sample standard deviation (n - 1)")
    table.add_column("metric")
    for name, run in zip(cmp.names, cmp.runs):
        table.add_column(name if run.complete else f"{name} (interrupted)", justify="right")
    table.add_column("mean ± std", justify="right")
    table.add_column("min .. max", justify="right")
    for k in cmp.keys:
        label, spec = labels[k]
        st = cmp.stats(k)
        f = lambda v: format(v, spec) if v is not None else "-"  # noqa: E731
        table.add_row(label, *(f(v.get(k)) for v in cmp.values),
                      f(st["mean"]) + (f" ± {f(st['std'])}" if st["std"] is not None else ""),
                      f"{f(st['min'])} .. {f(st['max'])}")
    Console(width=max(Console().width, 120)).print(table)
    Console().print(f"comparison: {out}", highlight=False)


@app.command("watch")
def watch_cmd(
    run_dir: Path = typer.Argument(..., help="the run directory of a running (or finished) `spikefed run --out`"),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="TCP port on 127.0.0.1 (0: any free port)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (default: this machine only)"),
) -> None:
    """Live view in the browser: a local page that follows RUN_DIR/metrics.jsonl while the run goes."""
    import time

    from .experiment.live import start
    from .experiment.signals import exit_code, terminate_as_interrupt

    try:
        server, _ = start(run_dir, host, port)
    except (FileNotFoundError, OSError) as e:
        _fail(str(e))
        return
    err.print(f"[bold]spikefed watch[/]: open {server.url} (Ctrl-C to stop)", highlight=False)
    try:
        with terminate_as_interrupt():
            while True:
                time.sleep(3600)
    except KeyboardInterrupt as e:
        server.shutdown()
        raise typer.Exit(0 if exit_code(e) == 130 else exit_code(e))


def _staged(schema: type, config: Optional[Path], set_: list[str], json_out: bool, runner_name: str) -> dict:
    """Shared shell of ``convert`` / ``regress``: settings, a progress bar per training stage, one-line errors."""
    try:
        settings = build_settings(schema, config, set_)
    except ConfigError as e:
        _fail(str(e))
        return {}
    from .experiment import conversion
    from .runtime import configure_allocator

    configure_allocator()
    runner = getattr(conversion, runner_name)
    with Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err, transient=json_out,
                  disable=not err.is_terminal and json_out) as bar:
        tasks: dict[str, object] = {}

        def progress(stage: str, done: int, total: int, info: str) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, info="")
            bar.update(tasks[stage], completed=done, info=info)  # type: ignore[arg-type]

        try:
            return runner(settings, progress)
        except (ValueError, FloatingPointError) as e:
            _fail(str(e), 1)
            return {}


@app.command("convert")
def convert_cmd(
    config: Optional[Path] = typer.Argument(None, help="YAML or TOML config file (optional)"),
    set_: list[str] = typer.Option([], "--set", help="override a setting: --set convert.norm=max"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object with the results to stdout"),
) -> None:
    """ANN-to-SNN conversion on digits: train a ReLU MLP, balance it into IF neurons, accuracy vs time steps."""
    from .experiment.config import ConvertSettings

    result = _staged(ConvertSettings, config, set_, json_out, "run_conversion")
    if json_out:
        print(json.dumps(result))
        return
    hybrid = {r["steps"]: r for r in result.get("hybrid", [])}
    table = Table(title=f"spikefed convert: ReLU MLP {result['sizes']} -> IF SNN ({result['norm']}, "
                        f"{result['balance']}); ANN test accuracy {result['ann_accuracy']:.4f}")
    for col in ("T", "accuracy", "spikes / sample", "energy / inference") + (("hybrid accuracy",) if hybrid else ()):
        table.add_column(col, justify="right")
    for r in result["converted"]:
        extra = (f"{hybrid[r['steps']]['accuracy']:.4f}",) if hybrid else ()
        table.add_row(str(r["steps"]), f"{r['accuracy']:.4f}", f"{r['spikes_per_sample']:.0f}",
                      f"{r['energy_j'] * 1e9:.1f} nJ", *extra)
    Console().print(table)
    Console().print(f"gap to the ANN at T={result['converted'][-1]['steps']}: {result['gap_at_max_steps']:+.4f}; "
                    f"wall time {result['seconds']:.1f} s", highlight=False)


@app.command()
def regress(
    config: Optional[Path] = typer.Argument(None, help="YAML or TOML config file (optional)"),
    set_: list[str] = typer.Option([], "--set", help="override a setting: --set data.horizon=1"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object with the results to stdout"),
) -> None:
    """Mackey-Glass prediction with a recurrent SNN (low-pass read-out, truncated BPTT), against persistence."""
    from .experiment.config import RegressSettings

    result = _staged(RegressSettings, config, set_, json_out, "run_regression")
    if json_out:
        print(json.dumps(result))
        return
    table = Table(title=f"spikefed regress: Mackey-Glass, {result['horizon']}-step-ahead, test windows")
    for col in ("predictor", "MSE", "sMAPE %"):
        table.add_column(col, justify="right")
    table.add_row("recurrent SNN", f"{result['mse']:.5f}", f"{result['smape']:.2f}")
    table.add_row("persistence", f"{result['persistence_mse']:.5f}", f"{result['persistence_smape']:.2f}")
    Console().print(table)
    Console().print(f"beats persistence: {result['beats_persistence']}; {result['parameters']:,} parameters; "
                    f"wall time {result['seconds']:.1f} s", highlight=False)


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="run directory (finished or interrupted)"),
    nir_file: Path = typer.Option(..., "--nir", help="write the trained model as a NIR graph (HDF5) to this file"),
    dt: float = typer.Option(1e-4, "--dt", min=0.0, help="length of one time step in NIR time units (1e-4: what "
                             "snnTorch's reader assumes; give Norse the same dt)"),
    fold_r: bool = typer.Option(True, "--fold-r/--no-fold-r", help="fold each neuron's R into the weights "
                                "before it, so every neuron node has r = 1 (what snnTorch and Norse read)"),
) -> None:
    """Export the trained global model of a run to NIR (docs/nir.md), for snnTorch, Norse, Lava, chips."""
    try:
        from .experiment.api import load_run
        from .interop.nir import NIRConversionError, UnsupportedLayerError, to_nir
        from .interop.nir.common import nir_package

        nir = nir_package()
        run = load_run(run_dir)
        graph = to_nir(run.model, dt=dt, reset="metadata", fold_r=fold_r)
        nir_file.parent.mkdir(parents=True, exist_ok=True)
        nir.write(str(nir_file), graph)
        back = nir.read(str(nir_file))  # the file as any reader sees it
    except ImportError as e:
        _fail(f"NIR export needs the nir package ({e}); pip install 'spikefed[nir]'")
        return
    except (ConfigError, ValueError, NIRConversionError, UnsupportedLayerError) as e:
        _fail(str(e))
        return
    neurons = {n: type(v).__name__ for n, v in back.nodes.items() if hasattr(v, "r")}
    unit = all(bool((getattr(back.nodes[n], "r") == 1).all()) for n in neurons)
    print(f"wrote {nir_file} ({nir_file.stat().st_size / 1024:.1f} KiB): round {run.round} of {run_dir}, "
          f"{len(back.nodes)} nodes, dt = {dt:g}")
    print("neurons: " + ", ".join(f"{n} ({k})" for n, k in neurons.items()) + f"; r == 1 on all: {unit}")
    if run.settings.model.reset == "subtract":
        print("note: the model resets by subtraction (model.reset=subtract); NIR neurons reset to v_reset, which "
              "other tools simulate. spikefed restores the subtraction from the metadata (docs/nir.md).")


config_app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    config: Optional[Path] = typer.Argument(None, help="config file to resolve (optional)"),
    set_: list[str] = typer.Option([], "--set", help="override a setting"),
    command: str = typer.Option("run", "--for", help="whose settings: run, train, convert or regress"),
) -> None:
    """Print the (default or resolved) config of a command as YAML, each key with its description."""
    from .experiment.config import ConvertSettings, RegressSettings

    schemas = {"run": RunSettings, "train": TrainSettings, "convert": ConvertSettings, "regress": RegressSettings}
    if command not in schemas:
        _fail(f"--for: unknown command {command!r}; valid: {', '.join(schemas)}")
        return
    try:
        settings = build_settings(schemas[command], config, set_)
    except ConfigError as e:
        _fail(str(e))
        return
    print(_commented_yaml(settings, command))
    if command == "run":
        from .experiment.compat import describe, refusals

        print("# combinations that cannot work (spikefed.experiment.compat; 'flower' rows: deployment only):")
        for line in describe():
            print(f"#   {line}")
        for reason in refusals(settings, "flower"):
            print(f"# on Flower this config is refused: {reason}")


def _describe_key(field: Any) -> str:
    """A key's description, followed by its valid values when it is a choice."""
    from .experiment.config import choices_of

    choices = choices_of(field)
    text = field.description or ""
    return f"{text} [one of: {', '.join(choices)}]" if choices else text


def _commented_yaml(settings: Any, command: str = "run") -> str:
    """YAML of the settings with each field's description as a trailing comment."""
    lines = [f"# spikefed {command} configuration (all keys; override with --set section.key=value)"]
    data = settings.model_dump(mode="json")
    for section, value in data.items():
        sub = getattr(settings, section)
        if isinstance(value, dict):
            doc = (type(sub).__doc__ or "").strip().splitlines()[0]
            lines.append(f"{section}:  # {doc}")
            for key, v in value.items():
                field = type(sub).model_fields[key]
                text = yaml.safe_dump({key: v}, default_flow_style=True, width=1000).strip()[1:-1]
                lines.append(f"  {text}  # {_describe_key(field)}")
        else:
            text = yaml.safe_dump({section: value}, default_flow_style=True, width=1000).strip()[1:-1]
            lines.append(f"{text}  # {_describe_key(type(settings).model_fields[section])}")
    return "\n".join(lines)


@app.command()
def partition(
    config: Optional[Path] = typer.Argument(None, help="config file (optional)"),
    set_: list[str] = typer.Option([], "--set", help="override a setting: --set partition.alpha=0.1"),
    json_out: bool = typer.Option(False, "--json", help="print the heterogeneity report as JSON"),
) -> None:
    """Show how the data is split among clients: sizes, classes, label JSD and feature Hellinger per client."""
    from .data.heterogeneity import format_table
    from .experiment.runner import build_spec
    from .federated.simulation import Simulation

    try:
        settings = build_settings(RunSettings, config, set_)
        report = Simulation(build_spec(settings)).heterogeneity  # features as the clients see them
    except (ConfigError, ValueError) as e:
        _fail(str(e))
        return
    if json_out:
        print(json.dumps(report, default=lambda v: v.tolist() if hasattr(v, "tolist") else float(v)))
        return
    p = settings.partition
    alpha = f" alpha={p.alpha}" if p.method == "dirichlet" else ""
    table = Table(title=f"{p.num_clients} clients, {p.method}{alpha}")
    for col in ("client", "samples", "classes", "label JSD", "feature Hellinger"):
        table.add_column(col, justify="right")
    for client, size, classes, jsd, hel in format_table(report):
        table.add_row(str(client), str(size), str(classes), f"{jsd:.3f}", f"{hel:.3f}")
    Console().print(table)
    Console().print(f"mean JSD {report['mean_jsd']:.3f} (max {report['max_jsd']:.3f}); "
                    f"mean Hellinger {report['mean_hellinger']:.3f} (max {report['max_hellinger']:.3f})")


@app.command()
def devices(
    json_out: bool = typer.Option(False, "--json", help="print the presets as JSON"),
) -> None:
    """List the device presets usable in devices.fleet (mismatch CVs, weight bits, lost steps, dt, ...)."""
    import dataclasses

    from .hardware.devices import PRESETS

    rows = [dataclasses.asdict(p) for p in PRESETS.values()]
    if json_out:
        print(json.dumps(rows))
        return
    table = Table(title="device presets", caption="use: --set 'devices.fleet=[{profile: NAME}]'; "
                  "noise: probe read-out noise")
    cols = ("name", "threshold_cv", "leak_cv", "gain_cv", "weight_bits", "rounding", "drop_steps", "jitter", "dt",
            "delay_buffer", "readout_noise")
    heads = ("name", "thr cv", "leak cv", "gain cv", "bits", "rounding", "drop", "jitter", "dt", "delays", "noise")
    for col, head in zip(cols, heads):
        table.add_column(head, justify="left" if col in ("name", "rounding") else "right", no_wrap=True)
    for r in rows:
        table.add_row(*("float32" if c == "weight_bits" and r[c] is None else
                        "-" if r[c] is None else str(r[c]) for c in cols))
    Console(width=max(Console().width, 110)).print(table)


flower_app = typer.Typer(help="Deploy on real machines through Flower (SuperLink, SuperNodes, flwr run).",
                         no_args_is_help=True)
app.add_typer(flower_app, name="flower")


def _flower_settings(config: Optional[Path], set_: list[str], nodes: int, rounds: int,
                     virtual: int = 1) -> RunSettings:
    """The demo's experiment: ``nodes`` clients (one per SuperNode), all of them every round, ``rounds`` rounds;
    the config file and ``--set`` come on top. ``virtual`` > 1 (``--virtual-clients``): each SuperNode hosts
    that many virtual clients, ``nodes x virtual`` in all, sampled with the config's ``federation.fraction``."""
    from .deploy.flower import check_deployable

    if virtual < 1:
        raise ConfigError(f"--virtual-clients must be >= 1, got {virtual}")
    base = [f"partition.num_clients={nodes * virtual}", f"federation.rounds={rounds}"]
    base += ["federation.fraction=1.0"] if virtual == 1 else []
    settings = build_settings(RunSettings, config, base + list(set_))
    if settings.partition.num_clients != nodes * virtual:
        raise ConfigError(f"partition.num_clients={settings.partition.num_clients} must equal --nodes {nodes}"
                          + (f" x --virtual-clients {virtual} = {nodes * virtual} (each SuperNode hosts "
                             f"{virtual} clients)" if virtual > 1 else " (one SuperNode per client)"))
    check_deployable(settings)
    return settings


@flower_app.command("demo")
def flower_demo(
    config: Optional[Path] = typer.Argument(None, help="YAML or TOML experiment config (optional)"),
    nodes: int = typer.Option(3, "--nodes", min=1, help="SuperNodes to start (one client each)"),
    rounds: int = typer.Option(3, "--rounds", min=1, help="federated rounds"),
    set_: list[str] = typer.Option([], "--set", help="override a setting: --set local.epochs=2"),
    tls: bool = typer.Option(False, "--tls", help="TLS with a fresh local CA (spikefed flower certs)"),
    auth: bool = typer.Option(False, "--auth", help="SuperNode authentication (keys registered with the SuperLink)"),
    secure: str = typer.Option("none", "--secure", help="secure aggregation: none | secaggplus (Flower SecAgg+)"),
    timeout: float = typer.Option(900.0, "--timeout", min=1.0, help="seconds before the whole run is abandoned"),
    round_timeout: float = typer.Option(600.0, "--round-timeout", min=1.0,
                                        help="a round's deadline: seconds it waits for the nodes' replies"),
    heartbeat: Optional[float] = typer.Option(None, "--heartbeat", help="SuperNode heartbeat interval in seconds, "
                                              "10-1800 (default Flower's 30: a dead node is noticed after ~60 s)"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="keep logs, certificates and results here "
                                                                  "(default: a temporary directory)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --workdir from its checkpoint "
                                                        "(fresh SuperLink and SuperNodes)"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON summary to stdout"),
    virtual_clients: int = typer.Option(1, "--virtual-clients", help="virtual clients each SuperNode hosts and "
                                        "trains as one batched cohort (partition.num_clients = nodes x this)"),
) -> None:
    """Start a SuperLink and N SuperNodes on 127.0.0.1 as real processes, run spikefed on them with
    ``flwr run``, stream progress, stop every process (also on error or Ctrl-C) and print a summary.
    A SuperNode that dies is reported and the run goes on without it; a ServerApp or SuperLink that dies is
    restarted and the run resumes from its last checkpoint."""
    import tempfile
    import time

    try:
        if resume:
            if workdir is None or not (workdir / "out" / "checkpoint.pt").is_file():
                raise ConfigError("--resume needs --workdir DIR of an earlier demo (DIR/out/checkpoint.pt)")
            if config is None and (workdir / "out" / "config.yaml").is_file():
                config = workdir / "out" / "config.yaml"  # the run's own config; --set may still extend rounds
        settings = _flower_settings(config, set_, nodes, rounds, virtual_clients)
        from .deploy.flower import SECURE_MODES
        if secure not in SECURE_MODES:
            raise ConfigError(f"--secure must be one of {', '.join(SECURE_MODES)}, got {secure!r}")
        if secure != "none" and virtual_clients > 1:
            raise ConfigError("--secure secaggplus needs one client per SuperNode (--virtual-clients 1)")
        from .deploy.flower_launch import LaunchError, run_demo
        from .deploy.flower_supernode import HeartbeatError, check_heartbeat
        if heartbeat is not None:
            try:
                check_heartbeat(heartbeat)
            except HeartbeatError as e:
                raise ConfigError(str(e)) from None
    except ConfigError as e:
        _fail(str(e))
        return
    except ImportError as e:
        _fail(f"Flower is not installed ({e}); pip install 'flwr>=1.40,<1.42'")
        return
    work = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="spikefed-flower-"))
    run_config = {"settings": settings.model_dump_json(), "secure": secure, "round-timeout": round_timeout,
                  "resume": resume}
    err.print(f"[bold]spikefed flower demo[/]: SuperLink + {nodes} SuperNodes on 127.0.0.1"
              + (f" x {virtual_clients} virtual clients" if virtual_clients > 1 else "")
              + f"{' (TLS)' if tls else ''}{' (auth)' if auth else ''}, {rounds} rounds; logs in {work}",
              highlight=False)

    def on_line(line: str) -> None:
        if line.startswith("spikefed"):
            err.print(line, highlight=False)

    started = time.perf_counter()
    try:
        node_configs = None if virtual_clients == 1 else [
            f"partition-id={i} num-partitions={nodes} virtual-clients={virtual_clients}" for i in range(nodes)]
        summary = run_demo(work, nodes, run_config, timeout, tls=tls, auth=auth, on_line=on_line,
                           node_configs=node_configs, heartbeat=heartbeat)
    except LaunchError as e:
        _fail(str(e), 1)
        return
    except KeyboardInterrupt:
        err.print("\ninterrupted; every process started was stopped", highlight=False)
        raise typer.Exit(130)
    out = {"final_accuracy": summary.get("final_accuracy"), "rounds": summary.get("rounds"), "nodes": nodes,
           "clients": nodes * virtual_clients,
           "seconds": time.perf_counter() - started, "secure": secure, "tls": tls, "auth": auth,
           "total_bytes_up": summary.get("total_bytes_up"), "workdir": str(work), "pids": summary["pids"],
           **{k: summary.get(k, 0) for k in ("dropped", "late")}, "rejected_updates": summary.get("rejected_updates"),
           "server_restarts": len(summary.get("server_restarts", []))}
    if json_out:
        print(json.dumps(out))
        return
    table = Table(title="spikefed flower demo")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("final accuracy", f"{out['final_accuracy']:.4f}" if out["final_accuracy"] is not None else "-")
    table.add_row("rounds / nodes", f"{out['rounds']} / {nodes}")
    table.add_row("dropped / late client-rounds", f"{out['dropped']} / {out['late']}")
    if out["server_restarts"]:
        table.add_row("server restarts (resumed)", str(out["server_restarts"]))
    table.add_row("security", ", ".join(k for k, v in (("TLS", tls), ("auth", auth), (secure, secure != "none"))
                                        if v) or "insecure (localhost)")
    table.add_row("wall time", f"{out['seconds']:.1f} s")
    Console().print(table)


@flower_app.command("run")
def flower_run(
    config: Optional[Path] = typer.Argument(None, help="YAML or TOML experiment config (optional)"),
    superlink: str = typer.Option(..., "--superlink", help="the SuperLink's address, host:port"),
    root_certificates: Optional[Path] = typer.Option(None, "--root-certificates",
                                                     help="CA certificate that signed the SuperLink's certificate"),
    insecure: bool = typer.Option(False, "--insecure", help="no TLS (trusted networks / localhost only)"),
    set_: list[str] = typer.Option([], "--set", help="override a setting"),
    secure: str = typer.Option("none", "--secure", help="secure aggregation: none | secaggplus"),
    connect_timeout: float = typer.Option(15.0, "--connect-timeout", min=0.1, help="seconds to reach the SuperLink"),
    timeout: float = typer.Option(3600.0, "--timeout", min=1.0, help="seconds before the run is abandoned"),
    out: Path = typer.Option(Path("flower-run"), "--out", help="where the ServerApp writes metrics and summary "
                                                               "(a path on the SuperLink machine)"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this directory (its "
                                          "checkpoint.pt, on the SuperLink machine) after the ServerApp or "
                                          "SuperLink died; implies --out DIR"),
    round_timeout: Optional[float] = typer.Option(None, "--round-timeout", min=1.0,
                                                  help="a round's deadline in seconds (default 600)"),
    json_out: bool = typer.Option(False, "--json", help="print the run summary as JSON"),
) -> None:
    """Submit spikefed to a running SuperLink (its SuperNodes already started) and wait for the result."""
    import tempfile

    if resume is not None:
        out = resume
        if config is None and (resume / "config.yaml").is_file():
            config = resume / "config.yaml"  # the run's own config (when DIR is readable here)
    try:
        settings = build_settings(RunSettings, config, set_)
        from .deploy.flower import check_deployable
        check_deployable(settings)
        from .deploy.flower_launch import LaunchError, submit
    except ConfigError as e:
        _fail(str(e))
        return
    if (root_certificates is None) == (not insecure):
        _fail("give exactly one of --root-certificates CA.crt (TLS) and --insecure")
        return
    try:
        summary = submit(Path(tempfile.mkdtemp(prefix="spikefed-flwr-")), superlink,
                         {"settings": settings.model_dump_json(), "secure": secure, "resume": resume is not None,
                          **({"round-timeout": round_timeout} if round_timeout is not None else {})}, out.resolve(),
                         root_certificates, connect_timeout, timeout,
                         on_line=lambda line: err.print(line, highlight=False) if line.startswith("spikefed") else None)
    except LaunchError as e:
        _fail(str(e), 1)
        return
    print(json.dumps(summary) if json_out else f"final accuracy {summary.get('final_accuracy')}; results in {out}")


@flower_app.command("certs")
def flower_certs(
    out: Path = typer.Argument(..., help="directory for ca.crt, ca.key, server.crt, server.key"),
    host: list[str] = typer.Option(["127.0.0.1", "localhost"], "--host",
                                   help="SuperLink host name or IP the certificate is valid for (repeatable)"),
    days: int = typer.Option(30, "--days", min=1, help="validity in days"),
) -> None:
    """Create a local CA and a SuperLink certificate signed by it (for tests, demos, private deployments)."""
    from .deploy.flower_certs import make_certs

    certs = make_certs(out, tuple(host), days)
    print(f"CA certificate:     {certs.ca_cert}  (SuperNodes: --root-certificates; flwr: root-certificates)")
    print(f"server certificate: {certs.server_cert}  (flower-superlink --ssl-certfile)")
    print(f"server key:         {certs.server_key}  (flower-superlink --ssl-keyfile)")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
