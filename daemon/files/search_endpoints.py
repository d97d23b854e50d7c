"""Thin declarations for the searches: /files/grep, /files/matches, /files/search, /files/glob.

Each validates its query, resolves the path against the chat's cwd (confined to `--root`), and runs
the search in a worker thread with a Budget: the search stops (and ripgrep is killed) when the client
disconnects or after `search_timeout` seconds. grep and glob then answer what they found, marked
truncated; search and matches, whose answers have no such mark, answer 504.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from aiohttp import web
from msgspec import Meta, Struct

from daemon.errors import ApiError
from daemon.files import grep, search
from daemon.files.locate import from_cwd
from daemon.files.scanning import Budget, SearchStopped
from daemon.http.endpoints import UNAUTHORIZED, Call, Endpoint
from daemon.http.inputs import NoInput
from daemon.keys import CONFIG, SCOPE

T = TypeVar("T")
#: How often a running search looks whether its client is still there (aiohttp does not cancel handlers).
DISCONNECT_POLL = 0.05

DIRECTORY_NOT_FOUND = {404: "Search directory not found."}
SEARCH_DIRECTORY = "Directory to search within."
TYPE_FILTER = "Type filter: 'file', 'directory', or 'any'."
TYPE_PATTERN = "^(file|directory|any)$"
SHOW_HIDDEN = "Include hidden dotfiles and dot-directories."
MAX_RESULTS = "Maximum number of matches to return."


Directory = Annotated[str, Meta(description=SEARCH_DIRECTORY)]
ShowHidden = Annotated[bool, Meta(description=SHOW_HIDDEN)]
TypeFilter = Annotated[Annotated[str, Meta(pattern=TYPE_PATTERN)] | None, Meta(description=TYPE_FILTER)]
MaxMatches = Annotated[int, Meta(ge=1, le=500, description=MAX_RESULTS)]


class GrepQuery(Struct, kw_only=True):
    query: Annotated[str, Meta(description="Text or regex pattern to search for.")]
    path: Annotated[str, Meta(description="Directory or file to search in.")] = "."
    regex: Annotated[bool, Meta(description="Use regex. Set false for literal search.")] = True
    case_insensitive: Annotated[bool, Meta(description="Perform case-insensitive matching.")] = False
    include: Annotated[list[str] | None, Meta(
        description="Glob patterns to filter files (e.g. '*.py'). Files must match at least one pattern.")] = None
    match_per_line: Annotated[bool, Meta(
        description="If true, return each matching line with line numbers. If false, return only the names of "
        "matching files.")] = True
    max_results: MaxMatches = 50


class MatchQuery(Struct, kw_only=True):
    query: Annotated[str, Meta(description="Literal text to match.")]
    path: Directory = "."
    show_hidden: ShowHidden = False
    offset: Annotated[int, Meta(description="Result offset.", ge=0)] = 0
    limit: Annotated[int, Meta(ge=1, le=100, description="Maximum number of results to return.")] = 100


class SearchQuery(Struct, kw_only=True):
    query: Annotated[str, Meta(description="Filename search term.")] = ""
    path: Directory = "."
    limit: Annotated[int, Meta(ge=1, le=100, description=MAX_RESULTS)] = 20
    type: TypeFilter = "any"
    show_hidden: ShowHidden = False


class GlobQuery(Struct, kw_only=True):
    pattern: Annotated[str, Meta(description="Glob pattern to search for (e.g. '*.py').")]
    path: Directory = "."
    exclude: Annotated[list[str] | None, Meta(description="Glob patterns to exclude from search results.")] = None
    type: TypeFilter = "any"
    max_results: MaxMatches = 50


def ripgrep() -> str | None:
    """ripgrep's path, looked up once per PATH value (a test may hide it by changing PATH)."""
    return _which_rg(os.environ.get("PATH", os.defpath))


@functools.lru_cache(maxsize=4)
def _which_rg(search_path: str) -> str | None:
    return shutil.which("rg", path=search_path)


# --- running a search -----------------------------------------------------------------------------


async def bounded(request: web.Request, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`work(*args, budget=..., **kwargs)` in a worker thread, stopped when the client goes away or
    the search timeout passes; returns only once the worker is done, so searches never pile up."""
    timeout = request.app[CONFIG].search_timeout
    budget = Budget(timeout)
    task = asyncio.ensure_future(asyncio.to_thread(work, *args, budget=budget, **kwargs))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL)
            if _client_gone(request):
                budget.stop(expired=False)
            elif budget.expired:
                budget.stop(expired=True)
    finally:
        budget.stop(expired=False)  # ends the worker's children also when this handler is cancelled
    try:
        return task.result()
    except SearchStopped as stopped:
        if stopped.expired:
            raise ApiError(504, f"Search did not finish within {timeout:g} s (OPEN_TERMINAL_SEARCH_TIMEOUT); "
                                "narrow the path or the query") from None
        raise ApiError(499, "Search cancelled: the client closed the connection") from None


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


# --- handlers -------------------------------------------------------------------------------------


async def grep_search(call: Call[GrepQuery, NoInput]) -> dict[str, Any]:
    query = call.query
    return await bounded(
        call.request, grep.grep, from_cwd(call, query.path), query.query, regex=query.regex,
        case_insensitive=query.case_insensitive, include=query.include, match_per_line=query.match_per_line,
        max_results=query.max_results, scope=call.app[SCOPE], rg=ripgrep(),
    )


async def match_files(call: Call[MatchQuery, NoInput]) -> dict[str, Any]:
    query = call.query
    return await bounded(
        call.request, search.matches, from_cwd(call, query.path), query.query, show_hidden=query.show_hidden,
        offset=query.offset, limit=query.limit, scope=call.app[SCOPE], rg=ripgrep(),
    )


async def search_files(call: Call[SearchQuery, NoInput]) -> dict[str, Any]:
    query = call.query
    return await bounded(
        call.request, search.search, from_cwd(call, query.path), query.query, limit=query.limit, kind=query.type,
        show_hidden=query.show_hidden, scope=call.app[SCOPE],
    )


async def glob_search(call: Call[GlobQuery, NoInput]) -> dict[str, Any]:
    query = call.query
    return await bounded(
        call.request, search.glob, from_cwd(call, query.path), query.pattern, exclude=query.exclude,
        kind=query.type, max_results=query.max_results, scope=call.app[SCOPE],
    )


ENDPOINTS = [
    Endpoint("GET", "/files/grep", grep_search, "grep_search", "Search file contents",
             "Search for a text pattern across files in a directory. Returns structured matches with file paths, "
             "line numbers, and matching lines. Skips binary files.",
             query=GrepQuery,
             responses={404: "Search path not found.", 400: "Invalid regex pattern.", **UNAUTHORIZED}),
    Endpoint("GET", "/files/matches", match_files, "match_files", "Search files by name and contents",
             "Search files and directories by ranked name, path, and content matches.",
             query=MatchQuery, responses={400: "Blank query.", **DIRECTORY_NOT_FOUND, **UNAUTHORIZED}),
    Endpoint("GET", "/files/search", search_files, "search_files", "Search files by name",
             "Search for files and subdirectories by ranked filename match.",
             query=SearchQuery, responses={**DIRECTORY_NOT_FOUND, **UNAUTHORIZED}),
    Endpoint("GET", "/files/glob", glob_search, "glob_search", "Search files by name",
             "Search for files and subdirectories by name within a specified directory using glob patterns. "
             "Results will include the relative path, type, size, and modification time.",
             query=GlobQuery, responses={**DIRECTORY_NOT_FOUND, **UNAUTHORIZED}),
]
