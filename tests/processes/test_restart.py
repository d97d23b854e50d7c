"""A restart loses nothing already written: earlier processes are listed and readable from their logs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from daemon.app import create_app
from daemon.config import Config
from tests.conftest import Api, eventually, make_config, output_text
from tests.test_cli import call

MINE = {"X-User-Id": "u1", "X-Session-Id": "chat-a"}


async def _serve(aiohttp_client: Any, config: Config) -> Api:
    return Api(await aiohttp_client(create_app(config)))


async def test_done_and_killed_processes_survive_a_restart(aiohttp_client: Any, config: Config) -> None:
    before = await _serve(aiohttp_client, config)
    done = await before.run("echo one; echo two; exit 3", headers=MINE)
    running = await before.json("POST", "/execute", json={"command": "echo started; sleep 1000"}, headers=MINE)
    await before.json("GET", f"/execute/{running['id']}/status?wait=20&until=output", headers=MINE)
    await before.client.close()  # the shutdown kills what runs and writes its end record

    after = await _serve(aiohttp_client, config)
    listed = await after.json("GET", "/execute", headers=MINE)
    assert listed == [
        {"id": done["id"], "command": "echo one; echo two; exit 3", "status": "done", "exit_code": 3,
         "log_path": done["log_path"]},
        {"id": running["id"], "command": "echo started; sleep 1000", "status": "killed", "exit_code": -15,
         "log_path": running["log_path"]},
    ]
    status = await after.json("GET", f"/execute/{done['id']}/status", headers=MINE)
    assert status == {**{key: done[key] for key in ("id", "command", "status", "exit_code", "log_path", "output",
                                                     "next_offset", "truncated")}}
    assert output_text(status) == "one\r\ntwo\r\n"
    later = await after.json("GET", f"/execute/{done['id']}/status?offset={status['next_offset'] - 1}", headers=MINE)
    assert later["output"] == status["output"][-1:] and later["next_offset"] == status["next_offset"]
    killed = await after.json("GET", f"/execute/{running['id']}/status?tail=1", headers=MINE)
    assert killed["status"] == "killed" and output_text(killed) == "started\r\n"
    # Still theirs alone, and finished: no input, and a kill changes nothing.
    assert await after.json("GET", "/execute", headers={"X-User-Id": "u2"}) == []
    await after.json("GET", f"/execute/{done['id']}/status", status=404, headers={"X-User-Id": "u2"})
    await after.json("POST", f"/execute/{done['id']}/input", status=400, json={"input": "x"}, headers=MINE)


async def test_logs_from_before_owners_were_recorded_belong_to_the_default_owner(
        aiohttp_client: Any, config: Config) -> None:
    config.process_log_dir.mkdir(parents=True)
    old = config.process_log_dir / "20261101-120000-abcdef.jsonl"
    old.write_text(
        json.dumps({"type": "start", "command": "make", "pid": 4242, "ts": 1.0}) + "\n"
        + '{"type":"output","data":"built\\r\\n","ts":2.0}\n'
        + json.dumps({"type": "end", "exit_code": 0, "log_rotated": False, "truncated": False, "ts": 3.0}) + "\n")
    (config.process_log_dir / "notes.txt").write_text("not a log")
    # Died before its first write: without a start record nobody can be told its owner.
    (config.process_log_dir / "20261101-120001-000000.jsonl").write_text('{"type":"output","data":"x","ts":1}\n')
    api = await _serve(aiohttp_client, config)
    assert await api.json("GET", "/execute") == [
        {"id": "20261101-120000-abcdef", "command": "make", "status": "done", "exit_code": 0, "log_path": str(old)}]
    assert await api.json("GET", "/execute", headers=MINE) == []
    status = await api.json("GET", "/execute/20261101-120000-abcdef/status")
    assert output_text(status) == "built\r\n" and status["next_offset"] == 1


async def test_retention_forgets_earlier_processes_with_their_logs(aiohttp_client: Any, tmp_path: Path) -> None:
    config = make_config(tmp_path, log_retention=3600)
    first = await _serve(aiohttp_client, config)
    done = await first.run("echo old")
    await first.client.close()
    two_hours_ago = Path(done["log_path"]).stat().st_mtime - 7200
    os.utime(done["log_path"], (two_hours_ago, two_hours_ago))
    api = await _serve(aiohttp_client, config)

    async def listed() -> list[dict[str, Any]]:
        return await api.json("GET", "/execute")  # type: ignore[no-any-return]

    await eventually(lambda: _not(listed()))  # the sweep runs at start
    assert not Path(done["log_path"]).exists()
    await api.json("GET", f"/execute/{done['id']}/status", status=404)


async def _not(value: Any) -> bool:
    return not await value


async def test_a_process_the_daemon_died_before_is_lost_with_its_output_kept(
        daemon_process: tuple[int, str, dict[str, str]], aiohttp_client: Any, tmp_path: Path) -> None:
    daemon_pid, url, headers = daemon_process
    key = headers["Authorization"].removeprefix("Bearer ")
    reply = call(f"{url}/execute", key, "POST", {"command": "echo before; sleep 1000"})
    assert isinstance(reply, dict)
    log_path = Path(reply["log_path"])
    await eventually(lambda: log_path.exists() and "before" in log_path.read_text(), timeout=20)
    os.kill(daemon_pid, signal.SIGKILL)  # no shutdown: no end record
    leader = int(json.loads(log_path.read_text().splitlines()[0])["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, signal.SIGKILL)  # the command outlived the daemon (its own session)

    state = tmp_path / "st" / "opentermd"  # where the daemon's XDG_STATE_HOME put it
    assert log_path.parent == state / "logs" / "processes"
    api = await _serve(aiohttp_client, make_config(tmp_path, state_dir=state))
    assert await api.json("GET", "/execute") == [
        {"id": reply["id"], "command": "echo before; sleep 1000", "status": "lost", "exit_code": None,
         "log_path": str(log_path)}]
    status = await api.json("GET", f"/execute/{reply['id']}/status?wait=5")
    assert status["status"] == "lost" and status["exit_code"] is None
    assert output_text(status) == "before\r\n" and status["truncated"] is False
