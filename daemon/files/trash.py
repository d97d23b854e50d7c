"""The trash: deletes that can be undone, laid out as the freedesktop.org Trash specification says,
so the desktop's own file manager sees and restores them.

A trash folder holds `files/<name>` (the item, moved there by one atomic rename) and
`info/<name>.trashinfo` (`Path=` percent-encoded, `DeletionDate=` local time). Which trash:

- the home trash (`$XDG_DATA_HOME/Trash`, or `~/.local/share/Trash`); with `--root`, the home trash if
  it lies inside the root, else `<root>/.Trash-$uid`, so nothing outside the root is ever written;
- for an item on another mount, `$topdir/.Trash-$uid` at that mount's top. A rename never crosses
  file systems, so an item is never copied: if its trash cannot be used, the delete fails and
  nothing is deleted.

What is already in a trash is deleted for good when deleted again; a trash folder itself (and its
`files/` and `info/`) is refused: the hidden `DELETE /files/trash` empties it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

from daemon.errors import ApiError, bad_request, from_os_error, not_found
from daemon.files import changes, mounts, naming
from daemon.files.beneath import Beneath, real_path
from daemon.files.ops import os_errors

log = logging.getLogger(__name__)

INFO_SUFFIX = ".trashinfo"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
SWEEP_INTERVAL = 3600.0
#: The way out a refusal names, as a file manager offers "delete permanently".
FOR_GOOD = " (DELETE /files/delete?permanent=true deletes it for good)"
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
SetAside = Callable[[int, str, os.stat_result], None]


def home_trash(environ: dict[str, str] | None = None) -> str:
    """`$XDG_DATA_HOME/Trash`, or `~/.local/share/Trash`."""
    env = os.environ if environ is None else environ
    data = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/share")
    return os.path.join(os.path.abspath(data), "Trash")


@dataclass(frozen=True)
class Limits:
    #: Seconds an item stays in the trash; 0: no age limit.
    max_age: float = 30 * 24 * 3600
    #: Bytes the trash may hold (oldest purged first); 0: no size limit.
    max_size: int = 10 * 1024**3


@dataclass(frozen=True)
class Place:
    """One trash folder. `topdir` is set for a mount's `.Trash-$uid`: its Path= are relative to it."""

    path: str
    topdir: str | None = None

    @property
    def key(self) -> str:
        return hashlib.sha256(os.fsencode(self.path)).hexdigest()[:10]


@dataclass(frozen=True)
class Entry:
    place: Place
    stored: str
    original: str
    deleted: float
    size: int
    type: str

    @property
    def id(self) -> str:
        return f"{self.place.key}-{self.stored}"

    def summary(self) -> dict[str, object]:
        return {"id": self.id, "name": os.path.basename(self.original), "original_path": self.original,
                "deleted_at": time.strftime(DATE_FORMAT, time.localtime(self.deleted)),
                "size": self.size, "type": self.type}


class Trash:
    """Every trash this daemon may use, and what is done with them. Plain synchronous methods
    (call them in a worker thread) except the periodic sweep."""

    def __init__(self, home: str, root: str | None, limits: Limits = Limits(), *, enabled: bool = True,
                 near: str = "/", record: Path | None = None,
                 clock: Callable[[], float] = time.time, mountinfo: str = mounts.MOUNTINFO) -> None:
        self.root = root
        #: Mounts below this folder (the daemon's home) have their trash listed without being noted.
        self._near = real_path(near)
        #: Where the mounts' trashes this daemon used are noted (None: nowhere).
        self._record = record
        self._opener = Beneath(root)
        self.limits = limits
        self.enabled = enabled
        self.clock = clock
        self._mountinfo = mountinfo
        self._uid = os.getuid()
        home = real_path(home)
        inside_root = root is None or mounts.within(home, [root])
        self.primary = Place(home) if inside_root else Place(os.path.join(root or "/", self._own_name))
        self._sizes: dict[tuple[str, str, int], int] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def _own_name(self) -> str:
        return f".Trash-{self._uid}"

    # --- deleting -----------------------------------------------------------------------------------

    def set_aside(self, path: str, *, permanent: bool = False) -> SetAside | None:
        """How `changes.delete` should take `path` away: into a trash, or None (for good: asked, the
        trash is off, or the item is already in a trash). 400 for a trash folder itself."""
        removed = os.path.join(real_path(os.path.dirname(path)), os.path.basename(path))
        for place in self._places_around(removed):
            if removed in (place.path, *(os.path.join(place.path, part) for part in ("files", "info"))):
                raise bad_request(f"Refusing to delete the trash folder itself ({removed}): "
                                  "empty it with DELETE /files/trash")
            if os.path.dirname(removed) == os.path.join(place.path, "files"):
                return lambda parent, name, info: self._remove_stored(place, parent, name, info)
            if mounts.within(removed, [place.path]):
                return None
        if permanent or not self.enabled:
            return None
        if mounts.within(self.primary.path, [removed]):
            raise ApiError(409, f"Cannot move {removed} to the trash: it holds the trash folder "
                           f"{self.primary.path}; nothing was deleted{FOR_GOOD}")
        return lambda parent, name, info: self.put(parent, name, info, removed)

    def _remove_stored(self, place: Place, parent: int, name: str, info: os.stat_result) -> None:
        """A trashed item deleted again goes for good, and its .trashinfo with it."""
        with os_errors():
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)
        with contextlib.suppress(OSError), self._open(place, create=False) as (_, infos):
            os.unlink(name + INFO_SUFFIX, dir_fd=infos)

    def put(self, parent: int, name: str, info: os.stat_result, original: str) -> None:
        """Move `name` (in the folder `parent`) into its trash: the .trashinfo first (created with
        O_EXCL, which reserves the name), then one rename that never replaces and never crosses devices."""
        place = self._place_for(original)
        try:
            with self._open(place, create=True) as (files, infos):
                self._move_in(place, (files, infos), (parent, name), original)
            if place.topdir is not None:
                self._remember(place.topdir)
        except OSError as exc:
            raise _refused(original, place, exc) from None
        except ApiError as error:  # the scope's 403: a link would lead the trash out of the root
            raise ApiError(error.status, f"Cannot move {original} to the trash ({place.path}): {error.detail}; "
                           f"nothing was deleted{FOR_GOOD}") from None

    def _move_in(self, place: Place, folders: tuple[int, int], item: changes.At, original: str) -> None:
        files, infos = folders
        record = _info_text(self._recorded_path(place, original), self.clock())
        for stored in naming.candidates(_fitting(item[1]), naming.Conflict.KEEP_BOTH):
            try:
                descriptor = os.open(stored + INFO_SUFFIX, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                     | os.O_CLOEXEC, 0o600, dir_fd=infos)
            except FileExistsError:
                continue
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8", errors="surrogateescape") as out:
                    out.write(record)
                changes.rename_no_replace(*item, files, stored)
                return
            except FileExistsError:
                os.unlink(stored + INFO_SUFFIX, dir_fd=infos)  # An orphan in files/: the next name.
            except BaseException:
                os.unlink(stored + INFO_SUFFIX, dir_fd=infos)
                raise
        raise OSError(errno.EEXIST, "No free name in the trash")

    def _recorded_path(self, place: Place, original: str) -> str:
        if place.topdir is not None:
            return os.path.relpath(original, place.topdir)
        return original

    def _place_for(self, original: str) -> Place:
        """The trash on the item's own mount: the primary one if it shares it, else the mount's top's."""
        table = self._mount_points()
        top = _mount_of(original, table)
        if _mount_of(real_path(self.primary.path), table) == top:
            return self.primary
        if self.root is not None and not mounts.within(top, [self.root]):
            # The item is on the root's mount, yet the root's trash is not: there is no trash for it.
            raise ApiError(409, f"Cannot move {original} to the trash: no trash on its file system "
                           f"inside the root; nothing was deleted{FOR_GOOD}")
        return Place(os.path.join(top, self._own_name), topdir=top)

    def _known_tops(self) -> set[str]:
        if self._record is None:
            return set()
        try:
            lines = self._record.read_text("utf-8").splitlines()
        except (OSError, UnicodeError):
            return set()
        return {os.fsdecode(unquote_to_bytes(line)) for line in lines if line.startswith("/")}

    def _remember(self, top: str) -> None:
        """Note a mount's trash in <state>/trash-places, so it is listed (and capped) from then on."""
        if self._record is None or top in self._known_tops():
            return
        try:
            self._record.parent.mkdir(parents=True, exist_ok=True)
            with self._record.open("a", encoding="utf-8") as out:
                out.write(quote(os.fsencode(top), safe="/") + "\n")
        except OSError as exc:
            log.warning("cannot note the trash of %s in %s: %s", top, self._record, exc)

    def _places_around(self, path: str) -> list[Place]:
        top = _mount_of(path, self._mount_points())
        return [self.primary, Place(os.path.join(top, self._own_name), topdir=top)]

    def _mount_points(self) -> list[str]:
        return [point for point, _ in mounts._mounts(self._mountinfo)] or ["/"]

    @contextlib.contextmanager
    def _open(self, place: Place, *, create: bool) -> Iterator[tuple[int, int]]:
        """Descriptors of `files/` and `info/`, never through a symlink; the trash folder must be the
        user's (the spec's check: no one else's trash, no link planted there)."""
        folder = self._folder(place, create)
        try:
            if os.fstat(folder).st_uid != self._uid:
                raise PermissionError(errno.EPERM, "The trash folder belongs to someone else", place.path)
            files = _subfolder(folder, "files", create)
            try:
                infos = _subfolder(folder, "info", create)
                try:
                    yield files, infos
                finally:
                    os.close(infos)
            finally:
                os.close(files)
        finally:
            os.close(folder)

    def _folder(self, place: Place, create: bool) -> int:
        """The trash folder. A mount's `.Trash-$uid` is made right in its top; the primary one is
        reached through the file scope's opener, so with `--root` no link leads it out of the root."""
        if place.topdir is not None:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(place.path, 0o700)
            return os.open(place.path, DIRECTORY)
        try:
            return self._opener.directory(place.path)
        except FileNotFoundError:
            if not create:
                raise
        parent = self._opener.directory(os.path.dirname(place.path), create=True)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(os.path.basename(place.path), 0o700, dir_fd=parent)
            return os.open(os.path.basename(place.path), DIRECTORY, dir_fd=parent)
        finally:
            os.close(parent)

    # --- what is in the trash -----------------------------------------------------------------------

    def places(self) -> list[Place]:
        """The primary trash, and the `.Trash-$uid` of every mount inside the root (or the daemon's
        home), or that this daemon has put items in: not every mount's on the machine, which the
        caps and an Empty would otherwise reach too."""
        found = [self.primary]
        near = self.root or self._near
        tops = {top for top in self._mount_points() if mounts.within(top, [near])} | self._known_tops()
        for top in sorted(tops):
            if self.root is not None and not mounts.within(top, [self.root]):
                continue
            place = Place(os.path.join(top, self._own_name), topdir=top)
            if place.path != self.primary.path and os.path.isdir(place.path) and not os.path.islink(place.path):
                found.append(place)
        return found

    def entries(self) -> list[Entry]:
        """Everything in every trash, oldest first."""
        found: list[Entry] = []
        for place in self.places():
            with contextlib.suppress(OSError, ApiError), self._open(place, create=False) as (files, infos):
                found.extend(self._read(place, files, infos))
        return sorted(found, key=lambda entry: (entry.deleted, entry.stored))

    def _read(self, place: Place, files: int, infos: int) -> Iterator[Entry]:
        for info_name in os.listdir(infos):
            if not info_name.endswith(INFO_SUFFIX):
                continue
            stored = info_name[:-len(INFO_SUFFIX)]
            try:
                item = os.stat(stored, dir_fd=files, follow_symlinks=False)
                record = os.stat(info_name, dir_fd=infos, follow_symlinks=False)
                with open(os.open(info_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=infos),
                          encoding="utf-8", errors="surrogateescape") as source:
                    text = source.read(64 * 1024)
            except OSError:
                continue  # An info without its item (or the reverse) is not an entry, as the spec says.
            original, deleted = _parse_info(text, place, record.st_mtime)
            size = self._size(place, files, stored, item, record)
            yield Entry(place, stored, original, deleted, size, _kind(item))

    def _size(self, place: Place, files: int, stored: str, item: os.stat_result, record: os.stat_result) -> int:
        """An item's bytes; a folder's are walked once and remembered (its .trashinfo never changes)."""
        if not stat.S_ISDIR(item.st_mode):
            return item.st_size
        key = (place.path, stored, record.st_mtime_ns)
        if key not in self._sizes:
            self._sizes[key] = _tree_size(files, stored)
        return self._sizes[key]

    def find(self, entry_id: str) -> Entry:
        key, _, stored = entry_id.partition("-")
        for entry in self.entries():
            if entry.place.key == key and entry.stored == stored:
                return entry
        raise not_found("No such item in the trash")

    # --- restore, remove, empty ---------------------------------------------------------------------

    def restore(self, entry_id: str, name: str | None, opener: Beneath) -> tuple[str, str]:
        """Put an item back where it was (or under `name` in that folder), making missing folders;
        never over an existing entry (RestoreConflict with a free name). Returns (path, type)."""
        entry = self.find(entry_id)
        destination = entry.original if name is None else os.path.join(
            os.path.dirname(entry.original), naming.check_name(name))
        try:
            parent, target = opener.parent(destination, create=True, follow=False)
        except OSError as exc:
            raise from_os_error(exc) from None
        try:
            with self._open(entry.place, create=False) as (files, infos):
                self._move_out(entry, (files, infos), (parent, target), destination)
        finally:
            os.close(parent)
        return destination, "directory" if entry.type == "directory" else "file"

    def _move_out(self, entry: Entry, folders: tuple[int, int], target: changes.At, destination: str) -> None:
        files, infos = folders
        info = os.stat(entry.stored, dir_fd=files, follow_symlinks=False)
        try:
            changes._move_at((files, entry.stored), target, info)
        except ApiError as error:
            if error.status == 409:
                raise RestoreConflict(destination, _free_name(target)) from None
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.stored + INFO_SUFFIX, dir_fd=infos)

    def remove(self, entry_id: str) -> None:
        self._remove(self.find(entry_id))

    def _remove(self, entry: Entry) -> None:
        """The item first, then its .trashinfo: an interrupted removal leaves no item without its record."""
        with self._open(entry.place, create=False) as (files, infos), os_errors():
            if entry.type == "directory":
                shutil.rmtree(entry.stored, dir_fd=files)
            else:
                os.unlink(entry.stored, dir_fd=files)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.stored + INFO_SUFFIX, dir_fd=infos)

    def empty(self) -> int:
        """Remove every item of every trash; returns how many."""
        entries = self.entries()
        for entry in entries:
            with contextlib.suppress(ApiError):
                self._remove(entry)
        return len(entries)

    # --- caps -------------------------------------------------------------------------------------

    def sweep(self) -> int:
        """Purge what is older than the age cap, then the oldest until the total fits the size cap."""
        entries = self.entries()
        now, limits = self.clock(), self.limits
        purged = [entry for entry in entries if limits.max_age and entry.deleted < now - limits.max_age]
        kept = [entry for entry in entries if entry not in purged]
        total = sum(entry.size for entry in kept)
        while limits.max_size and kept and total > limits.max_size:
            oldest = kept.pop(0)
            purged.append(oldest)
            total -= oldest.size
        for entry in purged:
            with contextlib.suppress(ApiError):
                self._remove(entry)
        return len(purged)

    def start_sweeping(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            try:
                purged = await asyncio.to_thread(self.sweep)
                if purged:
                    log.info("trash: purged %d item(s) past the caps", purged)
            except (OSError, ApiError) as exc:
                log.warning("trash sweep failed: %s", exc)
            await asyncio.sleep(SWEEP_INTERVAL)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


class RestoreConflict(ApiError):
    """409: the original path is taken; the reply suggests a free name in the same folder."""

    def __init__(self, destination: str, suggestion: str) -> None:
        super().__init__(409, f"Cannot restore: {destination} already exists; restore under another name")
        self.suggestion = suggestion

    def body(self) -> dict[str, object]:
        return {"detail": self.detail, "suggestion": self.suggestion}


# --- helpers --------------------------------------------------------------------------------------


def _refused(original: str, place: Place, exc: OSError) -> ApiError:
    error = from_os_error(exc)
    if error.status == 507:
        return error
    reason = "it is on another file system" if exc.errno == errno.EXDEV else exc.strerror or str(exc)
    status = 409 if exc.errno == errno.EXDEV else error.status
    return ApiError(status, f"Cannot move {original} to the trash ({place.path}): {reason}; nothing was deleted"
                    f"{FOR_GOOD}")


def _subfolder(folder: int, name: str, create: bool) -> int:
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=folder)
    return os.open(name, DIRECTORY, dir_fd=folder)


def _mount_of(path: str, points: list[str]) -> str:
    """The mount point `path` lies on: the longest mount point that holds it."""
    return max((point for point in points if mounts.within(path, [point])), key=len, default="/")


def _fitting(name: str) -> str:
    """The name shortened (keeping its suffix) so that `name.trashinfo` fits NAME_MAX."""
    limit = naming.MAX_NAME_BYTES - len(INFO_SUFFIX) - 8  # room for a ` (nnnn)` number too
    stem, suffix = naming.split_name(name)
    while stem and len(os.fsencode(stem + suffix)) > limit:
        stem = stem[:-1]
    return (stem + suffix) if stem else name[:limit // 4]


def _info_text(path: str, when: float) -> str:
    encoded = quote(os.fsencode(path), safe="/")
    return f"[Trash Info]\nPath={encoded}\nDeletionDate={time.strftime(DATE_FORMAT, time.localtime(when))}\n"


def _parse_info(text: str, place: Place, fallback: float) -> tuple[str, float]:
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    original = os.fsdecode(unquote_to_bytes(fields.get("Path", "")))
    if place.topdir is not None and not original.startswith("/"):
        original = os.path.join(place.topdir, original)
    try:
        deleted = time.mktime(time.strptime(fields.get("DeletionDate", ""), DATE_FORMAT))
    except ValueError:
        deleted = fallback
    return os.path.normpath(original or "/"), deleted


def _kind(info: os.stat_result) -> str:
    if stat.S_ISLNK(info.st_mode):
        return "symlink"
    return "directory" if stat.S_ISDIR(info.st_mode) else "file"


def _tree_size(files: int, stored: str) -> int:
    total = 0
    top = os.open(stored, DIRECTORY, dir_fd=files)
    try:
        for _, _, names, folder in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for name in names:
                with contextlib.suppress(OSError):
                    total += os.stat(name, dir_fd=folder, follow_symlinks=False).st_size
    finally:
        os.close(top)
    return total


def _free_name(target: changes.At) -> str:
    parent, name = target
    for candidate in naming.candidates(name, naming.Conflict.KEEP_BOTH):
        try:
            os.stat(candidate, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return candidate
    return name
