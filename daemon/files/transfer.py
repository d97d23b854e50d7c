"""Bytes in and out: streamed uploads (from a client or a URL), streamed zip archives, one-time links."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import secrets
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiofiles
import aiohttp

from daemon.errors import ApiError, bad_request, from_os_error, not_found
from daemon.files.ops import adopt_metadata, os_errors
from daemon.files.paths import FileScope, check_path_text
from daemon.tokens import digest

#: Uploads are written in blocks of this size: one thread hop per MiB, not per network read.
WRITE_BLOCK = 1024 * 1024
ZIP_BLOCK = 1024 * 1024


class TooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Upload is larger than the limit of {limit} bytes")


def upload_name(filename: str | None) -> str:
    """The file name an upload is saved under: the last component of what the client sent."""
    name = os.path.basename((filename or "").replace("\\", "/")) or "upload"
    if name in (".", ".."):
        raise bad_request(f"Invalid file name: {filename!r}")
    check_path_text(name)
    return name


async def save_stream(chunks: AsyncIterator[bytes], target: str, limit: int) -> int:
    """Write chunks into a temp file beside `target` as they arrive, then rename it into place.

    Nothing is held in memory beyond one block; a failure, an oversize body or a dropped
    connection removes the temp file and leaves any existing target as it was.
    """
    final = os.path.realpath(target)
    temporary = await asyncio.to_thread(_new_temporary, final)
    size = 0
    try:
        async with aiofiles.open(temporary, "wb") as output:
            block = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise TooLarge(limit)
                block += chunk
                if len(block) >= WRITE_BLOCK:
                    await output.write(block)
                    block.clear()
            await output.write(block)
        await asyncio.to_thread(_commit, temporary, final)
    except OSError as exc:
        raise from_os_error(exc) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, temporary)
    return size


def _new_temporary(final: str) -> str:
    import tempfile

    directory, name = os.path.split(final)
    with os_errors():
        os.makedirs(directory, exist_ok=True)
        if os.path.isdir(final):
            raise ApiError(409, f"A directory with this name exists: {final}")
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name[:200]}.", suffix=".upload")
        os.close(fd)
    return temporary


def _commit(temporary: str, final: str) -> None:
    adopt_metadata(temporary, final)
    os.replace(temporary, final)


# --- fetching a URL -------------------------------------------------------------------------------


def url_file_name(url: str) -> str:
    return upload_name(unquote(os.path.basename(urlsplit(url).path)) or "download")


@contextlib.asynccontextmanager
async def fetch(url: str, timeout: float, limit: int) -> AsyncIterator[AsyncIterator[bytes]]:
    """The body of an http(s) URL as chunks, refusing early what is declared too large."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise bad_request("Only http and https URLs can be fetched")
    client_timeout = aiohttp.ClientTimeout(total=timeout or None, sock_connect=min(timeout or 30, 30))
    try:
        async with aiohttp.ClientSession(timeout=client_timeout) as session, session.get(url) as response:
            if response.status >= 400:
                raise ApiError(502, f"Fetching {url} failed: HTTP {response.status}")
            if (response.content_length or 0) > limit:
                raise TooLarge(limit)
            yield response.content.iter_chunked(WRITE_BLOCK)
    except TimeoutError:
        raise ApiError(504, f"Fetching {url} took longer than {timeout:g} s") from None
    except (aiohttp.ClientError, ValueError) as exc:
        raise ApiError(502, f"Fetching {url} failed: {exc or type(exc).__name__}") from None


# --- zip archives ---------------------------------------------------------------------------------


def archive_name(targets: list[str]) -> str:
    """The reference's download name: `<basename>.zip` for one path, `download.zip` for several."""
    if len(targets) == 1:
        return (os.path.basename(targets[0].rstrip("/")) or "archive") + ".zip"
    return "download.zip"


def archive_entries(targets: list[str], scope: FileScope) -> Iterator[tuple[str, str]]:
    """(file on disk, name in the archive) for every file under the targets.

    Names are relative and clean: never `..`, never absolute, never a backslash. Symlinks that
    lead outside the file root are skipped; symlinked directories are not descended into.
    """
    for target in targets:
        top = _clean_name(os.path.basename(target.rstrip("/")) or "root")
        if not os.path.isdir(target):
            yield target, top
            continue
        for directory, subdirectories, files in os.walk(target):
            subdirectories[:] = sorted(name for name in subdirectories
                                       if scope.contains(os.path.join(directory, name)))
            relative = os.path.relpath(directory, target)
            for name in sorted(files):
                path = os.path.join(directory, name)
                if os.path.isfile(path) and scope.contains(path):
                    parts = [] if relative == "." else relative.split(os.sep)
                    yield path, "/".join([top, *map(_clean_name, parts), _clean_name(name)])


def _clean_name(part: str) -> str:
    part = part.replace("\\", "_")
    return "_" if part in ("", ".", "..") else part


Send = Callable[[bytes], Coroutine[Any, Any, None]]


class ZipSink:
    """A write-only file object that hands blocks of the archive to the event loop as they fill.

    zipfile writes to it from a worker thread; each full block waits until the response has
    taken it, so a slow client slows the zipping instead of filling memory.
    """

    def __init__(self, send: Send, loop: asyncio.AbstractEventLoop) -> None:
        self._send = send
        self._loop = loop
        self._block = bytearray()
        self._written = 0
        self.cancelled = threading.Event()

    def write(self, data: bytes) -> int:
        if self.cancelled.is_set():
            raise ConnectionAbortedError("the client went away")
        self._block += data
        self._written += len(data)
        if len(self._block) >= ZIP_BLOCK:
            self.flush()
        return len(data)

    def tell(self) -> int:
        return self._written

    def close(self) -> None:
        self.flush()

    def flush(self) -> None:
        if self._block:
            block, self._block = bytes(self._block), bytearray()
            asyncio.run_coroutine_threadsafe(self._send(block), self._loop).result()


def write_zip(entries: Iterator[tuple[str, str]], sink: ZipSink) -> None:
    """Deflate each file into the sink (runs in a worker thread)."""
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path, name in entries:
            try:
                info = zipfile.ZipInfo.from_file(path, name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(path, "rb") as source, archive.open(info, "w") as destination:
                    while block := source.read(ZIP_BLOCK):
                        destination.write(block)
            except (FileNotFoundError, PermissionError):
                continue  # Vanished or unreadable mid-walk: the rest of the archive still matters.
    sink.flush()


async def stream_zip(entries: Iterator[tuple[str, str]], send: Send) -> None:
    sink = ZipSink(send, asyncio.get_running_loop())
    try:
        await asyncio.to_thread(write_zip, entries, sink)
    finally:
        sink.cancelled.set()


# --- one-time links -------------------------------------------------------------------------------

LinkKind = Literal["download", "upload"]


@dataclass(frozen=True)
class Link:
    kind: LinkKind
    path: str
    expires: float


class LinkStore:
    """Unauthenticated links that expire: downloads work until then, uploads work once.

    Only a SHA-256 of each token is kept, so a memory dump reveals no usable link.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._links: dict[str, Link] = {}

    def create(self, kind: LinkKind, path: str) -> str:
        self._expire()
        token = secrets.token_urlsafe(32)
        self._links[digest(token)] = Link(kind, path, time.monotonic() + self.ttl)
        return token

    def find(self, kind: LinkKind, token: str) -> Link:
        self._expire()
        wanted = digest(token)
        for stored, link in self._links.items():
            if hmac.compare_digest(stored, wanted) and link.kind == kind:
                return link
        raise not_found("Link not found or expired")

    def take(self, kind: LinkKind, token: str) -> Link:
        """Find a link and use it up (upload links serve once)."""
        link = self.find(kind, token)
        del self._links[digest(token)]
        return link

    def give_back(self, token: str, link: Link) -> None:
        """An upload that failed before anything was saved does not use up its link."""
        self._links[digest(token)] = link

    def _expire(self) -> None:
        now = time.monotonic()
        for stored in [stored for stored, link in self._links.items() if link.expires <= now]:
            del self._links[stored]


