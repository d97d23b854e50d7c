"""grep: lines (or files) matching a pattern, found by ripgrep when it is installed, else in Python.

Files are read as the reference reads them: strict UTF-8 with universal newlines; binary files (a
NUL byte), files that are not UTF-8 and files over MAX_GREP_FILE_SIZE are skipped. The Python
engine searches each line with its newline, exactly as the reference's `re` over `open()` lines
does. ripgrep matches a line without its newline, which differs only for patterns that can match
the newline itself (`\\s+$` matches every line in the reference, trailing blanks in ripgrep).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from daemon.errors import bad_request, not_found
from daemon.files.paths import FileScope
from daemon.files.search import Json, fnmatcher, is_file, is_utf8, walk
from daemon.resources import system_environment

#: grep skips larger files (the reference reads any size); both engines draw the same line.
MAX_GREP_FILE_SIZE = 16 * 1024 * 1024
#: Symlinked files are handed to ripgrep by name, this many per run (command lines are bounded).
RG_BATCH = 500

#: Constructs that look beyond the line they are in, which defeat the whole-file prefilter.
_LINE_BOUND = ("(?<", "(?=", "(?!", "\\A", "\\Z")
_REGEX_SYNTAX = frozenset(".^$*+?{}[]\\|()")


@dataclass(frozen=True)
class GrepJob:
    """One grep request, validated: the compiled pattern and what to collect."""

    query: str
    pattern: re.Pattern[str]
    literal: bool
    case_insensitive: bool
    include: tuple[str, ...]
    per_line: bool
    limit: int

    @functools.cached_property
    def wants(self) -> Callable[[str], bool] | None:
        return fnmatcher(self.include)

    @functools.cached_property
    def plain(self) -> bool:
        """The query means itself, literally: a substring test finds every file with a match."""
        return self.literal or not any(char in _REGEX_SYNTAX for char in self.query)

    @functools.cached_property
    def whole(self) -> re.Pattern[str] | None:
        """The pattern searched once over a whole file, to skip files without a match cheaply."""
        if not self.literal and any(token in self.query for token in _LINE_BOUND):
            return None
        return re.compile(self.pattern.pattern, self.pattern.flags | re.MULTILINE)

    def included(self, name: str) -> bool:
        return self.wants is None or self.wants(name)

    def may_match(self, text: str) -> bool:
        """False only if no line of `text` can match (a superset test, never a false negative).

        Lines are searched with their newline, as the reference does; doubling every newline puts
        the context a line's end has (nothing, or a newline) after each one in the whole text.
        """
        if self.plain and not self.case_insensitive:
            return self.query in text
        if self.whole is None:
            return True
        return self.whole.search(text.replace("\n", "\n\n")) is not None


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
         match_per_line: bool, max_results: int, scope: FileScope, rg: str | None) -> Json:
    """Lines (or files) matching `query` under `target`, a directory or a file.

    With `rg` (ripgrep's path) a directory is scanned there; a single file, a query with a line
    break, or a pattern ripgrep refuses though Python accepts it (look-arounds, back-references)
    is searched here.
    """
    if not os.path.exists(target):
        raise not_found("Search path not found")
    flags = re.IGNORECASE if case_insensitive else 0
    try:
        pattern = re.compile(query if regex else re.escape(query), flags)
    except re.error as exc:
        raise bad_request(f"Invalid regex: {exc}") from None
    job = GrepJob(query, pattern, not regex, case_insensitive, tuple(include or ()), match_per_line, max_results)
    hits = None
    if rg and os.path.isdir(target) and not any(char in query for char in "\r\n\0"):
        hits = grep_with_rg(rg, target, job, scope)
    if hits is None:
        hits = grep_in_python(target, job, scope)
    return {"query": query, "path": target, "matches": hits.items, "truncated": hits.full}


def grep_in_python(target: str, job: GrepJob, scope: FileScope) -> Hits:
    hits = Hits(job)
    for path in _grep_files(target, job, scope):
        text = read_text(path)
        if text is not None:
            hits.add(path, matching_lines(text, job, hits.room()))
            if hits.full:
                break
    return hits


def _grep_files(target: str, job: GrepJob, scope: FileScope) -> Iterator[str]:
    if os.path.isfile(target):
        yield target  # a file named directly is searched whatever `include` says, as in the reference
        return
    for _, _, files in walk(target, scope):
        for entry in files:
            if job.included(entry.name) and is_file(entry):
                yield entry.path


def read_text(path: str) -> str | None:
    """A file's text with universal newlines, or None if it is too big, binary or not UTF-8."""
    data = _read_plain(path)
    return None if data is None else _decoded(data)


def _read_plain(path: str) -> bytes | None:
    """A file's bytes, unless it is over the size cap or binary.

    A NUL byte counts as binary even in valid UTF-8 (the reference would read such a file), so
    both engines skip the same files: ripgrep treats them as binary.
    """
    try:
        with open(path, "rb", buffering=0) as source:
            if os.fstat(source.fileno()).st_size > MAX_GREP_FILE_SIZE:
                return None
            # readall sizes its buffer from fstat; read(n) would allocate n bytes for every file.
            data = source.readall()
    except OSError:
        return None
    return None if len(data) > MAX_GREP_FILE_SIZE or b"\0" in data else data


def _decoded(data: bytes) -> str | None:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def matching_lines(text: str, job: GrepJob, room: int) -> list[tuple[int, str]]:
    """Up to `room` (line number, content) pairs; each line is searched with its newline."""
    if not job.may_match(text):
        return []
    found: list[tuple[int, str]] = []
    search = job.pattern.search
    pieces = text.split("\n")
    last = pieces.pop()
    for number, piece in enumerate(pieces, 1):
        if search(piece + "\n"):
            found.append((number, piece))
            if len(found) >= room:
                return found
    if last and search(last):
        found.append((len(pieces) + 1, last))
    return found


# --- grep with ripgrep ----------------------------------------------------------------------------


def grep_with_rg(rg: str, directory: str, job: GrepJob, scope: FileScope) -> Hits | None:
    """Run ripgrep over `directory`; None if it refused the pattern.

    ripgrep walks past symlinks, where os.walk (and so the reference) reads symlinked files:
    `find` lists them meanwhile, and ripgrep searches them next, named one by one (it follows
    named paths). Results arrive in whatever order ripgrep's threads finish, so they are sorted
    into walk order at the end.
    """
    hits = Hits(job)
    with _symlinks_under(directory) as symlinks:
        if not _read_rg(_rg_command(rg, job, [directory], walk=True), hits):
            return None
        linked = [] if hits.full else _linked_files(symlinks(), job, scope)
    for start in range(0, len(linked), RG_BATCH):
        if not hits.full:
            _read_rg(_rg_command(rg, job, linked[start:start + RG_BATCH], walk=False), hits)
    hits.items.sort(key=_walk_order)
    return hits


def _rg_command(rg: str, job: GrepJob, paths: list[str], *, walk: bool) -> list[str]:
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
    if walk and job.include and all(_plain_glob(glob) for glob in job.include):
        # Narrows ripgrep's walk; the exact fnmatch test still runs on each result.
        for glob in job.include:
            command += ["--glob", glob]
    return [*command, "--regexp", job.query, "--", *paths]


def _plain_glob(glob: str) -> bool:
    """A glob that ripgrep reads exactly as fnmatch does on a basename."""
    return not any(char in glob for char in "[]{}\\/!\0") and "**" not in glob


def _read_rg(command: list[str], hits: Hits) -> bool:
    """Feed ripgrep's matches into `hits` file by file, stopping ripgrep once they are full.

    False if ripgrep failed before writing anything: it refused the pattern.
    """
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   env=system_environment())
    except (OSError, ValueError):  # gone since looked up, or an argument no command line can carry
        return False
    answered = False
    with process:
        assert process.stdout is not None
        lines: list[tuple[int, str]] = []
        for raw in process.stdout:
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
                    process.kill()
                    break
        status = process.wait()
    return answered or status != 2


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
def _symlinks_under(directory: str) -> Iterator[Callable[[], list[str]]]:
    """Start listing the symlinks below `directory` (not following any) while ripgrep runs."""
    finder = None
    with contextlib.suppress(OSError):
        finder = subprocess.Popen(["find", directory, "-type", "l", "-print0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=system_environment())
    if finder is None:
        yield list
        return
    with finder:
        try:
            yield lambda: [os.fsdecode(raw) for raw in finder.communicate()[0].split(b"\0") if raw]
        finally:
            finder.kill()


def _walk_order(item: Json) -> tuple[tuple[tuple[int, str], ...], int]:
    """Where os.walk with sorted directories meets a match: a directory's files, then its subdirectories."""
    parts = item["file"].split("/")
    where = (*((1, part) for part in parts[:-1]), (0, parts[-1]))
    return where, item.get("line", 0)
