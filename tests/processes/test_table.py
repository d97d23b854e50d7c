"""The process table without HTTP: forgetting finished processes and sweeping old logs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from daemon.config import Config
from daemon.errors import ApiError
from daemon.owner import Owner
from daemon.processes.table import FORGET_AFTER, ProcessTable
from tests.conftest import make_config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, log_retention=3600)


async def test_finished_processes_are_forgotten_after_five_minutes(config: Config) -> None:
    table = ProcessTable(config)
    try:
        process = await table.start("echo hi", config.home, None, Owner())
        await process.wait(10)
        assert table.get(process.id, Owner()) is process
        assert process.finished_at is not None
        process.finished_at -= FORGET_AFTER + 1
        with pytest.raises(ApiError) as caught:
            table.get(process.id, Owner())
        assert caught.value.status == 404
        assert table.owned_by(Owner()) == []
    finally:
        await table.close()


async def test_only_the_expired_are_forgotten_running_ones_never(config: Config) -> None:
    table = ProcessTable(config)
    try:
        finished = [await table.start(f"echo {index}", config.home, None, Owner()) for index in range(3)]
        running = await table.start("sleep 30", config.home, None, Owner())
        for process in finished:
            await process.wait(10)
        for process in finished[:2]:
            assert process.finished_at is not None
            process.finished_at -= FORGET_AFTER + 1
        assert [process.id for process in table.owned_by(Owner())] == [finished[2].id, running.id]
        await table.kill(running, force=True)
        assert [process.id for process in table.owned_by(Owner())] == [finished[2].id, running.id]
        for process in (finished[2], running):
            assert process.finished_at is not None
            process.finished_at -= FORGET_AFTER + 1
        assert table.owned_by(Owner()) == [], "a killed process is forgotten like a finished one"
    finally:
        await table.close()


async def test_old_logs_are_swept_but_listed_ones_are_kept(config: Config) -> None:
    table = ProcessTable(config)
    try:
        process = await table.start("echo kept", config.home, None, Owner())
        await process.wait(10)
        await process.log.close()
        old = config.process_log_dir / "20200101-000000-aaaaaa.jsonl"
        fresh = config.process_log_dir / "20990101-000000-bbbbbb.jsonl"
        for path in (old, fresh):
            path.write_text("{}\n")
        two_hours_ago = time.time() - 7200
        os.utime(old, (two_hours_ago, two_hours_ago))
        os.utime(process.log.path, (two_hours_ago, two_hours_ago))
        assert table.sweep_logs() == 1
        assert not old.exists() and fresh.exists() and process.log.path.exists()
    finally:
        await table.close()
