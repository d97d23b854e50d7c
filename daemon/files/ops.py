"""File operations as plain synchronous functions: list, read, write, replace, mkdir, delete, move.

They run in a worker thread (one hop per operation, not one per syscall), take absolute paths that
the caller has already resolved and confined, and raise ApiError with the reference's messages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from daemon.errors import ApiError, bad_request, from_os_error, not_found
from daemon.files.listing_cache import ListingCache, Scan

#: Files larger than this are read in pieces and their JSON reply is built on disk.
LARGE_TEXT = 16 * 1024 * 1024
TEXT_CHUNK = 1024 * 1024
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
                   cache: ListingCache | None = None) -> dict[str, Any]:
    """One directory read and one stat per entry (following symlinks); entries that fail are skipped.

    Entries are stat'ed relative to the directory's descriptor, which saves the kernel a path walk
    per entry: on a 10,000-entry directory this is most of the time spent. With a `cache`, a big
    directory that has not changed since it was last read is answered from memory.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
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


def require_file(path: str) -> os.stat_result:
    """The stat of a regular file, or 404 (missing) / 400 (a directory where a file is expected)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise not_found("File not found") from None
    except OSError as exc:
        raise from_os_error(exc) from None
    if stat.S_ISDIR(info.st_mode):
        raise bad_request("Path is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise bad_request("Path is not a regular file")
    return info


def etag(info: os.stat_result) -> str:
    """The entity tag aiohttp's FileResponse sends for this stat, so a page can compare them."""
    return f'"{info.st_mtime_ns:x}-{info.st_size:x}"'


def check_unchanged(path: str, expected_etag: str) -> None:
    """409 when the file changed on disk since the client read it (its ETag no longer matches)."""
    try:
        current = etag(os.stat(path))
    except FileNotFoundError:
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


def text_reply(display_path: str, content: str, total_lines: int) -> bytes:
    """The reference's `{path, content, total_lines}` as compact JSON bytes."""
    return orjson.dumps({"path": display_path, "content": content, "total_lines": total_lines})


def read_small_text(path: str, lines: LineRange) -> tuple[os.stat_result, tuple[str, int] | None]:
    """The stat of a file and, when it is small UTF-8 text, its selected lines: one thread hop in all."""
    info = require_file(path)
    return info, read_text(path, lines) if info.st_size <= LARGE_TEXT else None


def read_text(path: str, lines: LineRange, *, normalize: bool = True) -> tuple[str, int] | None:
    """A UTF-8 file's selected lines and its line count, or None when it is not UTF-8.

    Newlines are universal (`\\r\\n` and `\\r` become `\\n`) and lines split as str.splitlines
    does, which is what the reference returns.
    """
    with os_errors(), open(path, "rb") as source:
        data = source.read()
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


def write_large_text_reply(path: str, display_path: str, lines: LineRange, output: BinaryIO,
                           *, normalize: bool = True) -> bool:
    """The JSON reply for a large text file, written to `output` piece by piece.

    Returns False (and leaves `output` partly written) when the file turns out not to be UTF-8.
    """
    output.write(b'{"path":' + orjson.dumps(display_path) + b',"content":"')
    number, pending = 0, ""
    try:
        with open(path, encoding="utf-8", newline=None if normalize else "") as source:
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


def atomic_write(path: str, data: bytes) -> None:
    """Write through a temp file beside the target and rename it into place.

    Readers see the old file or the new one, never half of either; a failure (disk full) leaves
    the target untouched. An overwritten file keeps its mode and owner; a symlink is written through.
    """
    target = os.path.realpath(path)
    with os_errors():
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with temporary_beside(target) as (handle, temporary):
            handle.write(data)
            handle.flush()
            adopt_metadata(temporary, target)
            handle.close()
            os.replace(temporary, target)


@contextmanager
def temporary_beside(target: str) -> Iterator[tuple[BinaryIO, str]]:
    """A new temp file in the target's directory (so the rename stays on one file system).

    It is removed unless it has been renamed away by the time the block ends.
    """
    directory, name = os.path.split(target)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name[:200]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle, temporary
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temporary)


def adopt_metadata(temporary: str, target: str) -> None:
    """Give the temp file the target's mode and owner, or a new file's default mode."""
    try:
        info = os.stat(target)
    except FileNotFoundError:
        os.chmod(temporary, 0o666 & ~_UMASK)
        return
    os.chmod(temporary, stat.S_IMODE(info.st_mode))
    if (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
        with suppress(PermissionError):  # Not ours to give away; the content still lands.
            os.chown(temporary, info.st_uid, info.st_gid)


@dataclass(frozen=True)
class Replacement:
    target: str
    replacement: str
    start_line: int | None = None
    end_line: int | None = None
    allow_multiple: bool = False


def replace_in_file(path: str, replacements: list[Replacement]) -> int:
    """Apply the replacements in order and write the result atomically; returns the new size.

    A file whose lines all end in CRLF is matched with LF (what models write) and keeps its CRLF.
    """
    require_file(path)
    with os_errors(), open(path, "rb") as source:
        data = source.read()
    try:
        original = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(415, "File is not UTF-8 text") from None
    crlf = "\r\n" in original and "\n" not in original.replace("\r\n", "")
    content = original.replace("\r\n", "\n") if crlf else original
    for chunk in replacements:
        content = _apply(content, chunk)
    encoded = (content.replace("\n", "\r\n") if crlf else content).encode()
    atomic_write(path, encoded)
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


# --- directories, delete, move ----------------------------------------------------------------------


def make_directory(path: str) -> None:
    with os_errors():
        os.makedirs(path, exist_ok=True)


def delete(path: str) -> str:
    """Remove a file, a symlink (never its target) or a whole directory tree; returns its type."""
    if not os.path.lexists(path):
        raise not_found("Path not found")
    if os.path.dirname(path) == path:
        raise ApiError(403, "Refusing to delete the file system root")
    kind = "directory" if os.path.isdir(path) else "file"
    with os_errors():
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    return kind


def move(source: str, destination: str) -> None:
    """Rename without ever replacing an existing destination (409), across file systems too."""
    if not os.path.lexists(source):
        raise not_found("Source path not found")
    if not os.path.isdir(os.path.dirname(destination)):
        raise bad_request("Destination parent directory not found")
    if os.path.lexists(destination):
        raise ApiError(409, "Destination already exists")
    try:
        rename_no_replace(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise from_os_error(exc) from None
        with os_errors():
            _move_across_devices(source, destination)


def _move_across_devices(source: str, destination: str) -> None:
    """Copy beside the destination under a temp name, rename it into place, then drop the source."""
    staging = tempfile.mkdtemp(dir=os.path.dirname(destination), prefix=".move-")
    try:
        copy = os.path.join(staging, "entry")
        if os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(source, copy, symlinks=True)
        else:
            shutil.copy2(source, copy, follow_symlinks=False)
        rename_no_replace(copy, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if os.path.isdir(source) and not os.path.islink(source):
        shutil.rmtree(source)
    else:
        os.unlink(source)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_no_replace(source: str, destination: str) -> None:
    """renameat2(RENAME_NOREPLACE): atomic, and it cannot clobber a file created meanwhile."""
    if _renameat2 is None:
        if os.path.lexists(destination):
            raise FileExistsError(errno.EEXIST, "File exists", destination)
        os.rename(source, destination)
        return
    result = _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), _RENAME_NOREPLACE)
    if result != 0:
        code = ctypes.get_errno()
        if code == errno.EINVAL and not os.path.lexists(destination):
            os.rename(source, destination)  # The file system lacks RENAME_NOREPLACE (some FUSE mounts).
            return
        raise OSError(code, os.strerror(code), source, None, destination)
