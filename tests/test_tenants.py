"""Tenants by token: each token resolves to its tenant, which is the request's user; the file is
read again on change (inotify, a per-request stat, SIGHUP) and a broken one keeps the last good set."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.sandbox import tree
from daemon import cli, tenants
from daemon.keys import NOTEBOOKS, TERMINALS
from daemon.tenants import TENANTS, Tenant, TenantBook, TenantsError
from daemon.users import USERS, end_processes_of
from tests.conftest import KEY, Api, ApiFactory, FakeClock, eventually, output_text
from tests.notebooks.helpers import open_notebook, write_notebook
from tests.terminals.test_terminals import closed_with, read_until
from tests.test_cli import ROOT, _banner, daemon_command, environment

ALPHA, BETA, GAMMA = "alpha-token-0123456789", "beta-token-9876543210", "gamma-token-5555555555"


def entry(name: str, token: str, extra: str = "") -> str:
    return f'[[tenant]]\nname = "{name}"\ntoken_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n{extra}\n'


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def name_of(tenant: Tenant | None) -> str | None:
    return None if tenant is None else tenant.name


def replace(path: Path, text: str) -> None:
    """As an editor or a config tool saves: a new file renamed over the old one."""
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    os.replace(fresh, path)


@pytest.fixture
def tenants_file(tmp_path: Path) -> Path:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "tenants.toml"
    path.write_text(entry("alpha", ALPHA) + entry("beta", BETA))
    return path


def prefix_of(homes: Path) -> str:
    return homes.name.partition("_")[0] + "_"


@pytest.fixture
def homes() -> Iterator[Path]:
    """A folder for the tenants' homes that their own uids can reach (pytest's tmp_path is root's, 0700),
    and a prefix of our own for their accounts (as root): every account and home removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=f"ot{secrets.token_hex(3)}_"))
    folder.chmod(0o755)
    yield folder
    for account in pwd.getpwall():
        if account.pw_name.startswith(prefix_of(folder)):
            subprocess.run(["pkill", "-KILL", "-U", str(account.pw_uid)], check=False)
            subprocess.run(["userdel", account.pw_name], check=False, capture_output=True)
    shutil.rmtree(folder)


@pytest.fixture
async def api(homes: Path, api_with: ApiFactory, tenants_file: Path) -> Api:
    # Tenants imply multi-user: each is a user of its own (an account as root, a home).
    server: Api = await api_with(tenants_file=tenants_file, user_prefix=prefix_of(homes), user_homes=homes)
    return server


async def status_of(api: Api, path: str, token: str, **headers: str) -> int:
    async with api.request("GET", path, auth=False, headers=bearer(token, **headers)) as response:
        return int(response.status)


async def run(api: Api, token: str, command: str = "sleep 30") -> str:
    reply = await api.json("POST", "/execute", auth=False, headers=bearer(token), json={"command": command})
    return str(reply["id"])


# --- the file ---------------------------------------------------------------------------------------


def test_parse_reads_every_field() -> None:
    extra = 'processes = 50\nmemory = "512M"\nnetwork = false'
    parsed = tenants.parse(entry("alpha", ALPHA, extra) + entry("beta", BETA, "memory = 4096"))
    assert parsed == (Tenant("alpha", hashlib.sha256(ALPHA.encode()).digest(), 50, 512 * 1024**2, False),
                      Tenant("beta", hashlib.sha256(BETA.encode()).digest(), None, 4096, None))
    assert tenants.parse("") == ()


@pytest.mark.parametrize(("text", "reason"), [
    ("[[tenant", "not TOML"),
    ('tenant = "x"', "array of tables"),
    ("[other]\n", "unknown top-level"),
    ('[[tenant]]\ntoken_sha256 = "' + "a" * 64 + '"', "name must be"),
    ('[[tenant]]\nname = "../etc"\ntoken_sha256 = "' + "a" * 64 + '"', "name must be"),
    ('[[tenant]]\nname = "a"\ntoken_sha256 = "abc"', "64 hex digits"),
    ('[[tenant]]\nname = "a"\ntoken = "plain"\ntoken_sha256 = "' + "a" * 64 + '"', "unknown key"),
    (entry("a", ALPHA, "processes = 0"), "processes must be"),
    (entry("a", ALPHA, "processes = true"), "processes must be"),
    (entry("a", ALPHA, 'memory = "lots"'), "memory must be"),
    (entry("a", ALPHA, 'network = "off"'), "network must be"),
    (entry("a", ALPHA) + entry("a", BETA), "share the name"),
    (entry("a", ALPHA) + entry("b", ALPHA), "share the token_sha256"),
])
def test_a_file_that_is_not_exactly_right_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(TenantsError, match=reason):
        tenants.parse(text)


def test_the_daemon_refuses_to_start_with_a_broken_tenants_file(tmp_path: Path, capsys: Any) -> None:
    broken = tmp_path / "tenants.toml"
    broken.write_text(entry("a", ALPHA, "processes = -1"))
    environ = {"OPEN_TERMINAL_TENANTS_FILE": str(broken), "OPEN_TERMINAL_API_KEY": KEY,
               "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}
    assert cli.main(["run", "--cwd", str(tmp_path), "--port", "0"], environ) == cli.Exit.USAGE
    error = capsys.readouterr().err
    assert "OPEN_TERMINAL_TENANTS_FILE" in error and "processes must be" in error


def test_a_token_finds_its_tenant_and_only_its_own(tenants_file: Path) -> None:
    book = TenantBook(tenants_file)
    assert name_of(book.find(ALPHA)) == "alpha"
    assert name_of(book.find(f" {BETA}\n")) == "beta"  # trimmed, as the key
    assert book.find(GAMMA) is None and book.find(None) is None and book.find("") is None
    assert book.find(hashlib.sha256(ALPHA.encode()).hexdigest()) is None  # the digest is not the token


def test_a_change_is_seen_by_the_next_request_after_a_second(tenants_file: Path) -> None:
    clock = FakeClock(1000.0)
    book = TenantBook(tenants_file, clock=clock)
    replace(tenants_file, entry("beta", BETA) + entry("gamma", GAMMA))
    assert book.find(ALPHA) is not None  # not looked at yet: at most one stat a second
    clock.advance(1.0)
    assert book.find(ALPHA) is None and name_of(book.find(GAMMA)) == "gamma"


def test_a_broken_or_missing_file_keeps_the_last_good_tenants_and_warns_once(
        tenants_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(1000.0)
    book = TenantBook(tenants_file, clock=clock)
    caplog.set_level(logging.WARNING, logger="daemon.tenants")
    replace(tenants_file, entry("alpha", ALPHA) + "[[tenant]]\nname = 'x'")
    for _ in range(3):
        clock.advance(1.0)
        assert name_of(book.find(ALPHA)) == "alpha" and name_of(book.find(BETA)) == "beta"
    assert [record.message.count("last good") for record in caplog.records] == [1]
    tenants_file.unlink()
    clock.advance(1.0)
    assert book.find(BETA) is not None
    assert len(caplog.records) == 2
    tenants_file.write_text(entry("beta", BETA))
    clock.advance(1.0)
    assert book.find(ALPHA) is None and book.find(BETA) is not None


async def test_a_new_token_for_a_tenant_ends_what_the_old_one_opened(tenants_file: Path) -> None:
    clock = FakeClock(1000.0)
    book = TenantBook(tenants_file, clock=clock)
    closed: list[tuple[str, str]] = []

    async def close_alpha(reason: str) -> None:
        closed.append(("alpha", reason))

    async def close_beta(reason: str) -> None:
        closed.append(("beta", reason))

    with book.tied("alpha", close_alpha), book.tied("beta", close_beta):
        replace(tenants_file, entry("alpha", GAMMA) + entry("beta", BETA))
        clock.advance(1.0)
        assert book.find(ALPHA) is None and name_of(book.find(GAMMA)) == "alpha"
        await eventually(lambda: closed == [("alpha", tenants.TENANT_REMOVED)])
    assert name_of(book.find(BETA)) == "beta" and closed == [("alpha", tenants.TENANT_REMOVED)]


# --- over a real server -----------------------------------------------------------------------------


async def test_each_tenant_sees_only_its_own_processes(api: Api) -> None:
    mine, theirs = await run(api, ALPHA), await run(api, BETA)
    try:
        assert await status_of(api, f"/execute/{mine}/status", ALPHA) == 200
        assert await status_of(api, f"/execute/{theirs}/status", ALPHA) == 404
        assert await status_of(api, f"/execute/{mine}/status", BETA) == 404
        # The header cannot make a tenant someone else: the token decides.
        assert await status_of(api, f"/execute/{theirs}/status", ALPHA, **{"X-User-Id": "beta"}) == 404
        for token, own in ((ALPHA, mine), (BETA, theirs)):
            listed = await api.json("GET", "/execute", auth=False, headers=bearer(token, **{"X-User-Id": ""}))
            assert [process["id"] for process in listed] == [own]
        async with api.request("DELETE", f"/execute/{theirs}", auth=False, headers=bearer(ALPHA)) as response:
            assert response.status == 404
        async with api.request("POST", f"/execute/{theirs}/input", auth=False, headers=bearer(ALPHA),
                               json={"input": "x"}) as response:
            assert response.status == 404
    finally:
        for token, process in ((ALPHA, mine), (BETA, theirs)):
            await api.json("DELETE", f"/execute/{process}", auth=False, headers=bearer(token))


async def test_the_admin_key_still_works_and_acts_as_the_user_it_names(api: Api) -> None:
    process = await run(api, ALPHA)
    try:
        assert await api.json("GET", "/health") == {"status": "ok"}
        assert await status_of(api, f"/execute/{process}/status", KEY) == 400  # multi-user: it must name one
        assert await status_of(api, f"/execute/{process}/status", KEY, **{"X-User-Id": "alpha"}) == 200
    finally:
        await api.json("DELETE", f"/execute/{process}", auth=False, headers=bearer(ALPHA))


async def test_each_tenant_has_its_own_files(api: Api) -> None:
    await api.json("POST", "/files/write", auth=False, headers=bearer(ALPHA), json={"path": "note.txt", "content": "a"})
    home = (await api.json("GET", "/files/cwd", auth=False, headers=bearer(ALPHA)))["cwd"]
    assert home != (await api.json("GET", "/files/cwd", auth=False, headers=bearer(BETA)))["cwd"]
    assert await status_of(api, "/files/read?path=note.txt", ALPHA) == 200
    assert await status_of(api, "/files/read?path=note.txt", BETA, **{"X-User-Id": "alpha"}) == 404
    assert await status_of(api, f"/files/read?path={home}/note.txt", BETA) in (403, 404)


async def test_a_tenants_port_is_listed_and_proxied_for_it_alone(api: Api) -> None:
    server = await run(api, ALPHA, "exec python3 -m http.server 0 --bind 127.0.0.1")

    async def port() -> int | None:
        reply = await api.json("GET", f"/execute/{server}/status", auth=False, headers=bearer(ALPHA))
        found = re.search(r"Serving HTTP on 127\.0\.0\.1 port (\d+) ", output_text(reply))
        return int(found.group(1)) if found else None

    async def listed(token: str, number: int) -> bool:
        reply = await api.json("GET", "/ports", auth=False, headers=bearer(token))
        return number in {entry["port"] for entry in reply["ports"]}

    try:
        number = await eventually(port)
        assert await eventually(lambda: listed(ALPHA, number))
        assert not await listed(BETA, number)
        assert await status_of(api, f"/proxy/{number}/", BETA, **{"X-User-Id": "alpha"}) == 404
        assert await status_of(api, f"/proxy/{number}/", ALPHA) == 200
    finally:
        await api.json("DELETE", f"/execute/{server}?force=true", auth=False, headers=bearer(ALPHA))


async def test_an_unknown_token_is_401(api: Api) -> None:
    assert await status_of(api, "/execute", GAMMA) == 401
    assert await status_of(api, "/execute", hashlib.sha256(ALPHA.encode()).hexdigest()) == 401


async def test_each_tenant_sees_only_its_own_terminals(api: Api) -> None:
    mine = await api.json("POST", "/api/terminals", auth=False, headers=bearer(ALPHA))
    assert await status_of(api, f"/api/terminals/{mine['id']}", ALPHA) == 200
    assert await status_of(api, f"/api/terminals/{mine['id']}", BETA, **{"X-User-Id": "alpha"}) == 404
    assert await api.json("GET", "/api/terminals", auth=False, headers=bearer(BETA)) == []
    async with api.request("DELETE", f"/api/terminals/{mine['id']}", auth=False, headers=bearer(BETA)) as response:
        assert response.status == 404
    await api.json("DELETE", f"/api/terminals/{mine['id']}", auth=False, headers=bearer(ALPHA))


async def test_a_removed_tenants_token_is_401_without_a_restart(api: Api, tenants_file: Path) -> None:
    assert await status_of(api, "/execute", ALPHA) == 200
    replace(tenants_file, entry("beta", BETA) + entry("gamma", GAMMA))
    # inotify tells the book at once; the clock-bounded stat is not what makes this pass.
    await eventually(lambda: api.client.app[TENANTS].named("alpha") is None)
    assert await status_of(api, "/execute", ALPHA) == 401
    assert await status_of(api, "/execute", BETA) == 200
    assert await status_of(api, "/execute", GAMMA) == 200


async def test_sighup_reads_the_file_again(api: Api, tenants_file: Path) -> None:
    book = api.client.app[TENANTS]
    assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, None)  # else the kill below ends pytest
    # Written through a descriptor left open: no inotify event (no close, no rename) and no request,
    # so only the signal can make the daemon read it.
    fd = os.open(tenants_file, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, entry("gamma", GAMMA).encode())
        assert book.named("alpha") is not None
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: book.named("gamma") is not None)
        assert book.named("alpha") is None
    finally:
        os.close(fd)
    assert await status_of(api, "/execute", GAMMA) == 200


async def test_a_broken_rewrite_keeps_the_tenants_in_force(api: Api, tenants_file: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="daemon.tenants")
    replace(tenants_file, "[[tenant]]\nname = 'alpha'\n")
    await eventually(lambda: any("last good" in record.message for record in caplog.records))
    assert await status_of(api, "/execute", ALPHA) == 200
    assert await status_of(api, "/execute", BETA) == 200


async def test_without_a_tenants_file_a_tenant_like_token_is_just_a_wrong_key(api_with: ApiFactory) -> None:
    plain = await api_with()
    assert await status_of(plain, "/execute", ALPHA) == 401
    assert await plain.json("GET", "/execute", headers={"X-User-Id": "alpha"}) == []


# --- the terminal WebSocket ---------------------------------------------------------------------------


async def test_a_tenants_websocket_opens_only_its_own_terminal_and_ends_with_the_tenant(
        api: Api, tenants_file: Path) -> None:
    mine = await api.json("POST", "/api/terminals", auth=False, headers=bearer(ALPHA))
    # Another tenant's token, even naming alpha in the header, finds no such session.
    other = await api.client.ws_connect(f"/api/terminals/{mine['id']}", headers=bearer(BETA, **{"X-User-Id": "alpha"}))
    assert await closed_with(other) == 4004
    socket = await api.client.ws_connect(f"/api/terminals/{mine['id']}")
    await socket.send_str(json.dumps({"type": "auth", "token": ALPHA}))  # Open WebUI's auth frame
    try:
        await socket.send_bytes(b"echo tenant-$((6*7)) \"$HOME\" \"$PWD\"\n")
        home = (await api.json("GET", "/files/cwd", auth=False, headers=bearer(ALPHA)))["cwd"]
        await read_until(socket, f"tenant-42 {home} {home}".encode())  # in alpha's home, as alpha
        replace(tenants_file, entry("beta", BETA))
        assert await closed_with(socket) == 4001
        assert socket.close_code == 4001
    finally:
        await socket.close()


async def test_a_tenant_websocket_by_subprotocol_token(api: Api) -> None:
    mine = await api.json("POST", "/api/terminals", auth=False, headers=bearer(BETA))
    socket = await api.client.ws_connect(f"/api/terminals/{mine['id']}",
                                         protocols=("opentermd", f"opentermd.token.{BETA}"))
    try:
        await socket.send_bytes(b"echo sub-$((2+3))\n")
        await read_until(socket, b"sub-5")
    finally:
        await socket.close()


# --- a tenant's own limits ------------------------------------------------------------------------------

#: The command's per-user group is the parent of its own (limits: <daemon>/user-<hash>/<tree>).
USER_GROUP_LIMITS = ('g=$(grep -E "^[0-9]+:pids:" /proc/self/cgroup | cut -d: -f3); '
                     'cat "/sys/fs/cgroup/pids$g/../pids.max"; '
                     'g=$(grep -E "^[0-9]+:memory:" /proc/self/cgroup | cut -d: -f3); '
                     'cat "/sys/fs/cgroup/memory$g/../memory.limit_in_bytes"')


async def user_group_limits(api: Api, token: str) -> list[str]:
    reply = await api.json("POST", "/execute?wait=20", auth=False, headers=bearer(token),
                           json={"command": USER_GROUP_LIMITS})
    assert reply["status"] == "done", reply
    return output_text(reply).split()


@pytest.mark.skipif(not os.access("/sys/fs/cgroup/pids", os.W_OK), reason="needs a writable pids cgroup (v1 here)")
async def test_a_tenants_own_limits_cap_its_user_group_and_follow_the_file(
        homes: Path, api_with: ApiFactory, tenants_file: Path) -> None:
    tenants_file.write_text(entry("alpha", ALPHA, 'processes = 7\nmemory = "64M"') + entry("beta", BETA))
    api = await api_with(tenants_file=tenants_file, user_prefix=prefix_of(homes), user_homes=homes)
    assert await user_group_limits(api, ALPHA) == ["7", str(64 * 1024**2)]
    assert (await user_group_limits(api, BETA))[0] == "max"  # no limits of its own: the daemon's (none)
    replace(tenants_file, entry("alpha", ALPHA, "processes = 9") + entry("beta", BETA, "processes = 5"))
    await eventually(lambda: api.client.app[TENANTS].tenants[-1].processes == 5)  # beta's, now
    assert (await user_group_limits(api, ALPHA))[0] == "9"
    assert (await user_group_limits(api, BETA))[0] == "5"


# --- a tenant's network switch ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def listener() -> AsyncIterator[tuple[int, list[bool]]]:
    """A loopback server of the test's own: its port, and a True for each connection it took."""
    taken: list[bool] = []

    def take(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        taken.append(True)
        writer.close()

    server = await asyncio.start_server(take, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], taken
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
async def test_a_tenant_with_the_network_off_cannot_reach_loopback_and_the_file_turns_it_on(
        homes: Path, api_with: ApiFactory, tenants_file: Path) -> None:
    tenants_file.write_text(entry("alpha", ALPHA, "network = false") + entry("beta", BETA))
    api = await api_with(tenants_file=tenants_file, user_prefix=prefix_of(homes), user_homes=homes, sandbox="bwrap")
    async with listener() as (port, taken):

        async def connects(token: str) -> bool:
            # The word is split so that an error quoting the command cannot print it.
            command = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3); " \
                      "print('con' 'nected')\""
            reply = await api.json("POST", "/execute?wait=20", auth=False, headers=bearer(token),
                                   json={"command": command})
            assert reply["status"] == "done", reply
            return "connected" in output_text(reply)

        assert not await connects(ALPHA) and taken == []
        assert await connects(BETA)  # the control: the daemon's setting (on)
        await eventually(lambda: taken == [True])
        replace(tenants_file, entry("alpha", ALPHA, "network = true") + entry("beta", BETA))
        await eventually(lambda: api.client.app[TENANTS].tenants[0].network)
        assert await connects(ALPHA)


def test_a_tenant_cannot_open_mcp_whose_tools_run_with_the_admin_key(homes: Path, tenants_file: Path,
                                                                     tmp_path: Path) -> None:
    # Its own process: the SDK's lifetime wants a loop of its own (as tests/mcp does).
    environ = environment(tmp_path, OPEN_TERMINAL_ENABLE_MCP="true", OPEN_TERMINAL_TENANTS_FILE=str(tenants_file),
                          OPEN_TERMINAL_USER_PREFIX=prefix_of(homes), OPEN_TERMINAL_USER_HOMES=str(homes))
    with subprocess.Popen(daemon_command("run", "--port", "0", "--cwd", str(tmp_path)), cwd=ROOT, env=environ,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        for _, url in _banner(process):
            for token, status, detail in ((ALPHA, 403, "MCP at /mcp needs the admin key; a tenant's token cannot "
                                                       "open it"), (GAMMA, 401, "Invalid API key")):
                request = urllib.request.Request(f"{url}/mcp", data=b"{}", method="POST", headers=bearer(token))
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(request, timeout=20)
                assert (refused.value.code, json.loads(refused.value.read())) == (status, {"detail": detail})


# --- the web pages ----------------------------------------------------------------------------------------


async def test_a_tenant_logs_in_with_its_token_and_its_pages_are_its_own_until_it_is_removed(
        api: Api, tenants_file: Path) -> None:
    for token, name in ((ALPHA, "alpha-note.txt"), (BETA, "beta-note.txt")):
        await api.json("POST", "/files/write", auth=False, headers=bearer(token), json={"path": name, "content": "x"})
    home = (await api.json("GET", "/files/cwd", auth=False, headers=bearer(ALPHA)))["cwd"]
    async with api.client.post("/login", data={"key": GAMMA}, allow_redirects=False) as response:
        assert response.status == 401
    async with api.client.post("/login", data={"key": ALPHA}, allow_redirects=False) as response:
        assert response.status == 303
    async with api.client.get("/") as response:  # to the last folder, else the home: alpha's
        page = await response.text()
        assert response.status == 200 and "alpha-note.txt" in page and "beta-note.txt" not in page
    # The page's own API calls (cookie, no bearer) are alpha's, whatever X-User-Id says.
    assert (await api.json("GET", "/files/cwd", auth=False, headers={"X-User-Id": "beta"}))["cwd"] == home
    replace(tenants_file, entry("beta", BETA))
    await eventually(lambda: api.client.app[TENANTS].named("alpha") is None)
    async with api.request("GET", "/files/cwd", auth=False) as response:
        assert response.status == 401  # logged out with the tenant


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
async def test_a_sandboxed_tenant_cannot_read_the_tenants_file(homes: Path, api_with: ApiFactory) -> None:
    # Outside /tmp (the sandbox's own) and readable by anyone: only the sandbox's hiding keeps it out.
    folder = Path(tempfile.mkdtemp(prefix="opentermd-tenants-", dir="/var/tmp"))
    try:
        folder.chmod(0o755)
        listing = folder / "tenants.toml"
        listing.write_text(entry("alpha", ALPHA) + entry("beta", BETA))
        listing.chmod(0o644)
        api = await api_with(tenants_file=listing, user_prefix=prefix_of(homes), user_homes=homes, sandbox="bwrap")
        reply = await api.json("POST", "/execute?wait=20", auth=False, headers=bearer(ALPHA),
                               json={"command": f"cat {listing}; echo end"})
        text = output_text(reply)  # empty, or refused (the uid may not open the node put over it)
        assert text.split()[-1] == "end" and "token_sha256" not in text and "alpha" not in text, text
        assert "token_sha256" in listing.read_text()  # the daemon's own view is unchanged
    finally:
        shutil.rmtree(folder)


# --- a removed tenant's work --------------------------------------------------------------------------


def gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie waiting for a parent that is not the daemon)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_a_removed_tenants_commands_and_shells_end_with_it_and_the_others_stay(
        api: Api, tenants_file: Path) -> None:
    table = api.client.app[TERMINALS]
    started = {}
    for name, token in (("alpha", ALPHA), ("beta", BETA)):
        reply = await api.json("POST", "/execute", auth=False, headers=bearer(token),
                               json={"command": "echo pid=$$; exec sleep 1000"})
        status = await api.json("GET", f"/execute/{reply['id']}/status?wait=20&until=output", auth=False,
                                headers=bearer(token))
        await api.json("POST", "/api/terminals", auth=False, headers=bearer(token))
        (shell,) = table.pids_of(name)
        pid = int(re.findall(r"pid=(\d+)", output_text(status))[0])
        started[name] = (reply["id"], pid, shell)
    replace(tenants_file, entry("beta", BETA))  # alpha removed

    process_id, pid, shell = started["alpha"]
    await eventually(lambda: gone(pid) and gone(shell))
    as_alpha = {"X-User-Id": "alpha"}  # the admin key still reads what alpha left behind
    status = await api.json("GET", f"/execute/{process_id}/status", headers=as_alpha)
    assert status["status"] == "killed" and status["exit_code"] == -9, status

    async def no_terminals() -> bool:
        listed: list[Any] = await api.json("GET", "/api/terminals", headers=as_alpha)
        return listed == []

    await eventually(no_terminals)
    process_id, pid, shell = started["beta"]
    assert not gone(pid) and not gone(shell)
    assert (await api.json("GET", f"/execute/{process_id}/status", auth=False, headers=bearer(BETA)))["status"] \
        == "running"
    assert len(await api.json("GET", "/api/terminals", auth=False, headers=bearer(BETA))) == 1


async def test_a_new_token_leaves_the_tenants_commands_running(api: Api, tenants_file: Path) -> None:
    reply = await api.json("POST", "/execute", auth=False, headers=bearer(ALPHA),
                           json={"command": "exec sleep 1000"})
    replace(tenants_file, entry("alpha", GAMMA) + entry("beta", BETA))  # same tenant, new token
    await eventually(lambda: api.client.app[TENANTS].find(GAMMA) is not None)
    assert await status_of(api, "/execute", BETA) == 200  # a request later: an ender would have begun by now
    status = await api.json("GET", f"/execute/{reply['id']}/status", auth=False, headers=bearer(GAMMA))
    assert status["status"] == "running"


#: `setsid` puts the sleep in a session and group of its own: killing the command's group misses it. The
#: command waits until it is there (field 6 of /proc/<pid>/stat is the session).
STRAY = ("setsid sleep 1000 </dev/null >/dev/null 2>&1 & p=$!; "
         'until [ "$(cut -d" " -f6 /proc/$p/stat)" = "$p" ]; do :; done; echo stray=$p')


async def test_a_removed_tenants_process_that_left_its_group_ends_too(api: Api, tenants_file: Path) -> None:
    async def stray(token: str) -> int:
        reply = await api.json("POST", "/execute?wait=20", auth=False, headers=bearer(token), json={"command": STRAY})
        return int(re.findall(r"stray=(\d+)", output_text(reply))[0])

    alphas, betas = await stray(ALPHA), await stray(BETA)
    assert not gone(alphas) and os.getsid(alphas) == alphas
    replace(tenants_file, entry("beta", BETA))  # alpha removed
    await eventually(lambda: gone(alphas))
    assert not gone(betas)  # beta's uid is not alpha's


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (a tenant's resident sandbox)")
async def test_a_removed_tenants_sandbox_is_closed_with_what_runs_in_it(homes: Path, api_with: ApiFactory,
                                                                         tenants_file: Path) -> None:
    from daemon.resident import POOL

    api = await api_with(tenants_file=tenants_file, user_prefix=prefix_of(homes), user_homes=homes, sandbox="bwrap")
    for token in (ALPHA, BETA):  # a stray in each: it left its group, and only its sandbox's end reaches it
        reply = await api.json("POST", "/execute?wait=20", auth=False, headers=bearer(token),
                               json={"command": STRAY})
        assert "stray=" in output_text(reply)
    pool, people = api.client.app[POOL], api.client.app[USERS]

    def resident_of(name: str) -> Any:
        account = people.known(name)
        assert account is not None
        [found] = [resident for resident in pool.residents if resident.sandbox.workspace == Path(account.home)]
        return found

    alphas, betas = resident_of("alpha"), resident_of("beta")
    inside = [pid for pid in tree(alphas.pid) if pid != alphas.pid]
    assert len(inside) >= 2  # the launcher and the stray
    replace(tenants_file, entry("beta", BETA))  # alpha removed
    await eventually(lambda: all(gone(pid) for pid in [alphas.pid, *inside]))
    assert pool.residents == [betas] and not gone(betas.pid)


def test_ending_a_uids_processes_refuses_the_system_and_the_daemon() -> None:
    for uid in (0, 1, 999, os.getuid()):
        with pytest.raises(ValueError):
            end_processes_of(uid)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (a tenant's kernel runs in its sandbox)")
async def test_a_removed_tenants_notebook_kernels_end_with_it(homes: Path, api_with: ApiFactory,
                                                               tenants_file: Path) -> None:
    api = await api_with(tenants_file=tenants_file, user_prefix=prefix_of(homes), user_homes=homes, sandbox="bwrap")
    home = Path((await api.json("GET", "/files/cwd", auth=False, headers=bearer(ALPHA)))["cwd"])
    path = write_notebook(home / "n.ipynb", "print(6 * 7)")
    os.chown(path, os.stat(home).st_uid, os.stat(home).st_gid)
    session = await open_notebook(api, path, auth=False, headers=bearer(ALPHA))
    (kernel,) = [entry.kernel for entry in api.client.app[NOTEBOOKS].of_user("alpha")]
    group = kernel.pgid
    assert group is not None and not group_gone(group)
    replace(tenants_file, entry("beta", BETA))  # alpha removed

    await eventually(lambda: not api.client.app[NOTEBOOKS].of_user("alpha") and group_gone(group))
    async with api.request("GET", f"/notebooks/{session}", headers={"X-User-Id": "alpha"}) as response:
        assert response.status == 404


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False
