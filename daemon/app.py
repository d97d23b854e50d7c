"""create_app(config): wiring only. Middlewares, endpoints, pages, static files, lifetimes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from daemon import audit, limit_endpoints, limits, resident, sandbox, service, tenants, users, watchdog
from daemon.config import Config
from daemon.files import endpoints as file_endpoints
from daemon.files import history_endpoints
from daemon.files.cwd import SessionDirectories
from daemon.files.history import HISTORY
from daemon.files.listing_cache import ListingCache
from daemon.files.paths import FileScope
from daemon.files.preview import Previewer
from daemon.files.transfer import LinkStore
from daemon.files.trash_endpoints import TRASH
from daemon.files.trash_endpoints import from_config as trash_from_config
from daemon.files.trash_endpoints import sweeping as trash_sweeping
from daemon.git import endpoints as git_endpoints
from daemon.git.repo import StatusCache
from daemon.http import cors, docs, key_watch
from daemon.http.auth import KeyGuard, auth_middleware
from daemon.http.endpoints import Access, Endpoint, register
from daemon.http.errors import error_middleware
from daemon.http.hosts import HostPolicy, host_middleware
from daemon.http.sessions import PageSessions
from daemon.keys import (
    ACCESS,
    CONFIG,
    DIRECTORIES,
    ENDPOINTS,
    GUARD,
    LINKS,
    LISTINGS,
    NOTEBOOKS,
    PREVIEWS,
    PROCESSES,
    SCOPE,
    SESSIONS,
    TERMINALS,
)
from daemon.limit_endpoints import LIMITS
from daemon.net import endpoints as net_endpoints
from daemon.notebooks import endpoints as notebook_endpoints
from daemon.notebooks.table import NotebookTable
from daemon.pages import activity_view, icons, terminal_page
from daemon.pages import views as page_views
from daemon.processes import endpoints as process_endpoints
from daemon.processes.runner import SpawnGate
from daemon.processes.table import ProcessTable
from daemon.resources import static_dir, templates_dir
from daemon.terminals import endpoints as terminal_endpoints
from daemon.terminals.table import TerminalTable

#: Largest JSON body accepted (file writes carry whole files); uploads stream and are not bound by it.
MAX_JSON_BODY = 64 * 1024 * 1024


def declared_endpoints(config: Config) -> list[Endpoint]:
    """Every endpoint of the API, in the order the OpenAPI document lists them."""
    # OPEN_TERMINAL_ENABLE_TERMINAL=false: the terminal routes are not there at all, as in the reference.
    terminals = config.enable_terminal
    return [
        *service.endpoints(config),
        *limit_endpoints.ENDPOINTS,
        *docs.ENDPOINTS_DECLARED,
        *file_endpoints.ENDPOINTS,
        *process_endpoints.ENDPOINTS,
        *(terminal_endpoints.ENDPOINTS if terminals else ()),
        *net_endpoints.ENDPOINTS,
        *git_endpoints.ENDPOINTS,
        *(notebook_endpoints.ENDPOINTS if config.enable_notebooks else ()),
        *activity_view.API,
        *page_views.ENDPOINTS,
        *(terminal_page.ENDPOINTS if terminals else ()),
    ]


def api_segments(config: Config) -> frozenset[str]:
    """The first path segments of the API (`files`, `execute`...): an unknown path under one of
    them is a JSON 404 whoever asks; elsewhere a browser asking for HTML gets the styled page."""
    pages = {id(endpoint) for endpoint in (*page_views.ENDPOINTS, *terminal_page.ENDPOINTS)}
    return frozenset({"static", "mcp"} | {endpoint.path.lstrip("/").partition("/")[0]
                                          for endpoint in declared_endpoints(config) if id(endpoint) not in pages})


def create_app(config: Config) -> web.Application:
    access: dict[Any, Access] = {}
    sessions = PageSessions()
    guard = KeyGuard(config.api_key, config.stored_key_path)
    guard.on_rotation.append(sessions.end_all)  # a rotated key logs every browser out
    app = web.Application(client_max_size=MAX_JSON_BODY)
    hosts = HostPolicy(config.allowed_hosts, config.host, config.binds_loopback)
    # Order matters: errors wrap everything (so the Host check's refusals and preflight failures are
    # rendered too); preflights are answered (for our hosts only) before the Host check and auth;
    # CORS headers are added by the response signal; auth runs last, next to the handler.
    app.middlewares.extend([
        error_middleware(access, api_segments(config)),
        cors.install(app, cors.CorsPolicy(config.cors_allowed_origins), hosts),
        host_middleware(hosts),
        auth_middleware(access),
    ])
    app[CONFIG] = config
    app[ACCESS] = access
    spawns = SpawnGate()  # one pace for every child this loop starts, commands and shells alike
    confinement = sandbox.from_config(config)  # one for commands and shells alike
    app.middlewares.append(sandbox.middleware(confinement))  # and for kernels, git and file workers
    app[resident.POOL] = resident.attach(spawns, confinement)  # sandboxes kept running: no bwrap start per command
    app.cleanup_ctx.append(resident.cleanup_context(spawns))  # first in: they end after the tables'
    people = users.from_config(config, confinement)  # multi-user: each user's own account, home, sandbox
    app[DIRECTORIES] = (SessionDirectories(config.home, config.session_cwd_ttl) if people is None
                        else users.UserDirectories(people, config.session_cwd_ttl))
    if people is not None:
        app[users.USERS] = people
        app.middlewares.append(users.middleware(people, access))  # after auth: a tenant is its user
    app[LIMITS] = limiting = limits.from_config(config)  # one per tree, inside one per user
    app.cleanup_ctx.append(limit_endpoints.lifetime)  # before the tables': its close runs after theirs
    app[PROCESSES] = ProcessTable(config, gate=spawns, sandbox=confinement, limits=limiting,
                                  confine=people.sandbox_for if people else None)
    app[TERMINALS] = TerminalTable(config, gate=spawns, sandbox=confinement, limits=limiting,
                                   confine=people.sandbox_for if people else None)
    app[SCOPE] = (FileScope(str(config.file_root) if config.file_root else None, confinement) if people is None
                  else users.UserScope(people))
    app[NOTEBOOKS] = NotebookTable(config, app[SCOPE].beneath, limiting)
    app[LINKS] = LinkStore(config.link_ttl)
    app[LISTINGS] = ListingCache()
    app[TRASH] = trash_from_config(users.trash_config(config), app[SCOPE].root)
    app[git_endpoints.GIT_STATUS] = StatusCache()
    app[PREVIEWS] = Previewer(config.state_dir / "previews", libreoffice=config.libreoffice,
                              timeout=config.preview_timeout, cache_size=config.preview_cache_size)
    app[HISTORY] = history_endpoints.from_config(config)
    app[SESSIONS] = sessions
    app[GUARD] = guard
    audit.install(app, config.state_dir)
    endpoints = tuple(declared_endpoints(config))
    app[ENDPOINTS] = endpoints
    register(app, endpoints, access)
    for route in app.router.add_static("/static", static_dir(), append_version=False):
        access[route] = Access.PUBLIC
    icons.install(aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(templates_dir()), autoescape=True))
    app.cleanup_ctx.append(_process_lifetime)
    app.cleanup_ctx.append(_terminal_lifetime)
    app.cleanup_ctx.append(_notebook_lifetime)
    app.cleanup_ctx.append(trash_sweeping)
    app.cleanup_ctx.append(history_endpoints.sweeping)
    app.on_cleanup.append(_close_listings)
    app.on_cleanup.append(_close_previews)
    app.on_shutdown.append(terminal_endpoints.close_sockets)
    app.cleanup_ctx.append(key_watch.cleanup_context(guard))
    if config.tenants_file is not None:
        app[tenants.TENANTS] = book = tenants.TenantBook(config.tenants_file)
        book.subscribe(tenants.limits_applier(app[LIMITS]))  # each tenant's own totals, kept current
        book.subscribe(tenants.sessions_ender(sessions))  # a removed tenant's browsers are logged out
        book.subscribe(tenants.network_applier(app[users.USERS], confinement is not None))  # tenants imply users
        app.cleanup_ctx.append(tenants.cleanup_context(book))
    if config.enable_mcp:
        from daemon.mcp import mount  # light (the SDK loads when the app starts); off the path when MCP is off

        mount.mount(app, access)
    if config.loop_watchdog:
        app.cleanup_ctx.append(watchdog.cleanup_context(config.state_dir / watchdog.STALL_FILE))
    return app


async def _process_lifetime(app: web.Application) -> AsyncIterator[None]:
    table = app[PROCESSES]
    table.start_sweeping()
    yield
    await table.close()


async def _close_listings(app: web.Application) -> None:
    app[LISTINGS].close()


async def _close_previews(app: web.Application) -> None:
    app[PREVIEWS].close()


async def _terminal_lifetime(app: web.Application) -> AsyncIterator[None]:
    table = app[TERMINALS]
    table.start_sweeping()
    yield
    await table.close()


async def _notebook_lifetime(app: web.Application) -> AsyncIterator[None]:
    """Kernels are reaped when idle, and every kernel's process group is killed at shutdown."""
    table = app[NOTEBOOKS]
    table.start_sweeping()
    yield
    await table.close()
