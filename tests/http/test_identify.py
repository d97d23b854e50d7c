"""One answer to "who is calling": the key, a page session from our own origin, or nobody.

The auth middleware, the terminal WebSocket (and its GET) and the proxy all ask `auth.identify`,
so the same credentials get the same answer everywhere. A WebSocket opened with the page cookie
needs an Origin equal to ours, and it ends with its page session (logout, expiry).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.config import Config
from daemon.http import sessions as sessions_module
from daemon.keys import SESSIONS, TERMINALS
from tests.conftest import AUTH, FakeClock, eventually, process_group_members
from tests.http.test_sessions import Browser, new_browser
from tests.net.test_ports import Listener, serve_files
from tests.net.test_proxy import start_app
from tests.terminals.test_terminals import read_until

Socket = aiohttp.ClientWebSocketResponse


@pytest.fixture
async def browser(aiohttp_client: Any, config: Config) -> Browser:
    page = await new_browser(aiohttp_client, config)
    await page.log_in()
    return page


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[Listener]:
    listener = serve_files(tmp_path)
    yield listener
    listener.stop()


@pytest.fixture
def app_server(tmp_path: Path) -> Iterator[Listener]:
    listener = start_app(tmp_path)
    yield listener
    listener.stop()


async def new_terminal(browser: Browser, **options: Any) -> dict[str, Any]:
    async with browser.client.post("/api/terminals", json=options, headers=AUTH) as response:
        assert response.status == 200
        created: dict[str, Any] = await response.json()
        return created


async def cookie_terminal(browser: Browser, **options: Any) -> tuple[dict[str, Any], Socket]:
    """A terminal attached the way the /terminal page does: the cookie, from our own origin."""
    session = await new_terminal(browser, **options)
    socket = await browser.client.ws_connect(f"/api/terminals/{session['id']}", headers={"Origin": browser.origin})
    await socket.send_bytes(b"echo attached-$((3+4))\n")
    await read_until(socket, b"attached-7")
    return session, socket


async def close_of(socket: Socket) -> tuple[int | None, str]:
    """The close code and reason, skipping any output still on its way."""
    while True:
        message = await socket.receive(timeout=10)
        if message.type == aiohttp.WSMsgType.CLOSE:
            return message.data, message.extra or ""
        if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return socket.close_code, ""
        assert message.type == aiohttp.WSMsgType.BINARY, message


async def log_out(browser: Browser) -> None:
    async with browser.client.post("/logout", data={"csrf_token": browser.csrf}, allow_redirects=False) as response:
        assert response.status == 303


# --- the same answer on every route ----------------------------------------------------------------------

CREDENTIALS = {
    "key": ({"Authorization": AUTH["Authorization"]}, False, 200),
    "cookie from our pages": ({"Sec-Fetch-Site": "same-origin"}, True, 200),
    "cookie typed in the address bar": ({}, True, 200),
    "cookie from another site": ({"Sec-Fetch-Site": "cross-site"}, True, 403),
    "cookie from another port": ({"Origin": "http://127.0.0.1:1"}, True, 403),
    "nothing": ({}, False, 401),
    "a wrong key": ({"Authorization": "Bearer wrong"}, False, 401),
}


@pytest.mark.parametrize("name", CREDENTIALS)
async def test_middleware_terminal_and_proxy_agree_on_who_is_calling(
        browser: Browser, file_server: Listener, name: str) -> None:
    headers, with_cookie, status = CREDENTIALS[name]
    terminal = await new_terminal(browser)
    if not with_cookie:
        browser.client.session.cookie_jar.clear()
    for path in ("/api/terminals", f"/api/terminals/{terminal['id']}", f"/proxy/{file_server.port}/hello.txt"):
        async with browser.client.get(path, headers=headers) as response:
            assert response.status == status, (path, await response.text())


# --- WebSockets with the cookie ----------------------------------------------------------------------------


async def test_a_cookie_websocket_without_origin_is_refused(browser: Browser) -> None:
    """The attack: a non-browser client (or a page that can suppress Origin) with the cookie got a shell."""
    terminal = await new_terminal(browser)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await browser.client.ws_connect(f"/api/terminals/{terminal['id']}")
    assert refused.value.status == 403
    # A refused attempt also gives the never-attached terminal's slot back.
    assert await eventually(lambda: process_group_members(terminal["pid"]) == [], timeout=10)


async def test_a_cookie_websocket_from_another_origin_is_refused(browser: Browser) -> None:
    terminal = await new_terminal(browser)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await browser.client.ws_connect(f"/api/terminals/{terminal['id']}", headers={"Origin": "http://127.0.0.1:1"})
    assert refused.value.status == 403


async def test_a_proxied_cookie_websocket_without_origin_is_refused(browser: Browser, app_server: Listener) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await browser.client.ws_connect(f"/proxy/{app_server.port}/ws")
    assert refused.value.status == 403
    async with browser.client.ws_connect(f"/proxy/{app_server.port}/ws", headers={"Origin": browser.origin}) as ws:
        await ws.send_str("ours")
        assert (await ws.receive(timeout=5)).data == "echo:ours"


async def test_the_key_in_the_handshake_header_opens_a_terminal(browser: Browser) -> None:
    browser.client.session.cookie_jar.clear()
    terminal = await new_terminal(browser)
    socket = await browser.client.ws_connect(f"/api/terminals/{terminal['id']}", headers=AUTH)
    await socket.send_bytes(b"exit\n")
    assert (await close_of(socket))[0] == 1000


# --- the session ends, its sockets close -------------------------------------------------------------------


async def test_logout_closes_the_terminal_sockets_the_cookie_opened(browser: Browser) -> None:
    """The attack: after logout, a terminal opened with the cookie kept its shell and socket."""
    plain, plain_socket = await cookie_terminal(browser)
    kept, kept_socket = await cookie_terminal(browser, detach=True)
    await log_out(browser)
    assert await close_of(plain_socket) == (4001, "Logged out")
    assert await close_of(kept_socket) == (4001, "Logged out")
    assert await eventually(lambda: process_group_members(plain["pid"]) == [], timeout=10)
    # A detachable shell keeps running (the key can re-attach to it); only the socket is gone.
    table = browser.client.app[TERMINALS]
    assert await eventually(lambda: (found := table.find(kept["id"])) is not None and not found.attached)
    assert process_group_members(kept["pid"])


async def test_logout_leaves_sockets_opened_with_the_key_alone(browser: Browser) -> None:
    terminal = await new_terminal(browser)
    keyed = await browser.client.ws_connect(f"/api/terminals/{terminal['id']}", headers={"Origin": browser.origin},
                                            protocols=("opentermd", f"opentermd.token.{AUTH['Authorization'][7:]}"))
    _, cookie_socket = await cookie_terminal(browser)
    await log_out(browser)
    assert (await close_of(cookie_socket))[0] == 4001
    await keyed.send_bytes(b"echo key-$((8+1))\n")
    await read_until(keyed, b"key-9")
    await keyed.close()


async def test_logout_closes_a_proxied_websocket_the_cookie_opened(browser: Browser, app_server: Listener) -> None:
    ws = await browser.client.ws_connect(f"/proxy/{app_server.port}/ws", headers={"Origin": browser.origin})
    await ws.send_str("before")
    assert (await ws.receive(timeout=5)).data == "echo:before"
    await log_out(browser)
    message = await ws.receive(timeout=10)
    assert (message.type, message.data, message.extra) == (aiohttp.WSMsgType.CLOSE, 4001, "Logged out")

    async def app_saw_the_close() -> list[int]:
        async with browser.client.get(f"/proxy/{app_server.port}/closes", headers=AUTH) as response:
            closes: list[int] = await response.json()
            return closes

    assert await eventually(app_saw_the_close) == [1001]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(sessions_module, "time", fake)
    return fake


async def test_the_end_of_a_sessions_lifetime_closes_its_sockets(clock: FakeClock, browser: Browser) -> None:
    _, socket = await cookie_terminal(browser)
    sessions = browser.client.app[SESSIONS]
    clock.advance(sessions.lifetime)
    sessions.sweep()
    assert not socket.closed
    clock.advance(1)
    sessions.sweep()
    assert await close_of(socket) == (4001, "Session expired")


async def test_an_open_terminal_keeps_its_session_from_going_idle(clock: FakeClock, browser: Browser) -> None:
    _, socket = await cookie_terminal(browser)
    sessions = browser.client.app[SESSIONS]
    clock.advance(sessions.idle + 1)
    sessions.sweep()
    async with browser.client.get("/api/terminals", headers={"Sec-Fetch-Site": "same-origin"}) as response:
        assert response.status == 200
    await socket.close()
    clock.advance(sessions.idle + 1)
    async with browser.client.get("/api/terminals", headers={"Sec-Fetch-Site": "same-origin"}) as response:
        assert response.status == 401
