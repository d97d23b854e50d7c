"""Read one file the way `read_file` does: its text, a document's text, its bytes for a type served as
is (images), or a refusal. Plain functions and data, no HTTP: `/files/read` shapes the JSON, the file
page shows it, and the compare worker reads documents through the same extractors.

The order is the reference's: UTF-8 text first (so a `.docx` that is really text reads as text, and
an RTF or e-mail that is plain UTF-8 comes back as its source, which an editor can save unchanged),
then a document by MIME type or suffix, then the raw types, else 415.
"""

from __future__ import annotations

import asyncio
import mimetypes
from dataclasses import dataclass

from daemon.errors import ApiError
from daemon.files import documents, ops
from daemon.files.beneath import Beneath
from daemon.files.ops import LineRange, OpenFile


@dataclass(frozen=True)
class ReadOptions:
    #: MIME type prefixes answered with the file's bytes (OPEN_TERMINAL_BINARY_MIME_PREFIXES).
    binary_mime_prefixes: tuple[str, ...] = ("image",)
    document_timeout: float = 30.0


@dataclass(frozen=True)
class Text:
    """Selected lines and the count of all lines; `document` names the type the text was extracted from."""

    content: str
    total_lines: int
    document: str | None = None


@dataclass(frozen=True)
class Raw:
    """A file to send as it is, from this descriptor; the caller closes it."""

    file: OpenFile
    mime: str


@dataclass(frozen=True)
class LargeText:
    """A file too big to hold in memory that may be UTF-8 text: the caller streams it, and calls
    `not_text` if it turns out not to be; the caller closes it."""

    file: OpenFile


@dataclass(frozen=True)
class Refusal:
    status: int
    detail: str

    def error(self) -> ApiError:
        return ApiError(self.status, self.detail)


Reading = Text | Raw | LargeText | Refusal


async def read(path: str, lines: LineRange, options: ReadOptions, opener: Beneath) -> Reading:
    """What `read_file` answers for `path` (already resolved and confined by the caller).

    Small UTF-8 text, by far the most common case, costs one thread hop, as before this function.
    """
    file, text = await asyncio.to_thread(ops.read_small_text, path, lines, opener)
    if text is not None:
        return Text(*text)
    if file.info.st_size > ops.LARGE_TEXT:
        return LargeText(file)
    handed_over = False
    try:
        result = await not_text(file, path, lines, options)
        handed_over = isinstance(result, Raw)
        return result
    finally:
        if not handed_over:
            file.close()


async def not_text(file: OpenFile, path: str, lines: LineRange, options: ReadOptions) -> Text | Raw | Refusal:
    """A file that is not UTF-8 text: a document's text, the raw bytes of a type served raw, or 415."""
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    kind = documents.document_kind(path, mime)
    if kind is not None:
        return await _extract(file, kind, lines, options.document_timeout)
    if any(mime.startswith(prefix) for prefix in options.binary_mime_prefixes):
        return Raw(file, mime)
    return Refusal(415, f"Unsupported binary file type: {mime} ({file.info.st_size} bytes)")


async def document_text(path: str, timeout: float, opener: Beneath) -> Text:
    """The text of the document at `path` (a PDF, an office file, ...), or 415 / 422 (ApiError)."""
    file = await asyncio.to_thread(ops.open_file, path, opener)
    try:
        kind = documents.document_kind(path, mimetypes.guess_type(path)[0])
        if kind is None:
            raise ApiError(415, f"Not a document type whose text can be read: {path}")
        return await _extract(file, kind, LineRange(), timeout)
    finally:
        file.close()


def page_text(path: str, *, normalize: bool = False) -> str | None:
    """A UTF-8 file's whole text as the editor gets it (newlines untouched by default), None if not UTF-8."""
    text = ops.read_text(path, LineRange(), normalize=normalize)
    return None if text is None else text[0]


async def _extract(file: OpenFile, kind: documents.Kind, lines: LineRange, timeout: float) -> Text:
    extracted = await documents.extract_text(file.fd, kind, timeout)
    return Text(*ops.select_lines(extracted, lines), document=kind.name)
