"""File history: the bytes a write is about to replace, kept in `<state>/history/` before the rename.

Every overwrite (write_file, replace_file_content, an upload that replaces, the editor's save, a
restore, a git discard) copies the old file here, in the same worker-thread hop as the write: the
copy is a reflink (FICLONE) or copy_file_range where the file systems allow, so a 4 KB write pays
about one small file creation more. Versions are keyed by the file's real path (its sha256), one
folder per file with a small JSON index (written atomically) and one file per version.

Bounded, oldest first: versions per file, bytes per file, bytes in all, and age. A lock per real
path makes keep-then-rename one step, so two writers of one file keep two versions (never the same
old bytes twice, never a torn index).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

INDEX = "index.json"
FICLONE = 0x40049409  # _IOW(0x94, 9, int): share the extents (btrfs, XFS) instead of copying bytes
COPY_BLOCK = 1 << 30
HASH_BLOCK = 1 << 20
#: Version ids are made here (nanoseconds, then randomness) and checked against this before any use.
VERSION_ID = re.compile(r"^[0-9]{19,20}-[0-9a-f]{8}$")
#: copy_file_range cannot copy between these two files (other file systems, old kernels): sendfile can.
_NO_RANGE_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}


@dataclass(frozen=True)
class Limits:
    versions: int = 20
    file_bytes: int = 100 * 1024 * 1024
    total_bytes: int = 1024**3
    age: float = 30 * 24 * 3600


@dataclass(frozen=True)
class Version:
    id: str
    at: float
    route: str
    size: int
    sha256: str

    def public(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies, which cost a third of a millisecond per 20-version index.
        return {"id": self.id, "at": self.at, "route": self.route, "size": self.size, "sha256": self.sha256}


def history_key(real_path: str) -> str:
    return hashlib.sha256(os.fsencode(real_path)).hexdigest()


def real_path_of(parent: int, name: str) -> str:
    """The real path of `name` in the folder open as `parent` (the kernel's name for that folder)."""
    return os.path.join(os.readlink(f"/proc/self/fd/{parent}"), name)


class _Locks:
    """One lock per real path, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class History:
    """The versions of every file, in `directory`; `enabled=False` keeps nothing."""

    def __init__(self, directory: Path, limits: Limits = Limits(), *, enabled: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.limits = limits
        self.enabled = enabled
        self.clock = clock
        self._locks = _Locks()
        self._total_lock = threading.Lock()
        self._total: int | None = None  # bytes kept in all; counted on first use

    # --- keeping ----------------------------------------------------------------------------------

    def keeper(self, route: str) -> Keeper | None:
        """What a PendingWrite holds around its rename to keep the replaced bytes; None when off."""
        return Keeper(self, route) if self.enabled else None

    def keep(self, path: str, route: str) -> Version | None:
        """Keep the current bytes of the regular file at `path` (links followed) now, e.g. before a
        git discard; None when there is nothing to keep (missing, not a regular file, history off)."""
        if not self.enabled:
            return None
        real = os.path.realpath(path)
        try:
            parent = os.open(os.path.dirname(real), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            with self._locks.hold(real):
                version = self._keep_locked(parent, os.path.basename(real), real, route)
        finally:
            os.close(parent)
        self._enforce_total()
        return version

    def _keep_locked(self, parent: int, name: str, real: str, route: str) -> Version | None:
        """Copy the file into a new version (the caller holds the file's lock); errors are logged,
        never raised: a full or read-only state directory must not stop the user's write."""
        try:
            source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
        except OSError:
            return None  # nothing there yet (a new file), or a link or a socket: nothing to keep
        try:
            info = os.fstat(source)
            if not stat.S_ISREG(info.st_mode) or info.st_size > self.limits.file_bytes:
                return None
            return self._store(source, info.st_size, real, route)
        except OSError as exc:
            log.warning("history: cannot keep a version of %s: %s", real, exc)
            return None
        finally:
            os.close(source)

    def _store(self, source: int, size: int, real: str, route: str) -> Version:
        folder = self.directory / history_key(real)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        now = self.clock()
        version_id = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        target = os.open(folder / version_id, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            copy_file(source, target, size)
            digest = sha256_of(target)
        except BaseException:
            os.close(target)
            os.unlink(folder / version_id)
            raise
        os.close(target)
        version = Version(version_id, now, route, size, digest)
        versions = [*self._read_index(folder), version]
        kept = self._within_file_limits(self._live(versions, now))
        self._write_index(folder, real, kept)
        self._drop(folder, _missing_from(versions, kept))
        self._count(size)
        return version

    def _within_file_limits(self, versions: list[Version]) -> list[Version]:
        """The newest versions that fit the per-file count and byte caps."""
        kept: list[Version] = []
        total = 0
        for version in reversed(versions):
            if len(kept) >= self.limits.versions or total + version.size > self.limits.file_bytes:
                break
            kept.append(version)
            total += version.size
        return kept[::-1]

    def _live(self, versions: list[Version], now: float) -> list[Version]:
        return [version for version in versions if now - version.at <= self.limits.age]

    # --- reading ----------------------------------------------------------------------------------

    def versions(self, path: str) -> list[Version]:
        """The versions of the file at `path` (its real path), oldest first; expired ones are dropped."""
        real = os.path.realpath(path)
        folder = self.directory / history_key(real)
        with self._locks.hold(real):
            versions = self._read_index(folder)
            live = self._live(versions, self.clock())
            if len(live) != len(versions):
                self._write_index(folder, real, live)
                self._drop(folder, _missing_from(versions, live))
        return live

    def open_version(self, path: str, version_id: str) -> tuple[int, Version] | None:
        """An open descriptor on a version's bytes (the caller closes it), or None if there is none."""
        if not VERSION_ID.match(version_id):
            return None
        for version in self.versions(path):
            if version.id == version_id:
                folder = self.directory / history_key(os.path.realpath(path))
                try:
                    return os.open(folder / version_id, os.O_RDONLY | os.O_CLOEXEC), version
                except FileNotFoundError:
                    return None
        return None

    # --- the index --------------------------------------------------------------------------------

    def _read_index(self, folder: Path) -> list[Version]:
        try:
            document = orjson.loads((folder / INDEX).read_bytes())
            return [Version(**entry) for entry in document["versions"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("history: unreadable index %s (%s); starting it again", folder / INDEX, exc)
            return []

    def _write_index(self, folder: Path, real: str, versions: list[Version]) -> None:
        """Written beside and renamed over: a reader sees the old index or the new one, whole."""
        if not versions:
            with contextlib.suppress(FileNotFoundError):
                (folder / INDEX).unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()  # fails (kept) when a version file is still there: dropped next
            return
        temporary = folder / f".{INDEX}.{secrets.token_hex(4)}"
        temporary.write_bytes(orjson.dumps({"path": real, "versions": [version.public() for version in versions]}))
        os.replace(temporary, folder / INDEX)

    def _drop(self, folder: Path, versions: list[Version]) -> None:
        for version in versions:
            with contextlib.suppress(FileNotFoundError):
                (folder / version.id).unlink()
                self._count(-version.size)
        if versions and not (folder / INDEX).exists():
            with contextlib.suppress(OSError):
                folder.rmdir()

    # --- the total cap and the sweep --------------------------------------------------------------

    def _count(self, change: int) -> None:
        with self._total_lock:
            if self._total is not None:
                self._total += change

    def total_bytes(self) -> int:
        with self._total_lock:
            if self._total is None:
                self._total = sum(version.size for _, versions in self._all_indexes() for version in versions)
            return self._total

    def _all_indexes(self) -> Iterator[tuple[Path, list[Version]]]:
        try:
            folders = list(self.directory.iterdir())
        except FileNotFoundError:
            return
        for folder in folders:
            if folder.is_dir():
                yield folder, self._read_index(folder)

    def _enforce_total(self) -> None:
        if self.total_bytes() > self.limits.total_bytes:
            self.sweep()

    def sweep(self) -> None:
        """Drop expired versions everywhere, then the oldest in all until the total fits its cap."""
        now = self.clock()
        everything = sorted(((version.at, folder, version) for folder, versions in self._all_indexes()
                             for version in versions), key=lambda item: item[0])
        total = sum(version.size for _, _, version in everything)
        doomed: dict[Path, set[str]] = {}
        for at, folder, version in everything:
            if now - at <= self.limits.age and total <= self.limits.total_bytes:
                break
            doomed.setdefault(folder, set()).add(version.id)
            total -= version.size
        for folder, ids in doomed.items():
            self._drop_from(folder, ids)

    def _drop_from(self, folder: Path, ids: set[str]) -> None:
        """Remove these versions of one file, under its lock (its real path is in the index)."""
        try:
            real = orjson.loads((folder / INDEX).read_bytes())["path"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        with self._locks.hold(real):
            versions = self._read_index(folder)
            kept = [version for version in versions if version.id not in ids]
            self._write_index(folder, real, kept)
            self._drop(folder, [version for version in versions if version.id in ids])


#: The app's History (made in daemon/app.py): others keep a version with `app[HISTORY].keep(path, route)`.
HISTORY = web.AppKey("history", History)


class Keeper:
    """Held by PendingWrite.commit around its rename: the file's lock, and its old bytes kept first."""

    def __init__(self, history: History, route: str) -> None:
        self.history = history
        self.route = route

    @contextlib.contextmanager
    def replacing(self, parent: int, name: str) -> Iterator[None]:
        real = real_path_of(parent, name)
        with self.history._locks.hold(real):
            self.history._keep_locked(parent, name, real, self.route)
            yield
        self.history._enforce_total()


def _missing_from(versions: list[Version], kept: list[Version]) -> list[Version]:
    ids = {version.id for version in kept}
    return [version for version in versions if version.id not in ids]


# --- copying --------------------------------------------------------------------------------------


def copy_file(source: int, target: int, size: int) -> None:
    """All of `source` into the empty `target`: shared extents if the file system can, else copied
    in the kernel (copy_file_range, then sendfile), never through Python's memory."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(target, FICLONE, source)
        return
    offset = 0
    try:
        while True:
            copied = os.copy_file_range(source, target, COPY_BLOCK, offset, offset)
            if not copied:
                return
            offset += copied
    except OSError as exc:
        if exc.errno not in _NO_RANGE_COPY or offset:
            raise
    while copied := os.sendfile(target, source, offset, COPY_BLOCK):
        offset += copied


def sha256_of(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, HASH_BLOCK, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()
