"""The hidden history API: a file's versions, one version's bytes, its diff, and restore.

The pages and an agent use the same functions. Paths are resolved and confined like /files/read;
versions are found by the file's real path, so a link and its target share one history.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from aiohttp import web
from msgspec import Struct

from daemon import audit
from daemon.config import Config
from daemon.errors import ApiError, not_found
from daemon.files import compare, compare_endpoints, ops
from daemon.files.beneath import Beneath
from daemon.files.history import HISTORY, History, Keeper, Limits, Version, copy_file
from daemon.files.locate import from_cwd
from daemon.files.transfer_endpoints import file_response
from daemon.http.endpoints import Call, hidden, json_response
from daemon.http.inputs import NoInput
from daemon.keys import SCOPE


def from_config(config: Config) -> History:
    limits = Limits(versions=config.history_max_versions, file_bytes=config.history_max_file_size,
                    total_bytes=config.history_max_size, age=config.history_max_age)
    return History(config.state_dir / "history", limits, enabled=config.history)


def keeper(app: web.Application, route: str) -> Keeper | None:
    """What a write passes to ops.atomic_write / PendingWrite as `history=` (None when history is off)."""
    return app[HISTORY].keeper(route)


class PathQuery(Struct, kw_only=True):
    path: str


class VersionQuery(Struct, kw_only=True):
    path: str
    id: str


class RestoreRequest(Struct, kw_only=True):
    path: str
    id: str


def _version_missing() -> ApiError:
    return not_found("Version not found")


async def list_versions(call: Call[PathQuery, NoInput]) -> dict[str, object]:
    target = from_cwd(call, call.query.path)
    versions = await asyncio.to_thread(call.app[HISTORY].versions, target)
    return {"path": target, "versions": [version.public() for version in reversed(versions)]}


def _open_version(history: History, target: str, version_id: str) -> tuple[ops.OpenFile, Version]:
    opened = history.open_version(target, version_id)
    if opened is None:
        raise _version_missing()
    fd, version = opened
    return ops.OpenFile(fd, os.fstat(fd)), version


async def version_bytes(call: Call[VersionQuery, NoInput]) -> web.StreamResponse:
    target = from_cwd(call, call.query.path)
    file, _ = await asyncio.to_thread(_open_version, call.app[HISTORY], target, call.query.id)
    try:
        return file_response(file, target)
    finally:
        file.close()


async def version_diff(call: Call[VersionQuery, NoInput]) -> web.Response:
    """The /files/compare document: the version (original) against the file as it is now (revised)."""
    target = from_cwd(call, call.query.path)
    name = compare_endpoints.side_name(target)
    old, _ = await asyncio.to_thread(_open_version, call.app[HISTORY], target, call.query.id)
    try:
        current = await asyncio.to_thread(compare_endpoints.open_side, target, name, call.app[SCOPE].beneath)
        try:
            sides = [(old.fd, f"{target}@{call.query.id}", name), (current.fd, target, name)]
            body = await compare.compare_in_worker(sides, False)
        finally:
            current.close()
    finally:
        old.close()
    return web.Response(body=body, content_type="application/json")


def restore_version(history: History, target: str, version_id: str, opener: Beneath) -> int:
    """Write the version back through the normal atomic write: what is there now becomes a version."""
    file, version = _open_version(history, target, version_id)
    with file, ops.os_errors():
        pending = ops.PendingWrite(target, opener, history=history.keeper("restore"))
        try:
            copy_file(file.fd, pending.fd, version.size)
        except BaseException:
            pending.close()
            raise
        pending.commit()
    return version.size


async def restore(call: Call[NoInput, RestoreRequest]) -> web.Response:
    target = from_cwd(call, call.body.path)
    size = await asyncio.to_thread(restore_version, call.app[HISTORY], target, call.body.id,
                                   call.app[SCOPE].beneath)
    audit.record(call.app, "restore", call, path=target, size=size, version=call.body.id, origin="history")
    return json_response({"path": target, "size": size, "restored": call.body.id})


async def sweeping(app: web.Application) -> AsyncIterator[None]:
    """Expired versions go at start-up and then hourly, also for files nobody writes again."""
    history = app[HISTORY]

    async def sweep_forever() -> None:
        while True:
            await asyncio.to_thread(history.sweep)
            await asyncio.sleep(3600)

    task = asyncio.create_task(sweep_forever()) if history.enabled else None
    yield
    if task is not None:
        task.cancel()


ENDPOINTS = [
    hidden("GET", "/files/history", list_versions, query=PathQuery),
    hidden("GET", "/files/history/version", version_bytes, query=VersionQuery),
    hidden("GET", "/files/history/diff", version_diff, query=VersionQuery),
    hidden("POST", "/files/history/restore", restore, body=RestoreRequest),
]
