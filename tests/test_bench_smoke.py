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
    assert "opentermd-A" in result.stdout and "opentermd-B" in result.stdout  # both sides of the A/B table
    for row in ("exec latency p50", "output throughput", "output bytes lost", "list 100 entries", "read 4 KB",
                "read 0.1 MB p50", "): /files/grep", ": rg -n", ": grep -rn", "upload 2.0 MB",
                "upload server RSS growth", "view 5.0 MB", "file API wrong answers",
                "terminal WS output (1.0 MB base64)", "terminal WS frames", "terminal output bytes lost",
                "terminal echo p50 (20x)", "terminal echo p95", "terminal echo wrong",
                "notebook create to ready (median of 1)", "notebook cell `1+1` p50 (5x)",
                "compare two 400-line files p50 (3x)", "compare two 400-line files max",
                "browse 200-entry folder: time to first byte p50 (3x)", "thumbnail of a 1600x1200 JPEG",
                "editor (file page) scripts", "terminal page scripts gzip",
                "start to first 200 on /health (median of 1)", "idle RSS (launcher + server)",
                # bench/safety.py, at tiny counts
                "load: errors", "load: server fds after", "load: longest event-loop stall",
                "churn: process + terminal pair p50", "churn: failed cycles", "nofile 256: `echo hi` failures",
                "nofile 256: server fds after", "fuzz: cases run"):
        assert row in result.stdout
