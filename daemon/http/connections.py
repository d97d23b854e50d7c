"""Bounds on connections, for the real server (`opentermd run`).

aiohttp alone lets anyone without a key hold a descriptor per socket for an hour: its keep-alive
timer (3,630 s by default) is the only deadline on a connection that sends half a request line, and
nothing caps how many are open. Here:

- `keepalive_timeout`: aiohttp's own timer, shortened: an idle connection (or one that never sends
  a byte) is closed after it.
- `header_timeout`: from the first byte of a request, its line and headers must arrive within it.
  aiohttp has no such option, so `BoundedRequestHandler` adds one timer per connection.
- `max_connections`: past it, a new connection evicts the oldest one that has no request being
  handled (idle, half-sent, or just accepted), so a flood of idle sockets cannot lock out a real
  client; when every connection is busy with a request, the new one gets a 503 and is closed.
  Descriptors stay bounded.
- Errors aiohttp answers itself (a malformed request line, an encoding it cannot decode) come back
  as JSON `{"detail"}` 400s logged at debug, not as text with an ERROR traceback each.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from daemon.http.endpoints import json_bytes, json_response

log = logging.getLogger(__name__)

#: Descriptors the daemon holds whatever the load: the listening socket, the event loop, inotify, logs.
RESERVED_FDS = 64
OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
              b"Content-Length: 35\r\n\r\n" + json_bytes({"detail": "Too many connections"}))


@dataclass(frozen=True)
class Limits:
    max_connections: int = 512
    header_timeout: float = 15.0
    keepalive_timeout: float = 75.0
    #: The listening socket's queue, and how many connections asyncio accepts in one go.
    backlog: int = 128


def fitted_to_open_files(limits: Limits, open_files: int) -> Limits:
    """Limits that a flood of sockets cannot turn into EMFILE under this open-files limit.

    asyncio accepts up to `backlog` sockets in a row before the gate sees any of them, and the
    sockets the gate evicts close on the next turn of the loop: a burst can hold `2 * backlog`
    descriptors beyond the open connections. Connections get at most half of what is left after a
    burst and a reserve for the daemon itself; commands (a PTY, a pidfd and a log each), terminals
    and files need the other half.
    """
    if open_files < 0:  # RLIM_INFINITY
        return limits
    backlog = max(8, min(limits.backlog, open_files // 8))
    room = max(16, (open_files - RESERVED_FDS - 2 * backlog) // 2)
    return replace(limits, backlog=backlog, max_connections=min(limits.max_connections, room))


class BoundedRequestHandler(RequestHandler):
    """aiohttp's connection handler with a deadline on each request's head."""

    def __init__(self, manager: web.Server, gate: ConnectionGate, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._head_deadline: asyncio.TimerHandle | None = None
        self._evicted = False

    @property
    def waiting_for_request(self) -> bool:
        """Idle between requests, or part of a request's head received: nothing is being handled."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    @property
    def evictable(self) -> bool:
        """No request is being handled or queued: idle, half-sent, or not started yet."""
        return not self._request_in_progress and not self._messages

    def evict(self) -> None:
        self._gate.forget(self)
        if self.transport is None:
            self._evicted = True  # accepted in the same burst, not started yet: closed when it starts
        else:
            self.force_close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._evicted:
            transport.close()
            return
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        was_waiting = self.waiting_for_request
        super().data_received(data)
        if not (was_waiting and self.waiting_for_request):
            self._cancel_head_deadline()  # a whole head arrived, or these were a body's bytes
        elif self._head_deadline is None:
            self._head_deadline = self._loop.call_later(self._gate.limits.header_timeout, self._head_overdue)

    def _head_overdue(self) -> None:
        self._head_deadline = None
        if self.waiting_for_request:
            log.debug("closing a connection whose request head is overdue: %s", self.peername)
            self.force_close()

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_deadline()
        self._gate.forget(self)
        super().connection_lost(exc)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request aiohttp could not parse (a malformed line, an encoding it cannot decode) is a
        client's mistake: a JSON 400 logged at debug, not text with an ERROR traceback."""
        if not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        log.debug("bad request from %s: %r", request.remote, exc)
        response = json_response({"detail": f"Bad Request: {exc.message}"}, status=status)
        response.force_close()
        return response


class ConnectionGate:
    """The protocol factory of the listening socket: counts connections and applies the cap."""

    def __init__(self, server: web.Server, limits: Limits, **handler_args: Any) -> None:
        self._server = server
        self.limits = limits
        self._handler_args = handler_args
        #: Open connections, oldest first (dicts keep insertion order).
        self._open: dict[BoundedRequestHandler, None] = {}

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def busy_connections(self) -> int:
        """Connections with a request being handled (or queued): the ones never evicted."""
        return sum(not handler.evictable for handler in self._open)

    def __call__(self) -> asyncio.Protocol:
        if len(self._open) >= self.limits.max_connections and not self._evict_oldest_idle():
            return _Overloaded()
        handler = BoundedRequestHandler(self._server, self, loop=asyncio.get_running_loop(),
                                        keepalive_timeout=self.limits.keepalive_timeout, **self._handler_args)
        self._open[handler] = None
        return handler

    def _evict_oldest_idle(self) -> bool:
        for handler in self._open:
            if handler.evictable:
                handler.evict()
                return True
        return False

    def forget(self, handler: BoundedRequestHandler) -> None:
        self._open.pop(handler, None)


class _Overloaded(asyncio.Protocol):
    """Every connection is busy with a request: say so and close, holding nothing."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(OVERLOADED)
        transport.close()


class BoundedSite(web.TCPSite):
    """aiohttp's TCPSite, listening through a ConnectionGate."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, limits: Limits, **handler_args: Any) -> None:
        super().__init__(runner, host, port)
        assert runner.server is not None, "runner.setup() first"
        self.gate = ConnectionGate(runner.server, limits, **handler_args)

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        self._server = await asyncio.get_running_loop().create_server(
            self.gate, self._host, self._port, backlog=self.gate.limits.backlog)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


# --- accept errors -----------------------------------------------------------------------------------

#: What accept() fails with when the process or the system is out of descriptors or memory.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class AcceptErrorLimiter:
    """The event loop's exception handler, with accept() failures from resource exhaustion logged
    once per interval (with how many there were) instead of a traceback per attempt."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._next_report: float | None = None
        self._suppressed = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.set_exception_handler(self)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES and "socket" in context):
            loop.default_exception_handler(context)
            return
        now = self._clock()
        if self._next_report is not None and now < self._next_report:
            self._suppressed += 1
            return
        log.error("cannot accept connections: %s (%d more such failures since the last report; "
                  "raise the open-files limit or lower OPEN_TERMINAL_MAX_CONNECTIONS)",
                  exc.strerror or exc, self._suppressed)
        self._suppressed = 0
        self._next_report = now + self._interval


async def start_server(app: web.Application, host: str, port: int, limits: Limits,
                       shutdown_timeout: float) -> tuple[web.AppRunner, BoundedSite]:
    """The daemon's server, as `opentermd run` starts it (the tests start the same one)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = BoundedSite(runner, host, port, limits, access_log=None)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site
