"""The spawn gate: a burst of starts is paced, a few per event-loop iteration, in arrival order.

`posix_spawn` holds the GIL and the loop until the child has exec'd; 500 requests arriving together
started 170 shells in one iteration and stalled the loop past 100 ms (bench/safety.py's load). These
tests check the pacing itself (loop iterations counted, no timings) and what the tables built on it
promise: the caps still hold for starts that waited their turn, and a cancelled wait starts nothing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.errors import ApiError
from daemon.owner import Owner
from daemon.processes.runner import SpawnGate
from daemon.processes.table import ProcessTable
from daemon.terminals.session import SessionOptions
from daemon.terminals.table import TerminalTable
from tests.conftest import make_config


class Iterations:
    """Counts event-loop iterations: a callback that schedules itself again runs once in each."""

    def __init__(self) -> None:
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


async def test_a_burst_starts_in_arrival_order_at_most_per_turn_an_iteration() -> None:
    gate = SpawnGate(per_turn=3)
    iterations = Iterations()
    started: list[tuple[int, int]] = []

    def start(index: int) -> Callable[[], int]:
        def spawn() -> int:
            started.append((index, iterations.count))
            return index * 10
        return spawn

    try:
        results = await asyncio.gather(*(gate.run(start(index)) for index in range(10)))
    finally:
        iterations.stop()
    assert results == [index * 10 for index in range(10)], "each caller gets its own start's result"
    assert [index for index, _ in started] == list(range(10)), "first come, first started"
    per_iteration = Counter(iteration for _, iteration in started)
    assert max(per_iteration.values()) == 3 and len(per_iteration) == 4, per_iteration
    assert gate.waiting == 0


async def test_a_failing_start_fails_its_own_caller_only() -> None:
    gate = SpawnGate(per_turn=2)

    def refuse() -> int:
        raise OSError(24, "Too many open files")

    outcomes = await asyncio.gather(gate.run(lambda: 1), gate.run(refuse), gate.run(lambda: 3),
                                    return_exceptions=True)
    assert outcomes[0] == 1 and outcomes[2] == 3
    assert isinstance(outcomes[1], OSError) and outcomes[1].errno == 24


async def test_a_caller_cancelled_while_waiting_starts_nothing() -> None:
    gate = SpawnGate(per_turn=1)
    started: list[str] = []

    def start(name: str) -> str:
        started.append(name)
        return name

    first = asyncio.ensure_future(gate.run(lambda: start("first")))
    cancelled = asyncio.ensure_future(gate.run(lambda: start("cancelled")))
    last = asyncio.ensure_future(gate.run(lambda: start("last")))
    await asyncio.sleep(0)  # every caller is now waiting at the gate; its first turn has not come
    assert gate.waiting == 3 and started == []
    cancelled.cancel()
    assert await first == "first" and await last == "last"
    assert started == ["first", "last"]
    assert cancelled.cancelled()


def test_a_gate_lets_at_least_one_through() -> None:
    with pytest.raises(ValueError):
        SpawnGate(per_turn=0)


async def test_the_process_cap_holds_for_starts_that_waited_their_turn(tmp_path: Path) -> None:
    """Four at once against a cap of two: each passes the early check, the turn's check refuses two."""
    config = make_config(tmp_path, max_processes=2)
    table = ProcessTable(config, gate=SpawnGate(per_turn=1))
    try:
        outcomes = await asyncio.gather(*(table.start("sleep 30", config.home, None, Owner()) for _ in range(4)),
                                        return_exceptions=True)
        refused = [outcome for outcome in outcomes if isinstance(outcome, ApiError)]
        assert [error.status for error in refused] == [429, 429]
        assert table.running_count == 2
        assert [process.command for process in await table.owned_by(Owner())] == ["sleep 30", "sleep 30"]
    finally:
        await table.close()


async def test_a_burst_of_commands_runs_every_one_in_request_order(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    table = ProcessTable(config, gate=SpawnGate(per_turn=2))
    try:
        processes = await asyncio.gather(*(table.start(f"echo {index}", config.home, None, Owner())
                                           for index in range(12)))
        await asyncio.gather(*(process.wait(30) for process in processes))
        assert [process.command for process in await table.owned_by(Owner())] == [f"echo {i}" for i in range(12)]
        assert all(process.exit_code == 0 for process in processes)
    finally:
        await table.close()


async def test_the_terminal_cap_holds_for_creates_that_waited_their_turn(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_sessions=2)
    table = TerminalTable(config, gate=SpawnGate(per_turn=1))
    try:
        outcomes = await asyncio.gather(
            *(table.create(Owner(), SessionOptions(command="cat", cwd=config.home)) for _ in range(4)),
            return_exceptions=True)
        refused = [outcome for outcome in outcomes if isinstance(outcome, ApiError)]
        assert [error.status for error in refused] == [429, 429]
        assert len(table.owned_by(Owner())) == 2
    finally:
        await table.close()
