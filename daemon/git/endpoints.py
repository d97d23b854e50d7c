"""The hidden git API (kept out of /openapi.json): status, diff, stage, unstage, discard, commit, log, show.

Handlers only resolve the folder (as every file endpoint does, so --root confines it) and the
repository, then call `git.actions`. The changes page calls the same functions.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from dataclasses import asdict
from typing import Any

from aiohttp import web
from msgspec import Struct

from daemon import audit
from daemon.errors import ApiError
from daemon.files.locate import from_home
from daemon.git import actions
from daemon.git.repo import Repository, StatusCache, checked_file, find_repository
from daemon.git.runner import git_available
from daemon.git.status import Status
from daemon.http.endpoints import Call, Endpoint, hidden
from daemon.http.inputs import NoInput
from daemon.keys import SCOPE

GIT_STATUS = web.AppKey("git_status", StatusCache)
#: The listing's marks never hold a page back for long: past this the folder shows without them.
MARKS_TIMEOUT = 3.0


class PathQuery(Struct, kw_only=True):
    path: str = ""


class DiffQuery(Struct, kw_only=True):
    path: str = ""
    file: str
    staged: bool = False


class LogQuery(Struct, kw_only=True):
    path: str = ""
    limit: int = 20


class ShowQuery(Struct, kw_only=True):
    path: str = ""
    commit: str


class FilesBody(Struct, kw_only=True):
    path: str
    files: list[str]


class CommitBody(Struct, kw_only=True):
    path: str
    message: str


async def repository_of(call: Call[Any, Any], path: str) -> Repository:
    if not git_available():
        raise ApiError(404, "git is not installed on this machine")
    folder = from_home(call, path or ".")
    if not os.path.exists(folder):
        raise ApiError(404, "Path not found")
    return await find_repository(folder, call.app[SCOPE])


def status_reply(repository: Repository, status: Status) -> dict[str, Any]:
    return {"root": repository.top, "branch": status.branch, "commit": status.commit,
            "upstream": status.upstream, "ahead": status.ahead, "behind": status.behind,
            "files": [change.to_json() for change in status.changes]}


def checked_files(call: Call[Any, FilesBody], repository: Repository) -> list[str]:
    if not call.body.files:
        raise ApiError(422, "Name at least one file")
    return [checked_file(repository, call.app[SCOPE], file) for file in call.body.files]


async def changed(call: Call[Any, Any], repository: Repository) -> dict[str, Any]:
    call.app[GIT_STATUS].forget(repository.top)
    return status_reply(repository, await actions.read_status(repository))


async def get_status(call: Call[PathQuery, NoInput]) -> dict[str, Any]:
    repository = await repository_of(call, call.query.path)
    return status_reply(repository, await actions.read_status(repository))


async def get_diff(call: Call[DiffQuery, NoInput]) -> dict[str, Any]:
    repository = await repository_of(call, call.query.path)
    file = checked_file(repository, call.app[SCOPE], call.query.file)
    untracked = not call.query.staged and any(
        change.kind == "untracked" and change.path == file
        for change in (await actions.read_status(repository, counts=False)).changes)
    result = await actions.diff(repository, file, call.query.staged, untracked)
    return {"file": file, "staged": call.query.staged, "diff": result.text, "truncated": result.truncated}


async def post_stage(call: Call[NoInput, FilesBody]) -> dict[str, Any]:
    repository = await repository_of(call, call.body.path)
    await actions.stage(repository, checked_files(call, repository))
    return await changed(call, repository)


async def post_unstage(call: Call[NoInput, FilesBody]) -> dict[str, Any]:
    repository = await repository_of(call, call.body.path)
    files = checked_files(call, repository)
    status = await actions.read_status(repository, counts=False)
    await actions.unstage(repository, files, status.commit is not None)
    return await changed(call, repository)


def optional_module(name: str) -> Any:
    """The history and the trash are built beside this room; without them discard keeps nothing
    (history) or refuses untracked files (trash), never failing to start."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        return None


def history_keeper(app: web.Application) -> actions.Saver | None:
    """history.keep(path, "git-discard"), when the history is there and on."""
    module = optional_module("daemon.files.history")
    history = app.get(module.HISTORY) if module else None
    if history is None or not history.enabled:
        return None
    return lambda path: history.keep(path, "git-discard")


def trash_mover(app: web.Application) -> actions.Saver | None:
    """The delete the file endpoints use, when it moves to the trash (never when the trash is off)."""
    module = optional_module("daemon.files.trash_endpoints")
    trash = app.get(module.TRASH) if module else None
    if trash is None or not trash.enabled:
        return None
    return lambda path: module.delete(app, path)


async def post_discard(call: Call[NoInput, FilesBody]) -> dict[str, Any]:
    repository = await repository_of(call, call.body.path)
    files = checked_files(call, repository)
    status = await actions.read_status(repository, counts=False)
    done = await actions.discard(repository, files, status, keep=history_keeper(call.app),
                                 trash=trash_mover(call.app))
    audit.record(call.app, "discard", call, path=repository.top, files=files, trashed=done["trashed"])
    return {**await changed(call, repository), "discarded": done}


async def post_commit(call: Call[NoInput, CommitBody]) -> dict[str, Any]:
    repository = await repository_of(call, call.body.path)
    commit = await actions.commit(repository, call.body.message)
    audit.record(call.app, "commit", call, path=repository.top, commit=commit, message=call.body.message)
    return {**await changed(call, repository), "committed": commit}


async def get_log(call: Call[LogQuery, NoInput]) -> dict[str, Any]:
    repository = await repository_of(call, call.query.path)
    return {"root": repository.top,
            "commits": [asdict(entry) for entry in await actions.log(repository, call.query.limit)]}


async def get_show(call: Call[ShowQuery, NoInput]) -> dict[str, Any]:
    actions.check_commit_id(call.query.commit)
    repository = await repository_of(call, call.query.path)
    return await actions.show(repository, call.query.commit)


async def listing_marks(app: web.Application, folder: str) -> dict[str, str] | None:
    """{name: letter} for the entries of `folder` that git reports changed ({} when clean); None
    outside a repository, without git, or when git is slow. A folder holding changes is marked by
    its changes' letter when they all agree, else M."""
    if not git_available():
        return None
    try:
        repository = await find_repository(folder, app[SCOPE])
        cache = app[GIT_STATUS]
        status = cache.get(repository.top)
        if status is None:
            status = await asyncio.wait_for(actions.read_status(repository, counts=False), MARKS_TIMEOUT)
            cache.put(repository.top, status)
    except (ApiError, TimeoutError):
        return None
    return marks_in(repository, status, folder)


def marks_in(repository: Repository, status: Status, folder: str) -> dict[str, str]:
    relative = os.path.relpath(os.path.realpath(folder), repository.top)
    prefix = "" if relative == "." else relative + "/"
    marks: dict[str, str] = {}
    for change in status.changes:
        if not change.path.startswith(prefix):
            continue
        name, _, rest = change.path[len(prefix):].partition("/")
        if not name:
            continue
        letter = change.mark
        if rest and marks.get(name, letter) != letter:
            letter = "M"
        marks[name] = letter
    return marks


ENDPOINTS: list[Endpoint] = [
    hidden("GET", "/git/status", get_status, query=PathQuery),
    hidden("GET", "/git/diff", get_diff, query=DiffQuery),
    hidden("POST", "/git/stage", post_stage, body=FilesBody),
    hidden("POST", "/git/unstage", post_unstage, body=FilesBody),
    hidden("POST", "/git/discard", post_discard, body=FilesBody),
    hidden("POST", "/git/commit", post_commit, body=CommitBody),
    hidden("GET", "/git/log", get_log, query=LogQuery),
    hidden("GET", "/git/show", get_show, query=ShowQuery),
]
