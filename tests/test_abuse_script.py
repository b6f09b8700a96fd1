"""scripts/abuse.py stays runnable: two of its attacks at 1 % of their size.

The full run (issue 17's sizes) is not part of the test run; this only keeps the
script from rotting. It asserts what the attacker got and that the server and
the bystander came through, never how long anything took.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "abuse.py"


@pytest.mark.timeout(180)
def test_abuse_script_small(tmp_path: Path) -> None:
    report = tmp_path / "abuse.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--scale", "0.01", "--only", "1a,2a", "--json", str(report)],
        capture_output=True, text=True, timeout=170,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in rows[1:]] == ["1a", "2a"], run.stdout[-3000:]

    results: list[dict[str, Any]] = json.loads(report.read_text())
    assert [r["attack"] for r in results] == ["1a", "2a"]
    for result in results:
        assert 'close 1008 "message in more than 4096 frames"' in result["got"], result
        assert result["healthy"].startswith("yes"), result
        assert result["trips"] > 0 and not result["bystander_problem"], result
