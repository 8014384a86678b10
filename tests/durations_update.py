"""Rewrite tests/durations.json (read by tests/conftest.py to start the longest tests first) from the
``--durations`` report of a pytest run:

    PYTHONPATH=src python -m pytest -q -n 2 --durations=100 | python tests/durations_update.py

Each test's setup, call and teardown seconds are summed and rounded to 0.1 s; the file lists the tests longest
first. Only the order matters, so a run on a loaded machine gives a usable list too."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

LINE = re.compile(r"^\s*(\d+(?:\.\d+)?)s (setup|call|teardown)\s+(\S.*?)\s*$")
OUT = Path(__file__).with_name("durations.json")


def parse(lines: list[str]) -> dict[str, float]:
    """``{nodeid: seconds}`` from the ``slowest N durations`` section of a pytest report."""
    total: dict[str, float] = {}
    for line in lines:
        m = LINE.match(line)
        if m:
            total[m.group(3)] = total.get(m.group(3), 0.0) + float(m.group(1))
    return total


def main() -> None:
    total = parse(sys.stdin.read().splitlines())
    if not total:
        raise SystemExit("no '--durations' lines on stdin: run pytest with --durations=100")
    ranked = {k: round(v, 1) for k, v in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))}
    OUT.write_text(json.dumps(ranked, indent=1) + "\n")
    print(f"{OUT}: {len(ranked)} tests")


if __name__ == "__main__":
    main()
