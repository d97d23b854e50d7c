"""The SDK's side of MCP at /mcp on the daemon's own app (`OPEN_TERMINAL_ENABLE_MCP=true`).

The SDK's streamable-HTTP ASGI app is bridged into an aiohttp handler; the normal auth middleware
guards the route (mount.py adds it). Tool calls go back to this same app as HTTP requests to the
address the MCP request arrived on. Imported only from mount.py's cleanup context, when the app starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.types import ASGIApp, Message, Scope

from daemon.keys import CONFIG, ENDPOINTS
from daemon.mcp.tools import ApiCaller, build_server, build_tools

#: Body chunks handed to the ASGI app.
CHUNK = 64 * 1024
#: How often (seconds) a request whose body is read checks whether its client left.
DISCONNECT_POLL = 0.25


class SelfCaller(ApiCaller):
    """An ApiCaller whose base URL is learnt from the first MCP request (the daemon's own address)."""

    def point_at(self, request: web.Request) -> None:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            host = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
            self._base_url = f"http://{host}:{sockname[1]}"


async def lifetime(app: web.Application, mount: dict[str, Callable[..., Awaitable[Any]]]) -> AsyncIterator[None]:
    """Run the SDK's session manager and the tools' HTTP client as long as the app; fill `mount`."""
    settings = app[CONFIG]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        caller = SelfCaller(session, "http://127.0.0.1", settings.api_key)
        endpoints = app[ENDPOINTS]
        server = build_server(build_tools(endpoints, settings), caller)
        server.streamable_http_app(host=settings.host)
        manager: StreamableHTTPSessionManager = server.session_manager
        async with manager.run():
            closing = asyncio.Event()

            async def handle(request: web.Request) -> web.StreamResponse:
                return await bridge(request, manager.handle_request, caller, closing)

            async def close() -> None:
                closing.set()

            mount["handle"], mount["close"] = handle, close
            try:
                yield
            finally:
                mount.clear()


async def bridge(request: web.Request, asgi: ASGIApp, caller: SelfCaller, closing: asyncio.Event) -> web.StreamResponse:
    """Serve one aiohttp request with an ASGI app: body in, status, headers and streamed body out.

    Once the body is read, receive() reports a disconnect when the client goes or the server shuts
    down (`closing`), which ends long-lived SSE streams so a graceful shutdown does not wait on them.
    """
    caller.point_at(request)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    local = request.transport.get_extra_info("sockname") if request.transport else None
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": request.method, "scheme": request.scheme, "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode(), "query_string": request.query_string.encode(),
        "root_path": "", "headers": [(name.lower(), value) for name, value in request.raw_headers],
        "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
        "server": tuple(local[:2]) if isinstance(local, tuple) else None,
    }
    body_done = False
    response: web.StreamResponse | None = None

    async def receive() -> Message:
        nonlocal body_done
        if not body_done:
            chunk = await request.content.read(CHUNK)
            body_done = request.content.at_eof()
            return {"type": "http.request", "body": chunk, "more_body": not body_done}
        # aiohttp offers no public "client went away" notification: poll the transport.
        while request.transport is not None and not request.transport.is_closing() and not closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), DISCONNECT_POLL)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response
        # A gone client is noticed by receive(); writes to it are dropped meanwhile.
        with contextlib.suppress(ConnectionResetError):
            if message["type"] == "http.response.start":
                response = web.StreamResponse(status=message["status"])
                for name, value in message.get("headers", []):
                    response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
                await response.prepare(request)  # headers go out now: SSE clients wait for them
            elif message["type"] == "http.response.body" and response is not None:
                if message.get("body"):
                    await response.write(message["body"])
                if not message.get("more_body", False):
                    await response.write_eof()

    await asgi(scope, receive, send)
    return response if response is not None else web.Response(status=500)
