"""Browser sessions for the web pages: a random id in an HttpOnly, SameSite=Strict cookie, and a CSRF token.

Sessions live only in this process's memory, keyed by the SHA-256 of the cookie: a restart (with
the same key or a new one) or a logout revokes them, and a memory dump reveals no usable cookie.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from daemon.tokens import digest

COOKIE = "opentermd_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
#: Methods that change nothing; every other method from a cookie session needs the CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Closes one WebSocket that a page session opened, saying why (e.g. "Logged out").
Closer = Callable[[str], Awaitable[Any]]


@dataclass(eq=False)
class PageSession:
    csrf: str
    created: float
    seen: float
    state: dict[str, str] = field(default_factory=dict)
    #: The WebSockets this session authenticated (terminals, proxied apps): they end with it.
    sockets: set[Closer] = field(default_factory=set)
    ended: bool = False
    #: The tenant who logged in with its token (daemon/tenants.py); None: the admin key or a login link.
    tenant: str | None = None
    #: Multi-user: the user id given with the admin key at login; the session acts as that user alone.
    user: str | None = None


class PageSessions:
    """The logged-in browsers, expiring after `idle` seconds unused or `lifetime` seconds in all."""

    def __init__(self, idle: float = 12 * 3600, lifetime: float = 7 * 24 * 3600, login_ttl: float = 3600) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self._sessions: dict[str, PageSession] = {}
        self._login_tokens: dict[str, float] = {}
        self._login_ttl = login_ttl
        #: Socket closes under way, kept so the tasks are not garbage-collected mid-close.
        self._closing: set[asyncio.Future[Any]] = set()

    def create(self, tenant: str | None = None, user: str | None = None) -> tuple[str, PageSession]:
        self.sweep()
        cookie = secrets.token_urlsafe(32)
        now = time.monotonic()
        session = PageSession(csrf=secrets.token_urlsafe(32), created=now, seen=now, tenant=tenant, user=user)
        self._sessions[digest(cookie)] = session
        return cookie, session

    def find(self, cookie: str | None) -> PageSession | None:
        if not cookie:
            return None
        self.sweep()
        session = self._sessions.get(digest(cookie))
        if session is not None:
            session.seen = time.monotonic()
        return session

    def revoke(self, cookie: str | None) -> None:
        if cookie:
            session = self._sessions.pop(digest(cookie), None)
            if session is not None:
                self._end(session, "Logged out")

    def hold(self, session: PageSession, closer: Closer) -> bool:
        """Tie a WebSocket to the session that authenticated it; False if the session already ended.

        A socket outlives the request that opened it, so logout and expiry must reach it: without
        this, a terminal opened with the cookie would keep its shell after the person logged out.
        """
        if session.ended:
            return False
        session.sockets.add(closer)
        # Expiry is otherwise noticed only when a request comes; a socket must not outlive the
        # session's lifetime just because nothing else asked.
        remaining = session.created + self.lifetime - time.monotonic()
        asyncio.get_running_loop().call_later(max(0.0, remaining) + 1.0, self.sweep)
        return True

    def let_go(self, session: PageSession, closer: Closer) -> None:
        session.sockets.discard(closer)

    @contextlib.contextmanager
    def tied(self, session: PageSession | None, closer: Closer) -> Iterator[bool]:
        """While inside, the end of `session` runs `closer`; yields False if it has already ended.

        With no session (a socket opened with the key) there is nothing to tie, and it yields True.
        """
        if session is None or not self.hold(session, closer):
            yield session is None
            return
        try:
            yield True
        finally:
            self.let_go(session, closer)

    def login_token(self) -> str:
        """A one-time token for the login URL printed at start-up."""
        token = secrets.token_urlsafe(32)
        self._login_tokens[digest(token)] = time.monotonic() + self._login_ttl
        return token

    def redeem(self, token: str) -> bool:
        """True once for a valid, unexpired login token."""
        expires = self._login_tokens.pop(digest(token), None)
        return expires is not None and expires > time.monotonic()

    def sweep(self) -> None:
        """End the sessions past their idle time or lifetime (and close their sockets)."""
        now = time.monotonic()
        for session in self._sessions.values():
            if session.sockets:
                session.seen = now  # an open terminal is a session in use, not an idle one
        stale = [key for key, session in self._sessions.items()
                 if now - session.seen > self.idle or now - session.created > self.lifetime]
        for key in stale:
            self._end(self._sessions.pop(key), "Session expired")

    def end_all(self, reason: str) -> None:
        """End every session and close its sockets (the key they logged in with was rotated)."""
        sessions, self._sessions = list(self._sessions.values()), {}
        self._login_tokens.clear()
        for session in sessions:
            self._end(session, reason)

    def end_tenants(self, names: set[str], reason: str) -> None:
        """End the sessions these tenants logged in (removed from the tenants file, or a new token)."""
        gone = [key for key, session in self._sessions.items() if session.tenant in names]
        for key in gone:
            self._end(self._sessions.pop(key), reason)

    def _end(self, session: PageSession, reason: str) -> None:
        session.ended = True
        closers, session.sockets = list(session.sockets), set()
        for closer in closers:
            task = asyncio.ensure_future(closer(reason))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


def set_cookie(response: web.StreamResponse, cookie: str, request: web.Request) -> None:
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict", path="/", secure=request.secure)


def clear_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")


def from_this_origin(request: web.Request) -> bool:
    """Whether the browser says the request comes from our own pages (or a typed URL).

    SameSite ignores ports, so a page on another localhost port would still carry the cookie;
    Sec-Fetch-Site and Origin tell the difference, and a cookie from anywhere else is not honoured.
    """
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        # Browsers always send Origin with a WebSocket handshake, and WebSockets are not bound by
        # CORS: one without it is not a page of ours, so its cookie is not honoured.
        return request.headers.get("Upgrade", "").lower() != "websocket"
    return origin == f"{request.scheme}://{request.host}"


def csrf_matches(session: PageSession, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(token.encode(), session.csrf.encode())
