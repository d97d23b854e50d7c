"""Extract a .zip or .tar(.gz/.bz2/.xz) into a new folder, safe against hostile archives.

- Zip-slip: every entry name is checked before anything is made (absolute, `..`, NUL, a backslash
  in a zip, a component past 255 bytes: 422 naming the entry), and every file is created with
  O_EXCL beneath the new folder's descriptor, walking one component at a time with O_NOFOLLOW, so
  even a symlink planted meanwhile is never followed.
- Links: symlink and hardlink entries are skipped (named in the reply), never created, so no
  later entry can be written through one. Devices, FIFOs and sockets are refused (422).
- Bombs: entries counted, bytes counted as really written (not as declared), total capped
  (`OPEN_TERMINAL_EXTRACT_MAX_SIZE`), and the expansion over the archive's size capped.
- The new folder is built under a hidden temp name and renamed into place without replacing
  anything (the default name takes the next free `name (1)`); any failure removes it whole.

It runs in a worker thread under a Job (deadline, cancelled when the client leaves).
"""

from __future__ import annotations

import errno
import lzma
import os
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import IO

from daemon.errors import ApiError, bad_request, from_os_error, not_found
from daemon.files.beneath import READ_FLAGS, Beneath
from daemon.files.copying import DIRECTORY_OPEN, Job, remove_entry
from daemon.files.naming import (
    MAX_NAME_BYTES,
    NEW_FILE_FLAGS,
    Conflict,
    as_named,
    check_name,
    existing_names,
    exists,
    place,
    temporary_name,
)
from daemon.files.ops import UNCONFINED
from daemon.owner import adopt, adopt_at

BLOCK = 1024 * 1024
MAX_ENTRIES = 100_000
MAX_DEPTH = 128
#: An archive may not expand to more than this many times its own size...
MAX_RATIO = 200
#: ...once it has written this much (a small archive of zeros or text is fine).
RATIO_FLOOR = 16 * 1024 * 1024
#: Suffix -> kind, longest first; the new folder's default name is the archive's without it.
SUFFIXES = ((".tar.gz", "tar"), (".tar.bz2", "tar"), (".tar.xz", "tar"), (".tgz", "tar"), (".tbz2", "tar"),
            (".txz", "tar"), (".tar", "tar"), (".zip", "zip"))
BROKEN = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, NotImplementedError)
#: Failures that are the disk's, not the archive's: answered as such (507, 403...).
THE_DISKS_FAULT = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO})


@dataclass(frozen=True)
class Limits:
    max_size: int
    max_entries: int = MAX_ENTRIES
    max_ratio: float = MAX_RATIO


@dataclass
class Extracted:
    path: str
    entries: int = 0
    size: int = 0
    skipped: list[str] = field(default_factory=list)


def unsafe(name: str, why: str) -> ApiError:
    return ApiError(422, f"Refusing archive entry {name!r}: {why}")


def archive_kind(name: str) -> tuple[str, str]:
    """(kind, folder name) for an archive's file name, or 415 for anything else."""
    lower = name.lower()
    for suffix, kind in SUFFIXES:
        if lower.endswith(suffix):
            return kind, name[:-len(suffix)] or "archive"
    raise ApiError(415, f"Not an archive this can extract (.zip, .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz): {name}")


def entry_parts(name: str, *, zip_entry: bool) -> list[str]:
    """The components an entry name makes beneath the new folder, or 422 for a hostile one."""
    if "\0" in name:
        raise unsafe(name, "a NUL character")
    if zip_entry and "\\" in name:
        raise unsafe(name, "a backslash (a Windows path)")
    if name.startswith("/"):
        raise unsafe(name, "an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise unsafe(name, "'..' leads out of the folder")
    if any(len(os.fsencode(part)) > MAX_NAME_BYTES for part in parts):
        raise unsafe(name, f"a name longer than {MAX_NAME_BYTES} bytes")
    if len(parts) > MAX_DEPTH:  # each entry is walked one folder at a time: bound the walk
        raise unsafe(name, f"nested deeper than {MAX_DEPTH} folders")
    return parts


class Counter:
    """Entries and bytes so far, against the limits; bytes are those really written."""

    def __init__(self, limits: Limits, archive_size: int, job: Job, done: Extracted) -> None:
        self.limits, self.archive_size, self.job, self.done = limits, archive_size, job, done

    def entry(self) -> None:
        self.job.check()
        self.done.entries += 1
        if self.done.entries > self.limits.max_entries:
            raise ApiError(413, f"The archive has more than {self.limits.max_entries} entries; nothing was kept")

    def declared(self, size: int) -> None:
        if self.done.size + size > self.limits.max_size:
            self._too_large()

    def wrote(self, size: int) -> None:
        self.job.check()
        self.done.size += size
        if self.done.size > self.limits.max_size:
            self._too_large()
        if self.done.size > RATIO_FLOOR and self.done.size > self.limits.max_ratio * max(self.archive_size, 1):
            raise ApiError(413, f"The archive expands to more than {self.limits.max_ratio:g} times its size "
                           "(a zip bomb?); nothing was kept")

    def _too_large(self) -> None:
        raise ApiError(413, f"The archive expands past {self.limits.max_size} bytes; nothing was kept")


def extract(archive: str, destination: str | None, limits: Limits, job: Job, *,
            opener: Beneath = UNCONFINED) -> Extracted:
    """Extract `archive` into the new folder `destination` (409 if it exists), or beside the
    archive under its name without the suffix (the next free `name (1)`); returns what was made."""
    kind, default_name = archive_kind(os.path.basename(archive))
    with _opened(archive, opener) as (source, size):
        target = destination or os.path.join(os.path.dirname(archive), default_name)
        conflict = Conflict.REFUSE if destination else Conflict.KEEP_BOTH
        parent, wanted = _parent(target, opener)
        staging = ""
        try:
            check_name(wanted)
            if conflict is Conflict.REFUSE and existing_names(parent, [wanted]):
                raise exists(wanted)
            staging = temporary_name(wanted, "extract")
            os.mkdir(staging, 0o777, dir_fd=parent)  # the umask applies, as to any new folder
            adopt_at(staging, parent)
            try:
                done = Extracted(target)
                _extract_into(kind, source, parent, staging, Counter(limits, size, job, done))
                job.check()
                placed = place(parent, staging, wanted, conflict, folder=True)
            except BaseException:
                remove_entry(parent, staging)
                raise
        except OSError as exc:
            raise from_os_error(as_named(exc, staging, wanted) if staging else exc) from None
        finally:
            os.close(parent)
    done.path = os.path.join(os.path.dirname(target), placed)
    return done


@contextmanager
def _opened(archive: str, opener: Beneath) -> Iterator[tuple[IO[bytes], int]]:
    try:
        fd = opener.open(archive, READ_FLAGS)
    except FileNotFoundError:
        raise not_found(f"Archive not found: {archive}") from None
    except OSError as exc:
        raise from_os_error(exc) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise bad_request(f"Not a regular file: {archive}")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as source:
        yield source, info.st_size


def _parent(target: str, opener: Beneath) -> tuple[int, str]:
    try:
        return opener.parent(target, follow=False)
    except (FileNotFoundError, NotADirectoryError):
        raise bad_request("Destination parent directory not found") from None
    except OSError as exc:
        raise from_os_error(exc) from None


def _extract_into(kind: str, source: IO[bytes], parent: int, staging: str, counter: Counter) -> None:
    root = os.open(staging, DIRECTORY_OPEN, dir_fd=parent)
    try:
        try:
            if kind == "zip":
                _extract_zip(source, root, counter)
            else:
                _extract_tar(source, root, counter)
        except BROKEN as exc:
            raise ApiError(422, f"Not a valid {kind} archive: {exc or type(exc).__name__}") from None
        except OSError as exc:
            if exc.errno in THE_DISKS_FAULT:
                raise
            if isinstance(exc, FileExistsError | NotADirectoryError) or exc.errno == errno.ELOOP:
                raise unsafe(exc.filename or "?", "a duplicate, or a path through a file") from None
            # gzip and bz2 report a damaged stream as an OSError.
            raise ApiError(422, f"Not a valid {kind} archive: {exc}") from None
    finally:
        os.close(root)


# --- zip ------------------------------------------------------------------------------------------


def _extract_zip(source: IO[bytes], root: int, counter: Counter) -> None:
    with zipfile.ZipFile(source) as archive:
        entries = archive.infolist()
        if len(entries) > counter.limits.max_entries:
            counter.done.entries = len(entries) - 1
            counter.entry()
        for info in entries:
            counter.entry()
            parts = entry_parts(info.filename, zip_entry=True)
            mode = info.external_attr >> 16
            if not parts:
                continue
            if stat.S_ISLNK(mode):
                counter.done.skipped.append(info.filename)
            elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise unsafe(info.filename, "a device, FIFO or socket")
            elif info.is_dir() or stat.S_ISDIR(mode):
                _close(_folder(root, parts))
            else:
                counter.declared(info.file_size)
                if info.flag_bits & 0x1:
                    raise unsafe(info.filename, "encrypted entries are not supported")
                mtime = _zip_time(info.date_time)
                with archive.open(info) as data:
                    _write_file(root, parts, data, stat.S_IMODE(mode) or 0o644, mtime, counter)


def _zip_time(date_time: tuple[int, int, int, int, int, int]) -> float:
    try:
        return time.mktime((*date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return 0.0


# --- tar ------------------------------------------------------------------------------------------


def _extract_tar(source: IO[bytes], root: int, counter: Counter) -> None:
    # Stream mode: one pass over the (decompressed) archive, members read in order, never seeked.
    with tarfile.open(fileobj=source, mode="r|*") as archive:
        for member in archive:
            counter.entry()
            parts = entry_parts(member.name, zip_entry=False)
            if not parts:
                continue
            if member.issym() or member.islnk():
                counter.done.skipped.append(member.name)
            elif member.ischr() or member.isblk() or member.isfifo():
                raise unsafe(member.name, "a device or FIFO")
            elif member.isdir():
                _close(_folder(root, parts))
            elif member.isreg():
                counter.declared(member.size)
                data = archive.extractfile(member)
                assert data is not None
                _write_file(root, parts, data, stat.S_IMODE(member.mode) or 0o644, member.mtime, counter)
            else:
                counter.done.skipped.append(member.name)


# --- writing beneath the new folder ---------------------------------------------------------------


def _folder(root: int, parts: list[str]) -> int:
    """The folder `parts` beneath root, made as needed, walked without following any symlink."""
    current = os.dup(root)
    try:
        for part in parts:
            # An earlier entry may have made it (or made a file: the open below says ENOTDIR).
            with suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=current)
                adopt_at(part, current)
            step = os.open(part, DIRECTORY_OPEN, dir_fd=current)
            os.close(current)
            current = step
    except OSError as exc:
        os.close(current)
        exc.filename = "/".join(parts)
        raise
    return current


def _close(fd: int) -> None:
    os.close(fd)


def _write_file(root: int, parts: list[str], data: IO[bytes], mode: int, mtime: float, counter: Counter) -> None:
    folder = _folder(root, parts[:-1])
    try:
        try:
            fd = os.open(parts[-1], NEW_FILE_FLAGS, 0o600, dir_fd=folder)
            adopt(fd)
        except OSError as exc:
            exc.filename = "/".join(parts)
            raise
        try:
            while block := data.read(BLOCK):
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
                counter.wrote(len(block))
            os.fchmod(fd, mode & 0o777)  # never setuid, setgid or sticky from an archive
            with suppress(OverflowError, ValueError, OSError):  # a date no file system can hold
                os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)
    finally:
        os.close(folder)
