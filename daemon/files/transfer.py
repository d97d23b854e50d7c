"""Bytes in and out: streamed uploads (from a client or a URL), streamed zip archives, one-time links."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import secrets
import stat
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
from daemon.files.beneath import READ_FLAGS, Beneath
from daemon.files.naming import Conflict, NewFile
from daemon.files.ops import NOT_REGULAR, PSEUDO_FILE_CAP, UNCONFINED, Keeper, PendingWrite
from daemon.files.paths import check_path_text
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


async def save_stream(chunks: AsyncIterator[bytes], target: str, limit: int,
                      opener: Beneath = UNCONFINED, conflict: Conflict = Conflict.REPLACE,
                      history: Keeper | None = None) -> tuple[int, str]:
    """Write chunks into a temp file beside `target` as they arrive, then rename it into place;
    returns the size and the path it was saved under.

    Nothing is held in memory beyond one block; a failure, an oversize body or a dropped
    connection removes the temp file and leaves any existing target as it was. REPLACE is the same
    PendingWrite as write_file: only a regular file is ever replaced, beneath the checked folder;
    REFUSE and KEEP_BOTH place the file with RENAME_NOREPLACE (409, or the next free `name (n)`).
    """
    pending: PendingWrite | NewFile
    try:
        if conflict is Conflict.REPLACE:
            pending = await asyncio.to_thread(PendingWrite, target, opener, directory_status=409, history=history)
        else:
            pending = await asyncio.to_thread(NewFile, target, conflict, opener)
    except OSError as exc:
        raise from_os_error(exc) from None
    size = 0
    try:
        # aiofiles writes from its worker thread through a descriptor of its own, so a dropped
        # connection can abandon the pending write while a block is still on its way to disk.
        async with aiofiles.open(os.dup(pending.fd), "wb") as output:
            block = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise TooLarge(limit)
                block += chunk
                if len(block) >= WRITE_BLOCK:
                    await output.write(bytes(block))
                    block.clear()
            await output.write(bytes(block))
        await asyncio.to_thread(pending.commit)
    except OSError as exc:
        raise from_os_error(exc) from None
    finally:
        await asyncio.to_thread(pending.close)
    if isinstance(pending, NewFile):
        return size, os.path.join(os.path.dirname(target), pending.placed)
    return size, target


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


class Member:
    """A regular file on its way into an archive: its open descriptor, its stat, its name inside."""

    def __init__(self, fd: int, info: os.stat_result, name: str) -> None:
        self.fd, self.info, self.name = fd, info, name


def open_targets(targets: list[tuple[str, str]], opener: Beneath = UNCONFINED) -> list[Member]:
    """Open every (path, as the client named it) to archive, before the reply starts: a missing one
    is 404, a FIFO, device or socket 400 (a FIFO would block, /dev/zero would never end).

    Folders come back open too (their `info` says so); every descriptor belongs to the caller.
    """
    opened: list[Member] = []
    try:
        for path, named in targets:
            opened.append(_open_member(path, named, opener))
    except BaseException:
        close_members(opened)
        raise
    return opened


def _open_member(path: str, named: str, opener: Beneath) -> Member:
    try:
        if _special(os.stat(path)):  # Refused before opening: opening some devices has effects.
            raise bad_request(f"{NOT_REGULAR}: {named}")
        fd = opener.open(path, READ_FLAGS)
    except FileNotFoundError:
        raise not_found(f"Path not found: {named}") from None
    except OSError as exc:
        raise from_os_error(exc) from None
    info = os.fstat(fd)
    if _special(info):
        os.close(fd)
        raise bad_request(f"{NOT_REGULAR}: {named}")
    return Member(fd, info, _clean_name(os.path.basename(path.rstrip("/")) or "root"))


def _special(info: os.stat_result) -> bool:
    return not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode))


def close_members(members: list[Member]) -> None:
    for member in members:
        with contextlib.suppress(OSError):
            os.close(member.fd)


def archive_entries(targets: list[Member], opener: Beneath = UNCONFINED) -> Iterator[Member]:
    """Every regular file under the opened targets, each opened and checked on its descriptor.

    Folders are walked through directory descriptors (os.fwalk), never into a symlinked folder.
    A symlink to a file is followed through `opener`, so under `--root` only one that stays
    beneath it is archived. FIFOs, devices and sockets inside folders are skipped. Names are
    relative and clean: never `..`, never absolute, never a backslash.
    """
    for target in targets:
        if not stat.S_ISDIR(target.info.st_mode):
            yield Member(os.dup(target.fd), target.info, target.name)
            continue
        for relative, subdirectories, files, directory in os.fwalk(".", dir_fd=target.fd):
            subdirectories.sort()
            parts = [target.name, *map(_clean_name, relative.split("/")[1:])]
            for name in sorted(files):
                member = _open_in(directory, name, opener)
                if member is not None:
                    yield Member(member[0], member[1], "/".join([*parts, _clean_name(name)]))


def _open_in(directory: int, name: str, opener: Beneath) -> tuple[int, os.stat_result] | None:
    """A regular file in a walked folder, opened; None for anything else (skipped, not refused)."""
    try:
        info = os.stat(name, dir_fd=directory, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            folder = os.readlink(f"/proc/self/fd/{directory}")
            fd = opener.open(os.path.join(folder, name), READ_FLAGS)
        elif stat.S_ISREG(info.st_mode):
            fd = os.open(name, READ_FLAGS | os.O_NOFOLLOW, dir_fd=directory)
        else:
            return None
    except (OSError, ApiError):
        return None  # Vanished, unreadable or leading outside the root: the rest still matters.
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    return fd, info


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


#: Entries this large get zip64 headers up front: a streamed archive cannot go back to add them,
#: and a file may grow while it is read.
ZIP64_THRESHOLD = 2 * 1024**3


def write_zip(entries: Iterator[Member], sink: ZipSink, targets: list[Member]) -> None:
    """Deflate each file into the sink (runs in a worker thread, which closes every descriptor)."""
    try:
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as archive:
            for member in entries:
                try:
                    _add(archive, member)
                except PermissionError:
                    continue  # Unreadable mid-walk: the rest of the archive still matters.
                finally:
                    os.close(member.fd)
        sink.flush()
    finally:
        close_members(targets)


def _add(archive: zipfile.ZipFile, member: Member) -> None:
    """One file, read from its descriptor: up to the size it had when opened (a growing file is
    taken as it was), or PSEUDO_FILE_CAP for a file that reports no size (/proc, /sys)."""
    size = member.info.st_size
    info = zipfile.ZipInfo(member.name, max(time.localtime(member.info.st_mtime)[:6], (1980, 1, 1, 0, 0, 0)))
    info.external_attr = (member.info.st_mode & 0xFFFF) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    info.file_size = size
    left = size or PSEUDO_FILE_CAP
    with archive.open(info, "w", force_zip64=size > ZIP64_THRESHOLD) as destination:
        while left > 0 and (block := os.read(member.fd, min(ZIP_BLOCK, left))):
            destination.write(block)
            left -= len(block)


async def stream_zip(targets: list[Member], opener: Beneath, send: Send) -> None:
    """Zip the opened targets into `send`; the targets' descriptors are closed when it ends."""
    sink = ZipSink(send, asyncio.get_running_loop())
    try:
        await asyncio.to_thread(write_zip, archive_entries(targets, opener), sink, targets)
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

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        #: Replaceable, so a test can drive expiry by hand on a running server.
        self.clock = clock
        self._links: dict[str, Link] = {}

    def create(self, kind: LinkKind, path: str, ttl: float | None = None) -> str:
        """A new link's token; it works for `ttl` seconds (the store's default when None)."""
        self._expire()
        token = secrets.token_urlsafe(32)
        self._links[digest(token)] = Link(kind, path, self.clock() + (self.ttl if ttl is None else ttl))
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
        now = self.clock()
        for stored in [stored for stored, link in self._links.items() if link.expires <= now]:
            del self._links[stored]


