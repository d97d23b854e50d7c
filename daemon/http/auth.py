"""Who a request is: the key, a page session from our own origin, or nobody.

`identify` is the one place that answers it; the auth middleware, the proxy and the terminal
WebSocket all call it. The key is kept in memory only as its SHA-256 digest; comparing digests
with `hmac.compare_digest` takes the same time whatever the token, and never holds the plain key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler

from daemon import stored_key
from daemon.errors import ApiError
from daemon.http.endpoints import Access
from daemon.http.sessions import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SAFE_METHODS,
    Closer,
    PageSession,
    csrf_matches,
    from_this_origin,
)

#: How often, at most, a request makes the guard look at the stored key file (a stat call).
RECHECK_INTERVAL = 1.0
KEY_ROTATED = "Key rotated"


class KeyGuard:
    """The key, and (when it is the stored one) the file it is read from again after a rotation.

    `opentermd key --rotate` replaces the file; the guard sees a new inode or mtime (inotify tells
    it at once, and requests look at most once a second), takes the new key, ends what the old one
    opened: the WebSockets tied to it here, and whatever `on_rotation` ends (the page sessions).
    """

    def __init__(self, key: str, stored: Path | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._digest = _digest(key)
        self._stored = stored
        self._clock = clock
        self._checked = clock()
        self._signature = _signature(stored) if stored is not None else None
        self._sockets: set[Closer] = set()
        self._closing: set[asyncio.Future[Any]] = set()
        self.on_rotation: list[Callable[[str], None]] = []

    @property
    def stored(self) -> Path | None:
        return self._stored

    def matches(self, token: str | None) -> bool:
        if token is None:
            return False
        self._recheck()
        return hmac.compare_digest(_digest(token), self._digest)

    def _recheck(self) -> None:
        if self._stored is not None and self._clock() - self._checked >= RECHECK_INTERVAL:
            self.reload()

    def reload(self) -> bool:
        """Take the stored key again if its file changed; True when the key did change."""
        if self._stored is None:
            return False
        self._checked = self._clock()
        signature = _signature(self._stored)
        if signature is None or signature == self._signature:
            return False  # a missing file keeps the key in use: deleting it is not a way in
        self._signature = signature
        try:
            key = stored_key.read(self._stored)
        except (OSError, UnicodeError) as exc:
            logging.getLogger(__name__).warning("cannot read the stored API key %s: %s", self._stored, exc)
            return False
        if key is None or hmac.compare_digest(_digest(key), self._digest):
            return False
        self._digest = _digest(key)
        self._end_sockets()
        for callback in self.on_rotation:
            callback(KEY_ROTATED)
        return True

    @contextlib.contextmanager
    def tied(self, closer: Closer) -> Iterator[None]:
        """While inside, a key rotation runs `closer` (a WebSocket authenticated with the key)."""
        self._sockets.add(closer)
        try:
            yield
        finally:
            self._sockets.discard(closer)

    def _end_sockets(self) -> None:
        closers, self._sockets = list(self._sockets), set()
        for closer in closers:
            task = asyncio.ensure_future(closer(KEY_ROTATED))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def authorizes(self, request: web.Request) -> bool:
        return self.matches(bearer_token(request))


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino, status.st_mtime_ns


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
    #: The tenant whose token was sent (then `key` is True too: a tenant's token opens the API,
    #: as its tenant); None for the admin key, a page session or nobody.
    tenant: str | None = None

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
    tenant = None if key else tenant_of(request, tokens)
    session = sessions.find(request.cookies.get(COOKIE))
    if session is not None and not from_this_origin(request):
        return Identity(key or tenant is not None, None, cross_site=True, tenant=tenant)
    user = (session.tenant or session.user) if session is not None else None
    if user is not None and not key and tenant is None:
        from daemon.tenants import TENANT

        # A tenant's page session, or a user's (multi-user): its pages and their API calls are that
        # user's own, whatever X-User-Id says.
        request[TENANT] = user
    return Identity(key or tenant is not None, session, tenant=tenant)


def tenant_of(request: web.Request, tokens: Iterable[str] = ()) -> str | None:
    """The tenant whose token came (bearer header or `tokens`), recorded on the request under
    TENANT here, in the one place every way in passes, so that no route can authenticate a tenant
    and then take the user from `X-User-Id`."""
    from daemon.tenants import TENANT, book_of

    book = book_of(request.config_dict)
    if book is None:
        return None
    found = None
    for token in (bearer_token(request), *tokens):
        found = found or book.find(token)
    if found is not None:
        request[TENANT] = found.name
    return found.name if found is not None else None


@contextlib.contextmanager
def tied_socket(request: web.Request, identity: Identity, closer: Closer) -> Iterator[bool]:
    """While inside, `closer` ends a WebSocket when what opened it ends: its page session
    (logout, expiry) when opened with the cookie, a key rotation when opened with the key.
    Yields False when the page session has already ended (the socket should close at once).
    """
    from daemon.keys import GUARD, SESSIONS
    from daemon.tenants import TENANT, book_of

    page = identity.session if not identity.key else None
    tenant, book = request.get(TENANT), book_of(request.config_dict)  # also set by an auth frame's token
    by_key: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if tenant is not None and book is not None:
        by_key = book.tied(tenant, closer)  # opened with a tenant's token: ends when the tenant is removed
    elif page is None:
        by_key = request.config_dict[GUARD].tied(closer)
    with request.config_dict[SESSIONS].tied(page, closer) as live, by_key:
        yield live


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
