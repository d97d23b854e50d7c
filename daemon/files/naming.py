"""Names of new entries: which are acceptable, the next free `name (1).ext`, and placing an entry
under a name without ever replacing what is there.

Placement is the race-free part: a new file or folder is made under a private temp name first,
then renamed into place with `renameat2(RENAME_NOREPLACE)`, which fails with EEXIST if the name
was taken meanwhile (a check-then-write would clobber a file created between the two). "Keep both"
tries the next number on each EEXIST, so two uploads of the same name never land on one file.
"""

from __future__ import annotations

import enum
import errno
import os
import secrets
from collections.abc import Iterator

from daemon.errors import ApiError, bad_request, from_os_error
from daemon.files.beneath import Beneath
from daemon.files.changes import rename_no_replace
from daemon.files.ops import UNCONFINED, TemporaryFile, adopt_metadata
from daemon.owner import adopt, adopt_at

#: Linux's NAME_MAX: no file system takes a longer component.
MAX_NAME_BYTES = 255
#: Suffixes kept whole when numbering: `logs (1).tar.gz`, not `logs.tar (1).gz`.
DOUBLE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst")
#: How many numbered names "keep both" tries before giving up (a folder with 10,000 copies is odd).
MAX_NUMBER = 10_000


class Conflict(enum.Enum):
    """What to do when the name is taken."""

    REPLACE = "replace"
    REFUSE = "refuse"
    KEEP_BOTH = "keep-both"


def check_name(name: str) -> str:
    """A name for one entry in a folder, or 400 saying what is wrong with it (shown inline by the UI)."""
    if not name or not name.strip():
        raise bad_request("Name must not be empty or only spaces")
    if name in (".", ".."):
        raise bad_request(f"Name must not be {name!r}")
    if "/" in name:
        raise bad_request("Name must not contain '/'")
    if "\0" in name:
        raise bad_request("Name must not contain a NUL character")
    if len(os.fsencode(name)) > MAX_NAME_BYTES:
        raise bad_request(f"Name is longer than {MAX_NAME_BYTES} bytes")
    return name


def split_name(name: str, *, folder: bool = False) -> tuple[str, str]:
    """(stem, suffix) as a person reads them: `.bashrc` has no suffix, `a.tar.gz` has `.tar.gz`."""
    if folder:
        return name, ""
    lower = name.lower()
    for suffix in DOUBLE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)], name[-len(suffix):]
    return os.path.splitext(name)


def numbered(name: str, number: int, *, folder: bool = False, label: str = "") -> str:
    """`a (1).txt`; with a label, `a (copy).txt` then `a (copy 2).txt`. The stem is shortened if the
    result would pass NAME_MAX."""
    stem, suffix = split_name(name, folder=folder)
    mark = f" ({number})"
    if label:
        mark = f" ({label})" if number == 1 else f" ({label} {number})"
    while stem and len(os.fsencode(stem + mark + suffix)) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return stem + mark + suffix


def candidates(name: str, conflict: Conflict, *, folder: bool = False, label: str = "") -> Iterator[str]:
    """The names to try in order: the name itself (unless a label asks for a copy's name), then
    numbered ones when both are kept."""
    if not label:
        yield name
    if conflict is Conflict.KEEP_BOTH or label:
        for number in range(1, MAX_NUMBER + 1):
            yield numbered(name, number, folder=folder, label=label)


def temporary_name(name: str, kind: str) -> str:
    """A hidden name beside the target for work in progress (same folder: the rename stays atomic)."""
    return f".{name[:180]}.{secrets.token_hex(4)}.{kind}"


def place(parent: int, temporary: str, name: str, conflict: Conflict, *,
          folder: bool = False, label: str = "") -> str:
    """Rename `temporary` (in `parent`) to `name` or, when both are kept, to the first free numbered
    name; never over an existing entry. Returns the name it got; 409 `File exists: <name>` when refused.
    """
    for candidate in candidates(name, conflict, folder=folder, label=label):
        try:
            rename_no_replace(parent, temporary, parent, candidate)
            return candidate
        except FileExistsError:
            if conflict is not Conflict.KEEP_BOTH and not label:
                raise exists(name) from None
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:  # A folder's NOREPLACE may say ENOTEMPTY on some file systems.
                raise as_named(exc, temporary, name) from None
            if conflict is not Conflict.KEEP_BOTH and not label:
                raise exists(name) from None
    raise ApiError(409, f"No free name left for {name}")


def as_named(exc: OSError, temporary: str, name: str) -> OSError:
    """The same error naming the user's entry where it named our temp one (`.a.txt.1a2b3c4d.tmp`
    means nothing to them)."""
    if exc.filename is None or temporary not in os.fsdecode(exc.filename):
        return exc
    return type(exc)(exc.errno, exc.strerror, name)


def exists(name: str) -> ApiError:
    return ApiError(409, f"File exists: {name}")


def existing_names(directory: int, names: list[str]) -> list[str]:
    """Which of `names` are taken in the folder (one lstat each, symlinks not followed)."""
    taken = []
    for name in names:
        try:
            os.stat(name, dir_fd=directory, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            continue
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                continue
            raise
        taken.append(name)
    return taken


NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class NewFile(TemporaryFile):
    """A file written under a temp name and placed without replacing anything (PendingWrite's
    twin for uploads that must not overwrite): `commit` gives it the name, or the next free one.

    Under REFUSE a name taken before the first byte is refused at once (no point receiving a
    gigabyte to throw away), but what decides is the placement, which cannot clobber.
    """

    def __init__(self, path: str, conflict: Conflict, opener: Beneath = UNCONFINED) -> None:
        super().__init__()
        self.conflict = conflict
        self.parent, self.name = opener.parent(path, create=True, follow=False)
        try:
            if conflict is Conflict.REFUSE and existing_names(self.parent, [self.name]):
                raise exists(self.name)
            self.temporary = temporary_name(self.name, "tmp")
            try:
                self.fd = os.open(self.temporary, NEW_FILE_FLAGS, 0o600, dir_fd=self.parent)
                adopt(self.fd)
            except OSError as exc:
                raise as_named(exc, self.temporary, self.name) from None
        except BaseException:
            os.close(self.parent)
            raise
        self.placed = self.name

    def commit(self, *, durable: bool = True) -> os.stat_result:
        try:
            with self._lock:
                adopt_metadata(self.fd, None)
                if durable:
                    os.fsync(self.fd)
                info = os.fstat(self.fd)
                self.placed = place(self.parent, self.temporary, self.name, self.conflict)
                self.temporary = ""
            return info
        finally:
            self.close()


def create(directory: str, name: str, *, folder: bool, conflict: Conflict = Conflict.REFUSE,
           opener: Beneath = UNCONFINED) -> str:
    """Make an empty file or folder named `name` in `directory` (which must exist); never over
    anything (O_EXCL, mkdirat: 409, or the next free name). Returns the name it got."""
    check_name(name)
    try:
        parent = opener.directory(directory)
    except (FileNotFoundError, NotADirectoryError):
        raise ApiError(404, f"Directory not found: {directory}") from None
    except OSError as exc:
        raise from_os_error(exc) from None
    try:
        for candidate in candidates(name, conflict, folder=folder):
            try:
                if folder:
                    os.mkdir(candidate, 0o777, dir_fd=parent)
                else:
                    os.close(os.open(candidate, NEW_FILE_FLAGS, 0o666, dir_fd=parent))
                adopt_at(candidate, parent)
                return candidate
            except FileExistsError:
                if conflict is not Conflict.KEEP_BOTH:
                    raise exists(name) from None
            except OSError as exc:
                raise from_os_error(exc) from None
        raise ApiError(409, f"No free name left for {name}")
    finally:
        os.close(parent)
