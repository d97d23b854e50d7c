"""Thin declarations for `/ports` and `/proxy/{port}/{path}`; neither is in /openapi.json (like the reference)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from daemon import users
from daemon.errors import ApiError
from daemon.http.endpoints import Access, Call, Endpoint
from daemon.http.inputs import NoInput
from daemon.keys import CONFIG, GUARD
from daemon.net import ports, proxy

PROXY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


async def list_ports(call: Call[NoInput, NoInput]) -> dict[str, object]:
    listed = await users.ports_of(call.request)  # multi-user: only the caller's own
    if listed is None:
        listed = await asyncio.to_thread(ports.listening_ports)
    return {"ports": [entry.as_json() for entry in listed]}


async def proxy_request(call: Call[NoInput, NoInput]) -> web.StreamResponse:
    # Declared public: the handler accepts more ways in than the auth middleware (see authenticate).
    request = call.request
    identity = proxy.authenticate(request, call.app[CONFIG].proxy_token_auth)
    port = proxy.parse_port(call.path("port"))
    hosts, namespace = await asyncio.to_thread(ports.listening_target, port)  # a sandbox's own network too
    own = await users.ports_of(request)  # multi-user: only to a port one of the caller's processes listens on
    if not hosts or (own is not None and all(entry.port != port for entry in own)):
        raise ApiError(404, "Port not found")
    target = proxy.target(request, port, hosts, call.app[GUARD], namespace)
    if proxy.is_websocket(request):
        return await proxy.relay_websocket(request, target, identity)
    return await proxy.forward(request, target)


async def add_slash(call: Call[NoInput, NoInput]) -> web.StreamResponse:
    # Starlette's redirect_slashes, before any auth, as the reference answers.
    raise web.HTTPTemporaryRedirect(proxy.slash_redirect(call.request))


ENDPOINTS = [
    Endpoint("GET", "/ports", list_ports, in_schema=False),
    *(Endpoint(method, "/proxy/{port}/{path:.*}", proxy_request, access=Access.PUBLIC, in_schema=False)
      for method in PROXY_METHODS),
    Endpoint("*", "/proxy/{port}", add_slash, access=Access.PUBLIC, in_schema=False),
]
