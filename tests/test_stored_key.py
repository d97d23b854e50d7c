"""The stored API key: kept across restarts, printed and rotated by `opentermd key`, rotation noticed
by a running server; the banner's key source; OPEN_TERMINAL_ENABLE_TERMINAL=false."""

from __future__ import annotations

import io
import stat
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon import cli, config, stored_key
from daemon.app import create_app
from daemon.http.sessions import COOKIE
from daemon.key_source import describe_key
from daemon.keys import TERMINALS
from tests.conftest import Api, ApiFactory, eventually, make_config
from tests.http.test_sessions import Browser
from tests.terminals.test_terminals import attach, closed_with
from tests.test_cli import ROOT, _banner, daemon_command, environment


def run_key(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(daemon_command("key", *args), cwd=ROOT, env=environment(tmp_path, **extra),
                          capture_output=True, text=True, timeout=60)


def started_key(tmp_path: Path) -> str:
    """The key a daemon started on tmp_path's state directory prints (the daemon is then killed)."""
    with subprocess.Popen(daemon_command("run", "--port", "0", "--cwd", str(tmp_path)), cwd=ROOT,
                          env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        for running, _url in _banner(process):
            key: str = running.key  # type: ignore[attr-defined]
            return key
    raise AssertionError("no banner")


def test_the_generated_key_is_stored_privately_and_reused_by_the_next_start(tmp_path: Path) -> None:
    first = started_key(tmp_path)
    path = tmp_path / "st" / "opentermd" / stored_key.FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text().strip() == first and len(first) >= 64
    assert started_key(tmp_path) == first
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_key_prints_the_stored_key_and_rotate_replaces_it(tmp_path: Path) -> None:
    shown = run_key(tmp_path)
    assert shown.returncode == 0, shown.stderr
    key = shown.stdout.strip()
    assert run_key(tmp_path).stdout.strip() == key
    rotated = run_key(tmp_path, "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new != key and len(new) >= 64
    path = tmp_path / "st" / "opentermd" / stored_key.FILE_NAME
    assert path.read_text().strip() == new and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run_key(tmp_path).stdout.strip() == new


def test_rotate_refuses_a_key_from_the_configuration(tmp_path: Path) -> None:
    assert run_key(tmp_path, OPEN_TERMINAL_API_KEY="configured").stdout == "configured\n"
    refused = run_key(tmp_path, "--rotate", OPEN_TERMINAL_API_KEY="configured")
    assert refused.returncode == 2
    assert "OPEN_TERMINAL_API_KEY environment variable" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "st" / "opentermd" / stored_key.FILE_NAME).exists()


def test_in_a_container_a_stored_key_is_not_printed_again(tmp_path: Path) -> None:
    state = tmp_path / "state"
    stored_key.load_or_create(state)
    settings = config.load({"cwd": str(tmp_path)}, {"OPEN_TERMINAL_STATE_DIR": str(state),
                                                     "OPEN_TERMINAL_IN_CONTAINER": "1"})
    assert settings.api_key_source == "stored" and settings.api_key not in describe_key(settings)
    assert describe_key(settings) == (f"(stored in {settings.stored_key_path}; "
                                      "`opentermd key` in the container prints it)")


@pytest.mark.parametrize(("source", "shown"), [
    ("flag", "(from the --api-key flag)"),
    ("environment", "(from the OPEN_TERMINAL_API_KEY environment variable)"),
    ("file", "(from the OPEN_TERMINAL_API_KEY_FILE file)"),
    ("config file", "(from the config file)"),
    ("generated", "{key}  (generated, stored in {path})"),
    ("stored", "{key}  (stored in {path})"),
])
def test_the_banner_says_where_the_key_came_from(tmp_path: Path, source: str, shown: str) -> None:
    state = tmp_path / "state"
    environ = {"XDG_STATE_HOME": str(tmp_path / "xdg"), "OPEN_TERMINAL_STATE_DIR": str(state)}
    flags: dict[str, Any] = {"cwd": str(tmp_path)}
    toml = tmp_path / "config.toml"
    toml.write_text("")
    if source == "flag":
        flags["api_key"] = "secret-flag"
    elif source == "environment":
        environ["OPEN_TERMINAL_API_KEY"] = "secret-env"
    elif source == "file":
        (tmp_path / "key").write_text("secret-file\n")
        environ["OPEN_TERMINAL_API_KEY_FILE"] = str(tmp_path / "key")
    elif source == "config file":
        toml.write_text('api_key = "secret-toml"\n')
    elif source == "stored":
        stored_key.write(stored_key.key_path(state), "a-stored-key")
    settings = config.load(flags, environ, config_file=toml, system_file=tmp_path / "none.toml")
    out = io.StringIO()
    cli._announce(settings, 8000, "token", out)
    line = next(line for line in out.getvalue().splitlines() if "API key:" in line)
    assert line == "  API key:   " + shown.format(key=settings.api_key, path=stored_key.key_path(state))
    assert settings.api_key_source == source
    if source not in ("generated", "stored"):
        assert "secret" not in out.getvalue()  # a configured key is never printed


async def status_with(api: Api, headers: dict[str, str]) -> int:
    async with api.client.get("/files/cwd", headers=headers) as response:
        return response.status


async def test_a_running_server_takes_a_rotated_key_and_ends_what_the_old_one_opened(
        aiohttp_client: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    old, _ = stored_key.load_or_create(state)
    api = Api(await aiohttp_client(create_app(make_config(tmp_path, api_key=old, api_key_source="stored"))))
    browser = Browser(api.client)
    await browser.log_in(old)
    cookie = browser.cookie
    api.client.session.cookie_jar.clear()  # from here on each request says which credential it uses
    by_cookie = {"Cookie": f"{COOKIE}={cookie}"}
    old_bearer = {"Authorization": f"Bearer {old}"}
    assert await status_with(api, by_cookie) == 200 and await status_with(api, old_bearer) == 200

    terminals = []
    for _ in range(2):
        async with api.client.post("/api/terminals", headers=old_bearer) as response:
            terminals.append((await response.json())["id"])
    by_key = await attach(api, terminals[0], token=old)
    by_page = await api.client.ws_connect(f"/api/terminals/{terminals[1]}",
                                          headers={**by_cookie, "Origin": browser.origin})
    await eventually(lambda: len(api.client.app[TERMINALS].sockets) == 2)

    new = stored_key.rotate(state)  # what `opentermd key --rotate` calls

    assert await closed_with(by_key) == 4001 and await closed_with(by_page) == 4001
    assert {by_key.close_code, by_page.close_code} == {4001}

    async def rotated() -> bool:
        return (await status_with(api, old_bearer) == 401
                and await status_with(api, {"Authorization": f"Bearer {new}"}) == 200)

    await eventually(rotated)
    assert await status_with(api, by_cookie) == 401


async def test_rotation_closes_a_key_socket_with_the_reason(aiohttp_client: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    old, _ = stored_key.load_or_create(state)
    api = Api(await aiohttp_client(create_app(make_config(tmp_path, api_key=old, api_key_source="stored"))))
    async with api.client.post("/api/terminals", headers={"Authorization": f"Bearer {old}"}) as response:
        terminal = (await response.json())["id"]
    socket = await attach(api, terminal, token=old)
    await eventually(lambda: len(api.client.app[TERMINALS].sockets) == 1)
    stored_key.rotate(state)
    while (message := await socket.receive(timeout=20)).type == aiohttp.WSMsgType.BINARY:
        pass
    assert message.type == aiohttp.WSMsgType.CLOSE and (message.data, message.extra) == (4001, "Key rotated")


async def test_a_configured_key_ignores_the_stored_file(aiohttp_client: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    api = Api(await aiohttp_client(create_app(make_config(tmp_path, api_key="configured-key", state_dir=state))))
    stored_key.rotate(state)
    assert await status_with(api, {"Authorization": "Bearer configured-key"}) == 200


# --- OPEN_TERMINAL_ENABLE_TERMINAL ----------------------------------------------------------------------


def test_enable_terminal_is_read_from_the_environment(tmp_path: Path) -> None:
    environ = {"OPEN_TERMINAL_ENABLE_TERMINAL": "false", "OPEN_TERMINAL_API_KEY": "k"}
    assert config.load({"cwd": str(tmp_path)}, environ, system_file=tmp_path / "none").enable_terminal is False
    assert config.load({"cwd": str(tmp_path)}, {"OPEN_TERMINAL_API_KEY": "k"},
                       system_file=tmp_path / "none").enable_terminal is True


@pytest.mark.parametrize("enabled", [True, False])
async def test_terminal_routes_exist_only_when_enabled(api_with: ApiFactory, enabled: bool) -> None:
    api = await api_with(enable_terminal=enabled)
    assert (await api.json("GET", "/api/config", auth=False))["features"]["terminal"] is enabled
    async with api.request("GET", "/api/terminals") as response:
        assert response.status == (200 if enabled else 404)
    if not enabled:
        for method, path in [("POST", "/api/terminals"), ("GET", "/api/terminals/user/output"),
                             ("POST", "/api/terminals/user/input"), ("GET", "/api/terminals/someid"),
                             ("DELETE", "/api/terminals/someid"), ("GET", "/api/terminals/someid/recording")]:
            async with api.request(method, path) as response:
                assert response.status == 404, (method, path)
    async with api.request("GET", "/terminal", allow_redirects=False) as response:
        assert (response.status == 404) is (not enabled)
    document = await api.json("GET", "/openapi.json", auth=False)
    assert ("/api/terminals/user/output" in document["paths"]) is enabled
    assert ("/api/terminals/user/input" in document["paths"]) is enabled
    if not enabled:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await api.client.ws_connect("/api/terminals/someid")
        assert refused.value.status == 404
        assert "/execute" in document["paths"]  # only the terminal operations are gone
