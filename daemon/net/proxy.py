"""The reverse proxy from `/proxy/{port}/{path}` to a server on this machine, streamed both ways.

What the reference does (Open Terminal 0.14.5, `port_proxy`): the target is
`http://localhost:{port}/{path}?{query}`; the request's headers go on without Host and
Authorization; redirects are not followed but handed to the client; 502 when the connection is
refused, 504 on a timeout. Where this differs, on purpose:

- Upstream bodies are passed through as they were sent, still compressed: `auto_decompress=False`,
  and `Content-Encoding` and `Content-Length` are kept. The reference decompresses but then drops
  both headers; passing the bytes through is cheaper and keeps the length a download bar needs.
- Every hop-by-hop header is dropped, both directions, including those a `Connection` header
  names (RFC 9110 section 7.6.1); so is the daemon's own session cookie, which is ours, not the app's.
- The 300 s limit is for a silence between reads, not for the whole exchange (as httpx's
  `Timeout(300, connect=5)` in the reference), so a long download or an event stream keeps going.
- WebSocket upgrades are relayed, frame for frame, close codes included; one opened with the page
  cookie is closed (4001) when that page session ends (logout, expiry), one opened with the key
  (bearer or `?token=`) when the key is rotated (4001 "Key rotated").
- `localhost` is resolved to exactly the addresses the app's sockets are bound to (from
  `ports.listening_addresses`), so a child on 127.0.0.2:P is reached there, and another program
  on 127.0.0.1:P never is; the app still sees `Host: localhost:{port}`.
- Besides the key as a bearer token, the web pages' session cookie, and (opt-in,
  `proxy_token_auth`) a `?token=<key>` query let a browser frame or tab show the app.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote_plus

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from daemon.errors import ApiError
from daemon.http.auth import Identity, KeyGuard, identify, tied_socket
from daemon.http.inputs import validate
from daemon.http.sessions import COOKIE
from daemon.net import namespaces

log = logging.getLogger(__name__)

#: Headers that describe one connection, never the message: RFC 9110 section 7.6.1, plus the
#: old `Proxy-Connection` and `Keep-Alive`.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
#: Also never forwarded upstream: the daemon's Host and its key, and `Expect` (the daemon has
#: already answered `100 Continue` itself).
NOT_FORWARDED = HOP_BY_HOP | {"host", "authorization", "expect"}
#: A WebSocket handshake is made afresh upstream; its subprotocols are passed as `protocols`.
HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                       "sec-websocket-protocol"})
#: Request headers longer than aiohttp's default 8 KiB (big cookies, long URLs) are ordinary in apps.
MAX_HEADER = 64 * 1024
TOKEN_PARAM = "token"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 300.0
#: Sent to one side of a relayed WebSocket when the other side vanished without a close frame.
GOING_AWAY = aiohttp.WSCloseCode.GOING_AWAY
#: Sent to a client when what opened the relay ended: its page session (logout, expiry) or the key (rotated).
SESSION_ENDED = 4001

# --- what may pass ------------------------------------------------------------------------------------


def parse_port(text: str) -> int:
    """The port of the path, checked like the reference's FastAPI route `port: int`."""
    port = validate(int, text, ["path", "port"])
    if not 1 <= port <= 65535:
        raise ApiError(422, "Port must be between 1 and 65535")
    return port


def authenticate(request: web.Request, token_auth: bool) -> Identity:
    """The key as a bearer token, a page session from our own origin, or (opt-in) `?token=<key>`.

    A session cookie needs no CSRF token here, unlike the API: the proxied app's own forms and
    fetches cannot carry ours. SameSite=Strict plus the Sec-Fetch-Site/Origin check refuse
    cross-site requests, which is what the CSRF token guards against.
    """
    identity = identify(request, request.query.getall(TOKEN_PARAM, []) if token_auth else ())
    identity.require()
    return identity


def slash_redirect(request: web.Request) -> str:
    """Where `/proxy/3000?q` goes: `./3000/?q`, relative, so it holds behind a path prefix too."""
    location = "./" + request.rel_url.raw_path.rstrip("/").rpartition("/")[2] + "/"
    query = request.rel_url.raw_query_string
    return f"{location}?{query}" if query else location


@dataclass(frozen=True)
class Target:
    """Where and how a request goes on: the app's port, its URL, and the headers it gets."""

    port: int
    url: URL
    headers: CIMultiDict[str]
    #: The addresses the app listens on at `port`, to connect to in this order.
    hosts: tuple[str, ...]
    #: 0, or a pid in the sandbox's own network namespace, where the hosts are (`ports.Bound.namespace`).
    namespace: int = 0

    @property
    def name(self) -> str:
        return f"localhost:{self.port}"


def target(request: web.Request, port: int, hosts: Iterable[str], guard: KeyGuard, namespace: int = 0) -> Target:
    """`http://localhost:{port}/{path}?{query}`, still percent-encoded as the client sent it;
    `localhost` stands for `hosts`, the addresses the app's sockets are bound to."""
    # The raw path is `/proxy/{port}/{path}`; the path's own encoding (%2F, %20) is kept as it is.
    path = request.rel_url.raw_path.split("/", 3)[3]
    query = upstream_query(request.rel_url.raw_query_string, guard)
    url = URL(f"http://localhost:{port}/{path}" + (f"?{query}" if query else ""), encoded=True)
    headers = request_headers(request.headers, websocket=is_websocket(request))
    if "Referer" in headers:
        # A page opened with ?token= sends its own address, key included, as the Referer.
        base, mark, raw_query = headers["Referer"].partition("?")
        query = upstream_query(raw_query, guard) if mark else ""
        headers["Referer"] = f"{base}?{query}" if query else base
    return Target(port, url, headers, tuple(connectable(host) for host in hosts), namespace)


def connectable(host: str) -> str:
    """Where to reach a socket bound to `host`: the wildcard addresses are reached on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def upstream_query(raw_query: str, guard: KeyGuard) -> str:
    """The query without a `token` that is the API key: the key never reaches the app.

    Any other `token` is the app's own and passes, whether or not token auth is on.
    """
    kept = []
    for part in raw_query.split("&"):
        name, _, value = part.partition("=")
        if unquote_plus(name) == TOKEN_PARAM and guard.matches(unquote_plus(value)):
            continue
        kept.append(part)
    return "&".join(kept)


def request_headers(headers: Mapping[str, str], *, websocket: bool = False) -> CIMultiDict[str]:
    """The client's headers as the app should see them."""
    dropped = NOT_FORWARDED | connection_tokens(headers) | (HANDSHAKE if websocket else frozenset())
    forwarded: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in dropped:
            continue
        if lowered == "cookie":
            value = without_cookie(value, COOKIE)
            if not value:
                continue
        forwarded.add(name, value)
    return forwarded


def response_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """The app's headers as the client should see them; Content-Length is set by the streamer."""
    dropped = HOP_BY_HOP | connection_tokens(headers) | {"content-length"}
    passed: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in dropped or (lowered == "set-cookie" and _cookie_name(value) == COOKIE):
            continue
        passed.add(name, value)
    return passed


def connection_tokens(headers: Mapping[str, str]) -> frozenset[str]:
    """The header names a `Connection` header marks as hop-by-hop."""
    names: set[str] = set()
    for value in _all(headers, "Connection"):
        names.update(token.strip().lower() for token in value.split(",") if token.strip())
    return frozenset(names)


def without_cookie(header: str, name: str) -> str:
    """A Cookie header with the pairs called `name` taken out."""
    return "; ".join(part.strip() for part in header.split(";")
                     if part.strip() and _cookie_name(part) != name)


def _cookie_name(pair: str) -> str:
    return pair.partition("=")[0].strip()


def _all(headers: Mapping[str, str], name: str) -> Iterable[str]:
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):
        return list(headers.getall(name, []))
    return [value for key, value in headers.items() if key.lower() == name.lower()]


def is_websocket(request: web.Request) -> bool:
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


# --- the upstream client ------------------------------------------------------------------------------


class ExactResolver(AbstractResolver):
    """`localhost` is the given addresses, whatever /etc/hosts or DNS would say.

    The URL keeps the name, so the app sees `Host: localhost:{port}` as with the reference, while
    the connection goes to the very addresses the app's sockets listen on, in order.
    """

    def __init__(self, hosts: Iterable[str]) -> None:
        self._hosts = tuple(hosts)

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = [(address, socket.AF_INET6 if ":" in address else socket.AF_INET) for address in self._hosts]
        return [
            ResolveResult(hostname=host, host=address, port=port, family=kind, proto=0,
                          flags=socket.AI_NUMERICHOST)
            for address, kind in addresses if family in (socket.AF_UNSPEC, kind)
        ]

    async def close(self) -> None:
        return None


def client_session(hosts: Iterable[str], namespace: int = 0) -> aiohttp.ClientSession:
    """One per proxied request: upstream is on this machine, so a connection costs microseconds.
    With a `namespace`, the socket is made inside that sandbox's network (daemon/net/namespaces.py)."""
    factory = None if not namespace else functools.partial(namespaces.socket_in, namespace)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=ExactResolver(hosts), use_dns_cache=False, family=socket.AF_UNSPEC,
                                       socket_factory=factory),
        timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        # Nothing the client did not send: no Accept, Accept-Encoding, User-Agent or Content-Type.
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        max_line_size=MAX_HEADER,
        max_field_size=MAX_HEADER,
    )


def upstream_failed(exc: BaseException, port: int) -> ApiError:
    """How a failure before the app answered is reported: 504, or 502 like the reference."""
    if isinstance(exc, TimeoutError):
        return ApiError(504, f"Timeout connecting to localhost:{port}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ApiError(502, f"Connection refused: localhost:{port}")
    return ApiError(502, f"Bad response from localhost:{port}: {exc or type(exc).__name__}")


# --- HTTP ---------------------------------------------------------------------------------------------


async def forward(request: web.Request, target: Target) -> web.StreamResponse:
    """Send the request on and stream the answer back, in bounded memory both ways."""
    body = request.content if request.body_exists else None
    async with client_session(target.hosts, target.namespace) as session:
        try:
            upstream = await session.request(request.method, target.url, headers=target.headers, data=body,
                                             allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise upstream_failed(exc, target.port) from None
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                          headers=response_headers(upstream.headers))
            length = upstream.headers.get("Content-Length")
            if length is not None and length.isdigit():
                response.content_length = int(length)
            await response.prepare(request)
            try:
                # iter_any hands on whatever has arrived, so event streams are not held back;
                # the reader stops reading the socket while the client is slower than the app.
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (ConnectionError, aiohttp.ClientError, TimeoutError) as exc:
                # Either side broke off mid-body. Closing the client's connection, rather than
                # ending the body normally, lets it see the answer was cut short.
                log.debug("proxy to %s cut short: %r", target.name, exc)
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response


# --- WebSocket ----------------------------------------------------------------------------------------

ClientSocket = aiohttp.ClientWebSocketResponse[Literal[False]]
ServerSocket = web.WebSocketResponse[Literal[False]]


async def relay_websocket(request: web.Request, target: Target,
                          identity: Identity) -> web.WebSocketResponse[Literal[False]]:
    """Open the app's WebSocket first, then accept the client's with the subprotocol the app chose.

    Neither leg answers a close frame by itself (`autoclose=False`): a close is first passed on,
    and only then answered, so the far side learns the code before this side's connection ends.
    A relay opened with the page cookie is closed when that page session ends, one opened with
    the key when the key is rotated (`identity` says which).
    """
    if not web.WebSocketResponse().can_prepare(request).ok:
        raise ApiError(400, "Invalid WebSocket upgrade request")
    protocols = [name.strip() for value in request.headers.getall("Sec-WebSocket-Protocol", [])
                 for name in value.split(",") if name.strip()]
    async with client_session(target.hosts, target.namespace) as session:
        try:
            upstream = await session.ws_connect(
                target.url, headers=target.headers, protocols=protocols,
                autoclose=False, max_msg_size=0, decode_text=False,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0))
        except aiohttp.WSServerHandshakeError as exc:
            raise ApiError(502, f"WebSocket handshake with {target.name} failed: HTTP {exc.status}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise upstream_failed(exc, target.port) from None
        async with upstream:
            client: ServerSocket = web.WebSocketResponse(
                autoclose=False, max_msg_size=0, decode_text=False,
                protocols=[upstream.protocol] if upstream.protocol else [])
            await client.prepare(request)

            async def end(reason: str) -> None:
                await upstream.close(code=GOING_AWAY)
                await client.close(code=SESSION_ENDED, message=reason.encode())

            with tied_socket(request, identity, end) as live:
                if live:
                    await asyncio.gather(_relay(client, upstream), _relay(upstream, client))
                else:
                    await end("Logged out")
            await client.close(code=GOING_AWAY)  # a no-op unless a relay failed
    return client


async def _relay(source: ServerSocket | ClientSocket, sink: ServerSocket | ClientSocket) -> None:
    """Frames from `source` to `sink` until `source` closes; then close `sink` the same way."""
    try:
        while True:
            message = await source.receive()
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await sink.send_frame(message.data, message.type)
            elif message.type is WSMsgType.CLOSE:
                code = sendable_close_code(message.data)
                await sink.close(code=code, message=(message.extra or "").encode()[:123])
                await source.close(code=code)  # only now answer the close frame `source` sent
                return
            elif message.type is WSMsgType.CLOSING:
                return  # the other relay is closing `source`, as asked by the far side
            elif message.type in (WSMsgType.CLOSED, WSMsgType.ERROR):
                await sink.close(code=GOING_AWAY)
                return
            # PING and PONG are answered on each leg by aiohttp (autoping).
    except ConnectionError:
        await sink.close(code=GOING_AWAY)


def sendable_close_code(code: object) -> int:
    """A received close code that may be sent on; 1005, 1006 and 1015 are for reporting only."""
    if isinstance(code, int) and (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        return code
    return 1000 if code in (0, None, 1005) else GOING_AWAY
