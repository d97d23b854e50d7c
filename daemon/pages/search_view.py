"""`/search?q=&path=`: every line that contains the words, grouped by file, with counts, the words marked.

No second search engine: text files through `files.grep` (ripgrep when installed, honouring ignore
files), names through `files.search`, PDFs through the document worker (`reading.document_text`, as
read_file reads them), all under the `/files/...` searches' budget (`search_endpoints.bounded`).
The search is literal and case-insensitive, as the browse page's search box.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

from aiohttp import web
from msgspec import Meta, Struct

from daemon.errors import ApiError
from daemon.files import grep, search
from daemon.files.locate import from_home
from daemon.files.paths import FileScope
from daemon.files.scanning import Budget
from daemon.files.search_endpoints import bounded, ripgrep
from daemon.http.endpoints import Call
from daemon.http.inputs import NoInput
from daemon.keys import CONFIG, SCOPE
from daemon.pages.layout import breadcrumbs, browse_url, render

#: Lines gathered per search: enough for any reading; past it the page says the list is cut.
MAX_LINES = 10_000
FILES_PER_PAGE = 50
MAX_NAMES = 100
#: PDFs are read by a worker each (about 0.1 s apiece): the first ones found, up to this size.
MAX_PDFS = 25
MAX_PDF_BYTES = 20 * 1024 * 1024
#: A preview shows this much of a long line, around the first match.
PREVIEW_CHARS = 240


class SearchPageQuery(Struct, kw_only=True):
    q: Annotated[str, Meta(max_length=1000)] = ""
    path: str = ""
    page: Annotated[int, Meta(ge=1)] = 1


@dataclass
class FileHits:
    """One file's matching lines: (line number, [(text, is_match), ...])."""

    path: str
    relative: str
    lines: list[tuple[int, list[tuple[str, bool]]]] = field(default_factory=list)
    document: bool = False

    @property
    def href(self) -> str:
        return browse_url(self.path)

    @property
    def count(self) -> int:
        return len(self.lines)


@dataclass(frozen=True)
class Found:
    files: list[FileHits]
    names: list[dict[str, str]]
    truncated: bool  # MAX_LINES reached or the time ran out: there may be more
    pdfs_skipped: int = 0

    @property
    def total(self) -> int:
        return sum(hits.count for hits in self.files)


def marked(text: str, query: str) -> list[tuple[str, bool]]:
    """`text` cut into pieces, the ones equal to `query` (case-insensitively) flagged; the template
    escapes every piece and wraps the flagged ones in <mark>. A long line is trimmed around its first match."""
    pattern = re.compile(re.escape(query), re.IGNORECASE)
    first = pattern.search(text)
    if len(text) > PREVIEW_CHARS:
        start = max(0, (first.start() if first else 0) - PREVIEW_CHARS // 3)
        text = ("…" if start else "") + text[start:start + PREVIEW_CHARS] + "…"
    pieces: list[tuple[str, bool]] = []
    position = 0
    for match in pattern.finditer(text):
        if match.start() > position:
            pieces.append((text[position:match.start()], False))
        pieces.append((match.group(), True))
        position = match.end()
    if position < len(text):
        pieces.append((text[position:], False))
    return pieces


def collect(target: str, query: str, *, scope: FileScope, rg: str | None, budget: Budget) -> tuple[Found, list[str]]:
    """Text matches and name matches under `target`, and the PDFs there to read next (in a thread)."""
    prefix = target.rstrip("/") + "/"
    found = grep.grep(target, query, regex=False, case_insensitive=True, include=None, match_per_line=True,
                      max_results=MAX_LINES, scope=scope, rg=rg, budget=budget)
    files: dict[str, FileHits] = {}
    for item in found["matches"]:
        path = item["file"]
        hits = files.setdefault(path, FileHits(path, path.removeprefix(prefix)))
        hits.lines.append((item["line"], marked(item["content"].rstrip("\r\n"), query)))
    names = search.search(target, query, limit=MAX_NAMES, kind="any", show_hidden=False, scope=scope,
                          budget=budget)["results"]
    pdfs = search.glob(target, "*.pdf", exclude=[".*", "*/.*"], kind="file", max_results=MAX_PDFS + 1,
                       scope=scope, budget=budget)["matches"]
    return (Found(list(files.values()), [_name(entry, prefix) for entry in names], bool(found["truncated"]),
                  max(0, len(pdfs) - MAX_PDFS)),
            [os.path.join(target, pdf["path"]) for pdf in pdfs[:MAX_PDFS] if pdf["size"] <= MAX_PDF_BYTES])


def _name(entry: dict[str, Any], prefix: str) -> dict[str, str]:
    path = entry["path"]
    return {"path": path, "relative": path.removeprefix(prefix) + ("/" if entry["type"] == "directory" else ""),
            "href": browse_url(path)}


def pdf_hits(path: str, relative: str, text: str, query: str) -> FileHits | None:
    """The lines of a PDF's extracted text that contain `query`, as a file's hits."""
    needle = query.casefold()
    hits = FileHits(path, relative, document=True)
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line.casefold():
            hits.lines.append((number, marked(line, query)))
    return hits if hits.lines else None


async def _read_pdfs(call: Call[Any, Any], target: str, pdfs: list[str], query: str) -> list[FileHits]:
    from daemon.files import reading

    timeout, opener = call.app[CONFIG].document_timeout, call.app[SCOPE].beneath
    prefix = target.rstrip("/") + "/"
    found = []
    for path in pdfs:
        if call.request.transport is None or call.request.transport.is_closing():
            break  # the reader left: start no more workers
        try:
            extracted = await reading.document_text(path, timeout, opener)
        except ApiError:  # damaged, encrypted, too slow: searched like a file that does not match
            continue
        hits = pdf_hits(path, path.removeprefix(prefix), extracted.content, query)
        if hits is not None:
            found.append(hits)
    return found


async def search_page(call: Call[SearchPageQuery, NoInput]) -> web.Response:
    query = call.query.q.strip()
    target = from_home(call, call.query.path or ".")
    context: dict[str, Any] = {"query": query, "path": target, "crumbs": breadcrumbs(target),
                               "folder": browse_url(target), "searched": bool(query)}
    if query:
        found, pdfs = await bounded(call.request, collect, target, query, scope=call.app[SCOPE], rg=ripgrep())
        documents = await _read_pdfs(call, target, pdfs, query)
        found = Found(found.files + documents, found.names, found.truncated, found.pdfs_skipped)
        context.update(_page_of(found, call.query.page, query, target))
    return render(call.request, "search.html", context)


def _page_of(found: Found, page: int, query: str, target: str) -> dict[str, Any]:
    pages = max(1, math.ceil(len(found.files) / FILES_PER_PAGE))
    page = min(page, pages)

    def link(number: int) -> str:
        return "/search?" + urlencode({"q": query, "path": target, "page": number})

    return {
        "found": found, "files": found.files[(page - 1) * FILES_PER_PAGE:page * FILES_PER_PAGE],
        "page": page, "pages": pages, "prev_url": link(page - 1) if page > 1 else None,
        "next_url": link(page + 1) if page < pages else None, "max_lines": MAX_LINES, "max_pdfs": MAX_PDFS,
    }
