"""Thin declarations for the trash (hidden from /openapi.json): list, restore, remove one, empty.
The logic is in files/trash.py; `DELETE /files/delete` moves items there through `set_aside`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from aiohttp import web
from msgspec import Meta, Struct

from daemon import audit
from daemon.config import Config
from daemon.errors import ApiError
from daemon.files import changes
from daemon.files.trash import Limits, Trash, home_trash
from daemon.http.endpoints import Call, hidden
from daemon.http.inputs import NoInput
from daemon.keys import CONFIG, SCOPE

TRASH = web.AppKey("trash", Trash)


class RestoreRequest(Struct, kw_only=True):
    id: Annotated[str, Meta(description="The item's id, from GET /files/trash.")]
    name: Annotated[str | None, Meta(
        description="Restore under this name in the original folder (when the original path is taken).")] = None


class EntryQuery(Struct, kw_only=True):
    id: Annotated[str | None, Meta(description="The item to delete for good; omitted: empty the whole trash.")] = None


def from_config(config: Config, root: str | None) -> Trash:
    return Trash(home_trash(), root, Limits(config.trash_max_age, config.trash_max_size), enabled=config.trash,
                 near=config.home, record=config.state_dir / "trash-places")


async def sweeping(app: web.Application) -> AsyncIterator[None]:
    """The caps are applied at start and hourly."""
    app[TRASH].start_sweeping()
    yield
    await app[TRASH].close()


def delete(app: web.Application, path: str, *, permanent: bool = False) -> str:
    """`DELETE /files/delete`: into the trash, or for good (asked, the trash off, or already in a
    trash). Synchronous: run it in a worker thread."""
    # A trash folder itself is refused even for good: DELETE /files/trash empties it.
    return changes.delete(path, app[SCOPE].beneath, app[TRASH].set_aside(path, permanent=permanent))


def _shared(call: Call[Any, Any]) -> Trash:
    """The trash, unless several users share this daemon: it would show and purge one for them all."""
    if call.app[CONFIG].multi_user:
        raise ApiError(404, "There is no trash in multi-user mode: deletes are for good")
    return call.app[TRASH]


async def list_trash(call: Call[NoInput, NoInput]) -> dict[str, Any]:
    entries = await asyncio.to_thread(_shared(call).entries)
    return {"entries": [entry.summary() for entry in reversed(entries)]}  # newest first


async def restore(call: Call[NoInput, RestoreRequest]) -> dict[str, str]:
    path, kind = await asyncio.to_thread(_shared(call).restore, call.body.id, call.body.name,
                                         call.app[SCOPE].beneath)
    audit.record(call.app, "restore", call, path=path, type=kind, origin="trash")
    return {"path": path, "type": kind}


async def remove(call: Call[EntryQuery, NoInput]) -> dict[str, Any]:
    trash = _shared(call)
    if call.query.id is None:
        removed = await asyncio.to_thread(trash.empty)
    else:
        await asyncio.to_thread(trash.remove, call.query.id)
        removed = 1
    audit.record(call.app, "purge", call, id=call.query.id or "the whole trash", removed=removed)
    return {"removed": removed}


ENDPOINTS = [
    hidden("GET", "/files/trash", list_trash),
    hidden("POST", "/files/trash/restore", restore, body=RestoreRequest),
    hidden("DELETE", "/files/trash", remove, query=EntryQuery),
]
