"""The terminal pages: xterm.js on a session from `/api/terminals`, for the logged-in web UI and for frames.

Both render templates/terminal.html; static/js/terminal.js does the rest in the browser (tabs of
sessions, created or re-attached, the WebSockets, reconnects). `/terminal?cwd=<folder>` adds a tab
whose new shell starts in that folder (the browse page's "Open terminal here"): the folder must exist
and lie within the file root, checked here, or the page is the styled error.

`/terminal` is a page of the web UI: its REST calls
and its WebSocket carry the session cookie. `/terminal/embed#token=<key>` is public: the page itself
holds nothing secret, and its script reads the key from the URL fragment, which browsers never send
to the server, so it stays out of access logs, proxies and Referer headers.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

from aiohttp import web
from msgspec import Meta, Struct

from daemon.errors import ApiError
from daemon.files.paths import FileScope
from daemon.http.endpoints import Access, Call, Endpoint
from daemon.http.inputs import NoInput
from daemon.keys import CONFIG, DIRECTORIES, SCOPE
from daemon.pages.layout import CONTENT_SECURITY_POLICY, render


class TerminalQuery(Struct, kw_only=True):
    cwd: Annotated[str | None, Meta(description="Open a new session in this folder.")] = None


def terminal_folder(scope: FileScope, path: str, home: str) -> str:
    """The folder a new session starts in: an existing directory within the file root (403, 404 otherwise).

    Relative paths start where the file pages' do (home, or the root when home lies outside it).
    """
    target = scope.target(path, scope.base(home))
    if not os.path.isdir(target):
        raise ApiError(404, f"No such folder: {path}")
    return target


async def terminal_page(call: Call[TerminalQuery, NoInput]) -> web.Response:
    cwd = ""
    if call.query.cwd is not None:
        cwd = await asyncio.to_thread(terminal_folder, call.app[SCOPE], call.query.cwd, call.app[DIRECTORIES].home)
    return render(call.request, "terminal.html", {"mode": "page", "cwd": cwd})


async def terminal_embed(call: Call[NoInput, NoInput]) -> web.Response:
    """The frameable variant: may be framed by the origins allowed to call the daemon from a browser.

    Framing is harmless here: the page does nothing without the key in its fragment, never uses the
    web UI's cookie (SameSite=Strict keeps it out of third-party frames anyway), and a framing page
    that already has the key has the whole API.
    """
    response = render(call.request, "terminal.html", {"mode": "embed", "cwd": ""})
    origins = call.app[CONFIG].cors_allowed_origins
    ancestors = "*" if "*" in origins else " ".join(["'self'", *origins])
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.replace(
        "frame-ancestors 'self'", f"frame-ancestors {ancestors}")
    response.headers.popall("X-Frame-Options", None)
    return response


ENDPOINTS = [
    Endpoint("GET", "/terminal", terminal_page, query=TerminalQuery, access=Access.PAGE, in_schema=False),
    Endpoint("GET", "/terminal/embed", terminal_embed, access=Access.PUBLIC, in_schema=False),
]
