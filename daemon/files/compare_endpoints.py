"""`POST /files/compare` (Open WebUI's file Compare): resolve and open both sides, diff them in a worker."""

from __future__ import annotations

import asyncio
import posixpath

from aiohttp import web
from msgspec import Struct

from daemon.errors import ApiError
from daemon.files import compare, ops
from daemon.files.beneath import Beneath
from daemon.files.locate import from_cwd
from daemon.http.endpoints import Call, hidden
from daemon.http.inputs import NoInput
from daemon.keys import SCOPE


class CompareRequest(Struct, kw_only=True):
    original: str
    revised: str
    ignore_whitespace: bool = False


def side_name(path: str) -> str:
    return posixpath.basename(path.rstrip("/")) or path


def named(error: ApiError, name: str) -> ApiError:
    """The reference's per-side messages: 404 "<name>: File not found." (also for a directory, FIFO or
    device: only regular files compare), 403 "<name>: Access denied.", else the reason after the name."""
    if error.status == 404 or (error.status == 400 and str(error.detail).startswith(("Path is a", ops.NOT_REGULAR))):
        return ApiError(404, f"{name}: File not found.")
    if error.status == 403 and "outside the allowed file root" not in str(error.detail):
        return ApiError(403, f"{name}: Access denied.")
    return ApiError(error.status, f"{name}: {error.detail}")


def open_side(target: str, name: str, opener: Beneath) -> ops.OpenFile:
    """The regular file opened (never blocking, never a device), at most 50 MiB, or the side's error."""
    try:
        file = ops.open_file(target, opener)
    except ApiError as exc:
        raise named(exc, name) from None
    if file.info.st_size > compare.MAX_BYTES:
        file.close()
        raise compare.refuse(name, "The file is larger than 50 MiB. Try smaller files.", 413)
    return file


def open_sides(targets: list[tuple[str, str]], opener: Beneath) -> list[ops.OpenFile]:
    opened: list[ops.OpenFile] = []
    try:
        for target, name in targets:
            opened.append(open_side(target, name, opener))
    except BaseException:
        for file in opened:
            file.close()
        raise
    return opened


def resolve(call: Call[NoInput, CompareRequest], path: str) -> tuple[str, str]:
    name = side_name(path)
    try:
        return from_cwd(call, path), name
    except ApiError as exc:
        raise named(exc, name) from None


async def compare_files(call: Call[NoInput, CompareRequest]) -> web.Response:
    targets = [resolve(call, call.body.original), resolve(call, call.body.revised)]
    files = await asyncio.to_thread(open_sides, targets, call.app[SCOPE].beneath)
    try:
        sides = [(file.fd, target, name) for file, (target, name) in zip(files, targets, strict=True)]
        body = await compare.compare_in_worker(sides, call.body.ignore_whitespace)
    finally:
        for file in files:
            file.close()
    return web.Response(body=body, content_type="application/json")


ENDPOINTS = [hidden("POST", "/files/compare", compare_files, body=CompareRequest)]
