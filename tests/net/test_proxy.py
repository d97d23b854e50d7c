"""/proxy/{port}/{path}: a real app in a child process, reached through the daemon over real sockets.

The app (UPSTREAM, an aiohttp server written to a file and run with Popen) echoes what it got,
streams bodies of any size, redirects, compresses, and runs a WebSocket echo that can close with
a code it is told.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from multidict import CIMultiDict
from yarl import URL

from daemon import stored_key
from daemon.app import create_app
from daemon.http.auth import KeyGuard
from daemon.http.sessions import COOKIE
from daemon.net import proxy
from tests.conftest import AUTH, KEY, Api, ApiFactory, eventually, make_config, needs_host_view
from tests.http.test_sessions import Browser, new_browser
from tests.net.test_ports import Listener, serve_files, start_listener

UPSTREAM = r'''
import asyncio, gzip, json, sys
from aiohttp import web, WSMsgType

closes = []

async def headers(request):
    return web.json_response({"headers": [[k, v] for k, v in request.headers.items()],
                              "path": request.raw_path, "method": request.method})

async def echo(request):
    response = web.StreamResponse(headers={
        "X-Request-Length": str(request.content_length),
        "X-Request-Chunked": str(request.headers.get("Transfer-Encoding", "")),
    })
    await response.prepare(request)
    async for chunk in request.content.iter_any():
        await response.write(chunk)
    await response.write_eof()
    return response

async def big(request):
    size = int(request.query["size"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    block = b"x" * 65536
    while size > 0:
        await response.write(block[:size])
        size -= len(block)
    await response.write_eof()
    return response

async def redirect(request):
    raise web.HTTPFound("/elsewhere")

async def compressed(request):
    body = gzip.compress(b"squeezed " * 1000)
    return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

async def hop(request):
    return web.Response(text="hop", headers={
        "Connection": "X-Upstream-Hop", "X-Upstream-Hop": "1", "Keep-Alive": "timeout=5",
        "X-Kept": "yes"})

async def cookies(request):
    response = web.Response(text="cookies")
    response.set_cookie("app", "1")
    response.set_cookie("opentermd_session", "planted")
    return response

async def drip(request):
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    while True:
        await response.write(b"data: tick\n\n")
        await asyncio.sleep(0.05)

async def slow(request):
    await asyncio.sleep(30)
    return web.Response(text="late")

async def status(request):
    return web.Response(status=int(request.match_info["code"]), text="status")

async def socket(request):
    ws = web.WebSocketResponse(protocols=("chat",))
    await ws.prepare(request)
    async for message in ws:
        if message.type is WSMsgType.TEXT and message.data.startswith("close:"):
            await ws.close(code=int(message.data[6:]), message=b"bye")
        elif message.type is WSMsgType.TEXT:
            await ws.send_str("echo:" + message.data)
        elif message.type is WSMsgType.BINARY:
            await ws.send_bytes(b"echo:" + message.data)
    closes.append(ws.close_code)
    return ws

async def last_close(request):
    return web.json_response(closes)

async def main():
    app = web.Application()
    app.router.add_route("*", "/headers", headers)
    app.router.add_route("*", "/headers/{tail:.*}", headers)
    app.router.add_post("/echo", echo)
    app.router.add_get("/big", big)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/gzip", compressed)
    app.router.add_get("/hop", hop)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/slow", slow)
    app.router.add_get("/drip", drip)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/ws", socket)
    app.router.add_get("/closes", last_close)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, sys.argv[1], 0)
    await site.start()
    port = runner.addresses[0][1]
    print("port", port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
'''


def start_app(tmp_path: Path, host: str = "127.0.0.1") -> Listener:
    script = tmp_path / "upstream.py"
    script.write_text(UPSTREAM)
    return start_listener([sys.executable, str(script), host])


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[Listener]:
    listener = serve_files(tmp_path)
    yield listener
    listener.stop()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    """The app on 127.0.0.1, shared by the tests that leave it running."""
    listener = start_app(tmp_path_factory.mktemp("app"))
    yield listener
    listener.stop()


@pytest.fixture
def own_app(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Listener]:
    """An app for one test (which may stop it), on 127.0.0.1 or the address given by indirect parametrization."""
    listener = start_app(tmp_path, getattr(request, "param", "127.0.0.1"))
    yield listener
    listener.stop()


def header_map(reply: dict[str, Any]) -> CIMultiDict[str]:
    return CIMultiDict((name, value) for name, value in reply["headers"])


# --- plain HTTP -----------------------------------------------------------------------------------------


async def test_get_a_file(api: Api, file_server: Listener) -> None:
    async with api.request("GET", f"/proxy/{file_server.port}/hello.txt") as response:
        assert response.status == 200
        assert await response.read() == b"hello through the proxy\n"
        assert response.headers["Content-Length"] == str(len(b"hello through the proxy\n"))


async def test_head_keeps_the_length_and_sends_no_body(api: Api, file_server: Listener) -> None:
    async with api.request("HEAD", f"/proxy/{file_server.port}/hello.txt") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(b"hello through the proxy\n"))
        assert await response.read() == b""


async def test_the_directory_listing_and_the_upstream_404(api: Api, file_server: Listener) -> None:
    async with api.request("GET", f"/proxy/{file_server.port}/") as response:
        assert response.status == 200
        assert "hello.txt" in await response.text()
    async with api.request("GET", f"/proxy/{file_server.port}/missing") as response:
        assert response.status == 404  # the app's own 404, passed on
        assert "Port not found" not in await response.text()


async def test_path_and_query_reach_the_app_as_sent(api: Api, app_server: Listener) -> None:
    reply = await api.json("GET", f"/proxy/{app_server.port}/headers/a%20b/c%2Fd?x=1&y=%C3%A9&x=2")
    assert reply["path"] == "/headers/a%20b/c%2Fd?x=1&y=%C3%A9&x=2"
    assert reply["method"] == "GET"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_every_method_is_proxied(api: Api, app_server: Listener, method: str) -> None:
    reply = await api.json(method, f"/proxy/{app_server.port}/headers")
    assert reply["method"] == method


async def test_a_post_body_is_streamed_through_with_its_length(api: Api, app_server: Listener) -> None:
    body = os.urandom(5 * 1024 * 1024)
    async with api.request("POST", f"/proxy/{app_server.port}/echo", data=io.BytesIO(body)) as response:
        assert response.status == 200
        assert await response.read() == body
        assert response.headers["X-Request-Length"] == str(len(body))


async def test_a_chunked_upload_stays_chunked(api: Api, app_server: Listener) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(20):
            yield bytes([index]) * 10_000

    async with api.request("POST", f"/proxy/{app_server.port}/echo", data=chunks()) as response:
        assert response.status == 200
        assert await response.read() == b"".join(bytes([index]) * 10_000 for index in range(20))
        assert response.headers["X-Request-Chunked"] == "chunked"


async def test_hop_by_hop_headers_the_key_and_our_cookie_are_not_forwarded(
        api: Api, app_server: Listener) -> None:
    headers = {
        "Connection": "keep-alive, X-Client-Hop", "X-Client-Hop": "1", "Keep-Alive": "timeout=5",
        "TE": "trailers", "Proxy-Authorization": "Basic eDp5", "X-Custom": "yes",
        "Cookie": f"a=1; {COOKIE}=secret; b=2", "Accept-Encoding": "br",
    }
    seen = header_map(await api.json("GET", f"/proxy/{app_server.port}/headers", headers=headers,
                                     skip_auto_headers=["User-Agent", "Accept"]))
    assert seen["Host"] == f"localhost:{app_server.port}"
    assert seen["X-Custom"] == "yes"
    assert seen["Cookie"] == "a=1; b=2"
    assert seen["Accept-Encoding"] == "br"
    # Nothing the client did not send, either: no User-Agent or Accept of the proxy's own.
    for name in ("Authorization", "X-Client-Hop", "Keep-Alive", "TE", "Proxy-Authorization", "User-Agent", "Accept"):
        assert name not in seen, name
    assert seen.get("Connection", "keep-alive").lower() == "keep-alive"  # aiohttp's own, for the hop


async def test_only_our_cookie_means_no_cookie_header(api: Api, app_server: Listener) -> None:
    seen = header_map(await api.json("GET", f"/proxy/{app_server.port}/headers",
                                     headers={"Cookie": f"{COOKIE}=secret"}))
    assert "Cookie" not in seen


async def test_hop_by_hop_response_headers_are_dropped(api: Api, app_server: Listener) -> None:
    async with api.request("GET", f"/proxy/{app_server.port}/hop") as response:
        assert await response.text() == "hop"
        assert response.headers["X-Kept"] == "yes"
        assert "X-Upstream-Hop" not in response.headers
        assert "Keep-Alive" not in response.headers


async def test_the_app_cannot_set_our_session_cookie(api: Api, app_server: Listener) -> None:
    async with api.request("GET", f"/proxy/{app_server.port}/cookies") as response:
        cookies = response.headers.getall("Set-Cookie")
        assert [cookie.split("=")[0] for cookie in cookies] == ["app"]


async def test_compressed_bodies_pass_through_compressed(api: Api, app_server: Listener) -> None:
    async with api.request("GET", f"/proxy/{app_server.port}/gzip", auto_decompress=False) as response:
        raw = await response.read()
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Length"] == str(len(raw))
        assert gzip.decompress(raw) == b"squeezed " * 1000
    async with api.request("GET", f"/proxy/{app_server.port}/gzip") as response:
        assert await response.read() == b"squeezed " * 1000


async def test_redirects_are_passed_on_not_followed(api: Api, app_server: Listener) -> None:
    async with api.request("GET", f"/proxy/{app_server.port}/redirect", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/elsewhere"


@pytest.mark.parametrize("code", [201, 204, 304, 418, 500, 503])
async def test_statuses_are_passed_on(api: Api, app_server: Listener, code: int) -> None:
    async with api.request("GET", f"/proxy/{app_server.port}/status/{code}") as response:
        assert response.status == code
        assert (await response.read()) == (b"" if code in (204, 304) else b"status")


async def test_a_large_download_streams_in_bounded_memory(api: Api, app_server: Listener) -> None:
    size = 50 * 1024 * 1024
    baseline = _rss()
    peak = baseline
    received = 0
    async with api.request("GET", f"/proxy/{app_server.port}/big?size={size}") as response:
        assert response.headers["Content-Length"] == str(size)
        async for chunk in response.content.iter_chunked(256 * 1024):
            received += len(chunk)
            peak = max(peak, _rss())
    assert received == size
    assert peak - baseline < 25 * 1024 * 1024, (peak - baseline) / 2**20


async def test_an_event_stream_is_passed_on_as_it_comes(api: Api, own_app: Listener) -> None:
    async with api.request("GET", f"/proxy/{own_app.port}/drip") as response:
        assert "Content-Length" not in response.headers
        first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
        assert first == b"data: tick\n\n"
        # The app dies mid-body: the client must see a broken answer, not a complete one.
        own_app.stop()
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(response.read(), 5)


async def test_a_client_that_leaves_mid_body_does_no_harm(
        api: Api, app_server: Listener, caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(3):
        async with api.request("GET", f"/proxy/{app_server.port}/drip") as response:
            await response.content.readuntil(b"\n\n")
            response.close()
    # The proxy notices on its next write and lets go of its upstream connections.
    await eventually(lambda: connections_to(app_server.port) == 0)
    assert [record for record in caplog.records if record.levelname in ("ERROR", "CRITICAL")] == []
    assert (await api.json("GET", f"/proxy/{app_server.port}/headers"))["method"] == "GET"


def connections_to(port: int) -> int:
    """Established TCP connections from this machine to `port` (the proxy's upstream legs)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            count += fields[3] == "01" and int(fields[2].rpartition(":")[2], 16) == port
    return count


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- what may be proxied ----------------------------------------------------------------------------------


async def test_no_trailing_slash_redirects_with_the_query(api: Api) -> None:
    for auth in (True, False):
        async with api.request("GET", "/proxy/3000?a=1&b=%20", auth=auth, allow_redirects=False) as response:
            assert response.status == 307
            location = response.headers["Location"]
            assert location == "./3000/?a=1&b=%20"
            assert str(URL("http://host/proxy/3000?a=1").join(URL(location))) == "http://host/proxy/3000/?a=1&b=%20"
    async with api.request("POST", "/proxy/3000", allow_redirects=False) as response:
        assert response.status == 307
        assert response.headers["Location"] == "./3000/"


@pytest.mark.parametrize("port", ["0", "70000", "-1"])
async def test_a_port_out_of_range_is_422(api: Api, port: str) -> None:
    reply = await api.json("GET", f"/proxy/{port}/", status=422)
    assert reply == {"detail": "Port must be between 1 and 65535"}


async def test_a_port_that_is_not_a_number_is_422_like_fastapi(api: Api) -> None:
    reply = await api.json("GET", "/proxy/abc/x", status=422)
    assert reply == {"detail": [{
        "type": "int_parsing", "loc": ["path", "port"],
        "msg": "Input should be a valid integer, unable to parse string as an integer", "input": "abc"}]}


async def test_a_port_nobody_of_ours_listens_on_is_404(api: Api) -> None:
    # The daemon's own port is listening, but the daemon is not its own descendant.
    reply = await api.json("GET", f"/proxy/{api.client.port}/", status=404)
    assert reply == {"detail": "Port not found"}


async def test_a_dead_server_is_404(api: Api, own_app: Listener) -> None:
    await api.json("GET", f"/proxy/{own_app.port}/headers")
    own_app.stop()
    assert await api.json("GET", f"/proxy/{own_app.port}/headers", status=404) == {"detail": "Port not found"}


@pytest.mark.parametrize("own_app", ["127.0.0.2"], indirect=True)
async def test_an_app_on_another_loopback_address_is_reached_there(api: Api, own_app: Listener) -> None:
    seen = header_map(await api.json("GET", f"/proxy/{own_app.port}/headers"))
    assert seen["Host"] == f"localhost:{own_app.port}"


@pytest.mark.parametrize("own_app", ["0.0.0.0", "::"], indirect=True)
async def test_an_app_on_every_address_is_reached_on_loopback(api: Api, own_app: Listener) -> None:
    assert (await api.json("GET", f"/proxy/{own_app.port}/headers"))["method"] == "GET"


SERVING_ON = re.compile(r"Serving HTTP on \S+ port (\d+)")


def serve_foreign(directory: Path, host: str, port: int) -> int:
    """A file server that is not the daemon's descendant: started by a shell that exits at once, so
    it is re-parented to init (as a program another user or service started). Returns its pid."""
    command = (f"{sys.executable} -u -m http.server {port} --bind {host} --directory {directory} "
               f"> {directory}/log 2>&1 & echo $!")
    return int(subprocess.run(["bash", "-c", command], capture_output=True, check=True).stdout)


@needs_host_view("uses tmp_path, outside the sandbox's workspace")
async def test_a_foreign_server_on_the_same_port_is_never_reached(api: Api, tmp_path: Path) -> None:
    """The attack: a child listens on 127.0.0.2:P, another program on 127.0.0.1:P. The proxy used to
    match the port alone and connect to localhost, i.e. to the other program."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for folder, text in ((ours, "child"), (theirs, "foreign")):
        folder.mkdir()
        (folder / "who.txt").write_text(text)
    child = await api.run(f"exec {sys.executable} -u -m http.server 0 --bind 127.0.0.2 --directory {ours}", wait=0)

    async def child_port() -> int | None:
        reply = await api.json("GET", f"/execute/{child['id']}/status")
        match = SERVING_ON.search("".join(entry["data"] for entry in reply["output"]))
        return int(match.group(1)) if match else None

    port = await eventually(child_port)
    foreign = serve_foreign(theirs, "127.0.0.1", port)
    try:
        await eventually(lambda: SERVING_ON.search((theirs / "log").read_text()) is not None)
        async with api.request("GET", f"/proxy/{port}/who.txt") as response:
            assert (response.status, await response.text()) == (200, "child")
        await api.json("DELETE", f"/execute/{child['id']}?force=true")

        async def gone() -> bool:
            status: str = (await api.json("GET", f"/execute/{child['id']}/status"))["status"]
            return status != "running"

        await eventually(gone)
        # Only the foreign server listens on P now: it is not ours, so the proxy does not know the port.
        assert await api.json("GET", f"/proxy/{port}/who.txt", status=404) == {"detail": "Port not found"}
    finally:
        os.kill(foreign, signal.SIGKILL)


@pytest.mark.parametrize("own_app", ["::1"], indirect=True)
async def test_an_app_listening_on_ipv6_loopback_only_is_reached(api: Api, own_app: Listener) -> None:
    seen = header_map(await api.json("GET", f"/proxy/{own_app.port}/headers"))
    assert seen["Host"] == f"localhost:{own_app.port}"


async def test_a_silent_app_times_out_with_504(
        api: Api, app_server: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy, "READ_TIMEOUT", 0.5)
    reply = await api.json("GET", f"/proxy/{app_server.port}/slow", status=504)
    assert reply == {"detail": f"Timeout connecting to localhost:{app_server.port}"}


# --- who may use it ---------------------------------------------------------------------------------------


async def test_without_credentials_it_is_401(api: Api, app_server: Listener) -> None:
    for path in (f"/proxy/{app_server.port}/headers", f"/proxy/{app_server.port}/headers?token={KEY}",
                 "/proxy/abc/", "/proxy/0/"):
        assert await api.json("GET", path, status=401, auth=False) == {"detail": "Invalid API key"}
    assert await api.json("GET", f"/proxy/{app_server.port}/headers", status=401,
                          auth=False, headers={"Authorization": "Bearer wrong"}) == {"detail": "Invalid API key"}


async def test_a_token_query_works_only_when_enabled(api_with: ApiFactory, app_server: Listener) -> None:
    api = await api_with(proxy_token_auth=True)
    path = f"/proxy/{app_server.port}/headers"
    reply = await api.json("GET", f"{path}?a=1&token={KEY}&b=2", auth=False)
    assert reply["path"] == "/headers?a=1&b=2"
    assert "Authorization" not in header_map(reply)
    await api.json("GET", f"{path}?token=wrong", status=401, auth=False)
    await api.json("GET", f"{path}?token=", status=401, auth=False)


async def test_the_key_in_a_referer_is_not_forwarded(api: Api, app_server: Listener) -> None:
    page = f"http://daemon/proxy/{app_server.port}/"
    for sent, seen in ((f"{page}?token={KEY}", page), (f"{page}?a=1&token={KEY}", f"{page}?a=1"),
                       (f"{page}?token=mine", f"{page}?token=mine"), (page, page)):
        reply = await api.json("GET", f"/proxy/{app_server.port}/headers", headers={"Referer": sent})
        assert header_map(reply)["Referer"] == seen


async def test_the_apps_own_token_parameter_is_forwarded(api: Api, app_server: Listener) -> None:
    reply = await api.json("GET", f"/proxy/{app_server.port}/headers?token=the-apps-own")
    assert reply["path"] == "/headers?token=the-apps-own"
    reply = await api.json("GET", f"/proxy/{app_server.port}/headers?token={KEY}")
    assert reply["path"] == "/headers"  # the key itself is never handed to the app


async def test_a_logged_in_page_session_may_use_the_proxy(
        aiohttp_client: Any, config: Any, app_server: Listener) -> None:
    browser = await new_browser(aiohttp_client, config)
    await browser.log_in()
    reply = await _page_json(browser, "GET", f"/proxy/{app_server.port}/headers", 200,
                             headers={"Sec-Fetch-Site": "same-origin", "Cookie": "app=1"})
    seen = header_map(reply)
    assert COOKIE not in seen.get("Cookie", "")
    # A POST from the app's own page carries no CSRF token of ours, and needs none.
    await _page_json(browser, "POST", f"/proxy/{app_server.port}/headers", 200,
                     headers={"Origin": browser.origin, "Sec-Fetch-Site": "same-origin"})


async def test_a_page_session_from_another_site_is_refused(
        aiohttp_client: Any, config: Any, app_server: Listener) -> None:
    browser = await new_browser(aiohttp_client, config)
    await browser.log_in()
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}):
        reply = await _page_json(browser, "POST", f"/proxy/{app_server.port}/headers", 403, headers=headers)
        assert "CSRF" in reply["detail"]


async def _page_json(browser: Browser, method: str, path: str, status: int, **kwargs: Any) -> Any:
    async with browser.client.request(method, path, **kwargs) as response:
        body = await response.json()
        assert response.status == status, body
        return body


# --- WebSocket --------------------------------------------------------------------------------------------


async def test_websocket_text_and_binary_frames_are_relayed(api: Api, app_server: Listener) -> None:
    async with api.client.ws_connect(f"/proxy/{app_server.port}/ws", headers=AUTH, protocols=("chat",)) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("héllo")
        assert (await ws.receive(timeout=5)).data == "echo:héllo"
        await ws.send_bytes(b"\x00\xff" * 100_000)
        assert (await ws.receive(timeout=5)).data == b"echo:" + b"\x00\xff" * 100_000


async def test_the_apps_close_code_reaches_the_client(api: Api, app_server: Listener) -> None:
    async with api.client.ws_connect(f"/proxy/{app_server.port}/ws", headers=AUTH) as ws:
        await ws.send_str("close:4001")
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert message.data == 4001
        assert message.extra == "bye"


async def test_the_clients_close_code_reaches_the_app(api: Api, app_server: Listener) -> None:
    before = len(await api.json("GET", f"/proxy/{app_server.port}/closes"))
    async with api.client.ws_connect(f"/proxy/{app_server.port}/ws", headers=AUTH) as ws:
        await ws.send_str("ping")
        await ws.receive(timeout=5)
        await ws.close(code=4002, message=b"done")

    async def new_closes() -> list[int]:
        closes: list[int] = await api.json("GET", f"/proxy/{app_server.port}/closes")
        return closes[before:]

    assert await eventually(new_closes) == [4002]


async def test_the_client_learns_when_the_app_dies(api: Api, own_app: Listener) -> None:
    async with api.client.ws_connect(f"/proxy/{own_app.port}/ws", headers=AUTH) as ws:
        await ws.send_str("ping")
        await ws.receive(timeout=5)
        own_app.stop()
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert message.data == aiohttp.WSCloseCode.GOING_AWAY


async def test_websockets_need_credentials_and_take_a_token_when_enabled(
        api_with: ApiFactory, app_server: Listener) -> None:
    api = await api_with(proxy_token_auth=True)
    path = f"/proxy/{app_server.port}/ws"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.client.ws_connect(path)
    assert refused.value.status == 401
    async with api.client.ws_connect(f"{path}?token={KEY}") as ws:
        await ws.send_str("via token")
        assert (await ws.receive(timeout=5)).data == "echo:via token"


@pytest.mark.parametrize("by", ["bearer", "token query"])
async def test_a_key_rotation_closes_a_websocket_the_old_key_opened(
        aiohttp_client: Any, tmp_path: Path, own_app: Listener, by: str) -> None:
    state = tmp_path / "state"
    old, _ = stored_key.load_or_create(state)
    settings = make_config(tmp_path, api_key=old, api_key_source="stored", proxy_token_auth=True)
    api = Api(await aiohttp_client(create_app(settings)))
    path = f"/proxy/{own_app.port}/ws"
    opened = (api.client.ws_connect(path, headers={"Authorization": f"Bearer {old}"}) if by == "bearer"
              else api.client.ws_connect(f"{path}?token={old}"))
    async with opened as ws:
        await ws.send_str("before")
        assert (await ws.receive(timeout=5)).data == "echo:before"
        stored_key.rotate(state)  # what `opentermd key --rotate` calls
        message = await ws.receive(timeout=20)
        assert message.type is WSMsgType.CLOSE and (message.data, message.extra) == (4001, "Key rotated")
    async with aiohttp.ClientSession() as direct:

        async def app_saw_going_away() -> bool:
            async with direct.get(f"http://127.0.0.1:{own_app.port}/closes") as response:
                return aiohttp.WSCloseCode.GOING_AWAY in await response.json()

        await eventually(app_saw_going_away)


async def test_a_refused_websocket_handshake_is_502(api: Api, app_server: Listener) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.client.ws_connect(f"/proxy/{app_server.port}/headers", headers=AUTH)
    assert refused.value.status == 502


# --- the pieces on their own ------------------------------------------------------------------------------


def test_request_headers_drop_what_a_connection_header_names() -> None:
    headers = CIMultiDict([("Connection", "Upgrade, X-A"), ("Connection", "x-b"), ("X-A", "1"), ("X-B", "2"),
                           ("X-C", "3"), ("Upgrade", "websocket"), ("Sec-WebSocket-Key", "k"),
                           ("Expect", "100-continue"), ("Host", "daemon")])
    assert list(proxy.request_headers(headers).items()) == [("X-C", "3"), ("Sec-WebSocket-Key", "k")]
    assert list(proxy.request_headers(headers, websocket=True).items()) == [("X-C", "3")]


def test_without_cookie() -> None:
    assert proxy.without_cookie(f"a=1;{COOKIE}=x;  b=2", COOKIE) == "a=1; b=2"
    assert proxy.without_cookie(f"{COOKIE}=x", COOKIE) == ""
    assert proxy.without_cookie(f"{COOKIE}_other=x", COOKIE) == f"{COOKIE}_other=x"


def test_upstream_query_removes_only_the_key() -> None:
    guard = KeyGuard(KEY)
    assert proxy.upstream_query(f"token={KEY}", guard) == ""
    assert proxy.upstream_query(f"a=1&token={KEY}&token=mine&b", guard) == "a=1&token=mine&b"
    assert proxy.upstream_query("", guard) == ""


@pytest.mark.parametrize(("received", "sent"), [
    (1000, 1000), (1001, 1001), (1011, 1011), (4001, 4001), (3000, 3000),
    (0, 1000), (None, 1000), (1005, 1000), (1006, 1001), (1015, 1001), (999, 1001), (5000, 1001),
])
def test_sendable_close_code(received: object, sent: int) -> None:
    assert proxy.sendable_close_code(received) == sent


async def test_the_exact_resolver() -> None:
    resolver = proxy.ExactResolver(["127.0.0.2", "::1"])
    assert [entry["host"] for entry in await resolver.resolve("localhost", 80, socket.AF_UNSPEC)] == [
        "127.0.0.2", "::1"]
    assert [entry["host"] for entry in await resolver.resolve("localhost", 80, socket.AF_INET6)] == ["::1"]
    await resolver.close()


def test_wildcard_addresses_are_reached_on_loopback() -> None:
    assert [proxy.connectable(host) for host in ("0.0.0.0", "::", "127.0.0.2", "::1", "10.1.2.3")] == [
        "127.0.0.1", "::1", "127.0.0.2", "::1", "10.1.2.3"]
