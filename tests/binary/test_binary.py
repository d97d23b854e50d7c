"""Smoke suite against the built executable (`make test-binary`), not the source tree.

Selected only with `-m binary` (the default addopts deselect it), and then it needs OPENTERMD_BINARY
to name the executable: a run that selects it without one fails instead of skipping quietly.
The binary is copied under another name into a temp dir and started from yet another directory,
with TMPDIR pointing at a fresh folder, so the onefile extraction (`_MEI*`) can be checked to be gone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import process_stats
from tests.files.test_documents import make_pdf
from tests.smoke import terminal_echoes, writes_reads_and_uploads

pytestmark = pytest.mark.binary

KEY = "binary-smoke-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOCAL_URL = re.compile(r"Local URL:\s+(http://\S+)")
#: The user's own library path, which commands must get back from the launcher untouched.
USER_LIBRARY_PATH = "/opt/user-libs"


def binary_path() -> Path:
    named = os.environ.get("OPENTERMD_BINARY")
    if not named:
        pytest.fail("OPENTERMD_BINARY is not set: `make test-binary` builds dist/opentermd and sets it")
    path = Path(named).resolve()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"OPENTERMD_BINARY={named} is not an executable file")
    return path


def environment(**settings: str) -> dict[str, str]:
    """Ours without the caller's daemon settings, plus `settings`."""
    ours = ("OPEN_TERMINAL_", "OPENTERMD_")
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(ours)}
    return {**inherited, **settings}


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    url: str
    tmpdir: Path
    home: Path
    marker: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start(tmp: Path, name: str = "otd-copy", options: tuple[str, ...] = (), prefix: tuple[str, ...] = (),
          settings: dict[str, str] | None = None) -> Running:
    """Copy the binary to `tmp/bin/<name>`, start it from `tmp/elsewhere` (behind `prefix`, with `options`
    after `run`'s usual ones and `settings` in its environment) and wait for the banner."""
    (tmp / "bin").mkdir(exist_ok=True)
    copy = tmp / "bin" / name
    if not copy.exists():
        shutil.copy2(binary_path(), copy)
    for folder in ("elsewhere", "home", "tmpdir"):
        (tmp / folder).mkdir(exist_ok=True)
    marker = uuid.uuid4().hex
    # The marker rides in every descendant's environment: found in /proc even after a re-parenting.
    env = environment(HOME=str(tmp / "home"), SHELL="/bin/bash", TMPDIR=str(tmp / "tmpdir"),
                      XDG_STATE_HOME=str(tmp / "state"), XDG_CONFIG_HOME=str(tmp / "config"), SMOKE_MARKER=marker,
                      LD_LIBRARY_PATH=USER_LIBRARY_PATH, **(settings or {}))
    log = tmp / "opentermd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*prefix, str(copy), "run", "--host", "127.0.0.1", "--port", "0", f"--api-key={KEY}",
             "--cwd", str(tmp / "home"), *options],
            cwd=tmp / "elsewhere", env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if (found := LOCAL_URL.search(log.read_text(errors="replace"))) is not None:
            return Running(process, found.group(1), tmp / "tmpdir", tmp / "home", marker, log)
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    process.wait()
    pytest.fail(f"no banner within {START_TIMEOUT:.0f} s (exit {process.returncode}):\n{log.read_text()}")


def processes_with(marker: str) -> dict[int, str]:
    """Processes that carry SMOKE_MARKER=<marker> in their environment (a zombie's is empty)."""
    needle = f"SMOKE_MARKER={marker}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found[int(entry)] = command
    return found


def descendants(root: int) -> set[int]:
    """Processes whose parent chain leads to `root`."""
    parents = {pid: int(fields[1]) for pid, fields in process_stats().items()}
    found: set[int] = set()
    for pid in parents:
        chain, seen = pid, 0
        while chain in parents and chain > 1 and seen < 1000:
            chain, seen = parents[chain], seen + 1
            if chain == root:
                found.add(pid)
                break
    return found


def living(pids: set[int]) -> dict[int, str]:
    """Those of `pids` that still run (zombies are dead: only their exit status is left), with their name."""
    found = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z":
            found[pid] = stat[stat.index("(") + 1:stat.rindex(")")]
    return found


def survivors(marker: str, family: set[int], grace: float = 2.0) -> dict[int, str]:
    """Processes of the run still alive after `grace` s. Killed grandchildren may linger a moment as
    zombies of init (their shell exited first): those are dead all the same."""
    deadline = time.monotonic() + grace
    while True:
        left = {**processes_with(marker), **living(family)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def stop(running: Running) -> int:
    running.process.send_signal(signal.SIGTERM)
    try:
        return running.process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()
        pytest.fail(f"still running {STOP_TIMEOUT:.0f} s after SIGTERM:\n{running.output()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start(tmp_path_factory.mktemp("binary"))
    yield running
    if running.process.poll() is None:
        stop(running)


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers=AUTH, timeout=aiohttp.ClientTimeout(total=30))


def test_version_from_a_copy_in_another_directory(tmp_path: Path) -> None:
    copy = tmp_path / "renamed-opentermd"
    shutil.copy2(binary_path(), copy)
    (tmp_path / "tmpdir").mkdir()
    result = subprocess.run([str(copy), "--version"], cwd="/", capture_output=True, text=True, timeout=30,
                            env={**os.environ, "TMPDIR": str(tmp_path / "tmpdir")})
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"opentermd \d+\.\d+\.\d+\S*\n", result.stdout)
    assert os.listdir(tmp_path / "tmpdir") == []


async def test_health_command_and_openapi(server: Running) -> None:
    async with session() as http:
        async with http.get(f"{server.url}/health") as reply:
            assert reply.status == 200
        async with http.post(f"{server.url}/execute?wait=5", json={"command": "echo hi"}) as reply:
            body = await reply.json()
            assert reply.status == 200, body
            assert "hi" in "".join(entry["data"] for entry in body["output"])
            assert body["exit_code"] == 0
        async with http.get(f"{server.url}/openapi.json") as reply:
            document = await reply.json()
            assert reply.status == 200
            operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
            assert {"run_command", "read_file", "write_file"} <= operations


async def test_commands_get_the_users_environment_not_the_launchers(server: Running) -> None:
    async with session() as http:
        command = "env | grep -E '^(LD_LIBRARY_PATH|_PYI_)' | sort; cat /proc/$$/maps | grep -c _MEI"
        async with http.post(f"{server.url}/execute?wait=5", json={"command": command}) as reply:
            body = await reply.json()
            assert reply.status == 200, body
    lines = "".join(entry["data"] for entry in body["output"]).split()
    assert lines == [f"LD_LIBRARY_PATH={USER_LIBRARY_PATH}", "0"], "no bundled library path, no _PYI_ marker"


async def test_sandboxed_commands_run_in_the_frozen_launcher(tmp_path: Path) -> None:
    """With --sandbox bwrap the binary starts itself as each sandbox's launcher (daemon/launcher.py),
    reusing its unpacked files; the commands it starts get the user's environment, share the sandbox's
    /tmp, and nothing of the sandbox outlives the daemon."""
    running = start(tmp_path, options=("--sandbox", "bwrap"))
    try:
        first = await _run(running, "echo kept > /tmp/note; cat /proc/1/comm")
        second = await _run(running, "cat /tmp/note; env | grep -E '^(LD_LIBRARY_PATH|_PYI_)' | sort")
        family = descendants(running.process.pid)
        assert first.split() == ["opentermd-init"], running.output()
        assert second.split() == ["kept", f"LD_LIBRARY_PATH={USER_LIBRARY_PATH}"]
    finally:
        code = stop(running)
    assert code == 0, running.output()
    assert survivors(running.marker, family) == {}
    assert list(running.tmpdir.iterdir()) == [], "an extraction was left behind"


#: The uid a daemon without root runs as here.
NOBODY = 65534


async def test_multi_user_without_root_keeps_users_apart_by_the_sandbox_alone() -> None:
    """Multi-user mode as an ordinary user: no accounts, one uid, and each user's sandbox shows only
    their own home. The binary is started as `nobody` (the source tree's interpreter lies in /root)."""
    base = Path(tempfile.mkdtemp(prefix="otd-unprivileged-", dir="/tmp"))  # not under /tmp/pytest-of-root (0700)
    try:
        for folder in (base, *(base / name for name in ("bin", "elsewhere", "home", "tmpdir"))):
            folder.mkdir(exist_ok=True)
            folder.chmod(0o755)
            os.chown(folder, NOBODY, NOBODY)
        running = start(base, options=("--sandbox", "bwrap"), settings={"OPEN_TERMINAL_MULTI_USER": "true"},
                        prefix=("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"))
        try:
            alice, bob = {"X-User-Id": "alice"}, {"X-User-Id": "bob"}
            home = (await _run(running, "echo secret > ~/note; echo $HOME; id -u", alice)).split()
            assert home[1] == str(NOBODY) and Path(home[0]).name != "", home
            await _run(running, "exec sleep 1000", alice, wait=0)
            homes = Path(home[0]).parent
            seen = (await _run(running, f"cat {home[0]}/note 2>/dev/null || echo unreadable; ls {homes}; "
                                        "pgrep -c sleep; echo $HOME", bob)).split()
            # Alice's note and sleep are out of sight; of the homes, bob's sandbox shows his own only.
            assert seen[0] == "unreadable" and seen[2] == "0", seen
            assert seen[1] == Path(seen[3]).name and Path(seen[3]).parent == homes and seen[3] != home[0], seen
            async with session() as http, http.get(f"{running.url}/files/read", params={"path": f"{home[0]}/note"},
                                                   headers=bob) as reply:
                assert reply.status in (403, 404), await reply.text()
            family = descendants(running.process.pid)
        finally:
            code = stop(running)
        assert code == 0, running.output()
        assert survivors(running.marker, family) == {}
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _run(running: Running, command: str, headers: dict[str, str] | None = None, wait: float = 10) -> str:
    async with session() as http, http.post(f"{running.url}/execute?wait={wait}", json={"command": command},
                                            headers=headers or {}) as reply:
        body = await reply.json()
        assert reply.status == 200 and (body["status"] == "done" or not wait), body
    return "".join(entry["data"] for entry in body["output"])


async def test_write_read_and_upload(server: Running) -> None:
    async with session() as http:
        payload = await writes_reads_and_uploads(http, server.url, "in")
    assert (server.home / "in" / "up.bin").read_bytes() == payload


def test_mcp_over_stdio_lists_the_tools(tmp_path: Path) -> None:
    """The MCP SDK and what it needs (pydantic, cryptography) are inside the executable."""
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "smoke", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    result = subprocess.run([str(binary_path()), "mcp", "--cwd", str(tmp_path)], cwd=tmp_path,
                            env=environment(HOME=str(tmp_path), TMPDIR=str(tmp_path)),
                            input="".join(json.dumps(message) + "\n" for message in messages),
                            capture_output=True, text=True, timeout=60)
    replies = {reply.get("id"): reply for reply in map(json.loads, result.stdout.splitlines())}
    assert replies[1]["result"]["serverInfo"]["name"] == "opentermd", result.stderr
    names = {tool["name"] for tool in replies[2]["result"]["tools"]}
    assert {"run_command", "get_process_status", "read_file", "write_file"} <= names


async def test_pdf_text_through_the_frozen_worker(server: Running) -> None:
    (server.home / "report.pdf").write_bytes(make_pdf([["Frozen worker line"]]))
    async with session() as http, http.get(f"{server.url}/files/read?path=report.pdf") as reply:
        body = await reply.json()
        assert reply.status == 200, body
        assert body["content"] == "Frozen worker line"


async def test_login_page_and_static_assets(server: Running) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/") as reply:
            text = await reply.text()
            assert reply.status == 200 and reply.content_type == "text/html"
            assert "<form" in text.lower()
        for asset, size in (("css/app.css", 100), ("vendor/xterm/xterm.js", 100_000),
                            ("vendor/editor/editor.js", 100_000), ("vendor/swagger-ui/swagger-ui-bundle.js", 100_000)):
            async with http.get(f"{server.url}/static/{asset}") as reply:
                assert reply.status == 200, asset
                assert len(await reply.read()) > size, asset
        async with http.get(f"{server.url}/static/src/editor.js") as reply:
            assert reply.status == 404  # the esbuild sources are not shipped


async def test_terminal_echo_over_websocket(server: Running) -> None:
    async with session() as http:
        await terminal_echoes(http, server.url, KEY, timeout=10)


async def test_sigterm_exits_cleanly_leaving_no_process_or_extraction(tmp_path: Path) -> None:
    running = start(tmp_path, name="opentermd-lifecycle")
    async with session() as http:
        # A long command, a terminal and a PDF worker: children that shutdown must take along.
        async with http.post(f"{running.url}/execute", json={"command": "sleep 300"}) as reply:
            assert reply.status == 200, await reply.text()
        async with http.post(f"{running.url}/api/terminals", json={}) as reply:
            assert reply.status == 200, await reply.text()
        (running.home / "r.pdf").write_bytes(make_pdf([["x"]]))
        async with http.get(f"{running.url}/files/read?path=r.pdf") as reply:
            assert reply.status == 200, await reply.text()
    family = descendants(running.process.pid)
    assert "sleep" in living(family).values(), "the command should run below the onefile launcher"
    extracted = [name for name in os.listdir(running.tmpdir) if name.startswith("_MEI")]
    assert len(extracted) == 1, extracted
    started = time.monotonic()
    assert stop(running) == 0, running.output()
    assert time.monotonic() - started < STOP_TIMEOUT
    assert survivors(running.marker, family) == {}
    assert descendants(running.process.pid) == set()
    assert os.listdir(running.tmpdir) == []
