"""Bearer-key authentication.

The key is kept in memory only as its SHA-256 digest; comparing digests with
`hmac.compare_digest` takes the same time whatever the token, and never holds the plain key.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler

from daemon.errors import ApiError
from daemon.http.endpoints import Access
from daemon.http.sessions import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SAFE_METHODS,
    PageSession,
    PageSessions,
    csrf_matches,
    from_this_origin,
)


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
CSRF_REFUSED = ApiError(403, "Missing or invalid CSRF token, or a cross-site request")
#: Where a request stands once authenticated: the page session, when it came with a cookie.
SESSION_KEY = web.RequestKey("opentermd.session", PageSession)


def auth_middleware(guard: KeyGuard, access: dict[Any, Access], sessions: PageSessions) -> Any:
    """Every matched route needs the key (or a page session) unless it was declared public.

    Unmatched paths fall through so they answer 404/405 like the reference, and CORS preflights
    never reach here (the CORS middleware answers them first).
    """

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = request.match_info
        rule = Access.PUBLIC if match.http_exception is not None else access.get(match.route, Access.BEARER)
        if rule is Access.PUBLIC or (rule is Access.BEARER and guard.authorizes(request)):
            return await handler(request)
        session = sessions.find(request.cookies.get(COOKIE))
        if session is None:
            if rule is Access.PAGE and request.method in SAFE_METHODS:
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/')}")
            raise INVALID_KEY
        if not from_this_origin(request):
            raise CSRF_REFUSED
        if request.method not in SAFE_METHODS and not csrf_matches(session, await csrf_token(request)):
            raise CSRF_REFUSED
        request[SESSION_KEY] = session
        return await handler(request)

    return authenticate


async def csrf_token(request: web.Request) -> str | None:
    """The token from the header (fetch) or from a plain form's field (never a multipart body)."""
    if CSRF_HEADER in request.headers:
        return request.headers[CSRF_HEADER]
    if request.content_type == "application/x-www-form-urlencoded":
        value = (await request.post()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None
