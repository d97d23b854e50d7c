"""What the changes page and the hidden API do to a repository: plain functions over `run_git`.

Every file name goes after `--` (a name starting with `-` is a name, not an option) and pathspecs are
literal (GIT_LITERAL_PATHSPECS in the runner); a commit id must be hexadecimal before git sees it.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemon.errors import ApiError
from daemon.git.repo import Repository
from daemon.git.runner import GitResult, run_git
from daemon.git.status import Change, Status, apply_counts, parse_numstat, parse_status

#: A diff shown on a page or returned to an agent: past this it is cut (and says so).
DIFF_LIMIT = 2 * 1024 * 1024
#: Untracked files up to this size have their lines counted for the +/- column.
COUNT_LIMIT = 1024 * 1024
MAX_LOG = 200
MAX_MESSAGE = 64 * 1024
COMMIT_ID = re.compile(r"[0-9a-fA-F]{4,64}")
LOG_FIELDS = 5


async def git(repository: Repository, arguments: list[str], **options: Any) -> GitResult:
    return await run_git(repository.top, arguments, ceiling=repository.ceiling, **options)


def failed(result: GitResult, status: int = 409) -> ApiError:
    return ApiError(status, result.error_text or f"git failed (exit {result.returncode})")


async def read_status(repository: Repository, *, counts: bool = True) -> Status:
    result = await git(repository, ["status", "--porcelain=v2", "-z", "--branch", "--untracked-files=normal"])
    if result.returncode != 0:
        raise failed(result, 500 if result.returncode != 128 else 409)
    status = parse_status(result.stdout)
    if counts:
        staged, unstaged = await asyncio.gather(
            git(repository, ["diff", "--cached", "--numstat", "-z", "--no-ext-diff", "-M"]),
            git(repository, ["diff", "--numstat", "-z", "--no-ext-diff"]))
        apply_counts(status, parse_numstat(staged.stdout), parse_numstat(unstaged.stdout))
        await asyncio.to_thread(_count_untracked, repository, status.changes)
    return status


def _count_untracked(repository: Repository, changes: list[Change]) -> None:
    for change in changes:
        if change.kind == "untracked" and not change.path.endswith("/"):
            change.unstaged_added, change.unstaged_removed = _line_count(repository.absolute(change.path)), 0


def _line_count(path: str) -> int | None:
    """Lines of a small regular text file, opened without following a link or blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > COUNT_LIMIT:
            return None
        data = os.read(fd, COUNT_LIMIT + 1)
    finally:
        os.close(fd)
    if b"\0" in data:
        return None  # binary: no line count, as numstat says "-"
    return data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)


@dataclass(frozen=True)
class Diff:
    text: str
    truncated: bool


def _diff(result: GitResult) -> Diff:
    return Diff(result.stdout.decode("utf-8", "replace"), result.truncated)


async def diff(repository: Repository, file: str, staged: bool, untracked: bool = False) -> Diff:
    if untracked and not staged:
        # An untracked file's whole text is its change: against /dev/null (exit 1 means "differs").
        result = await git(repository, ["diff", "--no-index", "--no-ext-diff", "--", os.devnull, file],
                           limit=DIFF_LIMIT)
        return _diff(result)
    arguments = ["diff", "--no-ext-diff", "-M", *(["--cached"] if staged else []), "--", file]
    result = await git(repository, arguments, limit=DIFF_LIMIT)
    if result.returncode != 0 and not result.truncated:
        raise failed(result)
    return _diff(result)


async def stage(repository: Repository, files: list[str]) -> None:
    result = await git(repository, ["add", "-A", "--", *files], read=False)
    if result.returncode != 0:
        raise failed(result)


async def unstage(repository: Repository, files: list[str], has_commit: bool) -> None:
    # Before the first commit there is no HEAD to reset to: the files leave the index instead.
    arguments = ["reset", "-q", "HEAD", "--", *files] if has_commit else ["rm", "--cached", "-r", "-q", "--", *files]
    result = await git(repository, arguments, read=False)
    if result.returncode != 0:
        raise failed(result)


#: Keeps a file's current bytes (the history), or moves a path to the trash; run in a worker thread.
Saver = Callable[[str], object]


async def discard(repository: Repository, files: list[str], status: Status, *,
                  keep: Saver | None, trash: Saver | None) -> dict[str, list[str]]:
    """Throw away the unstaged changes of `files`. A tracked file's current text goes to the history
    first (when history is on); an untracked file goes to the trash, and without one it is refused:
    nothing is thrown away for good."""
    changes = {change.path.rstrip("/"): change for change in status.changes}
    tracked: list[str] = []
    untracked: list[str] = []
    for file in files:
        change = changes.get(file.rstrip("/"))
        if change is None or not change.unstaged:
            raise ApiError(409, f"{file}: no unstaged change to discard")
        (untracked if change.kind == "untracked" else tracked).append(file)
    if untracked and trash is None:
        raise ApiError(409, "Untracked files are only discarded to the trash, which is off")
    kept = []
    for file in tracked:
        path = repository.absolute(file)
        if keep is not None and os.path.isfile(path) and not os.path.islink(path):
            await asyncio.to_thread(keep, path)
            kept.append(file)
    if tracked:
        result = await git(repository, ["checkout", "-q", "--", *tracked], read=False)
        if result.returncode != 0:
            raise failed(result)
    for file in untracked:
        await asyncio.to_thread(trash, repository.absolute(file.rstrip("/")))  # type: ignore[arg-type]
    return {"restored": tracked, "trashed": untracked, "kept": kept}


async def commit(repository: Repository, message: str) -> str:
    """Commit what is staged, with the user's hooks (never --no-verify); the new commit's id."""
    if not message.strip():
        raise ApiError(422, "A commit needs a message")
    if len(message.encode()) > MAX_MESSAGE:
        raise ApiError(413, "The commit message is too long")
    # The message on stdin: whatever it starts with, it is never read as an option.
    result = await git(repository, ["commit", "-q", "--file=-", "--cleanup=strip"], read=False,
                       stdin=message.encode())
    if result.returncode != 0:
        raise ApiError(409, result.error_text or (result.stdout.decode("utf-8", "replace").strip()
                                                  or "Nothing to commit"))
    head = await git(repository, ["rev-parse", "--verify", "-q", "HEAD"])
    return head.stdout.decode().strip()


@dataclass(frozen=True)
class LogEntry:
    commit: str
    author: str
    email: str
    time: int
    subject: str


async def log(repository: Repository, limit: int) -> list[LogEntry]:
    head = await git(repository, ["rev-parse", "--verify", "-q", "HEAD"])
    if head.returncode != 0:
        return []  # no commit yet
    limit = max(1, min(limit, MAX_LOG))
    result = await git(repository, ["log", f"-n{limit}", "--format=tformat:%H%x00%an%x00%ae%x00%at%x00%s%x00",
                                    "HEAD", "--"])
    if result.returncode != 0:
        raise failed(result, 500)
    return parse_log(result.stdout)


def parse_log(output: bytes) -> list[LogEntry]:
    fields = [field.lstrip(b"\n").decode("utf-8", "replace") for field in output.split(b"\0")]
    return [LogEntry(fields[start], fields[start + 1], fields[start + 2], int(fields[start + 3] or 0),
                     fields[start + 4])
            for start in range(0, len(fields) - LOG_FIELDS + 1, LOG_FIELDS)]


def check_commit_id(commit: str) -> str:
    if not COMMIT_ID.fullmatch(commit):
        raise ApiError(400, "A commit id is 4 to 64 hexadecimal digits")
    return commit


async def show(repository: Repository, commit_id: str) -> dict[str, Any]:
    commit_id = check_commit_id(commit_id)
    header = await git(repository, ["show", "-s", "--format=%H%x00%an%x00%ae%x00%at%x00%B", commit_id, "--"])
    if header.returncode != 0:
        raise ApiError(404, f"No commit {commit_id} in this repository")
    full, author, email, when, message = header.stdout.decode("utf-8", "replace").split("\0", 4)
    patch = await git(repository, ["show", "--format=", "--patch", "--no-ext-diff", "-M", full, "--"],
                      limit=DIFF_LIMIT)
    body = _diff(patch)
    return {"commit": full, "author": author, "email": email, "time": int(when or 0),
            "message": message.strip(), "diff": body.text, "truncated": body.truncated}
