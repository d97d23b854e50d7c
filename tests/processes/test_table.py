"""The process table without HTTP: forgetting finished processes, the running cap, sweeping old logs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from daemon.config import Config
from daemon.errors import ApiError
from daemon.owner import Owner
from daemon.processes.table import FORGET_AFTER, Process, ProcessTable
from tests.conftest import FakeClock, make_config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, log_retention=3600)


async def _finished(table: ProcessTable, command: str, home: str) -> Process:
    process = await table.start(command, home, None, Owner())
    await process.wait(30)
    assert not process.running
    return process


async def test_finished_processes_are_forgotten_after_five_minutes(config: Config) -> None:
    clock = FakeClock()
    table = ProcessTable(config, clock=clock)
    try:
        process = await _finished(table, "echo hi", config.home)
        assert process.finished_at == 1000.0
        clock.now = 1000.0 + FORGET_AFTER
        assert await table.get(process.id, Owner()) is process, "not yet: exactly FORGET_AFTER has passed"
        clock.now = 1000.0 + FORGET_AFTER + 1
        with pytest.raises(ApiError) as caught:
            await table.get(process.id, Owner())
        assert caught.value.status == 404
        assert await table.owned_by(Owner()) == []
    finally:
        await table.close()


async def test_only_the_expired_are_forgotten_running_ones_never(config: Config) -> None:
    clock = FakeClock()
    table = ProcessTable(config, clock=clock)
    try:
        # The first two end at 1000, the third at 1200: which ends first no longer depends on the machine.
        old = [await _finished(table, f"echo {index}", config.home) for index in range(2)]
        clock.now = 1200.0
        recent = await _finished(table, "echo 2", config.home)
        running = await table.start("sleep 30", config.home, None, Owner())
        clock.now = 1000.0 + FORGET_AFTER + 1
        assert [process.id for process in await table.owned_by(Owner())] == [recent.id, running.id]
        assert all(process.finished_at == 1000.0 for process in old)
        await table.kill(running, force=True)
        assert [process.id for process in await table.owned_by(Owner())] == [recent.id, running.id]
        clock.now += FORGET_AFTER + 1
        assert await table.owned_by(Owner()) == [], "a killed process is forgotten like a finished one"
    finally:
        await table.close()


async def test_running_processes_are_capped_and_finished_ones_do_not_count(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_processes=2)
    table = ProcessTable(config)
    try:
        await _finished(table, "true", config.home)
        sleepers = [await table.start("sleep 30", config.home, None, Owner()) for _ in range(2)]
        assert table.running_count == 2
        with pytest.raises(ApiError) as caught:
            await table.start("echo refused", config.home, None, Owner())
        assert caught.value.status == 429 and "Too many running processes (2)" in caught.value.detail
        await table.kill(sleepers[0], force=True)
        assert table.running_count == 1
        await _finished(table, "echo room again", config.home)
    finally:
        await table.close()
    assert table.running_count == 0


async def test_a_command_that_cannot_start_does_not_take_a_slot(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_processes=1)
    table = ProcessTable(config)
    try:
        failed = await table.start("echo \u0000", config.home, None, Owner())
        assert failed.exit_code == 127 and table.running_count == 0
        await _finished(table, "true", config.home)
    finally:
        await table.close()


async def test_old_logs_are_swept_but_listed_ones_are_kept(config: Config) -> None:
    table = ProcessTable(config)
    try:
        process = await _finished(table, "echo kept", config.home)
        await process.log.close()
        old = config.process_log_dir / "20200101-000000-aaaaaa.jsonl"
        fresh = config.process_log_dir / "20990101-000000-bbbbbb.jsonl"
        for path in (old, fresh):
            path.write_text("{}\n")
        two_hours_ago = time.time() - 7200
        os.utime(old, (two_hours_ago, two_hours_ago))
        os.utime(process.log.path, (two_hours_ago, two_hours_ago))
        assert table.sweep_logs() == [old.name]
        assert not old.exists() and fresh.exists() and process.log.path.exists()
    finally:
        await table.close()



async def test_an_id_already_taken_is_drawn_again(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    table = ProcessTable(config)
    try:
        draws = iter(["aaaaaa", "aaaaaa", "bbbbbb", "cccccc", "dddddd"])
        monkeypatch.setattr("daemon.processes.table.secrets.token_hex", lambda _: next(draws))
        first = await _finished(table, "echo first", config.home)
        second = await _finished(table, "echo second", config.home)
        assert second.id != first.id and second.log.path != first.log.path
        # A log on disk (from before a restart) takes its name too: taken for the next few seconds.
        now = time.time()
        config.process_log_dir.mkdir(parents=True, exist_ok=True)
        for ahead in range(4):
            name = time.strftime("%Y%m%d-%H%M%S-", time.localtime(now + ahead)) + "cccccc.jsonl"
            config.process_log_dir.joinpath(name).write_text("")
        third = await _finished(table, "echo third", config.home)
        assert third.id.endswith("-dddddd")
        assert [process.id for process in await table.owned_by(Owner())] == [first.id, second.id, third.id]
    finally:
        await table.close()
