"""Limits per command tree, per terminal and per user, over a real server, real cgroups and rlimits."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from daemon.cgroups import mounts, own_groups
from daemon.cli import Exit, main
from daemon.config import ConfigError, load
from daemon.limit_endpoints import LIMITS
from daemon.limits import LimitGroup, LimitsUnavailable, TreeLimits, UserLimits, build, parse_size, user_group
from tests.conftest import Api, ApiFactory, eventually, output_text
from tests.terminals.test_terminals import attach, create, read_until

MIB = 1024 * 1024


def _cgroup_v1_writable() -> bool:
    try:
        found = build(TreeLimits(processes=10), UserLimits(), "cgroup1")
    except LimitsUnavailable:
        return False
    found.close()
    return True


needs_cgroups = pytest.mark.skipif(not _cgroup_v1_writable(), reason="no writable cgroup v1 pids+memory here")


def groups_of(api: Api) -> Any:
    return api.client.app[LIMITS]


def live_groups(api: Api) -> list[Path]:
    """Every tree group this server's limits made that still exists."""
    limits = groups_of(api)
    bases = limits._cgroups.paths("") if limits._cgroups is not None else []
    return [tree for base in bases if base.is_dir() for user in base.iterdir() if user.is_dir()
            for tree in user.iterdir() if tree.is_dir()]


def test_sizes_and_settings(tmp_path: Path) -> None:
    assert parse_size("2G") == 2 * 1024**3
    assert parse_size("512M") == 512 * MIB
    assert parse_size("1.5GiB") == 3 * 512 * MIB
    assert parse_size("off") is None and parse_size("0") is None
    with pytest.raises(ValueError):
        parse_size("lots")
    env = {"OPEN_TERMINAL_LIMIT_MEMORY": "64M", "OPEN_TERMINAL_LIMIT_PROCESSES": "50",
           "OPEN_TERMINAL_USER_LIMIT_PROCESSES": "200", "OPEN_TERMINAL_LIMIT_CPU_SECONDS": "5"}
    config_file = tmp_path / "c.toml"
    config_file.write_text('limit_memory = "1G"\nlimit_file_size = "10M"\n')
    settings = load({"limit_processes": "7"}, {**env, "OPEN_TERMINAL_API_KEY": "k"}, config_file=config_file,
                    system_file=tmp_path / "none.toml")
    # flag > env > TOML
    assert (settings.limit_processes, settings.limit_memory, settings.limit_file_size) == (7, 64 * MIB, 10 * MIB)
    assert (settings.user_limit_processes, settings.limit_cpu_seconds, settings.limit_mechanism) == (200, 5, "auto")
    with pytest.raises(ConfigError, match="OPEN_TERMINAL_LIMIT_MECHANISM"):
        load({}, {"OPEN_TERMINAL_API_KEY": "k", "OPEN_TERMINAL_LIMIT_MECHANISM": "docker"},
             system_file=tmp_path / "none.toml", config_file=config_file)


def test_cgroup_files_parsed() -> None:
    own = own_groups("8:pids:/\n4:memory:/process_api/abc\n0::/\n")
    assert own == {"pids": "/", "memory": "/process_api/abc", "": "/"}
    line = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw"
    assert mounts(line) == [("cgroup2", Path("/sys/fs/cgroup/unified"), {"rw"})]


async def test_limits_off_is_todays_spawn(api: Api) -> None:
    """No limit set: no group, no prefix, no `limit` field; the command sees the daemon's own groups."""
    reply = await api.run("cat /proc/self/cgroup; ulimit -f")
    assert "opentermd-" not in output_text(reply)
    assert "limit" not in reply
    assert (await api.json("GET", "/api/limits"))["mechanism"] == "off"


@needs_cgroups
async def test_command_joins_its_groups_before_exec_and_they_go_after(api_with: ApiFactory) -> None:
    api = await api_with(limit_processes=50, limit_memory=64 * MIB)
    described = await api.json("GET", "/api/limits")
    assert described["mechanism"] == "cgroup1" and described["tree"]["processes"] == 50
    reply = await api.run("cat /proc/self/cgroup")
    # The first thing the command does already runs inside its tree's group, under its user's.
    lines = [line for line in output_text(reply).splitlines() if ":pids:" in line or ":memory:" in line]
    assert len(lines) == 2 and all(f"/{user_group('')}/cmd-{reply['id']}" in line for line in lines), lines
    assert live_groups(api) == []  # removed when the tree ended


@needs_cgroups
async def test_memory_hog_is_killed_and_reported(api_with: ApiFactory) -> None:
    api = await api_with(limit_memory=48 * MIB)
    hog = "python3 -c 'import time; b = bytearray(400 * 1024 * 1024); time.sleep(60)'"
    reply = await api.run(hog, wait=60)
    assert reply["status"] == "done" and reply["limit"] == "memory", reply
    assert reply["exit_code"] in (-9, 137)
    status = await api.json("GET", f"/execute/{reply['id']}/status")
    assert status["limit"] == "memory"
    log = Path(reply["log_path"])  # its end record says so too (written by the batched log writer)
    end = await eventually(lambda: [line for line in log.read_text().splitlines() if '"type": "end"' in line])
    assert json.loads(end[0])["limit"] == "memory"
    assert (await api.run("echo fine"))["exit_code"] == 0
    assert "limit" not in await api.run("echo fine")


@needs_cgroups
async def test_fork_bomb_stops_at_the_cap_and_others_are_served(api_with: ApiFactory) -> None:
    """bash's `:(){ :|:; }; :` (the classic without `&`: its top shell stays, so the bomb lives until
    killed, and bash retries a refused fork instead of giving up) held at 50 processes. Niced, so that
    the tests running beside it on a 2-core machine are not starved while it spins."""
    api = await api_with(limit_processes=50)
    bomb = await api.json("POST", "/execute", json={"command": "exec nice -n 19 bash -c ':(){ :|:; }; :'"},
                          headers={"X-User-Id": "mallory"})
    limits = groups_of(api)
    group = next(g for g in limits._open if g.name == f"cmd-{bomb['id']}")
    pids_dir = limits.controller_path(group, "pids")
    try:
        # The bomb reached its cap and the kernel is refusing its forks.
        await eventually(lambda: int((pids_dir / "pids.events").read_text().split()[1]) > 0, timeout=60)
        assert int((pids_dir / "pids.current").read_text()) <= 50
        assert (await api.json("GET", "/health", auth=False)) == {"status": "ok"}
        other = await api.run("echo still here", wait=60, headers={"X-User-Id": "bob"})
        assert output_text(other).strip() == "still here" and other["exit_code"] == 0
        running = await api.json("GET", f"/execute/{bomb['id']}/status", headers={"X-User-Id": "mallory"})
        assert running["status"] == "running"
        await api.json("DELETE", f"/execute/{bomb['id']}?force=true", headers={"X-User-Id": "mallory"})
    finally:
        limits.kill(group)
    status = await api.json("GET", f"/execute/{bomb['id']}/status?wait=30", headers={"X-User-Id": "mallory"})
    assert status["status"] == "killed" and status["limit"] == "processes", status
    await eventually(lambda: not pids_dir.exists())


@needs_cgroups
async def test_user_total_spans_their_trees(api_with: ApiFactory) -> None:
    """Two of one user's commands share the user's cap: the second cannot fork past what is left."""
    api = await api_with(user_limit_processes=6)
    holder = await api.json("POST", "/execute", json={"command": "sleep 60 & sleep 60 & sleep 60 & wait"},
                            headers={"X-User-Id": "ann"})
    limits = groups_of(api)
    group = next(g for g in limits._open if g.name == f"cmd-{holder['id']}")
    await eventually(lambda: int((limits.controller_path(group, "pids") / "pids.current").read_text()) >= 4)
    try:
        squeezed = await api.run("for i in 1 2 3 4; do sleep 5 & done; wait", headers={"X-User-Id": "ann"}, wait=30)
        assert "fork" in output_text(squeezed).lower() or "resource" in output_text(squeezed).lower(), squeezed
        assert squeezed["limit"] == "processes"
        # Another user is not counted against ann's total.
        free = await api.run("for i in 1 2 3 4; do true & done; wait; echo ok", headers={"X-User-Id": "ben"})
        assert output_text(free).strip() == "ok" and "limit" not in free
    finally:
        limits.kill(group)


async def test_file_size_cap(api_with: ApiFactory, tmp_path: Path) -> None:
    api = await api_with(limit_file_size=100_000)
    target = tmp_path / "big"
    reply = await api.run(f"head -c 1000000 /dev/zero > {target}")
    assert reply["limit"] == "file_size", reply
    assert target.stat().st_size == 100_000
    small = await api.run(f"head -c 1000 /dev/zero > {tmp_path / 'small'}; echo ok")
    assert output_text(small).strip() == "ok" and "limit" not in small


async def test_cpu_seconds(api_with: ApiFactory) -> None:
    api = await api_with(limit_cpu_seconds=1)
    reply = await api.run("while :; do :; done", wait=60)
    assert reply["limit"] == "cpu" and reply["exit_code"] in (-24, 152), reply


async def test_rlimit_mechanism(api_with: ApiFactory) -> None:
    """Without cgroups: the address space of each process is capped (a hog fails to allocate)."""
    api = await api_with(limit_memory=64 * MIB, limit_mechanism="rlimit")
    assert (await api.json("GET", "/api/limits"))["mechanism"] == "rlimit"
    reply = await api.run("python3 -c 'bytearray(400 * 1024 * 1024)'")
    assert "MemoryError" in output_text(reply) and reply["exit_code"] == 1
    assert "opentermd-" not in output_text(await api.run("cat /proc/self/cgroup"))


@needs_cgroups
async def test_terminal_has_its_own_group(api_with: ApiFactory) -> None:
    api = await api_with(limit_processes=30)
    session = await create(api)
    socket = await attach(api, session["id"])
    await socket.send_bytes(b"cat /proc/self/cgroup | grep pids; echo DONE-$((40+2))\n")
    text = await read_until(socket, b"DONE-42")
    await socket.close()  # the viewer left: the session (not detachable) ends, and its group goes
    assert f"/term-{session['id']}" in text.decode(errors="replace")
    await eventually(lambda: live_groups(api) == [])


@needs_cgroups
def test_groups_removed_at_close_even_with_a_leftover() -> None:
    limits = build(TreeLimits(processes=5), UserLimits())
    group = limits.open("u", "cmd-x")
    assert isinstance(group, LimitGroup)
    paths = limits.group_paths(group)
    # The tree's shell ends at once; its background sleep is left in the group, an orphan.
    pid = os.posix_spawn("/bin/sh", group.wrap(["/bin/sh", "-c", "/bin/sleep 60 & echo $! > /dev/null"]), {})
    try:
        os.waitpid(pid, 0)
        assert (paths[0] / "cgroup.procs").read_text().strip()  # the sleep
        group.finished(0)
        assert paths[0].is_dir()  # still busy: lingering
        limits.close()
        assert not any(path.exists() for path in paths)
        assert not any(path.parent.parent.exists() for path in paths)  # the daemon's base group too
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def test_cli_refuses_a_mechanism_missing_here(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """This machine's cgroup2 mount has no controllers: asking for it is a clear refusal, not a crash."""
    environ = {"OPEN_TERMINAL_API_KEY": "k", "OPEN_TERMINAL_STATE_DIR": str(tmp_path / "state"),
               "HOME": str(tmp_path)}
    code = main(["run", "--cwd", str(tmp_path), "--limit-processes", "5", "--limit-mechanism", "cgroup2"], environ)
    assert code == Exit.USAGE
    assert "cgroup2" in capsys.readouterr().err


@needs_cgroups
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
async def test_limits_outside_the_sandbox(api_with: ApiFactory, tmp_path: Path) -> None:
    """The limits prefix goes before bwrap: a sandboxed hog is still killed in its group and reported,
    and the terminal's cwd is still found through the exec'ing prefixes."""
    api = await api_with(sandbox="bwrap", limit_memory=48 * MIB, cwd=tmp_path)
    reply = await api.run("python3 -c 'b = bytearray(400 * 1024 * 1024)'", wait=60)
    assert reply["limit"] == "memory", reply
    session = await create(api, cwd=str(tmp_path))
    socket = await attach(api, session["id"])
    await socket.send_bytes(b"mkdir -p inner && cd inner && echo IN-$((1+1))\n")
    await read_until(socket, b"IN-2")

    async def shell_cwd() -> bool:
        listed = await api.json("GET", "/api/terminals")
        return any(item["id"] == session["id"] and item["cwd"] == str(tmp_path / "inner") for item in listed)

    await eventually(shell_cwd)
    await socket.close()


@needs_cgroups
def test_groups_of_a_dead_daemon_are_swept(tmp_path: Path) -> None:
    """A daemon killed with SIGKILL cannot remove its groups: the next one removes the empty ones."""
    limits = build(TreeLimits(processes=5), UserLimits())
    assert limits._cgroups is not None
    base = limits._cgroups.paths("")[0].parent
    limits.close()
    dead = subprocess_pid_gone()
    stale = base / f"opentermd-{dead}-abcdef" / "user-x" / "cmd-y"
    stale.mkdir(parents=True)
    try:
        build(TreeLimits(processes=5), UserLimits()).close()
        assert not (base / f"opentermd-{dead}-abcdef").exists()
    finally:
        for folder in (stale, stale.parent, stale.parent.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()


def subprocess_pid_gone() -> int:
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    os.waitpid(pid, 0)
    return pid


async def test_stream_ends_with_the_limit(api_with: ApiFactory) -> None:
    api = await api_with(limit_cpu_seconds=1)
    async with api.request("POST", "/execute?stream=true", json={"command": "while :; do :; done"}) as response:
        lines = [json.loads(line) for line in (await response.text()).splitlines() if line.strip()]
    assert lines[-1]["type"] == "status" and lines[-1]["limit"] == "cpu", lines[-1]
