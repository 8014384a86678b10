"""Self-contained HTML report of a federated run directory.

``spikefed run`` writes ``report.html`` at the end; ``spikefed report DIR`` renders it again, also for a run that
was interrupted (no ``summary.json``: the summary comes from ``metrics.jsonl``, the model from ``checkpoint.pt``).

Modules: :mod:`.data` reads the run directory, :mod:`.activity` measures the trained model (spike raster,
per-neuron firing rates, energy per layer), :mod:`.figures` / :mod:`.figures_model` build figure specs,
:mod:`.html` assembles the page (plotly.js embedded once when plotly is installed, else :mod:`.static` PNGs),
:mod:`.compare` puts several runs side by side.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...io import write_atomic
from .data import REPORT_FILE, RunData, load_run, read_metrics, summary_from_rows
from .html import format_value, plotly_js, render_html, sections

__all__ = ["REPORT_FILE", "RunData", "format_value", "load_run", "plotly_js", "read_metrics", "render_html",
           "sections", "summary_from_rows", "write_report"]


def write_report(run_dir: str | os.PathLike[str], title: str | None = None, interactive: bool | None = None,
                 activity: dict[str, Any] | None = None, measure: bool = True) -> Path:
    """Read ``run_dir`` and write ``run_dir/report.html`` atomically; returns its path.

    ``activity``: the final model's activity (:func:`.activity.model_activity`) when the caller has the model;
    otherwise, with ``measure``, it is measured from the run's ``checkpoint.pt`` and ``config.yaml`` (skipped
    when either is missing). ``interactive``: plotly figures (``None``: when plotly is installed), else PNGs.
    """
    run = load_run(run_dir)
    if activity is None and measure:
        from .activity import activity_from_run

        try:
            activity = activity_from_run(run_dir, run.config)
        except (ValueError, OSError) as e:  # the rest of the report still renders; the page says why
            activity = {"error": str(e)}
    run.activity = activity
    out = Path(run_dir) / REPORT_FILE
    write_atomic(out, render_html(run, title, interactive))
    return out
