"""`GET /files/thumbnail?path=`: a small WebP of an image for the browse page's grid (hidden, as /files/view)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from aiohttp import web
from msgspec import Meta, Struct

from daemon.files import ops, thumbnails
from daemon.files.locate import from_home
from daemon.http.endpoints import Call, hidden
from daemon.http.inputs import NoInput
from daemon.keys import CONFIG, SCOPE


class ThumbnailQuery(Struct, kw_only=True):
    path: Annotated[str, Meta(description="The image (a regular file, confined like /files/view).")]


async def thumbnail(call: Call[ThumbnailQuery, NoInput]) -> web.Response:
    target = from_home(call, call.query.path)
    cache = thumbnails.ThumbnailCache(call.app[CONFIG].state_dir / "thumbnails")
    with await asyncio.to_thread(ops.open_file, target, call.app[SCOPE].beneath) as file:
        etag = ops.etag(file.info)
        if call.request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        data = await thumbnails.thumbnail(file, target, cache)
    # The URL names the path, not the version: the browser asks again, and gets a 304 while unchanged.
    return web.Response(body=data, content_type=thumbnails.MEDIA_TYPE,
                        headers={"ETag": etag, "Cache-Control": "private, no-cache",
                                 "X-Content-Type-Options": "nosniff"})


ENDPOINTS = [hidden("GET", "/files/thumbnail", thumbnail, query=ThumbnailQuery)]
