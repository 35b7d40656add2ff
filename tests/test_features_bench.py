"""Smoke run of benchmarks/import_speed.py at a tiny scale: it runs and reports every layout."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_speed_benchmark_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "import_speed.py"), "--scale", "0.002", "--repeats", "1", "--in-process", "--json"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["layout"] for r in rows] == ["npz", "npy folder", "zip (deflate)", "parquet"], out
    for r in rows:
        assert r["items"] == 42 + 10 + 10  # 21000, 4200, 3859 at this scale, at least 10 per split
        assert sorted(map(int, r["dims"].split("/"))) == [50, 768, 1024]
        assert r["seconds"] > 0 and r["peak_mb"] > 0
