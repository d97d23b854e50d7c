"""Thin declarations for the file manager's actions beyond the reference: rename, create, which
names exist, copy and duplicate, extract an archive. All hidden from /openapi.json (and so from the
LLM's tools); the logic is in naming, changes, copying and extract."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from msgspec import Meta, Struct

from daemon import audit
from daemon.files import changes, copying, extract, naming
from daemon.files.copying import Job
from daemon.files.locate import from_home, removable_from_home
from daemon.files.paths import require_named
from daemon.files.transfer_endpoints import client_gone
from daemon.http.endpoints import Call, hidden
from daemon.http.inputs import NoInput
from daemon.keys import CONFIG, SCOPE

T = TypeVar("T")
#: How often a running copy or extraction looks whether its client is still there.
WATCH_INTERVAL = 0.25
ConflictRule = Literal["refuse", "keep-both"]


class RenameRequest(Struct, kw_only=True):
    path: Annotated[str, Meta(description="The file or folder to rename.")]
    name: Annotated[str, Meta(description="Its new name in the same folder (no '/').")]


class CreateRequest(Struct, kw_only=True):
    directory: Annotated[str, Meta(description="The folder to create the entry in (it must exist).")]
    name: Annotated[str, Meta(description="The new entry's name (no '/').")]
    type: Literal["file", "folder"] = "file"
    conflict: ConflictRule = "refuse"


class ExistsRequest(Struct, kw_only=True):
    directory: Annotated[str, Meta(description="The folder to look in.")]
    names: Annotated[list[str], Meta(max_length=10_000, description="Names to look up.")]


class CopyRequest(Struct, kw_only=True):
    source: Annotated[str, Meta(description="The file, folder or symlink to copy.")]
    destination: Annotated[str | None, Meta(
        description="The copy's full path; omitted: a duplicate beside the source, `name (copy).ext`.")] = None
    conflict: ConflictRule = "refuse"


class ExtractRequest(Struct, kw_only=True):
    path: Annotated[str, Meta(description="The .zip, .tar, .tar.gz/.tgz, .tar.bz2 or .tar.xz to extract.")]
    destination: Annotated[str | None, Meta(
        description="The new folder to create; omitted: the archive's name without its suffix, "
        "beside it (the next free `name (1)` if taken).")] = None


async def rename_entry(call: Call[NoInput, RenameRequest]) -> dict[str, str]:
    source = removable_from_home(call, call.body.path)
    naming.check_name(call.body.name)
    destination = await asyncio.to_thread(changes.rename, source, call.body.name, call.app[SCOPE].beneath)
    audit.record(call.app, "rename", call, source=source, destination=destination)
    return {"source": source, "destination": destination}


async def create_entry(call: Call[NoInput, CreateRequest]) -> dict[str, str]:
    directory = from_home(call, call.body.directory)
    body = call.body
    name = await asyncio.to_thread(naming.create, directory, body.name, folder=body.type == "folder",
                                   conflict=naming.Conflict(body.conflict), opener=call.app[SCOPE].beneath)
    audit.record(call.app, "create", call, path=os.path.join(directory, name), type=body.type)
    return {"path": os.path.join(directory, name), "type": body.type}


async def existing_names(call: Call[NoInput, ExistsRequest]) -> dict[str, list[str]]:
    directory = from_home(call, call.body.directory)
    return {"existing": await asyncio.to_thread(_existing, directory, call.body.names, call)}


def _existing(directory: str, names: list[str], call: Call[Any, Any]) -> list[str]:
    try:
        folder = call.app[SCOPE].beneath.directory(directory)
    except OSError:
        return []  # No folder, nothing in it.
    try:
        return naming.existing_names(folder, [name for name in names if "/" not in name and name])
    finally:
        os.close(folder)


async def copy_entry(call: Call[NoInput, CopyRequest]) -> dict[str, object]:
    require_named(call.body.source)
    source = from_home(call, call.body.source)
    destination = _named_from_home(call, call.body.destination)
    config, beneath = call.app[CONFIG], call.app[SCOPE].beneath
    budget = copying.Budget(config.copy_max_size)

    def work(job: Job) -> str:
        return copying.copy(source, destination, budget, job, conflict=naming.Conflict(call.body.conflict),
                            opener=beneath)

    copied = await run_job(call.request, work, config.file_task_timeout)
    audit.record(call.app, "copy", call, source=source, destination=copied, size=budget.size)
    return {"source": source, "destination": copied, "entries": budget.entries, "size": budget.size,
            "skipped": budget.skipped}


async def extract_archive(call: Call[NoInput, ExtractRequest]) -> dict[str, object]:
    archive = from_home(call, call.body.path)
    destination = _named_from_home(call, call.body.destination)
    config, beneath = call.app[CONFIG], call.app[SCOPE].beneath
    limits = extract.Limits(max_size=config.extract_max_size)

    def work(job: Job) -> extract.Extracted:
        return extract.extract(archive, destination, limits, job, opener=beneath)

    done = await run_job(call.request, work, config.file_task_timeout)
    audit.record(call.app, "extract", call, source=archive, destination=done.path, size=done.size)
    return {"path": done.path, "entries": done.entries, "size": done.size, "skipped": done.skipped}


def _named_from_home(call: Call[Any, Any], path: str | None) -> str | None:
    if path is None:
        return None
    require_named(path)
    return from_home(call, path)


async def run_job(request: web.Request, work: Callable[[Job], T], timeout: float) -> T:
    """Run `work` in a worker thread under a Job: cancelled (and its partial output removed by
    `work`) when the client goes away, stopped at the deadline."""
    job = Job(timeout)
    running = asyncio.ensure_future(asyncio.to_thread(work, job))
    try:
        while not running.done():
            # aiohttp does not cancel a handler whose client left: look now and then.
            await asyncio.wait({running}, timeout=WATCH_INTERVAL)
            if client_gone(request):
                job.cancel()
    except asyncio.CancelledError:
        job.cancel()
        raise
    return running.result()


ENDPOINTS = [
    hidden("POST", "/files/rename", rename_entry, body=RenameRequest),
    hidden("POST", "/files/create", create_entry, body=CreateRequest),
    hidden("POST", "/files/exists", existing_names, body=ExistsRequest),
    hidden("POST", "/files/copy", copy_entry, body=CopyRequest),
    hidden("POST", "/files/extract", extract_archive, body=ExtractRequest),
]
