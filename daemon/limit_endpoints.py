"""The hidden `GET /api/limits`: the mechanism in use and each limit, for operators and tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from daemon.http.endpoints import Call, Endpoint
from daemon.http.inputs import NoInput
from daemon.limits import Limits

LIMITS = web.AppKey("limits", Limits)


async def get_limits(call: Call[NoInput, NoInput]) -> dict[str, object]:
    return call.app[LIMITS].describe()


async def lifetime(app: web.Application) -> AsyncIterator[None]:
    """Registered before the processes and terminals: its close (their leftovers killed, every group
    removed) runs after theirs."""
    yield
    app[LIMITS].close()


ENDPOINTS = [Endpoint("GET", "/api/limits", get_limits, in_schema=False)]
