"""File operations as plain synchronous functions: list, read, write, replace, mkdir, delete, move.

They run in a worker thread (one hop per operation, not one per syscall), take absolute paths that
the caller has already resolved and confined, and raise ApiError with the reference's messages.
"""

from __future__ import annotations

import errno
import functools
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import orjson

from daemon.errors import ApiError, bad_request, from_os_error, not_found
from daemon.files.beneath import DIRECTORY_FLAGS, READ_FLAGS, Beneath
from daemon.files.listing_cache import ListingCache, Scan
from daemon.owner import adopt

#: Files larger than this are read in pieces and their JSON reply is built on disk.
LARGE_TEXT = 16 * 1024 * 1024
TEXT_CHUNK = 1024 * 1024
#: Regular files that report no size (procfs, sysfs) are read this far and no further: some never end.
PSEUDO_FILE_CAP = 1024 * 1024
#: Opens without a root: plain paths, as fast as before.
UNCONFINED = Beneath(None)
NOT_REGULAR = "Path is not a regular file"
#: Read at import, while only one thread runs: os.umask can only be read by setting it.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def os_errors() -> Iterator[None]:
    """Turn OS failures into the statuses the issue names (404, 403, 409, 507, else 400)."""
    try:
        yield
    except OSError as exc:
        raise from_os_error(exc) from None


# --- listing --------------------------------------------------------------------------------------


class WriteAccess:
    """Whether this process may write a file, judged from a stat result already in hand.

    This is what access(2) decides from the mode bits, without one more syscall per entry; a
    read-only mount is noticed once per directory. (ACLs are not consulted.)
    """

    def __init__(self, directory: int) -> None:
        self.uid = os.geteuid()
        self.groups = {os.getegid(), *os.getgroups()}
        try:
            self.read_only = bool(os.fstatvfs(directory).f_flag & os.ST_RDONLY)
        except OSError:
            self.read_only = False

    @property
    def same_for_all(self) -> bool | None:
        """The answer for every entry, when the mode bits do not matter (read-only mount, or root)."""
        if self.read_only:
            return False
        if self.uid == 0 and _may_override_permissions():
            return True
        return None

    def allows(self, info: os.stat_result) -> bool:
        answer = self.same_for_all
        if answer is not None:
            return answer
        if info.st_uid == self.uid:
            return bool(info.st_mode & stat.S_IWUSR)
        if info.st_gid in self.groups:
            return bool(info.st_mode & stat.S_IWGRP)
        return bool(info.st_mode & stat.S_IWOTH)


@functools.cache
def _may_override_permissions() -> bool:
    """Root writes anywhere only while it holds CAP_DAC_OVERRIDE (containers and setpriv drop it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 1))
    except (OSError, ValueError):
        pass
    return True


def list_directory(path: str, visible: Callable[[str], bool] | None = None,
                   cache: ListingCache | None = None, opener: Beneath = UNCONFINED) -> dict[str, Any]:
    """One directory read and one stat per entry (following symlinks); entries that fail are skipped.

    Entries are stat'ed relative to the directory's descriptor, which saves the kernel a path walk
    per entry: on a 10,000-entry directory this is most of the time spent. With a `cache`, a big
    directory that has not changed since it was last read is answered from memory.
    """
    try:
        fd = opener.open(path, DIRECTORY_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        raise not_found("Directory not found") from None
    except OSError as exc:
        raise from_os_error(exc) from None
    try:
        access = WriteAccess(fd)
        directory = os.fstat(fd)
        with os_errors():
            if cache is None:
                entries = _scan(fd, access)[0]
            else:
                entries = cache.entries(f"/proc/self/fd/{fd}", (directory.st_dev, directory.st_ino),
                                        access.same_for_all, lambda: _scan(fd, access),
                                        lambda name: _restat(fd, name, access))
        if visible is not None:
            entries = [entry for entry in entries if visible(os.path.join(path, entry["name"]))]
        return {"dir": path, "writable": access.allows(directory), "entries": entries}
    finally:
        os.close(fd)


def _scan(fd: int, access: WriteAccess) -> Scan:
    """Every entry, sorted by name, and the indexes of those a directory watch cannot vouch for:
    directories (their mtime follows their contents) and symlinks (their target lives elsewhere)."""
    with os.scandir(fd) as listing:
        found = sorted(listing, key=_name)
    entries: list[dict[str, Any]] = []
    volatile: list[int] = []
    append, is_directory, same = entries.append, stat.S_ISDIR, access.same_for_all
    for item in found:
        try:
            info = item.stat()
            if is_directory(info.st_mode) or item.is_symlink():
                volatile.append(len(entries))
        except OSError:
            continue
        append(_entry(item.name, info, same if same is not None else access.allows(info)))
    return entries, volatile


def _restat(fd: int, name: str, access: WriteAccess) -> dict[str, Any] | None:
    try:
        info = os.stat(name, dir_fd=fd)
    except OSError:
        return None
    return _entry(name, info, access.allows(info))


def _entry(name: str, info: os.stat_result, writable: bool) -> dict[str, Any]:
    return {
        "name": name,
        "type": "directory" if stat.S_ISDIR(info.st_mode) else "file",
        "size": info.st_size,
        "modified": info.st_mtime,
        "writable": writable,
    }


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


# --- reading --------------------------------------------------------------------------------------


class OpenFile:
    """A regular file opened for reading, judged on its descriptor (what was checked is what is read)."""

    def __init__(self, fd: int, info: os.stat_result) -> None:
        self.fd = fd
        self.info = info

    def read(self) -> bytes:
        """All of it; a file that reports no size (procfs, sysfs) only up to PSEUDO_FILE_CAP."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        with os.fdopen(self.fd, "rb", closefd=False) as source:
            data = source.read() if self.info.st_size else source.read(PSEUDO_FILE_CAP)
        if data is None:  # Non-blocking and nothing there yet (/proc/kmsg): never wait for it.
            raise bad_request("File has no data to read now")
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OpenFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_file(path: str, opener: Beneath = UNCONFINED) -> OpenFile:
    """Open a regular file for reading, or 404 (missing) / 400 (a directory, FIFO, device, socket).

    The path's stat refuses special files before they are opened (opening some devices has effects);
    the descriptor's own stat decides, since the path may have changed in between. The open never
    blocks (O_NONBLOCK: a FIFO with no writer) and never adopts a terminal (O_NOCTTY).
    """
    _refuse_special(_stat_or_404(path))
    try:
        fd = opener.open(path, READ_FLAGS)
    except FileNotFoundError:
        raise not_found("File not found") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # A socket (or a FIFO's other end) swapped in since the stat.
            raise bad_request(NOT_REGULAR) from None
        raise from_os_error(exc) from None
    info = os.fstat(fd)
    try:
        _refuse_special(info)
    except ApiError:
        os.close(fd)
        raise
    return OpenFile(fd, info)


def require_file(path: str, opener: Beneath = UNCONFINED) -> os.stat_result:
    """The stat of a regular file, or 404 (missing) / 400 (a directory where a file is expected)."""
    with open_file(path, opener) as file:
        return file.info


def _stat_or_404(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise not_found("File not found") from None
    except OSError as exc:
        raise from_os_error(exc) from None


def _refuse_special(info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise bad_request("Path is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise bad_request(NOT_REGULAR)


def etag(info: os.stat_result) -> str:
    """The entity tag aiohttp's FileResponse sends for this stat, so a page can compare them."""
    return f'"{info.st_mtime_ns:x}-{info.st_size:x}"'


def check_unchanged(path: str, expected_etag: str, opener: Beneath = UNCONFINED) -> None:
    """409 when the file changed on disk since the client read it (its ETag no longer matches)."""
    try:
        with open_file(path, opener) as file:
            current = etag(file.info)
    except ApiError as exc:
        if exc.status != 404:
            raise
        current = ""
    if current != expected_etag.removeprefix("W/"):
        raise ApiError(409, "The file changed on disk since it was opened")


@dataclass(frozen=True)
class LineRange:
    """1-indexed, inclusive; None means from the start / to the end."""

    start: int | None = None
    end: int | None = None

    def whole(self) -> bool:
        return self.start is None and self.end is None

    def select(self, lines: list[str], first_number: int = 1) -> Iterator[str]:
        start, end = self.start or 1, self.end
        for number, line in enumerate(lines, first_number):
            if number >= start and (end is None or number <= end):
                yield line


def read_small_text(path: str, lines: LineRange,
                    opener: Beneath = UNCONFINED) -> tuple[OpenFile, tuple[str, int] | None]:
    """The open file and, when it is small UTF-8 text, its selected lines: one thread hop in all.

    The file comes back open when its text does not (large, or not UTF-8): the caller sends it from
    that descriptor and closes it. When the text comes back it is closed already.
    """
    file = open_file(path, opener)
    try:
        if file.info.st_size <= LARGE_TEXT:
            text = decode_lines(file.read(), lines)
            if text is not None:
                file.close()
            return file, text
    except BaseException:
        file.close()
        raise
    return file, None


def read_text(path: str, lines: LineRange, *, normalize: bool = True,
              opener: Beneath = UNCONFINED) -> tuple[str, int] | None:
    """A UTF-8 file's selected lines and its line count, or None when it is not UTF-8."""
    with open_file(path, opener) as file, os_errors():
        data = file.read()
    return decode_lines(data, lines, normalize=normalize)


def decode_lines(data: bytes, lines: LineRange, *, normalize: bool = True) -> tuple[str, int] | None:
    """Newlines are universal (`\\r\\n` and `\\r` become `\\n`) and lines split as str.splitlines
    does, which is what the reference returns; None when the bytes are not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if normalize and "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return select_lines(text, lines)


def select_lines(text: str, lines: LineRange) -> tuple[str, int]:
    """The selected lines of a text and how many lines it has in all."""
    split = text.splitlines(keepends=True)
    content = text if lines.whole() else "".join(lines.select(split))
    return content, len(split)


def write_large_text_reply(file: OpenFile, display_path: str, lines: LineRange, output: BinaryIO,
                           *, normalize: bool = True) -> bool:
    """The JSON reply for a large text file, written to `output` piece by piece.

    Returns False (and leaves `output` partly written) when the file turns out not to be UTF-8.
    """
    output.write(b'{"path":' + orjson.dumps(display_path) + b',"content":"')
    number, pending = 0, ""
    try:
        os.lseek(file.fd, 0, os.SEEK_SET)
        with open(file.fd, encoding="utf-8", newline=None if normalize else "", closefd=False) as source:
            for chunk in iter(lambda: source.read(TEXT_CHUNK), ""):
                pieces = (pending + chunk).splitlines(keepends=True)
                # The last piece may be a line that continues in the next chunk.
                pending = pieces.pop() if pieces and pieces[-1].splitlines()[0] == pieces[-1] else ""
                selected = "".join(lines.select(pieces, number + 1))
                number += len(pieces)
                output.write(orjson.dumps(selected)[1:-1])
    except UnicodeDecodeError:
        return False
    except OSError as exc:
        raise from_os_error(exc) from None
    if pending:
        number += 1
        output.write(orjson.dumps("".join(lines.select([pending], number)))[1:-1])
    output.write(b'","total_lines":' + str(number).encode() + b"}")
    return True


# --- writing --------------------------------------------------------------------------------------


class Keeper(Protocol):
    """Held around the rename that replaces `name` in the folder `parent` (history.Keeper)."""

    def replacing(self, parent: int, name: str) -> AbstractContextManager[None]: ...


class TemporaryFile:
    """A temp file being written in a folder's descriptor, then placed (`commit`, the subclass's) or
    dropped (`close`): written from one worker thread while a dropped connection closes from another."""

    parent: int
    fd: int
    temporary: str

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            if self.fd < 0:
                raise ConnectionAbortedError("the write was abandoned")
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]

    def close(self) -> None:
        """Drop the temp file unless it was placed; idempotent."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.temporary:
            with suppress(FileNotFoundError):
                os.unlink(self.temporary, dir_fd=self.parent)
            self.temporary = ""
        if self.parent >= 0:
            os.close(self.parent)
            self.parent = -1


class PendingWrite(TemporaryFile):
    """A new file being written beside its target, renamed over it only when complete.

    Readers see the old file or the new one, never half of either; a failure (disk full, a dropped
    upload) leaves the target untouched. An overwritten file keeps its mode and owner; a symlink is
    written through. Everything happens relative to the parent folder's descriptor, so the file
    lands in the folder that was checked (under `--root`, one the kernel vouched is beneath it), and
    only a regular file (or nothing) is ever replaced: never a device, a FIFO or a socket.
    """

    def __init__(self, path: str, opener: Beneath = UNCONFINED, *, directory_status: int = 400,
                 history: Keeper | None = None) -> None:
        super().__init__()
        #: Keeps the bytes being replaced (daemon/files/history.py), under the file's lock, just before the rename.
        self.history = history
        self.parent, self.name = opener.parent(path, create=True)
        try:
            self.existing = replaceable(self.parent, self.name, directory_status)
            self.fd, self.temporary = _new_temporary(self.parent, self.name)
        except BaseException:
            os.close(self.parent)
            raise

    def commit(self, *, durable: bool = True) -> os.stat_result:
        """Give the new file the old one's mode and owner, flush it to disk (when `durable`) and rename
        it into place (readers see the old file or the new one either way)."""
        try:
            with self._lock:
                adopt_metadata(self.fd, self.existing)
                if durable:
                    os.fsync(self.fd)
                info = os.fstat(self.fd)
                with self.history.replacing(self.parent, self.name) if self.history else nullcontext():
                    replaceable(self.parent, self.name, 400)  # Still nothing special there (one more stat).
                    with reported_as(self.name):
                        os.rename(self.temporary, self.name, src_dir_fd=self.parent, dst_dir_fd=self.parent)
                self.temporary = ""
            return info
        finally:
            self.close()


def atomic_write(path: str, data: bytes, opener: Beneath = UNCONFINED, *, durable: bool = True,
                 history: Keeper | None = None) -> os.stat_result:
    """Replace (or create) a regular file with `data`; returns the new file's stat (for its ETag)."""
    with os_errors():
        pending = PendingWrite(path, opener, history=history)
        try:
            pending.write(data)
        except BaseException:
            pending.close()
            raise
        return pending.commit(durable=durable)


def replaceable(parent: int, name: str, directory_status: int) -> os.stat_result | None:
    """The stat of the regular file a write would replace, None if there is none; else refuse."""
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(info.st_mode):
        return info
    if stat.S_ISDIR(info.st_mode):
        raise ApiError(directory_status, f"A directory with this name exists: {name}")
    if stat.S_ISLNK(info.st_mode):  # The path was resolved through its links: this one is new.
        raise bad_request(f"Path changed while it was written: {name}")
    raise bad_request(f"{NOT_REGULAR}; refusing to replace a device, FIFO or socket: {name}")


def _new_temporary(parent: int, name: str) -> tuple[int, str]:
    """A new, private temp file in the target's folder (so the rename stays on one file system)."""
    for _ in range(16):
        temporary = f".{name[:200]}.{secrets.token_hex(4)}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with reported_as(name):
                fd = os.open(temporary, flags, 0o600, dir_fd=parent)
                adopt(fd)  # multi-user: the user's file, not root's
                return fd, temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "No free temporary name", name)


@contextmanager
def reported_as(name: str) -> Iterator[None]:
    """An error on the temp file names the user's file: `.notes.txt.1a2b3c4d.tmp` means nothing to them."""
    try:
        yield
    except FileExistsError:
        raise  # _new_temporary tries another name
    except OSError as exc:
        if exc.filename in (None, name):
            raise
        raise type(exc)(exc.errno, exc.strerror, name) from None


def adopt_metadata(fd: int, existing: os.stat_result | None) -> None:
    """Give the new file the replaced file's mode and owner, or a new file's default mode."""
    if existing is None:
        os.fchmod(fd, 0o666 & ~_UMASK)
        return
    os.fchmod(fd, stat.S_IMODE(existing.st_mode))
    if (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
        with suppress(PermissionError):  # Not ours to give away; the content still lands.
            os.fchown(fd, existing.st_uid, existing.st_gid)


@dataclass(frozen=True)
class Replacement:
    target: str
    replacement: str
    start_line: int | None = None
    end_line: int | None = None
    allow_multiple: bool = False


def replace_in_file(path: str, replacements: list[Replacement], opener: Beneath = UNCONFINED,
                    history: Keeper | None = None) -> int:
    """Apply the replacements in order and write the result atomically; returns the new size.

    A file whose lines all end in CRLF is matched with LF (what models write) and keeps its CRLF.
    """
    with open_file(path, opener) as file, os_errors():
        data = file.read()
    try:
        original = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(415, "File is not UTF-8 text") from None
    crlf = "\r\n" in original and "\n" not in original.replace("\r\n", "")
    content = original.replace("\r\n", "\n") if crlf else original
    for chunk in replacements:
        content = _apply(content, chunk)
    encoded = (content.replace("\n", "\r\n") if crlf else content).encode()
    atomic_write(path, encoded, opener, history=history)
    return len(encoded)


def _apply(content: str, chunk: Replacement) -> str:
    ranged = bool(chunk.start_line or chunk.end_line)
    start, end = line_range_offsets(content, chunk.start_line, chunk.end_line) if ranged else (0, len(content))
    region = content[start:end]
    count = region.count(chunk.target)
    if count == 0:
        raise bad_request(f"Target string not found: {chunk.target[:100]!r}")
    if count > 1 and not chunk.allow_multiple:
        raise bad_request(f"Found {count} occurrences of target string but allow_multiple is false")
    return content[:start] + region.replace(chunk.target, chunk.replacement) + content[max(start, end):]


def line_range_offsets(text: str, start_line: int | None, end_line: int | None) -> tuple[int, int]:
    """Character offsets of lines start_line..end_line (1-indexed, inclusive), splitlines semantics."""
    offsets = [0]
    for line in text.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    last = len(offsets) - 1
    start = offsets[min((start_line or 1) - 1, last)]
    end = offsets[min(end_line, last)] if end_line else len(text)
    return start, end
