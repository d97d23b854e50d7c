"""`--sandbox bwrap` against real bubblewrap: what a command and a terminal shell can and cannot reach."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon import sandbox
from daemon.app import create_app
from daemon.cli import Exit, main
from daemon.config import Config, ConfigError, load
from tests.conftest import KEY, Api, eventually, make_config, output_text, process_group_members
from tests.terminals.test_terminals import attach, create, read_until

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """The daemon's state and its key file live inside the workspace: the hardest case to hide."""
    (tmp_path / "state" / "logs").mkdir(parents=True)
    (tmp_path / "state" / "secret").write_text("state secret\n")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "key").write_text(KEY)
    return tmp_path


async def sandboxed(aiohttp_client: Any, workspace: Path, **overrides: Any) -> Api:
    settings = {"cwd": workspace, "state_dir": workspace / "state", "sandbox": "bwrap",
                "api_key_file": workspace / "keys" / "key", **overrides}
    config = make_config(workspace, **settings)
    return Api(await aiohttp_client(create_app(config)))


@pytest.fixture
async def api(aiohttp_client: Any, workspace: Path) -> AsyncIterator[Api]:
    yield await sandboxed(aiohttp_client, workspace)


# --- the argv -------------------------------------------------------------------------------------

def test_mounts_go_parent_first_so_nested_folders_stay_as_asked(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    box = sandbox.Sandbox("/usr/bin/bwrap", tmp_path, network=False, hidden=(tmp_path / "state", Path("/run")))
    argv = box.prefix(str(tmp_path))
    assert "--share-net" not in argv and "--new-session" not in argv
    assert argv[:2] == ["/usr/bin/bwrap", "--unshare-all"] and argv[-2:] == ["--chdir", str(tmp_path)]
    order = [argv.index(mount) for mount in ("/tmp", "/run", str(tmp_path), str(tmp_path / "state"))]
    assert order == sorted(order)
    assert "--share-net" in sandbox.Sandbox("/usr/bin/bwrap", tmp_path).prefix("/")


def test_the_settings(tmp_path: Path) -> None:
    environ = {"OPEN_TERMINAL_SANDBOX": "bwrap", "OPEN_TERMINAL_SANDBOX_NETWORK": "off",
               "OPEN_TERMINAL_API_KEY": KEY, "OPEN_TERMINAL_STATE_DIR": str(tmp_path)}
    settings = load({}, environ, system_file=tmp_path / "none.toml")
    assert (settings.sandbox, settings.sandbox_network) == ("bwrap", False)
    assert load({}, {**environ, "OPEN_TERMINAL_SANDBOX": "off"}, system_file=tmp_path / "none.toml").sandbox == "off"
    assert Config(api_key=KEY, cwd=tmp_path, state_dir=tmp_path).sandbox == "off"  # the default
    assert sandbox.from_config(make_config(tmp_path, sandbox="off")) is None
    with pytest.raises(ConfigError, match="expected off or bwrap"):
        load({}, {**environ, "OPEN_TERMINAL_SANDBOX": "docker"}, system_file=tmp_path / "none.toml")


def test_a_usable_sandbox_passes_the_start_up_check(tmp_path: Path) -> None:
    box = sandbox.from_config(make_config(tmp_path, cwd=tmp_path, sandbox="bwrap"))
    assert box is not None
    sandbox.check(box)


# --- commands ----------------------------------------------------------------------------------

async def test_writes_land_in_the_workspace_only(api: Api, workspace: Path) -> None:
    reply = await api.run("echo made > inside.txt && cat inside.txt; touch /etc/opentermd-x; echo etc=$?; "
                          "touch state/planted; echo state=$?; ls -A state; echo listed")
    text = output_text(reply).replace("\r\n", "\n")
    assert text.startswith("made\n") and "etc=1" in text and "state=0" in text
    assert text.endswith("state=0\nplanted\nlisted\n")  # an empty tmpfs: the real state is not there
    assert (workspace / "inside.txt").read_text() == "made\n"
    assert not Path("/etc/opentermd-x").exists()
    assert not (workspace / "state" / "planted").exists()


async def test_the_key_file_and_the_state_cannot_be_read(api: Api, workspace: Path) -> None:
    text = output_text(await api.run(f"cat {workspace}/keys/key; echo; cat {workspace}/state/secret; "
                                     f"ls {workspace}/state/logs; echo end"))
    assert KEY not in text and "state secret" not in text and "end" in text


async def test_tmp_is_private(api: Api) -> None:
    name = f"opentermd-sandbox-{uuid.uuid4().hex}"
    reply = await api.run(f"echo x > /tmp/{name} && ls /tmp")
    assert reply["exit_code"] == 0 and name in output_text(reply)
    assert not Path("/tmp", name).exists()


async def test_proc_shows_the_sandbox_only(api: Api) -> None:
    text = output_text(await api.run("ls /proc | grep -c '^[0-9]'; cat /proc/1/comm"))
    count, init = text.split()[:2]
    # The sandbox's init (daemon/launcher.py), the shell, ls and grep (the shell may fork for the pipe):
    # never the host's hundreds.
    assert int(count) <= 6 and init == "opentermd-init"


async def test_with_the_network_off_loopback_is_out_of_reach(aiohttp_client: Any, workspace: Path) -> None:
    accepted: list[bool] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(True)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # The word is split in the source so that an error quoting the command cannot print it.
    probe = (f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3); "
             "print('con' 'nected')\"")
    try:
        closed = await sandboxed(aiohttp_client, workspace, sandbox_network=False)
        reply = await closed.run(probe)
        assert reply["exit_code"] == 1 and "connected" not in output_text(reply)
        assert accepted == []
        opened = await sandboxed(aiohttp_client, workspace)  # the control: with the network on it connects
        assert "connected" in output_text(await opened.run(probe))
        await eventually(lambda: accepted == [True])
    finally:
        server.close()
        await server.wait_closed()


async def test_ctrl_c_still_interrupts_the_foreground_job(api: Api) -> None:
    reply = await api.json("POST", "/execute", json={"command": "sleep 30"})
    records = await eventually(lambda: _first_record(reply["log_path"]))
    leader = int(records["pid"])  # bwrap's: its group holds the sandbox's processes too
    await eventually(lambda: any(_comm(pid) == "sleep" for pid in process_group_members(leader)))
    await api.json("POST", f"/execute/{reply['id']}/input", json={"input": "\\x03"})
    status = await api.json("GET", f"/execute/{reply['id']}/status?wait=10")
    assert status["status"] == "done" and status["exit_code"] == -2


async def test_kill_ends_the_whole_command(api: Api) -> None:
    reply = await api.json("POST", "/execute", json={"command": "sleep 300 & sleep 300"})
    leader = int((await eventually(lambda: _first_record(reply["log_path"])))["pid"])
    await eventually(lambda: len(process_group_members(leader)) >= 2)  # the shell (or the last sleep) and one
    await api.json("DELETE", f"/execute/{reply['id']}?force=true")
    await eventually(lambda: process_group_members(leader) == [])


# --- terminals ----------------------------------------------------------------------------------

async def test_a_terminal_shell_is_sandboxed_too(api: Api, workspace: Path) -> None:
    session = await create(api, cwd=str(workspace))
    socket = await attach(api, session["id"])
    await socket.send_bytes(f"cat {workspace}/keys/key; touch /etc/opentermd-x; "
                            "echo pids-$(ls /proc | grep -c '^[0-9]')-$((6*7))\n".encode())
    output = await read_until(socket, b"-42")
    assert KEY.encode() not in output and b"Read-only file system" in output
    assert int(output.rsplit(b"pids-", 1)[1].split(b"-")[0]) <= 6
    (workspace / "inner").mkdir()
    await socket.send_bytes(b"cd inner && sleep 30\n")
    await eventually(lambda: _listed_cwd(api, session["id"], str(workspace / "inner")))
    # The shell is in `inner` a moment before it has started `sleep`: a ^C in between finds no sleep.
    await eventually(lambda: _running("sleep", workspace / "inner"))
    await socket.send_bytes(b"\x03echo back-$((2*3))\n")
    await read_until(socket, b"back-6")
    await socket.send_str(json.dumps({"type": "resize", "cols": 50, "rows": 20}))
    await socket.send_bytes(b"exit\n")


def _running(name: str, cwd: Path) -> bool:
    """Whether a process called `name` runs in `cwd` (seen from the host's /proc)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (Path(f"/proc/{pid}/comm").read_text().strip() == name
                    and os.readlink(f"/proc/{pid}/cwd") == str(cwd)):
                return True
        except OSError:
            continue
    return False


async def _listed_cwd(api: Api, session_id: str, expected: str) -> bool:
    entries = await api.json("GET", "/api/terminals")
    return any(entry["id"] == session_id and entry.get("cwd") == expected for entry in entries)


def _first_record(log_path: str) -> dict[str, Any] | None:
    try:
        line = Path(log_path).read_text().split("\n", 1)[0]
        return dict(json.loads(line)) if line else None
    except (OSError, ValueError):
        return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_the_daemon_refuses_to_start_without_bubblewrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    environ = {"OPEN_TERMINAL_API_KEY": KEY, "OPEN_TERMINAL_STATE_DIR": str(tmp_path / "state")}
    assert main(["run", "--sandbox", "bwrap", "--cwd", str(tmp_path)], environ) == Exit.USAGE
    assert "needs bubblewrap" in capsys.readouterr().err
