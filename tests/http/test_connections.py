"""Connection bounds on the real server's listening socket: header and idle timeouts, a cap on
connections, JSON for what aiohttp answers itself, and accept errors logged once per interval."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from daemon.app import create_app
from daemon.http.connections import AcceptErrorLimiter, BoundedSite, Limits, fitted_to_open_files, start_server
from tests.conftest import KEY, eventually, make_config


@dataclass
class Server:
    site: BoundedSite
    port: int
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A client connection, closed by the fixture."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return reader, writer

    async def health(self) -> bytes:
        """GET /health on a fresh connection: the whole answer (the server closes after it)."""
        reader, writer = await self.connect()
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return await asyncio.wait_for(reader.read(), 20)


ServerFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    runners: list[web.AppRunner] = []
    servers: list[Server] = []

    async def start(**limits: Any) -> Server:
        runner, site = await start_server(create_app(make_config(tmp_path)), "127.0.0.1", 0, Limits(**limits), 1.0)
        runners.append(runner)
        servers.append(Server(site, site.port))
        return servers[-1]

    yield start
    for server in servers:
        for writer in server.writers:
            writer.close()
            await writer.wait_closed()
    for runner in runners:
        await runner.cleanup()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), 20) == b""


async def test_half_a_request_line_is_dropped_after_the_header_timeout(serve: ServerFactory) -> None:
    server = await serve(header_timeout=0.5, keepalive_timeout=300)
    reader, writer = await server.connect()
    writer.write(b"GET /hea")
    assert await closed_by_server(reader)
    # Slow headers, one line at a time, get no more time than a half line.
    reader, writer = await server.connect()
    writer.write(b"GET /health HTTP/1.1\r\n")
    await writer.drain()
    writer.write(b"Host: 127.0.0.1\r\n")
    assert await closed_by_server(reader)


async def test_a_request_that_arrives_in_time_is_answered_and_the_connection_kept(serve: ServerFactory) -> None:
    server = await serve(header_timeout=0.5, keepalive_timeout=300)
    reader, writer = await server.connect()
    for _ in range(2):
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await reader.readuntil(b'{"status":"ok"}')).startswith(b"HTTP/1.1 200 OK")


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(serve: ServerFactory) -> None:
    server = await serve(header_timeout=300, keepalive_timeout=0.5)
    reader, writer = await server.connect()
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await reader.readuntil(b'{"status":"ok"}')).startswith(b"HTTP/1.1 200 OK")
    assert await closed_by_server(reader)
    silent, _ = await server.connect()  # never sends a byte
    assert await closed_by_server(silent)


async def test_600_half_requests_cannot_lock_out_a_real_client(serve: ServerFactory) -> None:
    """The issue's attack: sockets that send half a request line, without a key."""
    server = await serve(max_connections=50, header_timeout=300, keepalive_timeout=300)
    baseline = open_fds()

    async def attack() -> None:
        _, writer = await server.connect()
        writer.write(b"GET /hea")

    for _ in range(6):
        await asyncio.gather(*(attack() for _ in range(100)))
    await eventually(lambda: server.site.gate.open_connections >= 50)
    answer = await server.health()
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b'{"status":"ok"}')
    # Our 600 client sockets are in this process too; the server's side holds at most the cap.
    assert server.site.gate.open_connections <= 50
    assert open_fds() - baseline <= 600 + 50 + 10


async def test_when_every_connection_is_busy_a_new_one_gets_503(serve: ServerFactory) -> None:
    server = await serve(max_connections=2, header_timeout=300, keepalive_timeout=300)
    for _ in range(2):  # requests in progress: their handlers wait for the rest of the body
        reader, writer = await server.connect()
        writer.write(b"POST /execute HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + KEY.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    await eventually(lambda: server.site.gate.busy_connections == 2)
    reader, writer = await server.connect()
    answer = await asyncio.wait_for(reader.read(), 20)
    assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b'{"detail":"Too many connections"}')


async def test_a_request_aiohttp_cannot_parse_is_a_json_400(serve: ServerFactory,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    server = await serve()
    for request in (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n",
                    b"POST /execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: br\r\n"
                    b"Content-Length: 2\r\n\r\n{}"):
        reader, writer = await server.connect()
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), 20)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"400" and b"application/json" in head
        assert body.startswith(b'{"detail":"Bad Request: ')
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_accept_errors_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    limiter = AcceptErrorLimiter(interval=60.0, clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        limiter.install(loop)
        listener = socket.socket()
        context = {"message": "socket.accept() out of system resource", "socket": listener,
                   "exception": OSError(errno.EMFILE, "Too many open files")}
        with caplog.at_level(logging.ERROR):
            for _ in range(500):
                loop.call_exception_handler(context)
            now[0] = 1060.0
            loop.call_exception_handler(context)
            loop.call_exception_handler({"message": "something else", "exception": ValueError("x")})
        listener.close()
    finally:
        loop.close()
    accept_reports = [record.getMessage() for record in caplog.records if "cannot accept" in record.getMessage()]
    assert len(accept_reports) == 2
    assert "Too many open files (0 more" in accept_reports[0] and "(499 more" in accept_reports[1]
    assert any(record.getMessage() == "something else" for record in caplog.records)


async def test_a_client_leaving_mid_response_logs_no_error(serve: ServerFactory, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    big = tmp_path / "home" / "big.bin"
    big.write_bytes(os.urandom(64 * 1024 * 1024))
    caplog.set_level(logging.DEBUG, logger="daemon.http.errors")
    server = await serve()
    reader, writer = await server.connect()
    body = json.dumps({"paths": [str(big)]}).encode()
    writer.write(b"POST /files/archive HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + KEY.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert (await reader.read(65536)).startswith(b"HTTP/1.1 200 OK")
    writer.transport.abort()
    await eventually(lambda: any("went away" in record.getMessage() for record in caplog.records))
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_connections_get_at_most_half_the_descriptors() -> None:
    def fitted(open_files: int) -> tuple[int, int]:
        limits = fitted_to_open_files(Limits(max_connections=512), open_files)
        return limits.max_connections, limits.backlog

    assert fitted(1_048_576) == (512, 128)
    assert fitted(4096) == (512, 128)
    assert fitted(1024) == (352, 128)
    assert fitted(256) == (64, 32)
    assert fitted(64) == (16, 8)
    assert fitted(-1) == (512, 128)  # unlimited
