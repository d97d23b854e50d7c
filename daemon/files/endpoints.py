"""Thin declarations for `/files/...`: resolve the path, call a plain function in a thread, shape the reply."""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Annotated

import orjson
from aiohttp import web
from msgspec import Meta, Struct, structs

from daemon import audit
from daemon.errors import not_found
from daemon.files import (
    changes,
    compare_endpoints,
    history_endpoints,
    manage_endpoints,
    ops,
    reading,
    search_endpoints,
    thumbnail_endpoints,
    transfer_endpoints,
    trash_endpoints,
)
from daemon.files.cwd import browser_root
from daemon.files.locate import from_cwd, from_home, removable_from_home
from daemon.files.ops import LineRange, OpenFile
from daemon.files.paths import require_named
from daemon.http.endpoints import UNAUTHORIZED, Call, Endpoint, json_response
from daemon.http.inputs import NoInput
from daemon.keys import CONFIG, DIRECTORIES, LISTINGS, SCOPE

STREAM_BLOCK = 1024 * 1024


# --- models (the reference's names and descriptions: they become the LLM's tool parameters) --------


class MkdirRequest(Struct, kw_only=True):
    path: Annotated[str, Meta(description="Directory path to create. Parent directories are created automatically.")]


class ListQuery(Struct, kw_only=True):
    directory: Annotated[str, Meta(description="Directory path to list.")] = "."


LineNumber = Annotated[int, Meta(ge=1)] | None


class ReadQuery(Struct, kw_only=True):
    path: Annotated[str, Meta(description="Path to the file to read.")]
    start_line: Annotated[LineNumber, Meta(
        description="First line to return (1-indexed, inclusive). Defaults to the beginning of the file.")] = None
    end_line: Annotated[LineNumber, Meta(
        description="Last line to return (1-indexed, inclusive). Defaults to the end of the file.")] = None


class DisplayQuery(Struct, kw_only=True):
    path: Annotated[str, Meta(description="Absolute path to the file to display.")]


class WriteRequest(Struct, kw_only=True):
    path: Annotated[str, Meta(
        description="Absolute or relative path to write to. Parent directories are created automatically.")]
    content: Annotated[str, Meta(description="Text content to write to the file.")]


class ReplacementChunk(Struct, kw_only=True):
    target: Annotated[str, Meta(description="Exact string to find. Must match precisely, including whitespace.")]
    replacement: Annotated[str, Meta(description="Content to replace the target with.")]
    start_line: Annotated[LineNumber, Meta(
        description="Narrow the search to lines at or after this (1-indexed).")] = None
    end_line: Annotated[LineNumber, Meta(
        description="Narrow the search to lines at or before this (1-indexed).")] = None
    allow_multiple: Annotated[bool, Meta(
        description="If true, replaces all occurrences. If false, errors when multiple matches are found.")] = False


class ReplaceRequest(Struct, kw_only=True):
    path: Annotated[str, Meta(description="Path to the file to modify.")]
    replacements: Annotated[list[ReplacementChunk], Meta(
        description="List of find-and-replace operations to apply sequentially.")]


class DeleteQuery(Struct, kw_only=True):
    path: Annotated[str, Meta(description="Path to delete.")]
    #: Ours (the route is hidden): skip the trash, as a file manager's "delete permanently".
    permanent: bool = False


class MoveRequest(Struct, kw_only=True):
    source: Annotated[str, Meta(description="Current path of the file or directory.")]
    destination: Annotated[str, Meta(description="New path for the file or directory.")]


# --- working directory ------------------------------------------------------------------------------


async def get_cwd(call: Call[NoInput, NoInput]) -> dict[str, object]:
    directories, scope = call.app[DIRECTORIES], call.app[SCOPE]
    cwd = scope.base(directories.get(call.owner.session_id))
    reply: dict[str, object] = {"cwd": cwd, "home": directories.home}
    root = browser_root(scope.root or call.app[CONFIG].file_browser_root, directories.home)
    if root:
        reply["root"] = root
    return reply


async def set_cwd(call: Call[NoInput, MkdirRequest]) -> dict[str, str]:
    target = from_home(call, call.body.path)
    if not os.path.isdir(target):
        raise not_found("Directory not found")
    call.app[DIRECTORIES].set(call.owner.session_id, target)
    return {"cwd": target}


# --- listing and reading ----------------------------------------------------------------------------


async def list_files(call: Call[ListQuery, NoInput]) -> dict[str, object]:
    target = from_cwd(call, call.query.directory)
    scope = call.app[SCOPE]
    return await asyncio.to_thread(ops.list_directory, target, scope.contains if scope.root else None,
                                   call.app[LISTINGS], scope.beneath)


async def read_file(call: Call[ReadQuery, NoInput]) -> web.StreamResponse:
    target = from_cwd(call, call.query.path)
    lines = LineRange(call.query.start_line, call.query.end_line)
    config = call.app[CONFIG]
    options = reading.ReadOptions(config.binary_mime_prefixes, config.document_timeout)
    result = await reading.read(target, lines, options, call.app[SCOPE].beneath)
    if isinstance(result, reading.LargeText):
        try:
            response = await _large_text(call.request, target, result.file, lines)
            if response is not None:
                return response
            return _reply(target, await reading.not_text(result.file, target, lines, options))
        finally:
            result.file.close()  # A file response holds its own descriptor by now.
    return _reply(target, result)


def text_reply(display_path: str, text: reading.Text) -> bytes:
    """The reference's `{path, content, total_lines}` as compact JSON bytes."""
    return orjson.dumps({"path": display_path, "content": text.content, "total_lines": text.total_lines})


def _reply(target: str, result: reading.Text | reading.Raw | reading.Refusal) -> web.StreamResponse:
    if isinstance(result, reading.Text):
        return web.Response(body=text_reply(target, result), content_type="application/json")
    if isinstance(result, reading.Refusal):
        raise result.error()
    try:
        return transfer_endpoints.file_response(result.file, target, result.mime)
    finally:
        result.file.close()  # The response holds its own descriptor.


async def _large_text(request: web.Request, target: str, file: OpenFile,
                      lines: LineRange) -> web.StreamResponse | None:
    """A big text file's reply, built on disk (not in memory) and then streamed; None if not UTF-8."""
    spool = await asyncio.to_thread(tempfile.TemporaryFile)
    try:
        if not await asyncio.to_thread(ops.write_large_text_reply, file, target, lines, spool):
            return None
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = spool.tell()
        spool.seek(0)
        await response.prepare(request)
        while block := await asyncio.to_thread(spool.read, STREAM_BLOCK):
            await response.write(block)
        await response.write_eof()
        return response
    finally:
        spool.close()


async def display_file(call: Call[DisplayQuery, NoInput]) -> dict[str, object]:
    target = from_cwd(call, call.query.path)
    return {"path": target, "exists": os.path.isfile(target)}


# --- changing files ---------------------------------------------------------------------------------


async def write_file(call: Call[NoInput, WriteRequest]) -> web.Response:
    require_named(call.body.path)
    target = from_cwd(call, call.body.path)
    data = call.body.content.encode()
    beneath = call.app[SCOPE].beneath
    expected = call.request.headers.get("If-Match")
    if expected is not None:
        # An editor saving what it opened: refuse to overwrite a file someone else changed meanwhile.
        await asyncio.to_thread(ops.check_unchanged, target, expected, beneath)
    keeper = history_endpoints.keeper(call.app, "write_file" if expected is None else "editor")
    info = await asyncio.to_thread(ops.atomic_write, target, data, beneath, history=keeper)
    audit.record(call.app, "write", call, path=target, size=len(data))
    response = json_response({"path": target, "size": len(data)})
    response.headers["ETag"] = ops.etag(info)
    return response


async def replace_file_content(call: Call[NoInput, ReplaceRequest]) -> dict[str, object]:
    target = from_cwd(call, call.body.path)
    chunks = [ops.Replacement(**structs.asdict(chunk)) for chunk in call.body.replacements]
    size = await asyncio.to_thread(ops.replace_in_file, target, chunks, call.app[SCOPE].beneath,
                                   history_endpoints.keeper(call.app, "replace_file_content"))
    audit.record(call.app, "replace", call, path=target, size=size)
    return {"path": target, "size": size}


async def make_directory(call: Call[NoInput, MkdirRequest]) -> dict[str, str]:
    require_named(call.body.path)
    target = from_home(call, call.body.path)
    await asyncio.to_thread(changes.make_directory, target, call.app[SCOPE].beneath)
    audit.record(call.app, "create", call, path=target, type="folder")
    return {"path": target}


async def delete_entry(call: Call[DeleteQuery, NoInput]) -> dict[str, str]:
    target = removable_from_home(call, call.query.path)
    kind = await asyncio.to_thread(trash_endpoints.delete, call.app, target, permanent=call.query.permanent)
    audit.record(call.app, "delete", call, path=target, type=kind)
    return {"path": target, "type": kind}


async def move_entry(call: Call[NoInput, MoveRequest]) -> dict[str, str]:
    require_named(call.body.destination)
    source, destination = removable_from_home(call, call.body.source), from_home(call, call.body.destination)
    await asyncio.to_thread(changes.move, source, destination, call.app[SCOPE].beneath)
    audit.record(call.app, "move", call, source=source, destination=destination)
    return {"source": source, "destination": destination}


CORE = [
    Endpoint("GET", "/files/cwd", get_cwd, in_schema=False),
    Endpoint("POST", "/files/cwd", set_cwd, body=MkdirRequest, in_schema=False),
    Endpoint("GET", "/files/list", list_files, operation_id="list_files", summary="List directory contents",
             description="Return a structured listing of files and directories at the given path.",
             query=ListQuery, responses={404: "Directory not found.", **UNAUTHORIZED}),
    Endpoint("GET", "/files/read", read_file, operation_id="read_file", summary="Read a file",
             description="Read a file and return its contents. Supports text files and images (PNG, JPEG, WebP, "
             "etc.). For text files you can optionally request a specific line range. Images are returned as "
             "binary so you can view and analyze them directly. Use display_file to show a file to the user.",
             query=ReadQuery,
             responses={404: "File not found.", 415: "Unsupported binary file type.", **UNAUTHORIZED}),
    Endpoint("GET", "/files/display", display_file, operation_id="display_file",
             summary="Display a file to the user",
             description="Open a file in the user's file viewer so they can see it. Use this when the user wants "
             "to view or look at a file. This does not return file content to you \u2014 use read_file if you "
             "need to read the content yourself.",
             query=DisplayQuery, responses=UNAUTHORIZED),
    Endpoint("POST", "/files/write", write_file, operation_id="write_file", summary="Write a file",
             description="Write text content to a file. Creates parent directories automatically. Overwrites if "
             "the file already exists.",
             body=WriteRequest, responses=UNAUTHORIZED),
    Endpoint("POST", "/files/mkdir", make_directory, body=MkdirRequest, in_schema=False),
    Endpoint("DELETE", "/files/delete", delete_entry, query=DeleteQuery, in_schema=False),
    Endpoint("POST", "/files/move", move_entry, body=MoveRequest, in_schema=False),
    Endpoint("POST", "/files/replace", replace_file_content, operation_id="replace_file_content",
             summary="Replace content in a file",
             description="Find and replace exact strings in a file. Supports multiple replacements in one call "
             "with optional line range narrowing.",
             body=ReplaceRequest,
             responses={404: "File not found.", 400: "Target string not found or ambiguous match.",
                        **UNAUTHORIZED}),
]

#: In the reference's order, so the OpenAPI document (and the LLM's tool list) reads the same.
ENDPOINTS = [*CORE, *search_endpoints.ENDPOINTS, *transfer_endpoints.ENDPOINTS, *compare_endpoints.ENDPOINTS,
             *thumbnail_endpoints.ENDPOINTS, *manage_endpoints.ENDPOINTS, *trash_endpoints.ENDPOINTS,
             *history_endpoints.ENDPOINTS]
