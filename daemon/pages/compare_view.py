"""The "Compare with…" page: two files side by side, from the same diff `POST /files/compare` returns.

The diff is computed by `files.compare` in its worker process (time and memory limits), never in
the event loop; this module only opens the two sides as the endpoint does and lays the reply's hunks
out in rows: context lines on both sides, a removed line beside the added line that replaced it.
Every string reaches the page through the template, escaped.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from aiohttp import web
from msgspec import Meta, Struct

from daemon.errors import ApiError
from daemon.files import compare
from daemon.files.compare_endpoints import named, open_sides, side_name
from daemon.http.endpoints import Call
from daemon.http.inputs import NoInput
from daemon.keys import DIRECTORIES, SCOPE
from daemon.pages.layout import breadcrumbs, browse_url, render

#: Rows put into the page; a diff of two unrelated 50,000-line files would otherwise be 100,000 rows.
MAX_ROWS = 5000


class CompareQuery(Struct, kw_only=True):
    original: Annotated[str, Meta(description="The file on the left.")] = ""
    revised: Annotated[str, Meta(description="The file on the right (relative: to the original's folder).")] = ""
    ignore_whitespace: bool = False


@dataclass(frozen=True)
class Half:
    """One side of a row: a line number, how the line changed, and its runs of (un)changed text."""

    number: int
    kind: str  # context, removed or added
    segments: list[dict[str, Any]]


@dataclass
class Hunk:
    header: str
    rows: list[tuple[Half | None, Half | None]] = field(default_factory=list)


@dataclass
class SideBySide:
    hunks: list[Hunk]
    additions: int
    deletions: int
    notices: list[str]
    shown_rows: int
    total_rows: int
    paths: tuple[str, str] = ("", "")  # both files as resolved (the form keeps what was typed)


def _half(line: dict[str, Any], number_key: str) -> Half:
    return Half(int(line[number_key]), str(line["type"]), list(line["segments"]))


def hunk_rows(lines: list[dict[str, Any]]) -> list[tuple[Half | None, Half | None]]:
    """A hunk's lines as rows: a run of removed lines is paired, in order, with the added run after it."""
    rows: list[tuple[Half | None, Half | None]] = []
    removed: list[Half] = []
    added: list[Half] = []

    def flush() -> None:
        for index in range(max(len(removed), len(added))):
            rows.append((removed[index] if index < len(removed) else None,
                         added[index] if index < len(added) else None))
        removed.clear()
        added.clear()

    for line in lines:
        if line["type"] == "removed":
            if added:  # a removal after additions starts a new change
                flush()
            removed.append(_half(line, "oldNumber"))
        elif line["type"] == "added":
            added.append(_half(line, "newNumber"))
        else:
            flush()
            rows.append((_half(line, "oldNumber"), _half(line, "newNumber")))
    flush()
    return rows


def side_by_side(document: dict[str, Any], max_rows: int = MAX_ROWS) -> SideBySide:
    """The diff document of `files.compare.diff` laid out in rows, at most `max_rows` of them."""
    hunks: list[Hunk] = []
    shown = total = 0
    for raw in document["hunks"]:
        rows = hunk_rows(raw["lines"])
        total += len(rows)
        if shown < max_rows:
            kept = rows[: max_rows - shown]
            shown += len(kept)
            hunks.append(Hunk(str(raw["header"]), kept))
    notices = [*document["original"]["notices"], *document["revised"]["notices"]]
    paths = (str(document["original"]["path"]), str(document["revised"]["path"]))
    return SideBySide(hunks, int(document["additions"]), int(document["deletions"]), notices, shown, total, paths)


def _resolve(call: Call[Any, Any], path: str, base: str) -> tuple[str, str]:
    scope, name = call.app[SCOPE], side_name(path)
    try:
        return scope.target(path, base), name
    except ApiError as exc:
        raise named(exc, name) from None


async def compare_paths(call: Call[Any, Any], original: str, revised: str, ignore_whitespace: bool) -> SideBySide:
    """Both files opened as `POST /files/compare` opens them, diffed by its worker, laid out in rows."""
    scope = call.app[SCOPE]
    left = _resolve(call, original, scope.base(call.app[DIRECTORIES].home))
    # "notes.txt" typed beside report.txt means the notes.txt in the same folder.
    right = _resolve(call, revised, os.path.dirname(left[0]))
    files = await asyncio.to_thread(open_sides, [left, right], scope.beneath)
    try:
        sides = [(file.fd, target, name) for file, (target, name) in zip(files, [left, right], strict=True)]
        body = await compare.compare_in_worker(sides, ignore_whitespace)
    finally:
        for file in files:
            file.close()
    # A diff of 2 million characters is tens of megabytes of JSON: parsed off the event loop.
    return await asyncio.to_thread(lambda: side_by_side(orjson.loads(body)))


async def compare_page(call: Call[CompareQuery, NoInput]) -> web.Response:
    query = call.query
    context: dict[str, Any] = {
        "original": query.original, "revised": query.revised, "ignore_whitespace": query.ignore_whitespace,
        "crumbs": breadcrumbs(query.original) if query.original.startswith("/") else None,
        "original_url": browse_url(query.original) if query.original.startswith("/") else None,
        "diff": None, "error": "",
    }
    if not query.original or not query.revised:  # "Compare with…" from a file's page: pick the other one
        return render(call.request, "compare.html", context)
    try:
        context["diff"] = await compare_paths(call, query.original, query.revised, query.ignore_whitespace)
    except ApiError as exc:
        # A side that cannot be compared is said on the page, beside the form to pick another one.
        context["error"] = str(exc.detail)
        return render(call.request, "compare.html", context, status=exc.status)
    return render(call.request, "compare.html", context)
