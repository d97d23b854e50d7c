"""Turn a user-supplied path into an absolute one, and keep it inside `--root` when one is set."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from daemon.errors import ApiError, bad_request
from daemon.files.beneath import Beneath, real_path

if TYPE_CHECKING:
    from daemon.sandbox import Sandbox

#: Linux's PATH_MAX; longer paths can never be opened, so they are refused before any syscall.
MAX_PATH_LENGTH = 4096
MAX_NAME_LENGTH = 255


def resolve(path: str, base: str) -> str:
    """Absolute paths are normalised; relative ones join `base` (the chat's cwd or home).

    `~` and `~/...` expand to the user's home: models write them often, and a directory literally
    named `~` is never what they meant.
    """
    if path == "~" or path.startswith("~/"):
        path = os.path.expanduser(path)
    return os.path.normpath(os.path.join(base, path))


def require_named(path: str) -> None:
    """Writers and removers act only on a path that names something: never on "" or "." (which
    would otherwise mean the chat's folder or home)."""
    if not path.strip() or path.strip() in (".", "./"):
        raise bad_request("Path must name a file or folder; an empty path or '.' is refused")


def check_removable(target: str, *, home: str, cwd: str, root: str | None) -> str:
    """400 for what a delete or a move must never take away: `/`, the home and its ancestors, the
    chat's working directory and its ancestors, and the file root itself. Returns the path removed.

    What would be removed is the final component itself (a symlink is removed, not followed), so
    it is compared as its real parent folder plus its name.
    """
    removed = os.path.join(os.path.realpath(os.path.dirname(target)), os.path.basename(target))
    if removed == "/" or target == "/":
        raise bad_request("Refusing to remove the file system root")
    for kept, what in ((root, "the file root"), (home, "the home folder"), (cwd, "the working directory")):
        if not kept:
            continue
        for candidate in {kept, os.path.realpath(kept)}:
            if removed == candidate or candidate.startswith(removed.rstrip("/") + "/"):
                raise bad_request(f"Refusing to remove {what} or a folder that holds it: {target}")
    return removed


def check_path_text(path: str) -> None:
    """Refuse what no file system accepts with a 400, instead of a confusing OS error later."""
    if "\0" in path:
        raise bad_request("Path must not contain NUL bytes")
    if len(os.fsencode(path)) > MAX_PATH_LENGTH:
        raise bad_request(f"Path is longer than {MAX_PATH_LENGTH} bytes")
    if any(len(os.fsencode(part)) > MAX_NAME_LENGTH for part in path.split("/")):
        raise bad_request(f"A path component is longer than {MAX_NAME_LENGTH} bytes")


class FileScope:
    """Where the file endpoints may reach: anywhere (the default: this is a full shell) or beneath a root.

    Confinement compares real paths, so `..`, symlinks in the last component or in any ancestor, and
    absolute paths that lead outside the root are all refused with 403. Paths that do not exist
    yet are judged by their deepest existing ancestor, which `realpath` resolves.
    """

    def __init__(self, root: str | None, sandbox: Sandbox | None = None) -> None:
        self.root = os.path.realpath(root) if root else None
        #: Opens paths beneath the root in one step the kernel checks (see beneath.py); with a
        #: sandbox, only what it shows its commands.
        self.beneath = Beneath(self.root, sandbox=sandbox)
        self.sandbox = sandbox

    def base(self, home: str) -> str:
        """Where relative paths start: home, unless home lies outside the root."""
        return home if self.contains(home) else self.root or home

    def target(self, path: str, base: str) -> str:
        """The absolute path a request names, checked against the root."""
        check_path_text(path)
        resolved = resolve(path, base)
        self.check(resolved)
        return resolved

    def contains(self, path: str) -> bool:
        if self.root is None and self.sandbox is None:
            return True
        real = real_path(path)
        if self.sandbox is not None and not self.sandbox.access(real):
            return False  # hidden from commands: from the file API too
        return self._beneath_root(real)

    def check(self, path: str) -> None:
        if not self.contains(path):
            if self.root is None or self._beneath_root(real_path(path)):
                self.beneath.require(real_path(path), 1)  # then the sandbox is why: it says so
            raise ApiError(403, "Path is outside the allowed file root")

    def _beneath_root(self, real: str) -> bool:
        return self.root is None or real == self.root or real.startswith(self.root.rstrip("/") + "/")
