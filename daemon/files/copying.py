"""Copy a file or a folder tree: streamed in the kernel, placed atomically, never over anything.

The copy is built under a hidden temp name beside its destination and renamed into place with
RENAME_NOREPLACE at the end, so a reader never sees half a copy and an existing entry is never
replaced (409, or the next free name when asked). Everything happens on directory descriptors
from the checked parents, never following a symlink: a symlink in the tree is copied as a symlink,
FIFOs, devices and sockets inside a folder are skipped (named in the reply). Bytes move with
copy_file_range (a reflink or an in-kernel copy), else sendfile, else read/write.

Long work runs in a worker thread under a `Job`: a deadline and a cancel flag checked between
blocks and entries; whatever stops it (a limit, the deadline, the client leaving, a full disk)
removes the partial copy.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from daemon.errors import ApiError, bad_request, from_os_error, not_found
from daemon.files.beneath import READ_FLAGS, Beneath
from daemon.files.naming import NEW_FILE_FLAGS, Conflict, as_named, check_name, place, temporary_name
from daemon.files.ops import UNCONFINED, os_errors
from daemon.owner import adopt, adopt_at

#: Bytes per copy_file_range call: the job is checked between calls.
COPY_BLOCK = 8 * 1024 * 1024
MAX_ENTRIES = 100_000
MAX_DEPTH = 64
DIRECTORY_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: copy_file_range cannot here (across file systems on old kernels, special files, some FUSE).
_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


class Cancelled(ApiError):
    def __init__(self) -> None:
        super().__init__(499, "The client went away; nothing was kept")


class Job:
    """The limits of one long file operation in a worker thread: a deadline and a cancel flag."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self.deadline = clock() + timeout if timeout else math.inf
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()
        if self._clock() >= self.deadline:
            raise ApiError(408, f"The operation took longer than {self.timeout:g} s; nothing was kept")


@dataclass
class Budget:
    """What a copy may take: entries and bytes (counted as they are really copied)."""

    max_bytes: int
    max_entries: int = MAX_ENTRIES
    entries: int = 0
    size: int = 0
    skipped: list[str] = field(default_factory=list)

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.max_entries:
            raise ApiError(413, f"More than {self.max_entries} entries to copy; nothing was kept")

    def fits(self, size: int) -> None:
        """Refuse early a file whose size alone would pass the limit (its bytes are counted as copied)."""
        if self.size + size > self.max_bytes:
            self.take(size)

    def take(self, size: int) -> None:
        self.size += size
        if self.size > self.max_bytes:
            raise ApiError(413, f"More than {self.max_bytes} bytes to copy; nothing was kept")


def copy(source: str, destination: str | None, budget: Budget, job: Job, *,
         conflict: Conflict = Conflict.REFUSE, opener: Beneath = UNCONFINED) -> str:
    """Copy `source` to `destination` (a full path), or beside itself as `name (copy).ext` when
    `destination` is None; returns the path the copy got."""
    with _parent(source, opener, not_found_detail=f"Source path not found: {source}") as (source_dir, name):
        info = _lstat(source_dir, name, source)
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            raise bad_request(f"Not a file, folder or symlink; refusing to copy a device, FIFO or socket: {source}")
        label = "copy" if destination is None else ""
        target = destination or source
        with _parent(target, opener, not_found_detail="Destination parent directory not found") as (into, wanted):
            check_name(wanted)
            with os_errors():
                inside = stat.S_ISDIR(info.st_mode) and _holds(source_dir, name, into)
            if inside:
                raise bad_request("Cannot copy a folder into itself")
            temporary = temporary_name(wanted, "copy")
            try:
                _copy_entry((source_dir, name), (into, temporary), info, budget, job, depth=0,
                            durable=not stat.S_ISDIR(info.st_mode))
                job.check()
                placed = place(into, temporary, wanted, conflict, folder=stat.S_ISDIR(info.st_mode), label=label)
            except OSError as exc:
                remove_entry(into, temporary)
                raise from_os_error(as_named(exc, temporary, wanted)) from None
            except BaseException:
                remove_entry(into, temporary)
                raise
    return os.path.join(os.path.dirname(target), placed)


class _parent:
    """The descriptor of the folder holding a path's last component (never followed), as a context."""

    def __init__(self, path: str, opener: Beneath, *, not_found_detail: str) -> None:
        try:
            self.fd, self.name = opener.parent(path, follow=False)
        except (FileNotFoundError, NotADirectoryError):
            raise not_found(not_found_detail) from None
        except OSError as exc:
            raise from_os_error(exc) from None

    def __enter__(self) -> tuple[int, str]:
        return self.fd, self.name

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)


def _lstat(directory: int, name: str, shown: str) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        raise not_found(f"Source path not found: {shown}") from None
    except OSError as exc:
        raise from_os_error(exc) from None


def _holds(source_dir: int, name: str, into: int) -> bool:
    """Whether the folder `name` (in source_dir) is `into` or one of its ancestors (by inode)."""
    folder = os.stat(name, dir_fd=source_dir, follow_symlinks=False)
    wanted = (folder.st_dev, folder.st_ino)
    current = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=into)
    try:
        for _ in range(4096):
            here = os.fstat(current)
            if (here.st_dev, here.st_ino) == wanted:
                return True
            up = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=current)
            above = os.fstat(up)
            os.close(current)
            current = up
            if (above.st_dev, above.st_ino) == (here.st_dev, here.st_ino):
                return False  # The file system's root.
        return True  # Deeper than any real tree: refuse rather than guess.
    finally:
        os.close(current)


At = tuple[int, str]


def _copy_entry(source: At, destination: At, info: os.stat_result, budget: Budget, job: Job, *,
                depth: int, durable: bool) -> None:
    job.check()
    budget.entry()
    if stat.S_ISREG(info.st_mode):
        _copy_file(source, destination, budget, job, durable=durable)
    elif stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source[1], dir_fd=source[0]), destination[1], dir_fd=destination[0])
        adopt_at(destination[1], destination[0])
    elif stat.S_ISDIR(info.st_mode):
        _copy_folder(source, destination, info, budget, job, depth=depth)


def _copy_folder(source: At, destination: At, info: os.stat_result, budget: Budget, job: Job, *,
                 depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise ApiError(413, f"Folders nested deeper than {MAX_DEPTH} levels; nothing was kept")
    # Made writable by us first (a read-only folder still gets its files); its own mode comes last.
    os.mkdir(destination[1], 0o700, dir_fd=destination[0])
    adopt_at(destination[1], destination[0])
    source_fd = os.open(source[1], DIRECTORY_OPEN, dir_fd=source[0])
    try:
        copy_fd = os.open(destination[1], DIRECTORY_OPEN, dir_fd=destination[0])
        try:
            with os.scandir(source_fd) as entries:
                for entry in entries:  # Not sorted: the entry bound applies before a huge listing is read.
                    _copy_child(source_fd, copy_fd, entry.name, budget, job, depth=depth)
            os.fchmod(copy_fd, stat.S_IMODE(info.st_mode))
            os.utime(copy_fd, ns=(info.st_atime_ns, info.st_mtime_ns))
        finally:
            os.close(copy_fd)
    finally:
        os.close(source_fd)


def _copy_child(source_fd: int, copy_fd: int, name: str, budget: Budget, job: Job, *, depth: int) -> None:
    try:
        info = os.stat(name, dir_fd=source_fd, follow_symlinks=False)
    except FileNotFoundError:
        return  # Gone since it was listed.
    if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode):
        _copy_entry((source_fd, name), (copy_fd, name), info, budget, job, depth=depth + 1, durable=False)
    else:
        budget.skipped.append(name)


def _copy_file(source: At, destination: At, budget: Budget, job: Job, *, durable: bool) -> None:
    reading = os.open(source[1], READ_FLAGS | os.O_NOFOLLOW, dir_fd=source[0])
    try:
        info = os.fstat(reading)
        if not stat.S_ISREG(info.st_mode):
            raise bad_request(f"Changed while it was copied: {source[1]}")
        budget.fits(info.st_size)
        writing = os.open(destination[1], NEW_FILE_FLAGS, 0o600, dir_fd=destination[0])
        adopt(writing)
        try:
            stream_bytes(reading, writing, budget, job)
            os.fchmod(writing, stat.S_IMODE(info.st_mode))
            os.utime(writing, ns=(info.st_atime_ns, info.st_mtime_ns))
            if durable:
                os.fsync(writing)
        finally:
            os.close(writing)
    finally:
        os.close(reading)


def stream_bytes(reading: int, writing: int, budget: Budget, job: Job) -> None:
    """All of `reading` into `writing`, a block at a time, in the kernel when it can."""
    way = _copy_range
    while True:
        job.check()
        try:
            copied = way(reading, writing)
        except OSError as exc:
            fallback = {_copy_range: _send, _send: _read_write}.get(way)
            if fallback is None or exc.errno not in _NO_COPY_RANGE:
                raise
            way = fallback
            continue
        if not copied:
            return
        budget.take(copied)


def _copy_range(reading: int, writing: int) -> int:
    return os.copy_file_range(reading, writing, COPY_BLOCK)


def _send(reading: int, writing: int) -> int:
    return os.sendfile(writing, reading, None, COPY_BLOCK)


def _read_write(reading: int, writing: int) -> int:
    data = os.read(reading, 1024 * 1024)
    view = memoryview(data)
    while view:
        view = view[os.write(writing, view):]
    return len(data)


def remove_entry(directory: int, name: str) -> None:
    """Remove a partial copy (a file, a link or a tree, through descriptors); quiet if it is gone."""
    try:
        info = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return
    with suppress(FileNotFoundError):
        if stat.S_ISDIR(info.st_mode):
            _make_writable(directory, name)
            shutil.rmtree(name, dir_fd=directory)
        else:
            os.unlink(name, dir_fd=directory)


def _make_writable(directory: int, name: str) -> None:
    """A copied read-only folder gets its mode before a later failure: give the owner back write
    permission inside the partial copy so it can be removed (only folders we made, never followed)."""
    try:
        top = os.open(name, DIRECTORY_OPEN, dir_fd=directory)
    except OSError:
        return
    try:
        # Top-down: each folder is writable before its children are listed; never by name (a
        # name could be a symlink), only through the descriptor fwalk opened without following.
        for _, _, _, fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            with suppress(OSError):
                os.fchmod(fd, 0o700)
    finally:
        os.close(top)
