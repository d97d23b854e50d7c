"""Who a process, terminal, notebook or file call belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class Owner:
    """Open WebUI's user (`X-User-Id`) and chat (`X-Session-Id`); `""` when absent, as the reference."""

    user_id: str = ""
    session_id: str = ""


def owner_of(request: web.Request) -> Owner:
    """The request's owner: `Call.owner` for handlers, this for middlewares, WebSockets and pages."""
    from daemon.tenants import TENANT  # a tenant's token (set by auth.identify) is the user, whatever X-User-Id says

    headers = request.headers
    tenant = request.get(TENANT)
    return Owner(headers.get("x-user-id", "") if tenant is None else tenant, headers.get("x-session-id", ""))
