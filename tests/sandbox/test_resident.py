"""Resident sandboxes (daemon/resident.py): commands forked inside one kept-running sandbox get the
request's own environment, keep their exit codes, survive a neighbour's `kill -9 -1`, and the
sandbox goes away when idle, with the daemon, and with a removed tenant."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.sandbox import tree
from daemon import resident
from daemon.app import create_app
from daemon.processes.runner import SpawnGate, child_environment
from daemon.sandbox import Sandbox, interpreter_folders
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
from tests.mcp.test_mcp import local_url
from tests.test_cli import ROOT, call, environment
from tests.test_sandbox import _comm, _first_record
from tests.test_tenants import STRAY
from tests.test_users import homes

__all__ = ["homes"]  # a fixture: accounts with a prefix of this run's, removed afterwards

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


async def sandboxed(aiohttp_client: Any, workspace: Path) -> Api:
    config = make_config(workspace, cwd=workspace, state_dir=workspace / "state", sandbox="bwrap",
                         api_key_file=workspace / "keys" / "key")
    return Api(await aiohttp_client(create_app(config)))


@pytest.fixture
async def api_sandboxed(aiohttp_client: Any, workspace: Path) -> Api:
    return await sandboxed(aiohttp_client, workspace)


def bare(workspace: Path, **settings: Any) -> Sandbox:
    """A sandbox made by hand, showing the daemon's interpreter as `sandbox.from_config` does (a venv
    under /tmp, as in a CI clone, is under the sandbox's own /tmp otherwise): the launcher runs it."""
    return Sandbox("/usr/bin/bwrap", workspace, revealed=tuple(interpreter_folders()), **settings)


def pool_of(api: Api) -> resident.ResidentPool:
    pool: resident.ResidentPool | None = api.client.app[resident.POOL]
    assert pool is not None
    return pool


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for whoever inherited it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def parent_of(pid: int) -> int:
    return int(process_stats()[pid][1])


def launcher_pid(sandbox: resident.Resident) -> int:
    """The launcher: bwrap's one child (pid 1 inside, `--as-pid-1`)."""
    children = Path(f"/proc/{sandbox.pid}/task/{sandbox.pid}/children").read_text().split()
    assert len(children) == 1
    return int(children[0])


async def test_commands_run_in_the_resident_with_the_requests_own_env_and_cwd(api_sandboxed: Api,
                                                                               workspace: Path) -> None:
    api, pool = api_sandboxed, pool_of(api_sandboxed)
    (workspace / "first").mkdir()
    (workspace / "second").mkdir()
    first = await api.run("echo $SECRET_OF_FIRST; pwd", cwd=str(workspace / "first"),
                          env={"SECRET_OF_FIRST": "s3cret", "TERM": "first-term"})
    assert output_text(first).split() == ["s3cret", str(workspace / "first")]
    [sandbox] = pool.residents
    launcher = launcher_pid(sandbox)
    # The launcher started before any request: nothing of one is in its environment, nor the key.
    environ = Path(f"/proc/{launcher}/environ").read_bytes()
    assert b"s3cret" not in environ and b"OPEN_TERMINAL_" not in environ and KEY.encode() not in environ

    second = await api.run("echo \"[$SECRET_OF_FIRST][$ADDED][$TERM]\"; pwd; env | grep -c OPEN_TERMINAL_; "
                           "ls -l /proc/$$/fd/ > /tmp/fds; tr '\\n' ' ' < /tmp/fds; echo; echo $PPID",
                           cwd=str(workspace / "second"), env={"ADDED": "it's $x"})
    lines = output_text(second).split("\r\n")
    assert lines[0] == f"[][it's $x][{child_environment().get('TERM', '')}]"
    assert lines[1] == str(workspace / "second")
    assert lines[2] == "0"
    assert "socket:" not in lines[3] and "pipe:" not in lines[3], "the launcher's descriptors reached the command"
    assert lines[4] == "1", "the launcher (pid 1 inside) is the shell's parent"
    assert second["exit_code"] == 0 and pool.residents == [sandbox]
    running = await api.run("exec sleep 60", wait=0)
    record = await eventually(lambda: _first_record(running["log_path"]))
    assert parent_of(record["pid"]) == launcher  # the command's own pid, as the host numbers it
    assert _comm(record["pid"]) == "sleep"
    await api.json("DELETE", f"/execute/{running['id']}")


async def test_the_commands_of_one_sandbox_share_its_tmp_and_keep_their_exit_codes(api_sandboxed: Api) -> None:
    api = api_sandboxed
    assert (await api.run("echo kept > /tmp/note; exit 7"))["exit_code"] == 7
    shared = await api.run("cat /tmp/note")
    assert output_text(shared).strip() == "kept"
    assert (await api.run("kill -KILL $$"))["exit_code"] == -signal.SIGKILL  # a signal, not 128+n


async def test_under_limits_commands_start_cold_and_no_resident_is_started(aiohttp_client: Any,
                                                                            workspace: Path) -> None:
    config = make_config(workspace, cwd=workspace, state_dir=workspace / "state", sandbox="bwrap",
                         limit_processes=50)
    api = Api(await aiohttp_client(create_app(config)))
    reply = await api.run("cat /proc/1/comm")
    assert output_text(reply).strip() == "bwrap" and pool_of(api).residents == []


async def test_a_command_whose_pid_was_not_found_is_still_killed(api_sandboxed: Api,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the host's number for a command not be found (a /proc the daemon may not read), a kill
    must not wait forever on a signal it cannot send: the launcher sends it inside."""
    monkeypatch.setattr(resident, "_host_pid", lambda _launcher, _inner: 0)
    reply = await api_sandboxed.run("exec sleep 1000", wait=0)
    await api_sandboxed.json("DELETE", f"/execute/{reply['id']}")
    status = await api_sandboxed.json("GET", f"/execute/{reply['id']}/status?wait=20")
    assert status["status"] == "killed" and status["exit_code"] == -15, status


async def test_a_commands_kill_of_everything_leaves_the_sandbox_running(api_sandboxed: Api) -> None:
    """The attack: `kill -9 -1`, `kill -9 1` or `pkill python` from a command would end the launcher,
    and with it every command and shell of the user. As pid 1 it gets none of them."""
    api, pool = api_sandboxed, pool_of(api_sandboxed)
    await api.run("true")
    [sandbox] = pool.residents
    launcher = launcher_pid(sandbox)
    reply = await api.run("kill -KILL 1; kill -TERM 1; kill -INT 1; pkill -KILL opentermd-init; kill -KILL -1; "
                          "echo alive")
    assert "alive" in output_text(reply)
    after = await api.run("echo next")
    assert output_text(after).strip() == "next"
    assert pool.residents == [sandbox] and alive(launcher)


async def test_a_command_cannot_ptrace_the_launcher_or_open_its_socket(api_sandboxed: Api) -> None:
    api = api_sandboxed
    reply = await api.run("ls -l /proc/1/fd/ 2>&1 | head -3; "
                          "cat /proc/1/environ >/dev/null 2>&1 && echo read || echo refused")
    text = output_text(reply)
    assert "socket:" not in text and text.strip().endswith("refused")


async def test_an_idle_sandbox_is_closed_and_a_busy_one_is_not(workspace: Path) -> None:
    clock = FakeClock()
    box = bare(workspace, network=False, hidden=(workspace / "state",))
    pool = resident.ResidentPool(SpawnGate(), clock=clock, idle_seconds=60)
    try:
        await pool.prepare(box)
        [sandbox] = pool.residents
        master, slave = os.openpty()
        launch = pool.launch(box, ["/bin/sh", "-c", "read line"], child_environment(), slave)
        os.close(slave)
        assert launch is not None
        await launch.started
        clock.now = 2000.0
        assert pool.sweep() == 0, "a command still runs in it"
        os.write(master, b"done\n")
        assert await launch.ended == 0
        os.close(master)
        clock.now = 2059.0
        assert pool.sweep() == 0 and pool.residents == [sandbox]  # ended 59 s ago: kept
        clock.now = 2060.0
        assert pool.sweep() == 1 and pool.residents == []
        await eventually(lambda: not alive(sandbox.pid))
    finally:
        await pool.close()


async def test_each_sandbox_has_its_own_resident(workspace: Path) -> None:
    (workspace / "other").mkdir()
    first, other = bare(workspace), bare(workspace / "other")
    pool = resident.ResidentPool(SpawnGate())
    try:
        await pool.prepare(first)
        await pool.prepare(other)
        assert {sandbox.sandbox for sandbox in pool.residents} == {first, other}
        pids = [sandbox.pid for sandbox in pool.residents]
    finally:
        await pool.close()
    assert pool.residents == [] and not any(alive(pid) for pid in pids)


async def test_ending_a_sandbox_ends_what_left_its_commands_group(workspace: Path) -> None:
    """What a removed tenant's sandbox gets (daemon/tenants.py `end_sandboxes`), root or not: a
    `setsid` stray, which no group kill reaches, ends with its sandbox; the other sandbox runs on."""
    (workspace / "other").mkdir()
    doomed, kept = bare(workspace), bare(workspace / "other")
    pool = resident.ResidentPool(SpawnGate())
    try:
        for box in (doomed, kept):
            await pool.prepare(box)
            master, slave = os.openpty()
            launch = pool.launch(box, ["/bin/sh", "-c", STRAY], child_environment(), slave)
            os.close(slave)
            assert launch is not None and await launch.ended == 0
            os.close(master)
        [gone_one] = [sandbox for sandbox in pool.residents if sandbox.sandbox == doomed]
        inside = tree(gone_one.pid)[1:]
        assert len(inside) == 2  # the launcher and the stray
        assert pool.end_where(lambda box: box == doomed) == 1
        await eventually(lambda: not any(alive(pid) for pid in [gone_one.pid, *inside]))
        assert [sandbox.sandbox for sandbox in pool.residents] == [kept]
    finally:
        await pool.close()


async def test_a_sandbox_whose_resident_cannot_start_starts_cold_for_a_while(
        workspace: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    broken = bare(workspace / "missing")  # bwrap cannot bind a folder that is not there
    pool = resident.ResidentPool(SpawnGate(), clock=clock)
    try:
        await pool.prepare(broken)
        await eventually(lambda: "ended before it was ready" in caplog.text)  # bwrap reaped
        assert pool.residents == []
        caplog.clear()
        clock.now += resident.RETRY_SECONDS - 1
        await pool.prepare(broken)  # not tried again yet: no second warning, no process
        assert pool.launch(broken, ["/bin/true"], {}, -1) is None and caplog.text == ""
        clock.now += 1
        await pool.prepare(broken)
        await eventually(lambda: "ended before it was ready" in caplog.text)
    finally:
        await pool.close()


async def test_a_start_the_launcher_cannot_make_reports_127(workspace: Path) -> None:
    box = bare(workspace)
    pool = resident.ResidentPool(SpawnGate())
    try:
        await pool.prepare(box)
        master, slave = os.openpty()
        launch = pool.launch(box, ["/nonexistent/program"], child_environment(), slave)
        os.close(slave)
        assert launch is not None
        assert await launch.ended == 127
        os.close(master)
    finally:
        await pool.close()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None, reason="accounts need root")
async def test_each_users_commands_run_as_their_account_in_their_own_resident(
        api_with: ApiFactory, homes: tuple[Path, str], workspace: Path) -> None:
    folder, prefix = homes
    api = await api_with(multi_user=True, user_prefix=prefix, user_homes=folder, sandbox="bwrap",
                         cwd=workspace, state_dir=workspace / "state")
    pool = pool_of(api)
    users = [{"X-User-Id": "resident-alice"}, {"X-User-Id": "resident-bob"}]
    for user in users:
        await api.run("true", headers=user)
    assert len(pool.residents) == 2
    launchers = {launcher_pid(sandbox) for sandbox in pool.residents}
    for user in reversed(users):  # bob first: he must not get alice's, made first
        reply = await api.run("id -u; echo $HOME $USER; pwd; touch /tmp/mine-$USER; ls /tmp | grep -c mine-",
                              headers=user)
        account = pwd.getpwnam(account_name(user["X-User-Id"], prefix))
        assert output_text(reply).split() == [str(account.pw_uid), account.pw_dir, account.pw_name,
                                              account.pw_dir, "1"]  # each user's /tmp is their own
        running = await api.run("exec sleep 60", wait=0, headers=user)
        record = await eventually(lambda: _first_record(running["log_path"]))  # noqa: B023
        launcher = parent_of(record["pid"])
        assert launcher in launchers and os.stat(f"/proc/{launcher}").st_uid == account.pw_uid
        launchers.discard(launcher)  # the other user's is another
        await api.json("DELETE", f"/execute/{running['id']}", headers=user)


def test_resident_sandboxes_die_with_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    command = [sys.executable, "-m", "daemon", "run", "--port", "0", "--api-key", KEY, "--sandbox", "bwrap",
               "--cwd", str(tmp_path / "work")]
    with subprocess.Popen(command, cwd=ROOT, env=environment(tmp_path), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as daemon:
        try:
            reply = call(f"{local_url(daemon)}/execute?wait=10", KEY, "POST", {"command": STRAY})
            assert isinstance(reply, dict) and reply["exit_code"] == 0
            living = _bwraps_of(daemon.pid)
            assert living != []
            inside = tree(living[0])
            assert len(inside) == 3  # bwrap, the launcher and a stray that left its command's session
        finally:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=15)
    assert wait_until(lambda: not any(alive(pid) for pid in inside), timeout=20)


def _bwraps_of(parent: int) -> list[int]:
    """The daemon's bwrap children that are alive: after its commands have ended, the resident."""
    return [pid for pid, fields in process_stats().items()
            if int(fields[1]) == parent and fields[0] != "Z" and _comm(pid) == "bwrap"]
