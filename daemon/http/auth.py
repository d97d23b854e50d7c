"""Bearer-key authentication.

The key is kept in memory only as its SHA-256 digest; comparing digests with
`hmac.compare_digest` takes the same time whatever the token, and never holds the plain key.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from daemon.errors import ApiError
from daemon.http.endpoints import Access


class KeyGuard:
    def __init__(self, key: str) -> None:
        self._digest = _digest(key)

    def matches(self, token: str | None) -> bool:
        if token is None:
            return False
        return hmac.compare_digest(_digest(token), self._digest)

    def authorizes(self, request: web.Request) -> bool:
        return self.matches(bearer_token(request))


def _digest(token: str) -> bytes:
    # Open WebUI trims the key it sends; trimming here too makes a pasted key with a stray
    # space work on every path, the WebSocket auth frame included.
    return hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).digest()


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return token if scheme.lower() == "bearer" and token.strip() else None


INVALID_KEY = ApiError(401, "Invalid API key")


def auth_middleware(guard: KeyGuard, access: dict[Any, Access]) -> Any:
    """Every matched route needs the key unless it was declared public.

    Unmatched paths fall through so they answer 404/405 like the reference, and CORS preflights
    never reach here (the CORS middleware answers them first).
    """

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = request.match_info
        protected = match.http_exception is None and access.get(match.route, Access.BEARER) is Access.BEARER
        if protected and not guard.authorizes(request):
            raise INVALID_KEY
        return await handler(request)

    return authenticate
