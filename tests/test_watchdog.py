"""The event-loop watchdog reports a real stall: a callback that blocks the loop for a measured time."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.watchdog import STALL_FILE, LoopWatchdog
from tests.conftest import ApiFactory, eventually

INTERVAL = 0.005
BLOCK = 0.15


def block_the_loop(seconds: float) -> float:
    """Hold the loop (as a blocking call in a handler would) and return how long it really held it."""
    started = time.perf_counter()
    time.sleep(seconds)
    return time.perf_counter() - started


def reported(path: Path) -> dict[str, Any]:
    try:
        summary: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return summary


async def test_a_blocking_callback_is_reported_as_a_stall_at_least_that_long(tmp_path: Path) -> None:
    report = tmp_path / "state" / STALL_FILE
    watchdog = LoopWatchdog(report, interval=INTERVAL)
    task = asyncio.create_task(watchdog.watch())
    try:
        await eventually(lambda: watchdog.ticks >= 3)
        blocked = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(lambda: blocked.set_result(block_the_loop(BLOCK)))
        held = await blocked
        ticks = watchdog.ticks
        await eventually(lambda: watchdog.ticks > ticks)
    finally:
        task.cancel()
    # The timer was due at most one interval after the block began, and ran only after it ended.
    assert watchdog.longest >= held - INTERVAL
    assert reported(report)["longest_stall_ms"] >= (held - INTERVAL) * 1000
    assert reported(report)["interval_ms"] == INTERVAL * 1000


def burn_cpu(seconds: float) -> float:
    """Hold the loop by computing (a long callback) for `seconds` of this thread's CPU time; returns it."""
    started = time.thread_time()
    while time.thread_time() - started < seconds:
        pass
    return time.thread_time() - started


async def test_a_computing_callback_is_reported_as_busy_for_at_least_its_cpu_time(tmp_path: Path) -> None:
    """A stall of waiting (for a CPU, the GIL) and one of computing look alike in lateness; the busy
    figure counts only the loop thread's own CPU time, so a busy machine cannot inflate it."""
    watchdog = LoopWatchdog(tmp_path / STALL_FILE, interval=INTERVAL)
    task = asyncio.create_task(watchdog.watch())
    try:
        await eventually(lambda: watchdog.ticks >= 3)
        burnt = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(lambda: burnt.set_result(burn_cpu(BLOCK)))
        used = await burnt
        ticks = watchdog.ticks
        await eventually(lambda: watchdog.ticks > ticks)
    finally:
        task.cancel()
    # The burn lies wholly between two ticks, and so does its CPU time.
    assert watchdog.busiest >= used >= BLOCK
    assert reported(tmp_path / STALL_FILE)["longest_busy_ms"] >= round(used * 1000, 2) - 0.01


async def test_a_new_watchdog_overwrites_the_report_of_an_earlier_run(tmp_path: Path) -> None:
    report = tmp_path / STALL_FILE
    report.write_text(json.dumps({"longest_stall_ms": 9999.0, "ticks": 5, "interval_ms": 20.0}))
    watchdog = LoopWatchdog(report, interval=INTERVAL)
    task = asyncio.create_task(watchdog.watch())
    try:
        await eventually(lambda: watchdog.ticks >= 1)
    finally:
        task.cancel()
    assert reported(report)["longest_stall_ms"] < 9999.0


def test_an_unwritable_report_costs_the_report_not_the_watchdog(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    watchdog = LoopWatchdog(blocker / STALL_FILE)  # its parent is a regular file
    watchdog.write()
    assert not (blocker / STALL_FILE).exists()


async def test_the_daemon_reports_its_own_stall_in_the_state_dir(api_with: ApiFactory, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Through the app, with the setting on: this test shares the server's loop, so blocking it here
    stalls the server exactly as a blocking handler would."""
    api = await api_with(loop_watchdog=True)
    report = tmp_path / "state" / STALL_FILE
    await api.json("GET", "/health")
    await eventually(report.exists)  # the watchdog started with the app
    caplog.set_level(logging.INFO, logger="daemon.watchdog")
    held = block_the_loop(BLOCK)
    await eventually(lambda: reported(report).get("longest_stall_ms", 0) >= (held - 0.02) * 1000)
    assert any("event loop stalled for" in record.getMessage() for record in caplog.records)
    await api.client.close()
    assert any("longest event-loop stall:" in record.getMessage() for record in caplog.records)


async def test_the_watchdog_is_off_by_default(api_with: ApiFactory, tmp_path: Path) -> None:
    api = await api_with()
    await api.json("GET", "/health")
    assert not (tmp_path / "state" / STALL_FILE).exists()
