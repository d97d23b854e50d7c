"""Typed keys for the app's state: each stateful part is one object reached through one key."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from daemon.config import Config
from daemon.files.cwd import SessionDirectories
from daemon.files.listing_cache import ListingCache
from daemon.files.paths import FileScope
from daemon.files.preview import Previewer
from daemon.files.transfer import LinkStore
from daemon.http.auth import KeyGuard
from daemon.http.endpoints import Access, Endpoint
from daemon.http.sessions import PageSessions
from daemon.notebooks.table import NotebookTable
from daemon.processes.table import ProcessTable
from daemon.terminals.table import TerminalTable

CONFIG = web.AppKey("config", Config)
ENDPOINTS = web.AppKey("endpoints", tuple[Endpoint, ...])
ACCESS = web.AppKey("access", dict[Any, Access])
PROCESSES = web.AppKey("processes", ProcessTable)
DIRECTORIES = web.AppKey("directories", SessionDirectories)
SCOPE = web.AppKey("file_scope", FileScope)
LINKS = web.AppKey("links", LinkStore)
LISTINGS = web.AppKey("listings", ListingCache)
SESSIONS = web.AppKey("page_sessions", PageSessions)
GUARD = web.AppKey("key_guard", KeyGuard)
TERMINALS = web.AppKey("terminals", TerminalTable)
NOTEBOOKS = web.AppKey("notebooks", NotebookTable)
PREVIEWS = web.AppKey("previews", Previewer)
