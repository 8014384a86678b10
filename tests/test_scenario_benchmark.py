"""benchmarks/scenario.py --quick: the whole scenario (conv SNN with delays on event data, heterogeneous fleet,
calibrated / naive / ideal, energy, engines) runs and ends with its one summary line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_scenario_quick_prints_the_table_and_the_last_line(tmp_path: Path) -> None:
    out = tmp_path / "scenario.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scenario.py"), "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert re.fullmatch(r"calibrated_minus_naive=-?\d+\.\d\d ideal_minus_calibrated=-?\d+\.\d\d "
                        r"conv_cohort_vs_sequential=(nan|\d+\.\d\d)", lines[-1]), lines[-1]
    assert "| calibrated |" in r.stdout and "| naive |" in r.stdout and "| ideal |" in r.stdout
    data = json.loads(out.read_text())
    rows = {(run["row"], run["seed"]): run for run in data["runs"]}
    assert set(rows) == {("naive", 0), ("calibrated", 0), ("ideal", 0), ("ideal_fleet_dt", 0)}
    same = rows[("ideal_fleet_dt", 0)]  # ideal chips at the fleet's two clocks: both dt values present
    assert {k.rsplit("_", 1)[-1] for k in same["by_device"]} == {"dt1", "dt2"}
    m = re.fullmatch(r"ideal_same_clocks=(\d\.\d{4}) calibrated_minus_ideal_same_clocks=(-?\d+\.\d\d)", lines[-2])
    assert m, lines[-2]
    assert float(m[1]) == pytest.approx(same["deployed"], abs=5e-5)
    assert float(m[2]) == pytest.approx(100 * (rows[("calibrated", 0)]["deployed"] - same["deployed"]), abs=5e-3)
    for run in rows.values():
        assert 0.0 <= run["deployed"] <= 1.0 and run["bytes_up_per_round"] > 0 and run["acs"] > 0
    ideal = rows[("ideal", 0)]
    assert ideal["deployed"] == pytest.approx(ideal["on_ideal_hardware"], abs=1e-12)  # ideal devices = ideal hw
    assert data["engines"]["sequential"] > 0
    assert data["engines"]["clients"] == 6  # --quick times its own 6-client partition (--engine-clients)
