"""One tiny run of bench/sandbox.py, so it cannot rot (the figures come from `make bench`)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.test_bench_smoke import ROOT

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def test_the_sandbox_bench_prints_both_columns() -> None:
    result = subprocess.run([sys.executable, "bench/sandbox.py", "--smoke", "--source"], cwd=ROOT,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "no sandbox" in result.stdout and "sandbox bwrap" in result.stdout
    for row in ("exec latency p50 (ms)", "terminal start to first byte p50 (ms)",
                "notebook cell round trip p50 (ms)", "per idle user RSS (KiB)"):
        assert row in result.stdout
