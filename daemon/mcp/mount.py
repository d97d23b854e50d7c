"""MCP at /mcp on the daemon's own app (`OPEN_TERMINAL_ENABLE_MCP=true`): the one call app.py makes.

Light on purpose: create_app imports this module, so it adds the routes and the lifetimes and nothing
more. The SDK (bridge.py) is imported only when the app starts; until it has, /mcp answers 503.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from daemon.errors import ApiError
from daemon.http.endpoints import Access
from daemon.tenants import TENANT

MCP_PATHS = ("/mcp", "/mcp/")


def mount(app: web.Application, access: dict[Any, Access]) -> None:
    """Serve MCP at /mcp behind the key (bearer only), for as long as `app` runs."""
    # Filled by bridge.lifetime while the app runs: "handle" serves a request, "close" ends open streams.
    mounted: dict[str, Callable[..., Awaitable[Any]]] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.get(TENANT) is not None:
            # The tools call the API back with the admin key: a tenant's token must not borrow it.
            raise ApiError(403, "MCP at /mcp needs the admin key; a tenant's token cannot open it")
        if "handle" not in mounted:
            raise web.HTTPServiceUnavailable()
        response: web.StreamResponse = await mounted["handle"](request)
        return response

    for path in MCP_PATHS:
        for method in ("GET", "POST", "DELETE"):
            access[app.router.add_route(method, path, handle)] = Access.BEARER

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        from daemon.mcp import bridge  # the SDK, loaded only now that MCP is served

        async for _ in bridge.lifetime(app, mounted):
            yield

    async def shutdown(app: web.Application) -> None:
        if "close" in mounted:
            await mounted["close"]()

    app.cleanup_ctx.append(lifetime)
    app.on_shutdown.append(shutdown)
