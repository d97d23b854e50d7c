"""File-name searches as plain synchronous functions: glob, search (ranked names) and matches
(names and text), plus the walk they share with grep (daemon/files/grep.py).

They run in a worker thread, take absolute paths the caller has already resolved and confined, and
raise ApiError with the reference's messages. Walks visit what `os.walk` would, in its top-down
order with directories sorted, so answers are the reference's and do not depend on the disk's order.
Under `--root` (`scope.root`), symlinks that lead outside are neither reported nor followed.

Every walk checks its Budget (daemon/files/scanning.py) between folders and files, never enters a
pseudo file system (/proc, /sys, /dev: daemon/files/mounts.py), and reads only regular files.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import io
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

from daemon.errors import bad_request, not_found
from daemon.files.mounts import RG_CWD, Excluded
from daemon.files.paths import FileScope
from daemon.files.patterns import glob_matcher
from daemon.files.scanning import Budget, SearchStopped, open_regular, read_regular

#: The reference's limits for /files/matches.
MAX_CONTENT_MATCHES_PER_FILE = 3
MAX_CONTENT_SEARCH_FILE_SIZE = 1024 * 1024
BINARY_SNIFF_SIZE = 8192
READ_CHUNK = 1024 * 1024

Json = dict[str, Any]
DirEntries = list[os.DirEntry[str]]


# --- walking --------------------------------------------------------------------------------------


def walk(top: str, scope: FileScope, budget: Budget | None = None) -> Iterator[tuple[str, DirEntries, DirEntries]]:
    """`os.walk(top)` with sorted entries: yields (directory, dirs, files) as DirEntry lists.

    Symlinked directories are listed among `dirs` but not entered, as os.walk does; nor are pseudo
    file systems (a `top` inside one yields nothing). The caller may prune `dirs` in place before
    the walk goes on. Names that are not valid UTF-8 are left out: they could not be carried in a
    JSON reply (the reference fails the whole request on them).
    """
    budget = budget or Budget()
    excluded = Excluded(top)
    stack = [] if excluded.everything else [top]
    while stack:
        budget.check()
        directory = stack.pop()
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            continue
        dirs: DirEntries = []
        files: DirEntries = []
        for entry in entries:
            if not is_utf8(entry.name) or (scope.root and _is_link(entry) and not scope.contains(entry.path)):
                continue
            if scope.sandbox is not None and not scope.contains(entry.path):
                continue  # what the sandbox hides from commands (its state folder in the workspace)
            (dirs if _is_dir(entry) else files).append(entry)
        yield directory, dirs, files
        stack.extend(entry.path for entry in reversed(dirs) if not _is_link(entry) and not excluded.skips(entry.path))


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _by_name(dirs: DirEntries, files: DirEntries) -> list[tuple[os.DirEntry[str], str]]:
    typed = [(entry, "directory") for entry in dirs] + [(entry, "file") for entry in files]
    return sorted(typed, key=lambda pair: pair[0].name)


def _prefix(directory: str) -> str:
    """What to cut off an entry's path to get its path relative to `directory`."""
    return directory.rstrip("/") + "/"


def _nothing(name: str) -> bool:
    return False


# --- glob -----------------------------------------------------------------------------------------


def glob(target: str, pattern: str, *, exclude: list[str] | None, kind: str | None, max_results: int,
         scope: FileScope, budget: Budget | None = None) -> Json:
    """Entries whose name or relative path matches `pattern` (fnmatch), dotfiles included.

    Past the budget's deadline, what was found so far is the answer, marked truncated.
    """
    if not os.path.isdir(target):
        raise not_found("Search directory not found")
    wanted = glob_matcher([pattern]) or _nothing
    excluded = glob_matcher(exclude or ())
    found: list[Json] = []
    try:
        truncated = _glob_into(found, target, wanted, excluded, kind, max_results, scope, budget)
    except SearchStopped as stopped:
        if not stopped.expired:
            raise
        truncated = True
    return {"pattern": pattern, "path": target, "matches": found, "truncated": truncated}


def _glob_into(found: list[Json], target: str, wanted: Callable[[str], bool], excluded: Callable[[str], bool] | None,
               kind: str | None, max_results: int, scope: FileScope, budget: Budget | None) -> bool:
    prefix = _prefix(target)
    for _, dirs, files in walk(target, scope, budget):
        for entry, entry_kind in _by_name(dirs if kind in ("any", "directory") else [],
                                          files if kind in ("any", "file") else []):
            relative = entry.path[len(prefix):]
            if not (wanted(entry.name) or wanted(relative)):
                continue
            if excluded and (excluded(entry.name) or excluded(relative)):
                continue
            try:
                info = entry.stat()
            except OSError:
                continue
            found.append({"path": relative, "type": entry_kind, "size": info.st_size, "modified": info.st_mtime})
            if len(found) >= max_results:
                return True
    return False


# --- the entries behind search and matches --------------------------------------------------------


def search_entries(root: str, scope: FileScope, show_hidden: bool, *, git_files_as_files: bool,
                   budget: Budget) -> Iterator[tuple[str, str]]:
    """(path, "file" | "directory") below `root`: what git lists (tracked and untracked files not
    ignored, plus the directories leading to them) or, outside a work tree, every entry walked."""
    if Excluded(root).everything:
        return
    try:
        git = budget.spawn(["git", "-C", root, "ls-files", "-co", "--exclude-standard", "-z", "--", "."])
    except OSError:
        yield from _walked_entries(root, scope, show_hidden, budget)
        return
    with git:
        try:
            assert git.stdout is not None
            records = _nul_records(git.stdout)
            first = next(records, None)
            if first is None and git.wait() != 0:
                yield from _walked_entries(root, scope, show_hidden, budget)
                return
            listed = itertools.chain([first], records) if first is not None else iter(())
            for entry in _git_entries(root, listed, scope, show_hidden, git_files_as_files):
                budget.check()
                yield entry
        finally:
            budget.release(git)


def _nul_records(source: IO[bytes]) -> Iterator[bytes]:
    pending = b""
    while chunk := source.read(READ_CHUNK):
        records = (pending + chunk).split(b"\0")
        pending = records.pop()
        yield from records
    if pending:
        yield pending


def _git_entries(root: str, listed: Iterable[bytes], scope: FileScope, show_hidden: bool,
                 files_as_files: bool) -> Iterator[tuple[str, str]]:
    prefix = _prefix(root)
    seen: set[str] = set()
    previous = ""
    for raw in listed:
        relative = os.fsdecode(raw)
        if not is_utf8(relative) or (not show_hidden and _hidden(relative)):
            continue
        path = (prefix + relative).rstrip("/")
        # Unmerged files are listed once per stage; git never lists a path through a symlinked
        # directory, so only the listed path itself can be a link leading outside the root.
        if path == previous or (scope.root and os.path.islink(path) and not scope.contains(path)):
            continue
        previous = path
        yield path, "file" if files_as_files or not os.path.isdir(path) else "directory"
        parent = os.path.dirname(path)
        while parent != root and parent.startswith(prefix) and parent not in seen:
            seen.add(parent)
            yield parent, "directory" if os.path.isdir(parent) else "file"
            parent = os.path.dirname(parent)


def _hidden(relative: str) -> bool:
    return relative.startswith(".") or "/." in relative


def _walked_entries(root: str, scope: FileScope, show_hidden: bool, budget: Budget) -> Iterator[tuple[str, str]]:
    for _, dirs, files in walk(root, scope, budget):
        if not show_hidden:
            dirs[:] = [entry for entry in dirs if not entry.name.startswith(".")]
            files = [entry for entry in files if not entry.name.startswith(".")]
        for entry, kind in _by_name(dirs, files):
            yield entry.path, kind


# --- search: ranked names -------------------------------------------------------------------------


class Best:
    """The `size` smallest keys seen with their items, in order.

    Keys end with a sequence number, so earlier entries win ties, as in `heapq.nsmallest`.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.keys: list[tuple[Any, ...]] = []
        self.items: list[Json] = []

    def admits(self, key: tuple[Any, ...]) -> bool:
        return len(self.keys) < self.size or key < self.keys[-1]

    def add(self, key: tuple[Any, ...], item: Json) -> None:
        index = bisect.bisect(self.keys, key)
        self.keys.insert(index, key)
        self.items.insert(index, item)
        del self.keys[self.size:], self.items[self.size:]


def search(target: str, query: str, *, limit: int, kind: str | None, show_hidden: bool,
           scope: FileScope, budget: Budget | None = None) -> Json:
    """Entries whose name contains `query`: exact names first, then prefixes, then shorter names.

    Only entries that can still make the list are stat'ed (the reference stats every one).
    """
    if not os.path.isdir(target):
        raise not_found("Search directory not found")
    needle = query.strip().lower()
    prefix = _prefix(target)
    best = Best(limit)
    listed = search_entries(target, scope, show_hidden, git_files_as_files=True, budget=budget or Budget())
    for sequence, (path, entry_kind) in enumerate(listed):
        if kind != "any" and entry_kind != kind:
            continue
        name = path.rsplit("/", 1)[-1]
        lower = name.lower()
        if needle not in lower:
            continue
        rank = 0 if lower == needle else 1 if lower.startswith(needle) else 2
        key = (rank, len(name), path[len(prefix):].lower(), sequence)
        if not best.admits(key):
            continue
        try:
            info = os.stat(path)
        except OSError:
            continue
        best.add(key, {"path": path, "name": name, "type": entry_kind, "size": info.st_size,
                       "modified": info.st_mtime})
    return {"results": best.items}


# --- matches: names and contents ------------------------------------------------------------------


def matches(target: str, query: str, *, show_hidden: bool, offset: int, limit: int, scope: FileScope,
            rg: str | None, budget: Budget | None = None) -> Json:
    """A page of entries whose name, relative path or text contains `query` (case-insensitively).

    Scores: 0 exact name, 1 name prefix, 2 name contains, 3 relative path contains, 4 text only.
    Text is searched in files ripgrep finds (honouring ignore files) or, without it, in every
    file up to 1 MiB without NUL bytes; at most three lines per file, with UTF-16 columns.
    """
    needle = query.strip()
    if not needle:
        raise bad_request("Query must not be blank")
    if not os.path.isdir(target):
        raise not_found("Search directory not found")
    budget = budget or Budget()
    with ThreadPoolExecutor(max_workers=1) as pool:
        found = pool.submit(rg_files_with_matches, rg, needle, target, show_hidden, budget) if rg else None
        try:
            reader = ContentReader(needle.lower(), found)
            candidates = Counted(_match_candidates(target, needle.lower(), show_hidden, scope, reader, budget))
            page = heapq.nsmallest(offset + limit, candidates)[offset:]
            results = [_match_result(target, candidate, reader) for candidate in page]
        finally:
            budget.stop(expired=False)  # ends a ripgrep still running (the page did not need it)
    more = candidates.count > offset + limit
    return {"results": results, "next_offset": offset + limit if more else None}


#: (score, relative path length, lowercase relative path, sequence, path, type, content matches or None)
Candidate = tuple[int, int, str, int, str, str, list[Json] | None]


class Counted:
    """An iterator that counts what passes through it."""

    def __init__(self, source: Iterator[Candidate]) -> None:
        self.source = source
        self.count = 0

    def __iter__(self) -> Iterator[Candidate]:
        for item in self.source:
            self.count += 1
            yield item


def _match_candidates(root: str, needle: str, show_hidden: bool, scope: FileScope,
                      reader: ContentReader, budget: Budget) -> Iterator[Candidate]:
    prefix = _prefix(root)
    listed = search_entries(root, scope, show_hidden, git_files_as_files=False, budget=budget)
    for sequence, (path, kind) in enumerate(listed):
        relative = path[len(prefix):]
        name = relative.rsplit("/", 1)[-1].lower()
        relative_lower = relative.lower()
        score = (0 if name == needle else 1 if name.startswith(needle) else 2 if needle in name
                 else 3 if needle in relative_lower else 4)
        # Text is read now only where it decides whether the entry is listed at all; the page's
        # other files are read once the page is known.
        content = None
        if score == 4:
            content = reader.content_matches(path) if kind == "file" else []
            if not content:
                continue
        yield score, len(relative), relative_lower, sequence, path, kind, content


def _match_result(root: str, candidate: Candidate, reader: ContentReader) -> Json:
    score, _, _, _, path, kind, content = candidate
    if content is None:
        content = reader.content_matches(path) if kind == "file" else []
    relative = path[len(_prefix(root)):]
    return {"path": path, "relative_path": relative, "name": relative.rsplit("/", 1)[-1], "type": kind,
            "name_match": score < 4, "content_matches": content}


def rg_files_with_matches(rg: str, needle: str, root: str, show_hidden: bool, budget: Budget) -> set[str] | None:
    """The files ripgrep finds `needle` in, honouring ignore files; None if it could not search."""
    command = [rg, "--no-config", "--files-with-matches", "--null", "--no-messages", "--fixed-strings",
               "--ignore-case", *(["--hidden"] if show_hidden else []), *Excluded(root).rg_globs(),
               "--", needle, root]
    try:
        process = budget.spawn(command, cwd=RG_CWD)
    except (OSError, ValueError, SearchStopped):  # gone since looked up, or a query no command line can carry
        return None
    with process:
        try:
            output, _ = process.communicate()
        finally:
            budget.release(process)
    # 2 also means "some file was unreadable"; the rest of the answer is still good (the
    # reference drops it all and reads every file itself). Killed (negative), it is no answer.
    if process.returncode < 0 or (process.returncode not in (0, 1) and not output):
        return None
    return {_normalized(os.fsdecode(raw)) for raw in output.split(b"\0") if raw}


def _normalized(path: str) -> str:
    path = os.path.normpath(path)
    return path[1:] if path.startswith("//") else path


class ContentReader:
    """Reads the matching lines of a file the way the reference does, in one of its two modes.

    With ripgrep's list: only listed files, lines split at "\\n" only. Without it: files up to
    1 MiB with no NUL in the first 8 KiB, universal newlines, then `str.splitlines` pieces.
    """

    def __init__(self, needle: str, found: Future[set[str] | None] | None) -> None:
        self.needle = needle
        self._found = found

    @functools.cached_property
    def listed(self) -> set[str] | None:
        """ripgrep's files, waited for when first needed (it runs while the entries are listed)."""
        return self._found.result() if self._found is not None else None

    def content_matches(self, path: str) -> list[Json]:
        listed = self.listed
        if (listed is not None and path not in listed) or os.path.islink(path):
            return []
        try:
            return self._listed_file(path) if listed is not None else self._any_file(path)
        except (OSError, UnicodeError):
            return []

    def _listed_file(self, path: str) -> list[Json]:
        raw = open_regular(path)
        if raw is None:
            return []
        with io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="\n") as source:
            return self._first_lines(enumerate(source, 1))

    def _any_file(self, path: str) -> list[Json]:
        data = read_regular(path, MAX_CONTENT_SEARCH_FILE_SIZE)
        if data is None or b"\0" in data[:BINARY_SNIFF_SIZE]:
            return []
        text = data.decode(errors="replace")
        text = text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
        if self.needle not in text.lower():
            return []
        return self._first_lines(enumerate(text.splitlines(), 1))

    def _first_lines(self, lines: Iterable[tuple[int, str]]) -> list[Json]:
        found: list[Json] = []
        for number, text in lines:
            index = text.lower().find(self.needle)
            if index >= 0:
                # The index into the lowercased line is applied to the original, as the reference does.
                column = len(text[:index].encode("utf-16-le")) // 2 + 1
                found.append({"line": number, "column": column, "text": text.rstrip("\r\n")})
                if len(found) >= MAX_CONTENT_MATCHES_PER_FILE:
                    break
        return found
