"""The page for one file: a preview chosen by its type, and the editor for text."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import mimetypes
import os
from typing import Any
from urllib.parse import quote

from aiohttp import web
from msgspec import Struct

from daemon.errors import ApiError
from daemon.files import documents, ops, preview, reading
from daemon.files.locate import from_home
from daemon.http.endpoints import Call
from daemon.http.inputs import NoInput
from daemon.keys import CONFIG, LISTINGS, SCOPE
from daemon.pages import notebook_view, previews, tables
from daemon.pages.layout import breadcrumbs, browse_url, render
from daemon.pages.listing import human_size

#: Larger text files are offered for download and raw view instead of being put into the page.
MAX_PAGE_TEXT = 4 * 1024 * 1024
MARKDOWN = (".md", ".markdown", ".mdown", ".mkd")
TABLES = (".csv", ".tsv")
SOURCE_AND_FRAME = ("text/html", "image/svg+xml", "application/xhtml+xml")
NOTEBOOK = (".ipynb",)


def view_url(path: str) -> str:
    return "/files/view?path=" + quote(path)


def serve_url(path: str) -> str:
    """The file at a URL ending in its name, which PDF viewers offer as the name to save it under."""
    return "/files/serve" + quote(path)


def pdf_url(path: str) -> str:
    return "/pdf?path=" + quote(path)


class PdfQuery(Struct, kw_only=True):
    path: str


async def pdf_page(call: Call[PdfQuery, NoInput]) -> web.Response:
    """A PDF filling a page titled with its name: opened bare, Chromium titles the tab by the URL's
    last segment ("view" for /files/view?path=...), or by the document's own metadata."""
    target = from_home(call, call.query.path)
    await asyncio.to_thread(ops.require_file, target, call.app[SCOPE].beneath)
    return render(call.request, "pdf.html", {"name": os.path.basename(target), "src": serve_url(target)})


async def file_page(call: Call[Any, Any], target: str) -> web.Response:
    info = await asyncio.to_thread(ops.require_file, target)
    mime = mimetypes.guess_type(target)[0] or "application/octet-stream"
    context: dict[str, Any] = {
        "path": target, "name": os.path.basename(target), "crumbs": breadcrumbs(target), "mime": mime,
        "size": info.st_size, "size_text": human_size(info.st_size), "etag": ops.etag(info),
        "view_url": view_url(target), "parent": browse_url(os.path.dirname(target)), "kind": "binary",
    }
    context.update(await _preview(call, target, mime, info.st_size))
    context["type_name"] = type_name(target, mime, context["kind"])
    if context["kind"] == "image":
        context["images"] = await asyncio.to_thread(sibling_images, call, target, info)
    elif context["kind"] == "pdf":
        context.update(raw_url=pdf_url(target), pdf_src=serve_url(target))
    return render(call.request, "file.html", context)


#: Kinds whose file is text, so Pygments' name for its language is the right label.
TEXT_KINDS = ("text", "markdown", "table", "frame", "notebook")


def type_name(path: str, mime: str, kind: str) -> str:
    """What the file is, in words: Pygments' language name for text ("TypeScript", "Go", "YAML"),
    else the MIME type (`.ts` is TypeScript here, not the Qt translation file mimetypes says)."""
    if kind == "notebook":
        return "Jupyter notebook"
    if kind in TEXT_KINDS:
        from pygments.lexers import get_lexer_for_filename
        from pygments.util import ClassNotFound

        with contextlib.suppress(ClassNotFound):
            name: str = get_lexer_for_filename(os.path.basename(path)).name
            return "Text" if name == "Text only" else name
        return "Text" if mime == "application/octet-stream" else mime
    return mime


def is_image(name: str) -> bool:
    mime = mimetypes.guess_type(name)[0] or ""
    # SVG may carry scripts: it is shown in a sandboxed frame, not the viewer (see SOURCE_AND_FRAME).
    return mime.startswith("image/") and mime != "image/svg+xml"


def sibling_images(call: Call[Any, Any], target: str, info: os.stat_result) -> list[dict[str, str]]:
    """The folder's images in the browse page's order (by name), for the viewer's previous/next."""
    folder, scope = os.path.dirname(target), call.app[SCOPE]
    try:
        listing = ops.list_directory(folder, scope.contains if scope.root else None, call.app[LISTINGS],
                                     scope.beneath)
        entries = [entry for entry in listing["entries"] if entry["type"] == "file" and is_image(entry["name"])]
    except ApiError:  # an unreadable folder: the image alone
        entries = [{"name": os.path.basename(target), "size": info.st_size}]
    entries.sort(key=lambda entry: (entry["name"].casefold(), entry["name"]))
    return [_image(os.path.join(folder, entry["name"]), entry["size"]) for entry in entries]


def _image(path: str, size: int) -> dict[str, str]:
    return {"name": os.path.basename(path), "path": path, "href": browse_url(path), "src": view_url(path),
            "size": human_size(size), "bytes": f"{size:,} bytes",
            "type": mimetypes.guess_type(path)[0] or "application/octet-stream"}


async def _preview(call: Call[Any, Any], target: str, mime: str, size: int) -> dict[str, Any]:
    """The template variables of the preview this file gets."""
    for family in ("image", "audio", "video"):
        if mime.startswith(family + "/") and mime != "image/svg+xml":
            return {"kind": family}
    if mime == "application/pdf":
        return {"kind": "pdf", **await _pdf_text(call, target)}
    if documents.document_kind(target, mime) is not None:  # office, EPUB, e-mail: what read_file reads
        return await _office(call, target)
    if target.lower().endswith(NOTEBOOK):
        shown = await asyncio.to_thread(_notebook, call, target, size)
        if "notebook" in shown:
            return shown
        # A broken notebook says why, and its raw text is shown below that as any text file's.
        return {**await _text_preview(call, target, mime, size), **shown}
    return await _text_preview(call, target, mime, size)


async def _text_preview(call: Call[Any, Any], target: str, mime: str, size: int) -> dict[str, Any]:
    text = await asyncio.to_thread(_text, target, size)
    if text is None:
        return {"kind": "binary"}
    lower = target.lower()
    # A new (empty) file has nothing to preview: it opens in the editor.
    preview: dict[str, Any] = {"kind": "text", "text": text, "editable": True, "open_editor": size == 0,
                               "code": await asyncio.to_thread(previews.highlight, text, target, anchors=True)}
    if lower.endswith(TABLES):
        # A file the csv module cannot read (a giant field) keeps its source view.
        with contextlib.suppress(csv.Error):
            preview.update(kind="table", table=await asyncio.to_thread(_table, call, text, target))
    elif lower.endswith(MARKDOWN):
        folder = os.path.dirname(target)
        # markdown_html hands over bare relative paths (no query or fragment) and keeps fragments itself.
        html = await asyncio.to_thread(previews.markdown_html, text, lambda rel: view_url(_join(folder, rel)),
                                       lambda rel: browse_url(_join(folder, rel)))
        preview.update(kind="markdown", markdown=html)
    elif mime in SOURCE_AND_FRAME:
        preview.update(kind="frame")
    return preview


def _table(call: Call[Any, Any], text: str, target: str) -> tables.CsvTable:
    """The page of rows the query asks for (`?page=N&column=C&order=desc`)."""
    query = call.query
    return tables.csv_table(text, target, page=getattr(query, "page", 1), column=getattr(query, "column", None),
                            descending=getattr(query, "order", "asc") == "desc")


def _text(target: str, size: int) -> str | None:
    """The file as the editor gets it: read by the API's own function, newlines untouched."""
    if size > MAX_PAGE_TEXT:
        return None
    return reading.page_text(target)


async def _pdf_text(call: Call[Any, Any], target: str) -> dict[str, Any]:
    try:
        # Any document type read_file knows (PDF, office, EPUB, e-mail), by the same function and worker.
        extracted = await reading.document_text(target, call.app[CONFIG].document_timeout, call.app[SCOPE].beneath)
        return {"pdf_text": extracted.content}
    except ApiError as exc:
        return {"pdf_text": "", "pdf_error": str(exc.detail)}


def _notebook(call: Call[Any, Any], target: str, size: int) -> dict[str, Any]:
    """The template variables of a notebook; `notebook_error` instead when it cannot be shown."""
    if size > notebook_view.MAX_NOTEBOOK_BYTES:
        return {"notebook_error": notebook_view.TOO_LARGE}
    with ops.open_file(target, call.app[SCOPE].beneath) as file, ops.os_errors():
        # One byte past the cap: a file grown since its stat is refused by parse, not read whole.
        data = os.pread(file.fd, notebook_view.MAX_NOTEBOOK_BYTES + 1, 0)
    folder = os.path.dirname(target)
    try:
        notebook = notebook_view.render(data, lambda rel: view_url(_join(folder, rel)),
                                        lambda rel: browse_url(_join(folder, rel)))
    except notebook_view.NotebookError as exc:
        return {"notebook_error": str(exc)}
    return {"kind": "notebook", "notebook": notebook, "notebooks_enabled": notebooks_enabled(call),
            "html_sandbox": notebook_view.HTML_SANDBOX}


def notebooks_enabled(call: Call[Any, Any]) -> bool:
    """Run buttons only when the notebook API is there (OPEN_TERMINAL_ENABLE_NOTEBOOKS)."""
    return call.app[CONFIG].enable_notebooks


async def _office(call: Call[Any, Any], target: str) -> dict[str, Any]:
    """An office document's text, and its PDF rendering when LibreOffice can make one."""
    extracted = await _pdf_text(call, target)
    return {"kind": "document", "document_text": extracted["pdf_text"], "document_error": extracted.get("pdf_error"),
            "pdf_preview": view_url(target) + "&preview=true" if _renders_pdf(call, target) else None}


def _renders_pdf(call: Call[Any, Any], target: str) -> bool:
    """What /files/view?preview=true would convert (else it answers the original bytes)."""
    return preview.convertible(target) and preview.find_libreoffice(call.app[CONFIG].libreoffice) is not None


def _join(folder: str, relative: str) -> str:
    return os.path.normpath(os.path.join(folder, relative))
