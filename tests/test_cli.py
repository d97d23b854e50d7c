"""The real executable path: start-up errors, the banner, and a graceful shutdown with no children left."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import config
from daemon.cli import exposure_warning
from tests.conftest import process_group_members, wait_until

ROOT = Path(__file__).resolve().parent.parent


def daemon_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "daemon", *args]


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPEN_TERMINAL_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_STATE_HOME=str(tmp_path / "st"),
               SHELL="/bin/bash", **extra)
    return env


@pytest.mark.parametrize(("args", "extra", "message"), [
    (["--port", "abc"], {}, "invalid value for --port"),
    ([], {"OPEN_TERMINAL_API_KEY_FILE": "/nonexistent"}, "cannot read OPEN_TERMINAL_API_KEY_FILE"),
    ([], {"OPEN_TERMINAL_API_KEY_FILE": "/x", "OPEN_TERMINAL_API_KEY": "k"}, "mutually exclusive"),
])
def test_bad_settings_stop_start_up_with_one_line(tmp_path: Path, args: list[str], extra: dict[str, str],
                                                  message: str) -> None:
    result = subprocess.run(daemon_command("run", *args), cwd=ROOT, env=environment(tmp_path, **extra),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_version() -> None:
    result = subprocess.run(daemon_command("--version"), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert re.fullmatch(r"opentermd \d+\.\d+\.\d+\n", result.stdout)


@pytest.fixture
def running_daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    with subprocess.Popen(daemon_command("run", "--port", "0", "--cwd", str(tmp_path)), cwd=ROOT,
                          env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        yield from _banner(process)


def _banner(process: subprocess.Popen[str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(3)]
        url = re.search(r"Local URL: (http://127\.0\.0\.1:\d+)", banner[1])
        key = re.search(r"API key:\s+(\S+)", banner[2])
        assert url and key, banner
        process.key = key.group(1)  # type: ignore[attr-defined]
        yield process, url.group(1)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def call(url: str, key: str, method: str = "GET", body: object = None) -> object:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_sigterm_stops_accepting_kills_children_and_exits_zero(
        running_daemon: tuple[subprocess.Popen[str], str]) -> None:
    process, url = running_daemon
    key = process.key  # type: ignore[attr-defined]
    assert len(key) >= 64, "a generated key carries at least 384 bits"
    reply = call(f"{url}/execute", key, "POST", {"command": "sleep 1000 & sleep 1000"})
    assert isinstance(reply, dict)
    log_path = Path(reply["log_path"])
    assert wait_until(lambda: log_path.exists() and log_path.read_text().strip() != "")
    leader = json.loads(log_path.read_text().splitlines()[0])["pid"]
    assert len(process_group_members(leader)) >= 2
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert time.monotonic() - started < 5
    assert process_group_members(leader) == []
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert records[-1]["type"] == "end", "the log was flushed and closed at shutdown"
    with pytest.raises(OSError):
        call(f"{url}/health", key)


def test_binding_beyond_loopback_warns(tmp_path: Path) -> None:
    with subprocess.Popen(daemon_command("run", "--host", "0.0.0.0", "--port", "0", "--api-key", "k"),
                          cwd=ROOT, env=environment(tmp_path), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            warning = process.stderr.readline()
            assert "warning: listening on 0.0.0.0" in warning and "--allowed-hosts" in warning
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=15) == 0


def test_the_container_image_binds_all_addresses_without_the_warning(tmp_path: Path) -> None:
    """The image sets OPEN_TERMINAL_IN_CONTAINER=1: there 0.0.0.0 is the only way in (the published
    ports decide who reaches it), so the warning would only teach people to ignore warnings."""
    base = {"XDG_CONFIG_HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "st"), "OPEN_TERMINAL_API_KEY": "k",
            "OPEN_TERMINAL_HOST": "0.0.0.0"}
    outside = config.load({}, base, system_file=tmp_path / "none.toml")
    warning = exposure_warning(outside)
    assert warning is not None and "warning: listening on 0.0.0.0" in warning
    inside = config.load({}, {**base, "OPEN_TERMINAL_IN_CONTAINER": "1"}, system_file=tmp_path / "none.toml")
    assert inside.in_container and exposure_warning(inside) is None
    loopback = config.load({}, {**base, "OPEN_TERMINAL_HOST": "127.0.0.1"}, system_file=tmp_path / "none.toml")
    assert exposure_warning(loopback) is None


def test_the_banner_offers_a_one_time_web_login(running_daemon: tuple[subprocess.Popen[str], str]) -> None:
    process, url = running_daemon
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(2)]
    link = re.search(r"Web UI:\s+(http://\S+/\?token=\S+)", "".join(lines))
    assert link, lines
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(link.group(1), timeout=30) as response:
        assert response.url.startswith(f"{url}/browse/"), "logged in, and the token left the address bar"
        assert "token=" not in response.url
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(link.group(1), timeout=30)
    refused.value.close()
    assert refused.value.code == 401, "the link works once"


#: Loaded only by what needs them (MCP mode, page previews, PDF text), never by a start or API calls.
HEAVY_MODULES = ("pydantic", "pydantic_core", "mcp", "pygments", "pypdf", "markdown_it", "nh3", "uvicorn")


def test_heavy_libraries_stay_off_the_start_path_and_the_api_path(tmp_path: Path) -> None:
    imports = tmp_path / "imports.txt"
    (tmp_path / "notes.txt").write_text("hello\n")
    with imports.open("w") as stderr, subprocess.Popen(
            daemon_command("run", "--port", "0", "--cwd", str(tmp_path)), cwd=ROOT,
            env=environment(tmp_path, PYTHONPROFILEIMPORTTIME="1"), stdout=subprocess.PIPE, stderr=stderr,
            text=True) as started:
        for process, url in _banner(started):
            key = process.key  # type: ignore[attr-defined]
            assert call(f"{url}/health", key) == {"status": "ok"}
            reply = call(f"{url}/execute?wait=10", key, "POST", {"command": "echo hi"})
            assert isinstance(reply, dict) and reply["status"] == "done"
            assert "notes.txt" in str(call(f"{url}/files/list?directory={tmp_path}", key))
            assert call(f"{url}/files/read?path={tmp_path}/notes.txt", key) == {
                "path": f"{tmp_path}/notes.txt", "total_lines": 1, "content": "hello\n"}
            assert "paths" in str(call(f"{url}/openapi.json", key))
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
    loaded = {line.rsplit("|", 1)[-1].strip() for line in imports.read_text().splitlines() if "|" in line}
    assert "daemon.app" in loaded, "the import log covers the server"
    assert sorted(name for name in loaded if name.split(".")[0] in HEAVY_MODULES) == []


@pytest.mark.parametrize(("args", "extra", "wanted"), [
    (["mcp"], {}, "MCP mode"),
    (["run", "--port", "0"], {"OPEN_TERMINAL_ENABLE_MCP": "true"}, "OPEN_TERMINAL_ENABLE_MCP"),
])
def test_a_missing_mcp_sdk_is_one_line_not_a_traceback(tmp_path: Path, args: list[str], extra: dict[str, str],
                                                       wanted: str) -> None:
    shadow = tmp_path / "shadow" / "mcp"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named mcp (shadowed by the test)')\n")
    env = environment(tmp_path, PYTHONPATH=str(shadow.parent), **extra)
    result = subprocess.run(daemon_command(*args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"{wanted} needs the MCP SDK (pip install 'opentermd[mcp]')" in result.stderr


#: `opentermd run` with one more route, whose handler blocks a worker thread reading a FIFO: the
#: kind of wait no thread can be pulled out of (a FIFO nobody writes to, a hung network mount).
BLOCKING_LAUNCHER = """
import asyncio, sys
from aiohttp import web
import daemon.app
from daemon import cli

fifo = sys.argv.pop(1)
create_app = daemon.app.create_app

def with_a_blocking_route(config):
    app = create_app(config)

    async def block(request):
        def read():
            with open(fifo, "rb") as reader:
                return reader.read()
        return web.Response(body=await asyncio.to_thread(read))

    app.router.add_get("/test/block", block)
    return app

daemon.app.create_app = with_a_blocking_route
sys.exit(cli.main())
"""


def test_sigterm_ends_the_daemon_within_10_s_with_a_worker_thread_blocked(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    launcher = tmp_path / "launcher.py"
    launcher.write_text(BLOCKING_LAUNCHER)
    command = [sys.executable, str(launcher), str(fifo), "run", "--port", "0", "--cwd", str(tmp_path)]
    writer: list[int] = []
    with subprocess.Popen(command, cwd=ROOT, env=environment(tmp_path), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as started:
        for process, url in _banner(started):
            key = process.key  # type: ignore[attr-defined]
            host, port = url.removeprefix("http://").split(":")
            client = socket.create_connection((host, int(port)))
            client.sendall(f"GET /test/block HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
            # Opening the FIFO's write end without blocking works once the worker has its read end
            # open; holding it open keeps the worker blocked in read().
            assert wait_until(lambda: _open_writer(fifo, writer), timeout=30)
            try:
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=10) == 0
            finally:
                os.close(writer[0])
                client.close()
            assert process.stderr is not None
            assert "exiting with 1 worker thread(s) still blocked" in process.stderr.read()


def _open_writer(fifo: Path, opened: list[int]) -> bool:
    try:
        opened.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: no reader yet
        return False
    return True


def test_a_socket_flood_under_a_low_open_files_limit_meets_the_cap_not_emfile(tmp_path: Path) -> None:
    """The issue's 600 half-sent requests, against the daemon under `ulimit -n 256`."""
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    with subprocess.Popen(daemon_command("run", "--port", "0", "--cwd", str(tmp_path)), cwd=ROOT,
                          env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=low_limit) as started:
        for process, url in _banner(started):
            host, port = url.removeprefix("http://").split(":")
            flood = []
            try:
                for _ in range(600):
                    attacker = socket.create_connection((host, int(port)), timeout=30)
                    attacker.sendall(b"GET /hea")
                    flood.append(attacker)
                assert call(f"{url}/health", process.key) == {"status": "ok"}  # type: ignore[attr-defined]
                assert len(os.listdir(f"/proc/{process.pid}/fd")) < 256
            finally:
                for attacker in flood:
                    attacker.close()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
            assert process.stderr is not None
            log = process.stderr.read()
            assert "at most 64 connections at once" in log
            assert "Traceback" not in log and "cannot accept" not in log


def test_commands_do_not_inherit_what_the_daemon_was_started_with(tmp_path: Path) -> None:
    """A shell's job-control pipe or a CI runner's descriptors, passed to the daemon, reached every
    command and shell (Python leaves inherited descriptors inheritable)."""
    read, write = os.pipe()
    try:
        with subprocess.Popen(daemon_command("run", "--port", "0", "--cwd", str(tmp_path)), cwd=ROOT,
                              env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, pass_fds=(read, write)) as started:
            for process, url in _banner(started):
                reply = call(f"{url}/execute?wait=10", process.key, "POST",  # type: ignore[attr-defined]
                             {"command": f"ls -l /proc/$$/fd/ > {tmp_path}/fds; cat {tmp_path}/fds"})
                assert isinstance(reply, dict) and reply["status"] == "done"
                listed = "".join(entry["data"] for entry in reply["output"])
                assert "0 -> /dev/pts/" in listed and f"pipe:[{os.fstat(write).st_ino}]" not in listed, listed
    finally:
        os.close(read)
        os.close(write)
