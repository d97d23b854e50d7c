"""The terminal pages: xterm.js on a session from `/api/terminals`, for the logged-in web UI and for frames.

Both render templates/terminal.html; static/js/terminal.js does the rest in the browser (create or
re-attach a session, the WebSocket, reconnects). `/terminal` is a page of the web UI: its REST calls
and its WebSocket carry the session cookie. `/terminal/embed#token=<key>` is public: the page itself
holds nothing secret, and its script reads the key from the URL fragment, which browsers never send
to the server, so it stays out of access logs, proxies and Referer headers.
"""

from __future__ import annotations

from aiohttp import web

from daemon.http.endpoints import Access, Call, Endpoint
from daemon.http.inputs import NoInput
from daemon.keys import CONFIG
from daemon.pages.layout import CONTENT_SECURITY_POLICY, render


async def terminal_page(call: Call[NoInput, NoInput]) -> web.Response:
    return render(call.request, "terminal.html", {"mode": "page"})


async def terminal_embed(call: Call[NoInput, NoInput]) -> web.Response:
    """The frameable variant: may be framed by the origins allowed to call the daemon from a browser.

    Framing is harmless here: the page does nothing without the key in its fragment, never uses the
    web UI's cookie (SameSite=Strict keeps it out of third-party frames anyway), and a framing page
    that already has the key has the whole API.
    """
    response = render(call.request, "terminal.html", {"mode": "embed"})
    origins = call.app[CONFIG].cors_allowed_origins
    ancestors = "*" if "*" in origins else " ".join(["'self'", *origins])
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.replace(
        "frame-ancestors 'self'", f"frame-ancestors {ancestors}")
    response.headers.popall("X-Frame-Options", None)
    return response


ENDPOINTS = [
    Endpoint("GET", "/terminal", terminal_page, access=Access.PAGE, in_schema=False),
    Endpoint("GET", "/terminal/embed", terminal_embed, access=Access.PUBLIC, in_schema=False),
]
