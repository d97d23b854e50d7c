"""The changes page `/changes?path=`: what changed in the repository holding a folder.

Every changed file with its +/- counts and its diffs (staged and unstaged), buttons to stage,
unstage and discard (static/js/changes.js calls the hidden /git API), a commit box, and the recent
log; `&commit=<id>` shows that commit's diff. The page calls the same `git.actions` as the API.
Diff lines reach the template as text with a kind; Jinja escapes them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from aiohttp import web
from msgspec import Meta, Struct

from daemon.errors import ApiError
from daemon.git import actions
from daemon.git.endpoints import repository_of, status_reply
from daemon.git.repo import Repository
from daemon.git.status import Change
from daemon.http.endpoints import Call
from daemon.http.inputs import NoInput
from daemon.pages.layout import breadcrumbs, browse_url, render

#: Files whose diffs are put into the page; past it the list still shows every file.
MAX_DIFFS = 60
#: Lines of one diff put into the page.
MAX_LINES = 3000
LOG_LENGTH = 20
HEADER_PREFIXES = ("diff --git", "index ", "--- ", "+++ ", "new file", "deleted file", "old mode", "new mode",
                   "similarity", "dissimilarity", "rename ", "copy ", "Binary files")


class ChangesQuery(Struct, kw_only=True):
    path: Annotated[str, Meta(description="A folder inside the repository.")] = ""
    commit: str = ""


@dataclass(frozen=True)
class Line:
    kind: str  # header, hunk, added, removed, context or note
    text: str


@dataclass(frozen=True)
class RenderedDiff:
    lines: list[Line]
    cut: bool  # not every line is shown (capped by git or here)


def diff_lines(text: str, truncated: bool = False, max_lines: int = MAX_LINES) -> RenderedDiff:
    """A unified diff as kinds of lines. Inside a hunk a `--- x` line is a removed line, not a header."""
    lines: list[Line] = []
    in_hunk = False
    raw = text.split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    for line in raw[:max_lines]:
        if line.startswith("diff --git"):
            in_hunk = False
        if line.startswith("@@"):
            in_hunk = True
            lines.append(Line("hunk", line))
        elif not in_hunk and line.startswith(HEADER_PREFIXES):
            lines.append(Line("header", line))
        elif in_hunk and line.startswith("+"):
            lines.append(Line("added", line))
        elif in_hunk and line.startswith("-"):
            lines.append(Line("removed", line))
        elif line.startswith("\\"):
            lines.append(Line("note", line))
        else:
            lines.append(Line("context", line))
    return RenderedDiff(lines, truncated or len(raw) > max_lines)


async def file_diffs(repository: Repository, change: Change) -> dict[str, RenderedDiff | None]:
    staged = unstaged = None
    if change.staged:
        result = await actions.diff(repository, change.path, True)
        staged = diff_lines(result.text, result.truncated)
    if change.unstaged and not change.path.endswith("/"):
        result = await actions.diff(repository, change.path, False, change.kind == "untracked")
        unstaged = diff_lines(result.text, result.truncated)
    return {"staged_diff": staged, "unstaged_diff": unstaged}


async def changes_page(call: Call[ChangesQuery, NoInput]) -> web.Response:
    repository = await repository_of(call, call.query.path)
    status = await actions.read_status(repository)
    shown = status.changes[:MAX_DIFFS]
    diffs, log = await asyncio.gather(asyncio.gather(*(file_diffs(repository, change) for change in shown)),
                                      actions.log(repository, LOG_LENGTH))
    files = [{**change.to_json(), **diff} for change, diff in zip(shown, diffs, strict=True)]
    files += [change.to_json() for change in status.changes[MAX_DIFFS:]]
    context: dict[str, Any] = {
        "repo": status_reply(repository, status), "files": files, "log": log, "crumbs": breadcrumbs(repository.top),
        "path": repository.top, "back_url": browse_url(repository.top), "diff_cap": MAX_DIFFS,
        "commit": None, "commit_error": "",
        "commit_url": lambda commit: "/changes?" + urlencode({"path": repository.top, "commit": commit}),
    }
    if call.query.commit:
        try:
            shown_commit = await actions.show(repository, call.query.commit)
        except ApiError as exc:
            context["commit_error"] = str(exc.detail)
        else:
            rendered = diff_lines(shown_commit["diff"], shown_commit["truncated"])
            context["commit"] = {**shown_commit, "rendered": rendered}
    return render(call.request, "changes.html", context)
