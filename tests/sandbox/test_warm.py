"""Warm sandboxes (daemon/warm.py): a pooled command is the request's own, and the pool goes away."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from daemon import warm
from daemon.app import create_app
from daemon.processes.runner import SpawnGate, child_environment, warm_spawn
from daemon.sandbox import Sandbox
from daemon.users import account_name
from tests.conftest import (
    KEY,
    Api,
    ApiFactory,
    FakeClock,
    eventually,
    make_config,
    output_text,
    process_stats,
    wait_until,
)
from tests.test_cli import ROOT, environment
from tests.test_sandbox import _first_record
from tests.test_users import homes

__all__ = ["homes"]  # a fixture: accounts with a prefix of this run's, removed afterwards

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


async def sandboxed(aiohttp_client: Any, workspace: Path) -> Api:
    config = make_config(workspace, cwd=workspace, state_dir=workspace / "state", sandbox="bwrap",
                         api_key_file=workspace / "keys" / "key")
    return Api(await aiohttp_client(create_app(config)))


def pool_of(api: Api) -> warm.WarmPool:
    pool: warm.WarmPool | None = api.client.app[warm.POOL]
    assert pool is not None
    return pool


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for whoever inherited it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


async def test_a_pooled_command_gets_the_requests_env_and_cwd_not_a_previous_ones(api_sandboxed: Api,
                                                                                  workspace: Path) -> None:
    api, pool = api_sandboxed, pool_of(api_sandboxed)
    (workspace / "first").mkdir()
    (workspace / "second").mkdir()
    first = await api.run("echo $SECRET_OF_FIRST; pwd", cwd=str(workspace / "first"),
                              env={"SECRET_OF_FIRST": "s3cret", "TERM": "first-term"})
    assert output_text(first).split() == ["s3cret", str(workspace / "first")]
    entries = await eventually(lambda: pool.entries)
    warm_pid = entries[0].pid
    # The waiting entry started before any request's values: none are in its environment.
    environ = Path(f"/proc/{warm_pid}/environ").read_bytes()
    assert b"s3cret" not in environ and b"OPEN_TERMINAL_" not in environ

    second = await api.run("echo \"[$SECRET_OF_FIRST][$ADDED][$TERM]\"; pwd; env | grep -c OPEN_TERMINAL_; "
                               "[ -e /proc/$$/fd/3 ] && echo pipe-open || echo pipe-closed",
                           cwd=str(workspace / "second"), env={"ADDED": "it's $x"})
    lines = output_text(second).split("\r\n")
    record = await eventually(lambda: _first_record(second["log_path"]))
    assert record["pid"] == warm_pid  # it ran in the warm entry
    # Unset, not the first's; set with quotes intact; the daemon's own TERM (the first's was per request).
    assert lines[0] == f"[][it's $x][{child_environment().get('TERM', '')}]"
    assert lines[1] == str(workspace / "second")
    assert lines[2] == "0"
    assert lines[3] == "pipe-closed", "the script pipe reached the command"
    assert second["exit_code"] == 0


async def test_a_pooled_command_keeps_its_exit_code(api_sandboxed: Api,
                                                                        workspace: Path) -> None:
    api, pool = api_sandboxed, pool_of(api_sandboxed)
    await api.run("true")
    await eventually(lambda: pool.entries)
    assert (await api.run("exit 7"))["exit_code"] == 7
    await eventually(lambda: pool.entries)
    gone = await api.run("echo ran", cwd=str(workspace))
    assert gone["exit_code"] == 0 and "ran" in output_text(gone)


async def test_an_idle_pool_is_dropped(workspace: Path) -> None:
    clock = FakeClock()
    box = Sandbox("/usr/bin/bwrap", workspace, network=False, hidden=(workspace / "state",))
    pool = warm.WarmPool(SpawnGate(), warm_spawn, child_environment(), clock=clock, idle_seconds=60)
    try:
        assert pool.take(box, "true", str(workspace), child_environment()) is None  # cold; fills one
        entries = await eventually(lambda: pool.entries)
        assert len(entries) == 1 and alive(entries[0].pid)
        clock.now = 1059.0
        assert pool.sweep() == 0 and pool.entries == entries  # used 59 s ago: kept
        clock.now = 1060.0
        assert pool.sweep() == 1 and pool.entries == []
        await eventually(lambda: not alive(entries[0].pid))
    finally:
        await pool.close()


async def test_each_sandbox_has_its_own_entries(workspace: Path) -> None:
    (workspace / "other").mkdir()
    first = Sandbox("/usr/bin/bwrap", workspace)
    other = Sandbox("/usr/bin/bwrap", workspace / "other")
    pool = warm.WarmPool(SpawnGate(), warm_spawn, child_environment())
    try:
        pool.take(first, "true", str(workspace), {})
        await eventually(lambda: len(pool.entries) == 1)
        assert pool.take(other, "true", str(workspace / "other"), {}) is None  # not the first's
        await eventually(lambda: len(pool.entries) == 2)
    finally:
        await pool.close()
    assert pool.entries == []


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None, reason="accounts need root")
async def test_pooled_commands_run_as_their_users_own_account(api_with: ApiFactory, homes: tuple[Path, str],
                                                              workspace: Path) -> None:
    folder, prefix = homes
    api = await api_with(multi_user=True, user_prefix=prefix, user_homes=folder, sandbox="bwrap",
                         cwd=workspace, state_dir=workspace / "state")
    pool = pool_of(api)
    users = [{"X-User-Id": "warm-alice"}, {"X-User-Id": "warm-bob"}]
    for user in users:  # each user's first command starts cold and leaves a warm sandbox of that user's
        await api.run("true", headers=user)
    await eventually(lambda: len(pool.entries) == 2)
    waiting = {entry.pid for entry in pool.entries}
    for user in reversed(users):  # bob first: he must not get alice's, made first
        reply = await api.run("id -u; echo $HOME $USER; pwd", headers=user)
        record = await eventually(lambda: _first_record(reply["log_path"]))  # noqa: B023
        assert record["pid"] in waiting  # pooled
        account = pwd.getpwnam(account_name(user["X-User-Id"], prefix))
        assert output_text(reply).split() == [str(account.pw_uid), account.pw_dir, account.pw_name, account.pw_dir]


def test_pool_entries_die_with_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    command = [sys.executable, "-m", "daemon", "run", "--port", "0", "--api-key", KEY, "--sandbox", "bwrap",
               "--cwd", str(tmp_path / "work")]
    with subprocess.Popen(command, cwd=ROOT, env=environment(tmp_path), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as daemon:
        try:
            url = _local_url(daemon)
            _execute(url, "true")
            assert wait_until(lambda: _bwraps_of(daemon.pid) != [], timeout=20)
            waiting = _bwraps_of(daemon.pid)
        finally:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=15)
    assert wait_until(lambda: not any(alive(pid) for pid in waiting), timeout=20)


def _local_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        if "Local URL:" in line:
            return line.split("Local URL:", 1)[1].strip()
    raise AssertionError(process.communicate()[1])


def _execute(url: str, command: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/execute?wait=10", data=json.dumps({"command": command}).encode(),
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        reply: dict[str, Any] = json.load(response)
        return reply


def _bwraps_of(parent: int) -> list[int]:
    """The daemon's bwrap children that are alive: after a command has ended, its warm entry."""
    return [pid for pid, fields in process_stats().items()
            if int(fields[1]) == parent and fields[0] != "Z" and _command_name(pid) == "bwrap"]


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.fixture
async def api_sandboxed(aiohttp_client: Any, workspace: Path) -> Api:
    return await sandboxed(aiohttp_client, workspace)
