"""The Host check (DNS rebinding): a page on evil.example re-pointed at 127.0.0.1 gets nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import config
from daemon.http.hosts import HostPolicy, host_name
from tests.conftest import Api, ApiFactory

EVIL = {"Host": "evil.example"}
WEBUI = "http://localhost:3000"


@pytest.mark.parametrize(("header", "name"), [
    ("localhost:8000", "localhost"), ("Example.COM.", "example.com"), ("[::1]:8000", "::1"), ("[::1]", "::1"),
    ("127.0.0.1", "127.0.0.1"), ("a:b", None), ("[::1]x", None), ("::1", None), ("", None), (":80", None),
])
def test_host_names_are_read_from_the_header(header: str, name: str | None) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(("header", "allowed"), [
    ("localhost:8000", True), ("LOCALHOST", True), ("app.localhost:5173", True), ("127.0.0.1:8000", True),
    ("127.8.9.10", True), ("[::1]:8000", True), ("192.168.1.20:8000", True),
    ("evil.example", False), ("localhost.evil.example", False), ("evil.example:8000", False),
    ("127.0.0.1.evil.example", False), ("[::1", False), ("", False),
])
def test_bound_to_loopback_only_loopback_names_and_addresses_are_answered(header: str, allowed: bool) -> None:
    assert HostPolicy((), "127.0.0.1", binds_loopback=True).allows(header) is allowed


def test_names_can_be_allowed_and_any_host_when_bound_elsewhere() -> None:
    named = HostPolicy(("opentermd", "*.corp.example"), "0.0.0.0", binds_loopback=False)
    assert named.allows("opentermd:8000") and named.allows("box.corp.example") and named.allows("localhost")
    assert not named.allows("corp.example.evil") and not named.allows("evil.example")
    assert HostPolicy((), "0.0.0.0", binds_loopback=False).allows("evil.example")
    assert HostPolicy(("*",), "127.0.0.1", binds_loopback=True).allows("evil.example")
    assert HostPolicy((), "my-laptop", binds_loopback=False).allows("My-Laptop:8000")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/execute"), ("POST", "/execute"), ("GET", "/files/list"), ("GET", "/openapi.json"), ("GET", "/docs"),
    ("GET", "/api/config"), ("GET", "/"), ("GET", "/login"), ("GET", "/no/such/path"), ("GET", "/static/js/app.js"),
])
async def test_a_rebound_name_gets_403_on_every_route(api: Api, method: str, path: str) -> None:
    async with api.request(method, path, headers=EVIL, json={"command": "id"}) as response:
        assert response.status == 403
        assert await response.json() == {"detail": "Host 'evil.example' is not allowed (see --allowed-hosts)"}
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_pages_refuse_a_rebound_name_with_the_styled_page(api: Api) -> None:
    async with api.request("GET", "/browse/", auth=False, headers={**EVIL, "Accept": "text/html"}) as response:
        assert response.status == 403
        assert response.content_type == "text/html"
        assert "Content-Security-Policy" in response.headers
        assert "not allowed" in await response.text()


async def test_the_terminal_websocket_refuses_a_rebound_name(api: Api) -> None:
    async with api.request("GET", "/api/terminals/x", headers={**EVIL, "Connection": "Upgrade", "Upgrade": "websocket",
                                                               "Sec-WebSocket-Version": "13",
                                                               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as r:
        assert r.status == 403


async def test_health_answers_any_host_for_container_checks(api: Api) -> None:
    assert await api.json("GET", "/health", auth=False, headers=EVIL) == {"status": "ok"}


async def test_a_preflight_from_a_rebound_name_is_not_answered(api: Api) -> None:
    headers = {**EVIL, "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    async with api.request("OPTIONS", "/execute", auth=False, headers=headers) as response:
        assert response.status == 403
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]


async def test_open_webui_direct_mode_keeps_working(api: Api) -> None:
    """The browser calls http://localhost:8000 from Open WebUI's origin: preflight, then the call."""
    host = {"Host": "localhost:8000", "Origin": WEBUI}
    preflight = {**host, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    async with api.request("OPTIONS", "/execute", auth=False, headers=preflight) as response:
        assert response.status == 200 and response.headers["Access-Control-Allow-Origin"] == WEBUI
    async with api.request("GET", "/execute", headers=host) as response:
        assert response.status == 200 and response.headers["Access-Control-Allow-Origin"] == WEBUI
        assert await response.json() == []


async def test_open_webui_system_mode_keeps_working_in_a_container(api_with: ApiFactory) -> None:
    """Open WebUI's backend calls http://opentermd:8000 over a Docker network (bound to 0.0.0.0)."""
    container = await api_with(host="0.0.0.0")
    assert await container.json("GET", "/execute", headers={"Host": "opentermd:8000"}) == []
    named = await api_with(host="0.0.0.0", allowed_hosts=("opentermd",))
    assert await named.json("GET", "/execute", headers={"Host": "opentermd:8000"}) == []
    assert await named.json("GET", "/execute", headers={"Host": "172.18.0.3:8000"}) == []
    await named.json("GET", "/execute", status=403, headers=EVIL)


def test_the_settings_come_from_flags_and_the_environment(tmp_path: Path) -> None:
    settings = config.load({"allowed_hosts": "opentermd, *.corp.example"},
                           {"OPEN_TERMINAL_MAX_CONNECTIONS": "64", "OPEN_TERMINAL_HEADER_TIMEOUT": "5"},
                           system_file=tmp_path / "none.toml")
    assert settings.allowed_hosts == ("opentermd", "*.corp.example")
    assert (settings.max_connections, settings.header_timeout, settings.keepalive_timeout) == (64, 5.0, 75.0)
    with pytest.raises(config.ConfigError, match="OPEN_TERMINAL_MAX_CONNECTIONS"):
        config.load({}, {"OPEN_TERMINAL_MAX_CONNECTIONS": "0"}, system_file=tmp_path / "none.toml")
