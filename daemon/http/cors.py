"""CORS exactly as Open WebUI's direct (browser) connection needs it (CONTRACT.md section 4).

Preflights are answered before auth for every path. Every other response, errors and streamed
bodies included, gets the allow-origin headers from the `on_response_prepare` signal, because a
streamed response is sent before any middleware could add headers to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from daemon.http.hosts import HostPolicy

ALLOWED_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, QUERY"
PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, " \
    "Access-Control-Request-Private-Network"


class CorsPolicy:
    def __init__(self, allowed_origins: Sequence[str]) -> None:
        self._any = "*" in allowed_origins
        self._origins = frozenset(allowed_origins)

    def allows(self, origin: str) -> bool:
        return self._any or origin in self._origins

    def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers["Origin"]
        if not self.allows(origin):
            return web.Response(status=400, text="Disallowed CORS origin")
        headers = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Max-Age": "600",
            "Vary": PREFLIGHT_VARY,
        }
        requested = request.headers.get("Access-Control-Request-Headers")
        if requested:
            headers["Access-Control-Allow-Headers"] = requested
        if request.headers.get("Access-Control-Request-Private-Network", "").lower() == "true":
            headers["Access-Control-Allow-Private-Network"] = "true"
        return web.Response(status=200, text="OK", headers=headers)

    def decorate(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None or not self.allows(origin) or "Access-Control-Allow-Origin" in response.headers:
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Expose-Headers"] = "Content-Disposition"
        vary = response.headers.get("Vary")
        if vary is None:
            response.headers["Vary"] = "Origin"
        elif "origin" not in vary.lower():
            response.headers["Vary"] = vary + ", Origin"


def is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def install(app: web.Application, policy: CorsPolicy, hosts: HostPolicy) -> Any:
    """Hook the response signal; return the middleware that answers preflights.

    A request for a host that is not ours gets no CORS headers and no preflight answer: it goes on
    to the Host check, which refuses it.
    """

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        if hosts.allows(request.headers.get("Host")):
            policy.decorate(request, response)

    app.on_response_prepare.append(on_prepare)

    @web.middleware
    async def answer_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_preflight(request) and hosts.allows(request.headers.get("Host")):
            return policy.preflight(request)
        return await handler(request)

    return answer_preflight
