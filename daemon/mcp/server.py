"""The MCP server: the generated tools over stdio, or over streamable HTTP behind the API key.

The daemon's own app runs in the same process on a private unix socket; each tool call is an
HTTP request to it (see tools.py). Streamable HTTP is the SDK's Starlette app served by uvicorn
(a dependency of the SDK) on its own port, wrapped in a bearer-key check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Self

import aiohttp
import anyio
import uvicorn
from aiohttp import web
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared._stream_protocols import ReadStream, WriteStream  # the types of Server.run's streams
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import JSONRPCError, JSONRPCMessage, JSONRPCRequest, JSONRPCResponse, RequestId
from starlette.types import ASGIApp, Receive, Scope, Send

from daemon import __version__
from daemon.config import Config
from daemon.http.auth import KeyGuard
from daemon.key_source import describe_key
from daemon.keys import ENDPOINTS
from daemon.mcp.tools import ApiCaller, build_server, build_tools
from daemon.shutdown import REQUEST_GRACE

MCP_PATH = "/mcp"
#: The longest a tool call may rightly take: `wait` is at most 300 s (daemon/processes/endpoints.py), or the
#: configured execute timeout when `wait` is left out; the margin is for the reply to be sent after that.
LONGEST_TOOL_WAIT = 300.0
REPLY_MARGIN = 30.0


class BearerGuard:
    """ASGI middleware: HTTP requests need `Authorization: Bearer <API key>`, else 401."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self._app = app
        self._guard = KeyGuard(key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._guard.matches(_bearer(scope)):
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": json.dumps({"detail": "Invalid API key"}).encode()})
            return
        await self._app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token if scheme.lower() == "bearer" and token.strip() else None
    return None


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling (the caller's stop event ends it) that says where it
    listens once it does: with `--port 0` only the bound socket knows the port."""

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[int], None]) -> None:
        super().__init__(config)
        self._on_listening = on_listening

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        bound = [sock for server in self.servers for sock in server.sockets]
        if bound and not self.should_exit:
            self._on_listening(int(bound[0].getsockname()[1]))


async def serve(settings: Config, transport: str, stop: asyncio.Event,
                create_app: Callable[[Config], web.Application]) -> None:
    """Run the API on a private socket and the MCP server ("stdio" or "streamable-http") until stopped.

    `create_app` is daemon.app's, passed in by the caller: the MCP room never imports the app that mounts it.
    """
    app = create_app(settings)
    # As in `opentermd run`: a request still in flight at the end (a tool call whose reply nobody awaits any
    # more, such as a cancelled `wait`) does not hold the exit for aiohttp's default minute.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=REQUEST_GRACE)
    await runner.setup()
    try:
        with tempfile.TemporaryDirectory(prefix="opentermd-mcp-") as folder:
            socket_path = os.path.join(folder, "api.sock")
            await web.UnixSite(runner, socket_path).start()
            connector = aiohttp.UnixConnector(path=socket_path)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
                # Any name reaches the socket, but the Host check (daemon/http/hosts.py) answers only ours.
                caller = ApiCaller(session, "http://localhost", settings.api_key)
                endpoints = app[ENDPOINTS]
                server = build_server(build_tools(endpoints, settings), caller)
                if transport == "stdio":
                    await _until_stopped(_run_stdio(server, _reply_grace(settings)), stop)
                else:
                    await _run_http(server, settings, stop)
    finally:
        await runner.cleanup()


async def _run_stdio(server: Server[Any], grace: float) -> None:
    """Serve stdio until stdin ends and every request read before it is answered (at most `grace` seconds).

    The SDK's serve loop ends when its read stream does and cancels the handlers still running, so a client
    that writes its requests and closes stdin (`echo ... | opentermd mcp`) would lose the late replies: the
    loop reads through a relay that holds the read side open until they are sent.
    """
    async with stdio_server() as (read_stream, write_stream):
        pending = _PendingReplies()
        relay_send, relay_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        async with anyio.create_task_group() as relay:
            relay.start_soon(_relay_until_answered, read_stream, relay_send, pending, grace)
            await server.run(relay_receive, _WatchedWrites(write_stream, pending),
                             server.create_initialization_options())
            relay.cancel_scope.cancel()  # the loop ended on its own (an error): nothing to wait for


class _PendingReplies:
    """The client's requests whose outcome is not known yet, counted by id as the SDK correlates them ("7" is 7).

    An outcome is what the SDK does, not a guess at what it will do: a reply handed to the stdout writer, or the
    SDK's word (its `on_request_unanswered` hook) that the request settled with none, which is how a request the
    client cancelled ends. Reading `notifications/cancelled` ourselves would guess wrong whenever the SDK does not
    apply it (the request already answered, an id it never saw, or a reused id: it cancels only the newest).
    """

    def __init__(self) -> None:
        self._open: Counter[RequestId] = Counter()
        self._changed = anyio.Event()

    def read(self, item: SessionMessage) -> SessionMessage:
        """Count a request in (before the SDK sees it, so its outcome cannot come first); the item to forward."""
        message = item.message
        if not isinstance(message, JSONRPCRequest):
            return item
        request_id = coerce_request_id(message.id)
        self._open[request_id] += 1

        async def unanswered() -> None:
            self._settle(request_id)

        return SessionMessage(message, ServerMessageMetadata(on_request_unanswered=unanswered))

    def written(self, message: JSONRPCMessage) -> None:
        if isinstance(message, JSONRPCResponse | JSONRPCError) and message.id is not None:
            self._settle(coerce_request_id(message.id))

    def _settle(self, request_id: RequestId) -> None:
        if self._open[request_id] > 0:
            self._open[request_id] -= 1
            self._changed.set()

    async def all_answered(self) -> None:
        while +self._open:  # unary + drops the ids counted down to zero
            self._changed = anyio.Event()
            await self._changed.wait()


async def _relay_until_answered(source: ReadStream[SessionMessage | Exception],
                                target: WriteStream[SessionMessage | Exception], pending: _PendingReplies,
                                grace: float) -> None:
    """Forward what stdin brings; at its end, close the forwarded side once nothing is left to answer."""
    async with target:
        try:
            async for item in source:
                await target.send(pending.read(item) if isinstance(item, SessionMessage) else item)
        except anyio.BrokenResourceError:
            return  # the loop stopped reading
        with anyio.move_on_after(grace):
            await pending.all_answered()


class _WatchedWrites:
    """The SDK's write stream, telling `pending` of each reply once the stdout writer has taken it."""

    def __init__(self, inner: WriteStream[SessionMessage], pending: _PendingReplies) -> None:
        self._inner = inner
        self._pending = pending

    async def send(self, item: SessionMessage, /) -> None:
        try:
            await self._inner.send(item)
        finally:
            # A reply whose write failed or was cancelled is settled too: the SDK never writes a second one.
            self._pending.written(item.message)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _run_http(server: Server[Any], settings: Config, stop: asyncio.Event) -> None:
    app = BearerGuard(server.streamable_http_app(streamable_http_path=MCP_PATH, host=settings.host), settings.api_key)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", lifespan="on")
    http = _Uvicorn(config, lambda port: _announce(settings, port))

    async def stop_http() -> None:
        await stop.wait()
        http.should_exit = True

    stopper = asyncio.create_task(stop_http())
    try:
        await http.serve()
    finally:
        stopper.cancel()
    if not http.started:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")


def _reply_grace(settings: Config) -> float:
    return max(LONGEST_TOOL_WAIT, settings.execute_timeout or 0.0) + REPLY_MARGIN


def _announce(settings: Config, port: int) -> None:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"opentermd {__version__} MCP (streamable HTTP): http://{host}:{port}{MCP_PATH}\n"
          f"  API key (bearer): {describe_key(settings)}", file=sys.stderr, flush=True)


async def _until_stopped(work: Awaitable[None], stop: asyncio.Event) -> None:
    task = asyncio.ensure_future(work)
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
