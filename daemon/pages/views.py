"""The web file manager's pages: login, logout, browse a directory, open a file.

Handlers are thin: they call the same functions as the JSON API (files.ops, files.documents,
pages.previews) and render a template. Actions on the pages (upload, rename, delete, save...)
call the JSON API itself from the browser, authenticated by the session cookie and CSRF token.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from aiohttp import web
from msgspec import Meta, Struct

from daemon import tenants
from daemon.errors import ApiError
from daemon.files import ops, thumbnails
from daemon.git.endpoints import listing_marks
from daemon.http.auth import SESSION_KEY, identify
from daemon.http.endpoints import Access, Call, Endpoint
from daemon.http.inputs import NoInput
from daemon.http.sessions import COOKIE, PageSession, clear_cookie, from_this_origin, set_cookie
from daemon.keys import CONFIG, DIRECTORIES, GUARD, LISTINGS, SCOPE, SESSIONS
from daemon.pages import activity_view, compare_view, files_view, history_view, previews, search_view, trash_view
from daemon.pages.changes_view import ChangesQuery, changes_page
from daemon.pages.layout import breadcrumbs, browse_url, redirect, render
from daemon.pages.listing import View, arrange, human_size, mark_symlinks, timestamp


class IndexQuery(Struct, kw_only=True):
    token: Annotated[str | None, Meta(description="A one-time login token (printed at start-up).")] = None


class LoginQuery(Struct, kw_only=True):
    next: Annotated[str, Meta(description="Where to go after logging in.")] = "/"


class BrowseQuery(Struct, kw_only=True):
    sort: Literal["name", "size", "modified"] = "name"
    order: Literal["asc", "desc"] = "asc"
    # Unset: as last chosen in this session, so "Show hidden" holds in subfolders and after a reload.
    hidden: bool | None = None
    filter: str = ""
    page: Annotated[int, Meta(ge=1)] = 1
    # A CSV/TSV file's page: the column its rows are sorted by (with `order`), 0 the first.
    column: Annotated[int, Meta(ge=0)] | None = None


def _safe_next(target: str) -> str:
    """Only a path on this site: never `//evil.example` or `https://...`."""
    parts = urlsplit(target)
    # Browsers read `\` as `/`, so `/\evil.example` would leave the site like `//evil.example`.
    unsafe = "\\" in target or any(ord(char) < 32 for char in target)
    if unsafe or parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


# --- login and logout -------------------------------------------------------------------------------


async def index(call: Call[IndexQuery, NoInput]) -> web.StreamResponse:
    sessions = call.app[SESSIONS]
    if call.query.token is not None:
        if call.app[CONFIG].multi_user:  # the link names no user: left unused, for the form that does
            return _login_page(call, "/", "In multi-user mode, log in with the API key and a user id.", 400)
        if not sessions.redeem(call.query.token):
            return _login_page(call, "/", "That login link was already used or has expired. Enter the API key "
                               "instead.", 401)
        return _start_session(call, "/")
    session = identify(call.request).session
    if session is None:
        return _login_page(call, "/")
    last = session.state.get("last_dir")
    if last is None and call.app[CONFIG].multi_user:
        # This route is public: only /browse (a page route) knows the user (a tenant) and so its home.
        return redirect("/browse")
    return redirect(browse_url(last or call.app[DIRECTORIES].home))


def _login_page(call: Call[Any, Any], destination: str, error: str = "", status: int = 200) -> web.Response:
    # Multi-user: the form asks for a user id too (the admin key acts as the user it names).
    return render(call.request, "login.html", {"next": destination, "error": error,
                                               "multi_user": call.app[CONFIG].multi_user}, status=status)


async def login_form(call: Call[LoginQuery, NoInput]) -> web.Response:
    return _login_page(call, _safe_next(call.query.next))


async def login(call: Call[LoginQuery, NoInput]) -> web.StreamResponse:
    form = await call.request.post()
    key, destination = str(form.get("key", "")), _safe_next(str(form.get("next", "/")))
    if not from_this_origin(call.request):
        raise ApiError(403, "Cross-site login refused")
    admin = call.app[GUARD].matches(key)
    tenant = None if admin else tenants.login(call.app, key)  # a tenant's token opens its own pages
    if not admin and tenant is None:
        return _login_page(call, destination, "That key is not right.", 401)
    user = None
    if admin and call.app[CONFIG].multi_user:
        user, problem = login_user(form.get("user"))
        if user is None:
            return _login_page(call, destination, problem, 400)
    return _start_session(call, destination, tenant, user)


#: A user id longer than this is not one Open WebUI sends (it sends UUIDs): a typo or an attack.
MAX_USER_ID = 256


def login_user(value: object) -> tuple[str | None, str]:
    """The user id a multi-user login form names (trimmed), or None and what is wrong with it."""
    user = value.strip() if isinstance(value, str) else ""
    if not user:
        return None, "Enter the user id to log in as (the admin key acts as the user it names)."
    if len(user) > MAX_USER_ID or any(ord(char) < 32 or ord(char) == 127 for char in user):
        return None, f"A user id is at most {MAX_USER_ID} printable characters."
    return user, ""


def _start_session(call: Call[Any, Any], destination: str, tenant: str | None = None,
                   user: str | None = None) -> web.StreamResponse:
    """Redirect with a fresh session cookie (the redirect also takes a token out of the address bar)."""
    cookie, _ = call.app[SESSIONS].create(tenant, user)
    response = redirect(destination)
    set_cookie(response, cookie, call.request)
    return response


async def logout(call: Call[NoInput, NoInput]) -> web.StreamResponse:
    call.app[SESSIONS].revoke(call.request.cookies.get(COOKIE))
    response = redirect("/login")
    clear_cookie(response)
    return response


# --- browsing ---------------------------------------------------------------------------------------


async def browse(call: Call[BrowseQuery, NoInput]) -> web.StreamResponse:
    home, scope = call.app[DIRECTORIES].home, call.app[SCOPE]
    raw = call.path("path")
    if not raw:
        return redirect(browse_url(scope.base(home)))
    # Errors (404, 403...) are rendered as the styled page by http.errors, like every page's.
    target = scope.target("/" + raw.lstrip("/"), scope.base(home))
    if os.path.isdir(target):
        return await _directory_page(call, target)
    return await files_view.file_page(call, target)


async def _directory_page(call: Call[BrowseQuery, NoInput], target: str) -> web.Response:
    scope = call.app[SCOPE]
    listing = await asyncio.to_thread(ops.list_directory, target, scope.contains if scope.root else None,
                                      call.app[LISTINGS])
    query = call.query
    session: PageSession = call.request[SESSION_KEY]
    hidden = session.state.get("show_hidden") == "true" if query.hidden is None else query.hidden
    session.state["show_hidden"] = "true" if hidden else "false"
    session.state["last_dir"] = target
    view = View(query.sort, query.order == "desc", hidden, query.filter, query.page)
    entries = await asyncio.to_thread(mark_symlinks, target, listing["entries"],
                                      scope.contains if scope.root else None)
    page = arrange(entries, view)
    marks = await listing_marks(call.app, target)  # None: not in a git repository (or no git)
    return render(call.request, "browse.html", {
        "path": target, "crumbs": breadcrumbs(target), "rows": [_row(target, entry, view) for entry in page.entries],
        "page": page, "view": view, "writable": listing["writable"],
        "parent": browse_url(os.path.dirname(target)) if target != "/" else None,
        "home": call.app[DIRECTORIES].home, "terminal_url": "/terminal?" + urlencode({"cwd": target}),
        "git_marks": marks or {}, "changes_url": None if marks is None else "/changes?" + urlencode({"path": target}),
    })


def _row(directory: str, entry: dict[str, Any], view: View) -> dict[str, Any]:
    path = os.path.join(directory, entry["name"])
    folder = entry["type"] == "directory"
    # A folder link carries "hidden" so the choice is kept when it is opened in a new tab too.
    href = browse_url(path) + ("?hidden=true" if folder and view.hidden else "")
    # The grid view's picture (previews.css shows it only there; loading=lazy fetches only what is seen).
    wanted = not folder and not entry.get("broken") and thumbnails.wanted(path)
    thumbnail = "/files/thumbnail?path=" + quote(path) if wanted else None
    return {**entry, "path": path, "href": href, "thumbnail": thumbnail,
            "size_text": "" if folder or entry.get("broken") else human_size(entry["size"]),
            "modified_text": timestamp(entry["modified"]) if entry["modified"] else ""}


async def code_css(call: Call[NoInput, NoInput]) -> web.Response:
    """Pygments' colours for the code previews (light, and dark when the system is)."""
    return web.Response(text=previews.pygments_css(), content_type="text/css",
                        headers={"Cache-Control": "max-age=3600"})


ENDPOINTS = [
    Endpoint("GET", "/", index, query=IndexQuery, access=Access.PUBLIC, in_schema=False),
    Endpoint("GET", "/login", login_form, query=LoginQuery, access=Access.PUBLIC, in_schema=False),
    Endpoint("POST", "/login", login, access=Access.PUBLIC, in_schema=False),
    Endpoint("POST", "/logout", logout, in_schema=False),
    Endpoint("GET", "/browse{path:.*}", browse, query=BrowseQuery, access=Access.PAGE, in_schema=False),
    Endpoint("GET", "/pages/code.css", code_css, access=Access.PUBLIC, in_schema=False),
    Endpoint("GET", "/compare", compare_view.compare_page, query=compare_view.CompareQuery, access=Access.PAGE,
             in_schema=False),
    Endpoint("GET", "/search", search_view.search_page, query=search_view.SearchPageQuery, access=Access.PAGE,
             in_schema=False),
    Endpoint("GET", "/pdf", files_view.pdf_page, query=files_view.PdfQuery, access=Access.PAGE, in_schema=False),
    Endpoint("GET", "/changes", changes_page, query=ChangesQuery, access=Access.PAGE, in_schema=False),
    *activity_view.PAGES,
    *trash_view.PAGES,
    *history_view.PAGES,
]
