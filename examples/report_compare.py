"""Reports from Python: run a small fleet + DP federation over two seeds, stop one early (as a time limit
would), render both reports (the stopped one from metrics.jsonl and its checkpoint) and compare the seeds.

Run:  .venv/bin/python examples/report_compare.py [OUT_DIR]     (about a minute; default OUT_DIR: a temp dir)
The same from the shell: spikefed run --out DIR ...; spikefed report DIR; spikefed compare DIR1 DIR2.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.digest import digest
from spikefed.experiment.report import load_run, write_report
from spikefed.experiment.report.compare import compare_runs, render_compare, table_rows
from spikefed.experiment.runner import Run
from spikefed.io import write_atomic

SMALL = ["partition.num_clients=8", "partition.min_size=5", "model.hidden=[32]", "local.num_steps=8",
         "local.epochs=2", "federation.rounds=5", "federation.fraction=1.0",
         "devices.fleet=[{profile: digital4, fraction: 0.5}, {profile: analog20, fraction: 0.5}]",
         "privacy.dp=true", "privacy.noise_multiplier=0.3", "faults.dropout=0.2"]


def main(root: Path) -> None:
    dirs = []
    for seed in (0, 1):
        out = root / f"seed{seed}"
        run = Run(build_settings(RunSettings, None, SMALL + [f"seed={seed}"]), out)
        while not run.done:
            run.step()
            if seed == 1 and run.sim.state.round == 2:
                break  # stopped after round 2: no summary.json, as after Ctrl-C / SIGTERM
        else:
            run.finish()  # summary.json and report.html
        dirs.append(out)
    write_report(dirs[1])  # the interrupted run: summary from metrics.jsonl, model from checkpoint.pt
    for d in dirs:
        data = load_run(d)
        print(f"\n{d} ({'finished' if data.complete else 'interrupted'}): {d / 'report.html'}")
        for label, value in digest(data.summary):
            print(f"  {label:45s} {value}")
    cmp = compare_runs(dirs)
    header, rows = table_rows(cmp)
    print("\n" + " | ".join(header))
    for row in rows:
        print(" | ".join(row))
    write_atomic(root / "compare.html", render_compare(cmp))
    print(f"\ncomparison page: {root / 'compare.html'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="spikefed-report-")))
