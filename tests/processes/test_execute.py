"""The command API against a real server and real PTYs: run, status, input, kill, ownership."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROCESS_ID, Api, ApiFactory, eventually, needs_host_view, output_text, process_group_members


@needs_host_view("the sandbox's /dev names the PTY /dev/console")
async def test_run_command_waits_and_returns_output(api: Api, scratch_environment: Path) -> None:
    reply = await api.run("echo hi; tty")
    assert PROCESS_ID.match(reply["id"])
    assert reply["command"] == "echo hi; tty"
    assert reply["cwd"] == str(scratch_environment)
    assert reply["status"] == "done" and reply["exit_code"] == 0
    assert output_text(reply).startswith("hi\r\n/dev/pts/")
    assert reply["next_offset"] == len(reply["output"]) and reply["truncated"] is False
    assert list(reply) == ["id", "command", "cwd", "status", "exit_code", "log_path", "output", "next_offset",
                           "truncated"]


async def test_without_wait_returns_at_once_while_running(api: Api) -> None:
    reply = await api.json("POST", "/execute", json={"command": "sleep 1000"})
    assert reply["status"] == "running" and reply["exit_code"] is None
    await api.json("DELETE", f"/execute/{reply['id']}?force=true")


@needs_host_view("a signal death inside bwrap reads as exit 128+n (bwrap's init), not -n")
async def test_exit_code_and_signal_deaths(api: Api) -> None:
    assert (await api.run("exit 3"))["exit_code"] == 3
    assert (await api.run("kill -9 $$"))["exit_code"] == -9


async def test_status_reads_are_non_destructive_with_offsets_and_tail(api: Api) -> None:
    reply = await api.run("for i in 1 2 3 4 5; do echo line$i; sleep 0.05; done")
    pid = reply["id"]
    full = await api.json("GET", f"/execute/{pid}/status")
    assert "cwd" not in full
    assert output_text(full).replace("\r\n", "\n") == "".join(f"line{i}\n" for i in range(1, 6))
    total = full["next_offset"]
    again = await api.json("GET", f"/execute/{pid}/status?offset=0")
    assert again["output"] == full["output"]
    later = await api.json("GET", f"/execute/{pid}/status?offset={total - 1}")
    assert later["output"] == full["output"][-1:] and later["next_offset"] == total
    past_end = await api.json("GET", f"/execute/{pid}/status?offset={total + 10}")
    assert past_end["output"] == [] and past_end["next_offset"] == total
    tailed = await api.json("GET", f"/execute/{pid}/status?tail=1")
    assert tailed["output"] == full["output"][-1:] and tailed["truncated"] is True
    alias = await api.json("GET", f"/processes/{pid}/status")
    assert alias["output"] == full["output"]


async def test_wait_returns_at_exit_and_long_poll_returns_at_new_output(api: Api) -> None:
    reply = await api.json("POST", "/execute", json={"command": "sleep 0.3; echo first; sleep 30"})
    pid = reply["id"]
    polled = await api.json("GET", f"/execute/{pid}/status?wait=20&offset=0&until=output")
    assert "first" in output_text(polled) and polled["status"] == "running", "back at the output, not at exit"
    started = time.monotonic()
    plain = await api.json("GET", f"/execute/{pid}/status?wait=0.5&offset={polled['next_offset']}")
    assert time.monotonic() - started >= 0.45, "without until=output, wait lasts until exit or timeout"
    assert plain["status"] == "running" and plain["output"] == []
    await api.json("DELETE", f"/execute/{pid}?force=true")
    quick = await api.run("sleep 0.2; echo done", wait=30)
    assert quick["status"] == "done" and output_text(quick) == "done\r\n"


async def test_input_escapes_reach_the_pty(api: Api) -> None:
    reply = await api.json("POST", "/execute", json={"command": "read x; echo got:$x"})
    pid = reply["id"]
    assert await api.json("POST", f"/execute/{pid}/input", json={"input": "hello\\n"}) == {"status": "ok"}
    status = await api.json("GET", f"/execute/{pid}/status?wait=10")
    assert status["status"] == "done" and "got:hello" in output_text(status)
    await api.json("POST", f"/execute/{pid}/input", status=400, json={"input": "more"})


async def test_ctrl_c_as_input_interrupts_the_foreground_job(api: Api) -> None:
    reply = await api.json("POST", "/execute", json={"command": "sleep 30"})
    # Ctrl-C reaches the terminal's foreground job: wait until `sleep` is that job.
    leader = await _leader_pid(reply["log_path"])
    await eventually(lambda: "sleep" in _group_commands(leader))
    await api.json("POST", f"/execute/{reply['id']}/input", json={"input": "\\x03"})
    status = await api.json("GET", f"/execute/{reply['id']}/status?wait=10")
    assert status["status"] == "done" and status["exit_code"] == -2


async def test_bad_escape_in_input_is_a_clear_400(api: Api) -> None:
    reply = await api.json("POST", "/execute", json={"command": "sleep 5"})
    body = await api.json("POST", f"/execute/{reply['id']}/input", status=400, json={"input": "bad \\x"})
    assert "escape" in body["detail"]
    await api.json("DELETE", f"/execute/{reply['id']}?force=true")


async def test_kill_takes_the_whole_process_tree_and_keeps_it_listed(api: Api) -> None:
    reply = await api.json("POST", "/execute", json={"command": "sleep 100 & sleep 100 & trap '' TERM; sleep 100"})
    pid = reply["id"]
    leader = await _leader_pid(reply["log_path"])
    await eventually(lambda: _group_commands(leader).count("sleep") == 3)
    assert await api.json("DELETE", f"/execute/{pid}") == {"status": "killed"}
    await eventually(lambda: not process_group_members(leader))  # no survivors in the process group
    listed = await api.json("GET", "/execute")
    assert {"id": pid, "status": "killed"}.items() <= next(p for p in listed if p["id"] == pid).items()
    assert await api.json("DELETE", f"/execute/{pid}") == {"status": "killed"}


async def _leader_pid(log_path: str) -> int:
    records: list[dict[str, Any]] = await eventually(lambda: _records(log_path))
    return int(records[0]["pid"])


def _records(log_path: str) -> list[dict[str, Any]]:
    """The complete lines of a log so far (none before its first write)."""
    try:
        text = Path(log_path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _group_commands(pgid: int) -> list[str]:
    commands = []
    for pid in process_group_members(pgid):
        try:
            commands.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return commands


async def test_processes_belong_to_their_user_and_chat(api: Api) -> None:
    mine = {"X-User-Id": "u1", "X-Session-Id": "chat-a"}
    reply = await api.run("echo mine", headers=mine)
    pid = reply["id"]
    assert [p["id"] for p in await api.json("GET", "/execute", headers=mine)] == [pid]
    assert await api.json("GET", "/execute", headers={"X-User-Id": "u1", "X-Session-Id": "chat-b"}) == []
    other = await api.json("GET", f"/execute/{pid}/status", status=404, headers={"X-User-Id": "u2"})
    assert other == {"detail": "Process not found"}
    await api.json("DELETE", f"/execute/{pid}", status=404)
    await api.json("POST", f"/execute/{pid}/input", status=404, json={"input": "x"})


async def test_unknown_process_is_404(api: Api) -> None:
    assert await api.json("GET", "/execute/nope/status", status=404) == {"detail": "Process not found"}


async def test_cwd_follows_the_chat_and_missing_directories_are_404(api: Api, scratch_environment: Path) -> None:
    (scratch_environment / "proj" / "sub").mkdir(parents=True)
    chat = {"X-Session-Id": "chat-1"}
    cwd = await api.json("GET", "/files/cwd", headers=chat)
    assert cwd == {"cwd": str(scratch_environment), "home": str(scratch_environment),
                   "root": {"path": str(scratch_environment), "label": "Home"}}
    assert await api.json("POST", "/files/cwd", json={"path": "proj"}, headers=chat) == {
        "cwd": str(scratch_environment / "proj")}
    assert (await api.json("GET", "/files/cwd", headers=chat))["cwd"] == str(scratch_environment / "proj")
    assert (await api.json("GET", "/files/cwd"))["cwd"] == str(scratch_environment)
    assert output_text(await api.run("pwd", headers=chat)) == f"{scratch_environment / 'proj'}\r\n"
    assert output_text(await api.run("pwd", cwd="sub", headers=chat)) == f"{scratch_environment / 'proj/sub'}\r\n"
    missing = await api.json("POST", "/execute", status=404, json={"command": "pwd", "cwd": "/no/such/dir"})
    assert "/no/such/dir" in missing["detail"]
    await api.json("POST", "/files/cwd", status=404, json={"path": "nowhere"}, headers=chat)


async def test_environment_is_merged_and_settings_are_not_leaked(api: Api) -> None:
    reply = await api.run('echo "[$GREETING][${OPEN_TERMINAL_API_KEY:-unset}]"', env={"GREETING": "hey"})
    assert output_text(reply) == "[hey][unset]\r\n"


async def test_a_command_that_cannot_start_gets_an_error_entry(api: Api) -> None:
    # One environment string past the kernel's 128 KiB (MAX_ARG_STRLEN): the exec itself fails.
    reply = await api.run("echo never", env={"BIG": "x" * 200_000})
    assert reply["status"] == "done" and reply["exit_code"] == 127
    assert output_text(reply) == "opentermd: cannot start command: Argument list too long\r\n"


@pytest.mark.parametrize(("body", "loc"), [
    ({"command": "echo \u0000oops"}, ["body", "command"]),
    ({"command": "pwd", "cwd": "a\u0000b"}, ["body", "cwd"]),
    ({"command": "true", "env": {"A\u0000B": "x"}}, ["body", "env", "A\u0000B"]),
    ({"command": "true", "env": {"A=B": "x"}}, ["body", "env", "A=B"]),
    ({"command": "true", "env": {"": "x"}}, ["body", "env", ""]),
    ({"command": "true", "env": {"A": "x\u0000y"}}, ["body", "env", "A"]),
])
async def test_input_no_command_can_start_with_is_422_and_starts_nothing(
        api: Api, body: dict[str, Any], loc: list[str]) -> None:
    reply = await api.json("POST", "/execute?wait=5", json=body, status=422)
    [error] = reply["detail"]
    assert error["type"] == "value_error" and error["loc"] == loc and error["msg"].startswith("Value error, ")
    assert await api.json("GET", "/execute") == [], "refused before anything was spawned or listed"


async def test_multibyte_characters_split_across_reads_stay_whole(api: Api) -> None:
    reply = await api.run(r"printf '\342\202'; sleep 0.2; printf '\254\n'")
    assert output_text(reply) == "\u20ac\r\n"


@needs_host_view("uses tmp_path, outside the sandbox's workspace")
async def test_every_byte_of_a_60_mb_output_arrives(api: Api, tmp_path: Path) -> None:
    line = "".join(chr(33 + i % 90) for i in range(99)) + "\n"
    data = "".join(f"{n:08d}" + line for n in range(60 * 1024 * 1024 // 108))
    source = tmp_path / "big.txt"
    source.write_text(data)
    reply = await api.json("POST", "/execute", json={"command": f"cat {source}"})
    offset, polls = 0, 0
    parts: list[str] = []
    while polls < 2000:
        polls += 1
        status = await api.json("GET", f"/execute/{reply['id']}/status?offset={offset}&wait=10&until=output")
        parts.extend(entry["data"] for entry in status["output"])
        offset = status["next_offset"]
        if status["status"] != "running" and not status["output"]:
            break
    received = "".join(parts).replace("\r\n", "\n")
    assert len(received) == len(data) and received == data
    assert status["exit_code"] == 0 and status["truncated"] is False
    whole = await api.json("GET", f"/execute/{reply['id']}/status")
    assert len(output_text(whole)) == len(data) + data.count("\n")


async def test_output_past_the_cap_is_dropped_and_flagged(api_with: ApiFactory) -> None:
    api = await api_with(max_log_size=20_000)
    reply = await api.run("head -c 100000 /dev/zero | tr '\\0' x; echo")
    assert reply["truncated"] is True and reply["status"] == "done"
    assert 0 < len(output_text(reply)) < 20_000


async def test_the_log_on_disk_is_jsonl_with_start_output_end(api: Api) -> None:
    reply = await api.run("echo one; echo two")
    records = await eventually(lambda: (lines := _records(reply["log_path"])) and lines[-1]["type"] == "end" and lines)
    assert records[0]["type"] == "start" and records[0]["command"] == "echo one; echo two"
    assert records[-1]["type"] == "end" and records[-1]["exit_code"] == 0
    outputs = [r for r in records if r["type"] == "output"]
    assert "".join(r["data"] for r in outputs) == "one\r\ntwo\r\n" and all("ts" in r for r in outputs)
    assert os.stat(reply["log_path"]).st_mode & 0o077 == 0


async def test_stream_mode_sends_json_lines_and_survives_a_disconnect(api: Api) -> None:
    async with api.request("POST", "/execute?stream=true",
                           json={"command": "for i in 1 2 3; do echo $i; sleep 0.1; done"}) as response:
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        lines = [json.loads(line) async for line in response.content]
    assert lines[0]["type"] == "process" and PROCESS_ID.match(lines[0]["id"])
    assert "".join(line["data"] for line in lines if line["type"] == "output") == "1\r\n2\r\n3\r\n"
    assert lines[-1] == {"type": "status", "id": lines[0]["id"], "status": "done", "exit_code": 0,
                         "next_offset": len(lines) - 2, "truncated": False}
    async with api.request("POST", "/execute?stream=true", json={"command": "echo a; sleep 0.5; echo b"}) as response:
        first = json.loads(await response.content.readline())
    status = await api.json("GET", f"/execute/{first['id']}/status?wait=10")
    assert status["status"] == "done" and output_text(status) == "a\r\nb\r\n"


async def test_execute_timeout_is_the_default_wait(api_with: ApiFactory) -> None:
    api = await api_with(execute_timeout=10.0)
    reply = await api.json("POST", "/execute", json={"command": "sleep 0.3; echo late"})
    assert reply["status"] == "done" and output_text(reply) == "late\r\n"
    immediate = await api.json("POST", "/execute?wait=0", json={"command": "sleep 0.3"})
    assert immediate["status"] == "running"


async def test_commands_get_default_signal_actions_whatever_the_daemon_ignores(api: Api) -> None:
    """Ignored signals survive exec: Python ignores SIGPIPE (so `yes | head -1` said "Broken pipe"), and a
    daemon started in a script's background ignores SIGINT (so Ctrl-C reached nothing). The server here
    runs in this process, which is made to ignore SIGINT for the test."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        piped = await api.run("yes | head -1")
        assert output_text(piped) == "y\r\n" and piped["exit_code"] == 0, piped
        ignored = await api.run("grep SigIgn /proc/self/status")
        mask = int(output_text(ignored).split()[1], 16)
        for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGQUIT, signal.SIGXFSZ):
            assert not mask & (1 << (sig - 1)), (sig, output_text(ignored))
    finally:
        signal.signal(signal.SIGINT, previous)
