"""What every page shares: security headers, rendering, redirects, and the browse URLs."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from daemon.http.auth import SESSION_KEY, identify
from daemon.http.sessions import PageSession
from daemon.keys import CONFIG

#: Scripts only from /static, no inline code, no plugins; our own file views may be framed by our pages.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; frame-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'; manifest-src 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "SAMEORIGIN",
    "Cache-Control": "no-store",
}


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    session: PageSession | None = request.get(SESSION_KEY)
    # With OPEN_TERMINAL_ENABLE_TERMINAL=false the header must not link to the missing /terminal page.
    config = request.config_dict[CONFIG]
    context = {"csrf_token": session.csrf if session else "", "terminal_enabled": config.enable_terminal,
               "trash_page": not config.multi_user, **context}  # multi-user: no trash (users.trash_config)
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers.update(PAGE_HEADERS)
    return response


#: The error page's heading, in words a person reads before the server's detail.
STATUS_TITLES = {
    400: "That request did not make sense",
    401: "Please sign in",
    403: "You cannot open this",
    404: "Nothing here",
    405: "Not something you can open",
    409: "That changed meanwhile",
    413: "Too large",
    422: "That request did not make sense",
    429: "Too many requests, try again shortly",
    500: "Something went wrong on the server",
    503: "Not available right now",
}


def error_page(request: web.Request, status: int, detail: Any) -> web.Response:
    """The styled error page; under /browse, for a signed-in visitor, with the breadcrumbs of the
    path asked for (a refused one learns nothing about the disk)."""
    if request.get(SESSION_KEY) is None and (session := identify(request).session) is not None:
        # An unknown URL or a public route never went through the page check, yet the visitor is
        # signed in (from our own origin): the page gets their header and a way back to their files.
        request[SESSION_KEY] = session
    signed_in = request.get(SESSION_KEY) is not None
    if status == 404 and detail == "Not Found":  # the router's own word for an unknown URL
        detail = f"There is no page at {request.path}."
    context: dict[str, Any] = {"status": status, "title": STATUS_TITLES.get(status, "Something went wrong"),
                               "detail": detail, "signed_in": signed_in}
    if request.path.startswith("/browse/") and signed_in:
        context["crumbs"] = breadcrumbs(request.match_info.get("path") or request.path[len("/browse"):])
    return render(request, "error.html", context, status=status)


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **PAGE_HEADERS})


def browse_url(path: str) -> str:
    return "/browse" + quote(path)


def breadcrumbs(path: str) -> list[tuple[str, str]]:
    """[("/", "/browse/"), ("home", "/browse/home"), ...] for the path's ancestors and itself."""
    crumbs = [("/", browse_url("/"))]
    current = ""
    for part in [part for part in path.split("/") if part]:
        current += "/" + part
        crumbs.append((part, browse_url(current)))
    return crumbs
