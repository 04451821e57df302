"""A tiny seeded run of the chaos suite (``scripts/chaos`` is the full one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.worker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


def test_chaos_smoke_loses_nothing_and_repeats_no_completed_step(tmp_path: Path) -> None:
    """40 runs x 10 steps, workers SIGKILLed and Redis crashed: all finish, none repeated."""
    out = tmp_path / "report.jsonl"
    proc = subprocess.run(
        [sys.executable, "bench/chaos.py", "--runs", "40", "--seed", "3", "--step-ms", "40",
         "--chaos-seconds", "20", "--drain-timeout", "60", "--first-redis-crash", "1.5",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text().splitlines()[-1])
    assert report["lost"] == 0 and report["finished"] == 40, report
    assert report["completed_steps_repeated"] == 0, report
    assert report["wrong_result"] == 0 and report["worker_kills"] >= 1, report
    assert report["redis_restarts"] >= 1, report  # Redis (broker and store) really crashed
    assert proc.returncode == 0
