"""Which repository a request names, confined by --root, and which of its files it may touch."""

from __future__ import annotations

import os
import posixpath
import time
from collections import OrderedDict
from dataclasses import dataclass

from daemon.errors import ApiError
from daemon.files.paths import FileScope
from daemon.git.runner import run_git
from daemon.git.status import Status


@dataclass(frozen=True)
class Repository:
    top: str  # the work tree's top folder (real path)
    ceiling: str | None  # GIT_CEILING_DIRECTORIES while --root is set

    def absolute(self, file: str) -> str:
        return os.path.join(self.top, file)


def ceiling_for(scope: FileScope) -> str | None:
    if not scope.root or scope.root == "/":
        return None
    return os.path.dirname(scope.root)


async def find_repository(folder: str, scope: FileScope) -> Repository:
    """The repository holding `folder` (a file means its folder); 404 outside any, 403 above the root."""
    if not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    ceiling = ceiling_for(scope)
    result = await run_git(folder, ["rev-parse", "--show-toplevel"], ceiling=ceiling, limit=64 * 1024)
    top = result.stdout.decode("utf-8", "surrogateescape").rstrip("\n")
    if result.returncode != 0 or not top:
        raise ApiError(404, "Not inside a git repository")
    top = os.path.realpath(top)
    if not scope.contains(top):
        raise ApiError(403, "The repository is outside the allowed file root")
    return Repository(top, ceiling)


def checked_file(repository: Repository, scope: FileScope, file: str) -> str:
    """A file named relative to the repository's top, as given to git after `--`: never absolute,
    never climbing out with `..`, never NUL, and (with --root) never through a link out of the root."""
    if not file or "\0" in file or file.startswith("/"):
        raise ApiError(400, f"Not a file of the repository: {file!r}")
    normal = posixpath.normpath(file)
    if normal == ".." or normal.startswith("../"):
        raise ApiError(403, f"Outside the repository: {file!r}")
    parent = os.path.dirname(repository.absolute(normal)) or repository.top
    if not scope.contains(parent):
        raise ApiError(403, "Path is outside the allowed file root")
    return normal


class StatusCache:
    """The listing's marks: one `git status` per repository, reused for a couple of seconds, so opening
    folder after folder of one repository does not run it on every page."""

    def __init__(self, ttl: float = 2.0, size: int = 32) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = time.monotonic
        self._entries: OrderedDict[str, tuple[float, Status]] = OrderedDict()

    def get(self, top: str) -> Status | None:
        entry = self._entries.get(top)
        if entry is None or self._clock() - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, top: str, status: Status) -> None:
        self._entries[top] = (self._clock(), status)
        self._entries.move_to_end(top)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, top: str) -> None:
        """A change made through us (stage, commit...) shows at once."""
        self._entries.pop(top, None)
