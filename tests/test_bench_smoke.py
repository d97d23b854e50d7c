"""One tiny run of the benchmark script, so it cannot rot (the real figures come from `make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_runs_and_prints_the_table() -> None:
    result = subprocess.run([sys.executable, "bench/run.py", "--smoke"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for row in ("exec latency p50", "output throughput", "output bytes lost"):
        assert row in result.stdout
