"""`git status --porcelain=v2 -z` and `git diff --numstat -z`, parsed into plain records.

The -z forms are used because they are the only ones whose names need no unquoting: a name with a
space, a tab, a newline or bytes that are not UTF-8 arrives as it is, ended by NUL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Change:
    """One changed path, relative to the repository's top."""

    path: str
    kind: str  # ordinary, renamed, copied, unmerged or untracked
    index: str = "."  # X of porcelain v2: the staged change (M, A, D, R, C, T, U) or "."
    worktree: str = "."  # Y: the unstaged change
    original: str | None = None  # a rename's or copy's source
    staged_added: int | None = None
    staged_removed: int | None = None
    unstaged_added: int | None = None
    unstaged_removed: int | None = None

    @property
    def staged(self) -> bool:
        return self.kind != "untracked" and self.index != "."

    @property
    def unstaged(self) -> bool:
        return self.kind == "untracked" or self.worktree != "."

    @property
    def mark(self) -> str:
        """The listing's letter: ? untracked, U conflict, R renamed, A added, D deleted, else M."""
        if self.kind == "untracked":
            return "?"
        if self.kind == "unmerged":
            return "U"
        if self.kind == "renamed":
            return "R"
        states = self.index + self.worktree
        for letter in ("A", "D"):
            if letter in states:
                return letter
        return "M"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "staged": self.staged, "unstaged": self.unstaged, "mark": self.mark}


@dataclass
class Status:
    branch: str | None = None  # None when HEAD is detached
    commit: str | None = None  # None before the first commit
    upstream: str | None = None
    ahead: int = 0
    behind: int = 0
    changes: list[Change] = field(default_factory=list)


def _text(raw: bytes) -> str:
    # surrogateescape keeps a name that is not UTF-8 exact, so it can be handed back to git.
    return raw.decode("utf-8", "surrogateescape")


def _records(output: bytes) -> Iterator[tuple[bytes, Iterator[bytes]]]:
    """Each non-empty NUL-ended record of `-z` output, with the fields still to come, from which a
    record that names two paths (a rename) takes its second."""
    fields = iter(output.split(b"\0"))
    for record in fields:
        if record:
            yield record, fields


def parse_status(output: bytes) -> Status:
    """Records of `git status --porcelain=v2 -z --branch`: headers, 1, 2, u and ? lines."""
    status = Status()
    for record, following in _records(output):
        tag = record[:2]
        if record.startswith(b"# "):
            _header(status, _text(record[2:]))
        elif tag == b"1 ":
            fields = record.split(b" ", 8)
            status.changes.append(Change(_text(fields[8]), "ordinary", chr(fields[1][0]), chr(fields[1][1])))
        elif tag == b"2 ":
            fields = record.split(b" ", 9)
            source = next(following, None)  # a rename's source is the next NUL-ended field
            original = _text(source) if source is not None else None
            kind = "copied" if fields[8].startswith(b"C") else "renamed"
            status.changes.append(Change(_text(fields[9]), kind, chr(fields[1][0]), chr(fields[1][1]), original))
        elif tag == b"u ":
            fields = record.split(b" ", 10)
            status.changes.append(Change(_text(fields[10]), "unmerged", chr(fields[1][0]), chr(fields[1][1])))
        elif tag == b"? ":
            status.changes.append(Change(_text(record[2:]), "untracked", "?", "?"))
    return status


def _header(status: Status, header: str) -> None:
    name, _, value = header.partition(" ")
    if name == "branch.oid":
        status.commit = None if value == "(initial)" else value
    elif name == "branch.head":
        status.branch = None if value == "(detached)" else value
    elif name == "branch.upstream":
        status.upstream = value
    elif name == "branch.ab":
        ahead, _, behind = value.partition(" ")
        status.ahead, status.behind = int(ahead.lstrip("+") or 0), int(behind.lstrip("-") or 0)


def parse_numstat(output: bytes) -> dict[str, tuple[int | None, int | None]]:
    """`git diff --numstat -z`: {path: (added, removed)}; None for a binary file's counts.

    A rename is `added TAB removed TAB NUL source NUL destination NUL`; it is keyed by the destination.
    """
    counts: dict[str, tuple[int | None, int | None]] = {}
    for record, following in _records(output):
        parts = record.split(b"\t", 2)
        if len(parts) < 3:
            continue
        added, removed, path = parts
        if not path:  # a rename: source and destination follow
            next(following, None)
            path = next(following, b"")
        counts[_text(path)] = (_count(added), _count(removed))
    return counts


def _count(raw: bytes) -> int | None:
    return None if raw == b"-" else int(raw)


def apply_counts(status: Status, staged: dict[str, tuple[int | None, int | None]],
                 unstaged: dict[str, tuple[int | None, int | None]]) -> None:
    for change in status.changes:
        if change.path in staged:
            change.staged_added, change.staged_removed = staged[change.path]
        if change.path in unstaged:
            change.unstaged_added, change.unstaged_removed = unstaged[change.path]
