"""Who a request is: the key, a page session from our own origin, or nobody.

`identify` is the one place that answers it; the auth middleware, the proxy and the terminal
WebSocket all call it. The key is kept in memory only as its SHA-256 digest; comparing digests
with `hmac.compare_digest` takes the same time whatever the token, and never holds the plain key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Identity:
    """What a request proved: the key, a page session (from our own origin), both, or neither."""

    key: bool
    session: PageSession | None
    #: A live session's cookie, but sent from elsewhere (another site, another port, or a
    #: WebSocket without Origin): refused as cross-site rather than as a missing key.
    cross_site: bool = False

    def require(self) -> None:
        """Go on only as the key or a page session; otherwise the error that says why not."""
        if not self.key and self.session is None:
            raise CSRF_REFUSED if self.cross_site else INVALID_KEY


def identify(request: web.Request, tokens: Iterable[str] = ()) -> Identity:
    """Who the caller is. `tokens` are other places the key may come from on this route (the
    terminal WebSocket's auth frame or subprotocol, the proxy's opt-in `?token=`)."""
    # daemon.keys imports this module (for KeyGuard), so its keys are looked up here.
    from daemon.keys import GUARD, SESSIONS

    guard, sessions = request.config_dict[GUARD], request.config_dict[SESSIONS]
    key = guard.authorizes(request) or any(guard.matches(token) for token in tokens)
    session = sessions.find(request.cookies.get(COOKIE))
    if session is not None and not from_this_origin(request):
        return Identity(key, None, cross_site=True)
    return Identity(key, session)


def auth_middleware(access: dict[Any, Access]) -> Any:
    """Every matched route needs the key (or a page session) unless it was declared public.

    Pages (Access.PAGE) need the page session itself; changes made with a session also need its
    CSRF token. Unmatched paths fall through so they answer 404/405 like the reference, and CORS
    preflights never reach here (the CORS middleware answers them first).
    """

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = request.match_info
        rule = Access.PUBLIC if match.http_exception is not None else access.get(match.route, Access.BEARER)
        if rule is Access.PUBLIC:
            return await handler(request)
        identity = identify(request)
        if rule is Access.BEARER and identity.key:
            return await handler(request)
        session = identity.session
        if session is None:
            if rule is Access.PAGE and request.method in SAFE_METHODS and not identity.cross_site:
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/')}")
            identity.require()
            raise INVALID_KEY  # the key alone does not open a page
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
