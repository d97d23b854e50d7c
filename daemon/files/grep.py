"""grep: lines (or files) matching a pattern, found by ripgrep when it is installed, else in Python.

Files are read as the reference reads them: strict UTF-8 with universal newlines; binary files (a
NUL byte), files that are not UTF-8 and files over MAX_GREP_FILE_SIZE are skipped.

The pattern never runs on Python's backtracking `re` (one pattern could freeze the daemon): the
Python engine uses RE2 (daemon/files/patterns.py) and ripgrep its own linear-time engine. Both
search a line without its newline; the reference's `re` over `open()` lines saw the newline, which
differs only for patterns that can match the newline itself (`\\s+$` matched every line there,
only trailing blanks here). A search stops at its budget's deadline with what it found, marked
truncated, and never walks into /proc, /sys or /dev.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from daemon.errors import not_found
from daemon.files.mounts import RG_CWD, Excluded, pseudo_mounts
from daemon.files.paths import FileScope
from daemon.files.patterns import Regex, glob_matcher, user_regex
from daemon.files.scanning import Budget, SearchStopped, read_regular
from daemon.files.search import Json, is_file, is_utf8, walk

#: grep skips larger files (the reference reads any size); both engines draw the same line.
MAX_GREP_FILE_SIZE = 16 * 1024 * 1024
#: Symlinked files are handed to ripgrep by name, this many per run (command lines are bounded).
RG_BATCH = 500

#: Anchors at the text's ends, which defeat the whole-file prefilter (RE2 has no look-around).
_LINE_BOUND = ("\\A", "\\Z", "\\z")
_REGEX_SYNTAX = frozenset(".^$*+?{}[]\\|()")


@dataclass(frozen=True)
class GrepJob:
    """One grep request, validated: the compiled pattern (RE2) and what to collect."""

    query: str
    pattern: Regex
    literal: bool
    case_insensitive: bool
    include: tuple[str, ...]
    per_line: bool
    limit: int

    @classmethod
    def of(cls, query: str, *, regex: bool, case_insensitive: bool, include: list[str] | None = None,
           match_per_line: bool = True, max_results: int = 50) -> GrepJob:
        """The job for a request; a 400 for a pattern that is invalid, too big or not linear-time."""
        pattern = user_regex(query, literal=not regex, case_insensitive=case_insensitive)
        job = cls(query, pattern, not regex, case_insensitive, tuple(include or ()), match_per_line, max_results)
        job.wants  # noqa: B018 - compiles the include globs now, so a bad one is a 400 before any search
        return job

    @functools.cached_property
    def wants(self) -> Callable[[str], bool] | None:
        return glob_matcher(self.include)

    @functools.cached_property
    def plain(self) -> bool:
        """The query means itself, literally: a substring test finds every file with a match."""
        return self.literal or not any(char in _REGEX_SYNTAX for char in self.query)

    @functools.cached_property
    def whole(self) -> Regex | None:
        """The pattern searched once over a whole file, to skip files without a match cheaply:
        in multi-line mode `^` and `$` match at every line's ends, as they do on each line alone."""
        if not self.literal and any(token in self.query for token in _LINE_BOUND):
            return None
        return user_regex(self.query, literal=self.literal, case_insensitive=self.case_insensitive, multiline=True)

    def included(self, name: str) -> bool:
        return self.wants is None or self.wants(name)


class Hits:
    """Grep results collected up to the limit; `full` once the limit is reached (the reference's
    `truncated`, which it also sets when exactly `max_results` matches exist)."""

    def __init__(self, job: GrepJob) -> None:
        self.job = job
        self.items: list[Json] = []
        self.full = False

    def add(self, path: str, lines: list[tuple[int, str]]) -> None:
        if not lines or self.full:
            return
        if self.job.per_line:
            self.items.extend({"file": path, "line": number, "content": content}
                              for number, content in lines[:self.room()])
        else:
            self.items.append({"file": path})
        self.full = len(self.items) >= self.job.limit

    def room(self) -> int:
        return self.job.limit - len(self.items) if self.job.per_line else 1


def grep(target: str, query: str, *, regex: bool, case_insensitive: bool, include: list[str] | None,
         match_per_line: bool, max_results: int, scope: FileScope, rg: str | None,
         budget: Budget | None = None) -> Json:
    """Lines (or files) matching `query` under `target`, a directory or a file.

    With `rg` (ripgrep's path) a directory is scanned there; a single file, a query with a line
    break, or a pattern ripgrep refuses though RE2 accepts it is searched here. Past the budget's
    deadline the matches found so far are the answer, marked truncated.
    """
    if not os.path.exists(target):
        raise not_found("Search path not found")
    job = GrepJob.of(query, regex=regex, case_insensitive=case_insensitive, include=include,
                     match_per_line=match_per_line, max_results=max_results)
    budget = budget or Budget()
    hits = Hits(job)
    try:
        searched = False
        if rg and os.path.isdir(target) and not any(char in query for char in "\r\n\0"):
            searched = grep_with_rg(rg, target, hits, scope, budget)
        if not searched:
            grep_in_python(target, hits, scope, budget)
    except SearchStopped as stopped:
        if not stopped.expired:
            raise
        hits.full = True
    return {"query": query, "path": target, "matches": hits.items, "truncated": hits.full}


def grep_in_python(target: str, hits: Hits, scope: FileScope, budget: Budget) -> None:
    for path in _grep_files(target, hits.job, scope, budget):
        budget.check()
        text = read_text(path)
        if text is not None:
            hits.add(path, matching_lines(text, hits.job, hits.room()))
            if hits.full:
                return


def _grep_files(target: str, job: GrepJob, scope: FileScope, budget: Budget) -> Iterator[str]:
    if os.path.isfile(target):
        yield target  # a file named directly is searched whatever `include` says, as in the reference
        return
    for _, _, files in walk(target, scope, budget):
        for entry in files:
            if job.included(entry.name) and is_file(entry):
                yield entry.path


def read_text(path: str) -> str | None:
    """A file's text with universal newlines, or None if it is too big, binary or not UTF-8."""
    data = _read_plain(path)
    return None if data is None else _decoded(data)


def _read_plain(path: str) -> bytes | None:
    """A regular file's bytes, unless it is over the size cap or binary.

    A NUL byte counts as binary even in valid UTF-8 (the reference would read such a file), so
    both engines skip the same files: ripgrep treats them as binary.
    """
    data = read_regular(path, MAX_GREP_FILE_SIZE)
    return None if data is None or b"\0" in data else data


def _decoded(data: bytes) -> str | None:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def matching_lines(text: str, job: GrepJob, room: int) -> list[tuple[int, str]]:
    """Up to `room` (line number, content) pairs; each line is searched without its newline."""
    if job.plain and not job.case_insensitive and job.query not in text:
        return []
    data = text.encode()
    if job.whole is None:
        return _each_line(data, job.pattern, room)
    return _lines_the_whole_text_finds(data, job.pattern, job.whole, room)


def _each_line(data: bytes, pattern: Regex, room: int) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    pieces = data.split(b"\n")
    if not pieces[-1]:
        pieces.pop()  # after the last newline there is no line
    for number, piece in enumerate(pieces, 1):
        if pattern.search(piece) is not None:
            found.append((number, piece.decode()))
            if len(found) >= room:
                break
    return found


def _lines_the_whole_text_finds(data: bytes, pattern: Regex, whole: Regex, room: int) -> list[tuple[int, str]]:
    """Lines where the multi-line pattern finds a match, confirmed line by line.

    The first match of `whole` from a line's start begins in the first line (from there on) that
    matches alone, so only the lines it lands on are searched one by one, and a file is crossed
    once whatever the number of lines.
    """
    found: list[tuple[int, str]] = []
    position, number, counted = 0, 1, 0
    while len(found) < room:
        hit = whole.search(data, position)
        if hit is None:
            break
        start = data.rfind(b"\n", 0, hit.start()) + 1
        if start == len(data):
            break  # past the last newline: no line there
        end = data.find(b"\n", hit.start())
        end = len(data) if end < 0 else end
        number += data.count(b"\n", counted, start)
        counted = start
        line = data[start:end]
        if pattern.search(line) is not None:
            found.append((number, line.decode()))
        position = end + 1
        if position > len(data):
            break
    return found


# --- grep with ripgrep ----------------------------------------------------------------------------


def grep_with_rg(rg: str, directory: str, hits: Hits, scope: FileScope, budget: Budget) -> bool:
    """Run ripgrep over `directory` into `hits`; False if it refused the pattern.

    ripgrep walks past symlinks, where os.walk (and so the reference) reads symlinked files:
    `find` lists them meanwhile, and ripgrep searches them next, named one by one (it follows
    named paths). Results arrive in whatever order ripgrep's threads finish, so they are sorted
    into walk order at the end (also when the deadline cut the search short). Neither walks into
    a pseudo file system.
    """
    # With a sandbox, ripgrep leaves out what it hides too (the state folder in the workspace).
    excluded = Excluded(directory, None if scope.sandbox is None else
                        [*pseudo_mounts(), *scope.sandbox.hidden_below(directory)])
    if excluded.everything:
        return True
    job = hits.job
    try:
        with _symlinks_under(directory, excluded, budget) as symlinks:
            if not _read_rg(_rg_command(rg, job, [directory], excluded.rg_globs()), hits, budget):
                return False
            linked = [] if hits.full else _linked_files(symlinks(), job, scope)
        for start in range(0, len(linked), RG_BATCH):
            if not hits.full:
                _read_rg(_rg_command(rg, job, linked[start:start + RG_BATCH], None), hits, budget)
    finally:
        hits.items.sort(key=_walk_order)
    return True


def _rg_command(rg: str, job: GrepJob, paths: list[str], walk_globs: list[str] | None) -> list[str]:
    """ripgrep's command line; `walk_globs` (excluded folders) when it walks, None for named files."""
    # --hidden --no-ignore: search everything, as os.walk does. --crlf: `$` before "\r\n", as
    # universal newlines give. --encoding none: no BOM sniffing or UTF-16 decoding, as Python's
    # strict UTF-8 has none. (No --max-filesize: it costs a stat per file; the size cap is
    # applied to the files that match.)
    command = [rg, "--no-config", "--json", "--hidden", "--no-ignore", "--crlf", "--encoding", "none",
               "--no-messages"]
    if job.case_insensitive:
        command.append("--ignore-case")
    if job.literal:
        command.append("--fixed-strings")
    if not job.per_line:
        command += ["--max-count", "1"]
    if walk_globs is not None and job.include and all(_plain_glob(glob) for glob in job.include):
        # Narrows ripgrep's walk; the exact fnmatch test still runs on each result.
        for glob in job.include:
            command += ["--glob", glob]
    return [*command, *(walk_globs or []), "--regexp", job.query, "--", *paths]


def _plain_glob(glob: str) -> bool:
    """A glob that ripgrep reads exactly as fnmatch does on a basename."""
    return not any(char in glob for char in "[]{}\\/!\0") and "**" not in glob


def _read_rg(command: list[str], hits: Hits, budget: Budget) -> bool:
    """Feed ripgrep's matches into `hits` file by file, stopping ripgrep once they are full.

    False if ripgrep failed before writing anything: it refused the pattern. When the budget stops
    the search, ripgrep is killed (its output ends) and SearchStopped is raised here.
    """
    try:
        process = budget.spawn(command, cwd=RG_CWD)
    except (OSError, ValueError):  # gone since looked up, or an argument no command line can carry
        return False
    with process:
        try:
            answered = _read_rg_output(process, hits)
        finally:
            budget.release(process)
    budget.check()
    return answered or process.returncode != 2


def _read_rg_output(process: subprocess.Popen[bytes], hits: Hits) -> bool:
    """Whether ripgrep wrote anything; stops reading once `hits` is full."""
    answered = False
    assert process.stdout is not None
    lines: list[tuple[int, str]] = []
    for raw in process.stdout:
        if not raw.endswith(b"\n"):
            break  # cut short: ripgrep was killed while writing
        answered = True
        message = json.loads(raw)
        data = message["data"]
        if message["type"] == "match":
            # A line ripgrep gives as bytes is not UTF-8: the whole file will be skipped.
            lines.append((data["line_number"], data["lines"].get("text", "")))
        elif message["type"] == "end":
            path = _rg_path(data["path"])
            if path is not None and hits.job.included(os.path.basename(path)):
                hits.add(path, _confirmed(path, lines, hits.job, hits.room()))
            lines = []
            if hits.full:
                break  # the caller kills ripgrep
    return answered


def _rg_path(value: dict[str, str]) -> str | None:
    """ripgrep's {"text": ...} or {"bytes": base64}; None for names a JSON reply cannot carry."""
    if "text" in value:
        return value["text"]
    path = os.fsdecode(base64.b64decode(value["bytes"]))
    return path if is_utf8(path) else None


def _confirmed(path: str, lines: list[tuple[int, str]], job: GrepJob, room: int) -> list[tuple[int, str]]:
    """ripgrep's lines for a file, once the file proves to be what the reference reads: strict
    UTF-8 without NUL bytes. A file with lone "\\r" line ends is searched again here: ripgrep
    does not end lines there, Python's universal newlines do."""
    data = _read_plain(path)
    text = None if data is None else _decoded(data)
    if data is None or text is None:
        return []
    if data.count(b"\r") != data.count(b"\r\n"):
        return matching_lines(text, job, room)
    return [(number, content.rstrip("\r\n")) for number, content in lines[:room]]


def _linked_files(paths: list[str], job: GrepJob, scope: FileScope) -> list[str]:
    """The symlinks among `paths` that os.walk would have the reference read: links to files
    whose names pass `include`, and under `--root` only those that stay inside."""
    return [path for path in paths
            if is_utf8(path) and job.included(os.path.basename(path)) and os.path.isfile(path)
            and scope.contains(path)]


@contextlib.contextmanager
def _symlinks_under(directory: str, excluded: Excluded, budget: Budget) -> Iterator[Callable[[], list[str]]]:
    """Start listing the symlinks below `directory` (not following any, nor entering pseudo file
    systems) while ripgrep runs."""
    try:
        finder = budget.spawn(["find", directory, *excluded.find_prunes(), "-type", "l", "-print0"])
    except OSError:
        yield list
        return
    with finder:
        try:
            yield lambda: [os.fsdecode(raw) for raw in finder.communicate()[0].split(b"\0") if raw]
        finally:
            budget.release(finder)


def _walk_order(item: Json) -> tuple[tuple[tuple[int, str], ...], int]:
    """Where os.walk with sorted directories meets a match: a directory's files, then its subdirectories."""
    parts = item["file"].split("/")
    where = (*((1, part) for part in parts[:-1]), (0, parts[-1]))
    return where, item.get("line", 0)
