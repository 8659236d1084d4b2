"""The benchmark script runs end to end at tiny sizes, so it cannot rot (no timing is asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmarks_run_quick(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-plot", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: a bar missed, which tiny sizes may do
    results = json.loads(output.read_text())
    names = [row["name"] for row in results["rows"]]
    assert names == [
        "immediate call",
        "journaled call",
        "transaction",
        "big read",
        "replay",
        "logging off",
    ]
    assert all(math.isfinite(row["median"]) and row["median"] > 0 for row in results["rows"])
    assert [row["name"] for row in results["references"]] == ["decoding by hand"]
    assert results["replay_scale"]["entries"] == 500
    assert results["replay_scale"]["peak_rss_mib"] > 0
    assert set(results["amembers_seconds"]) == {"1,000", "2,000"}
    assert set(results["scan_scale"]["aiter_peak_rss_mib"]) == {"1,000", "2,000"}
    assert all(rss > 0 for rss in results["scan_scale"]["aiter_peak_rss_mib"].values())
