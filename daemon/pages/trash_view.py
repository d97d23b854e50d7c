"""`/trash`: what was deleted, from where, when, and its size; Restore, Delete for good, Empty.

The rows come from the same `Trash.entries()` and `Entry.summary()` as the hidden `GET /files/trash`;
the buttons call the trash API itself from the browser (static/js/trash.js), as every page action does.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import web

from daemon.files.trash_endpoints import _shared as shared_trash
from daemon.http.endpoints import Access, Call, Endpoint
from daemon.http.inputs import NoInput
from daemon.pages.layout import browse_url, render
from daemon.pages.listing import human_size


async def trash_page(call: Call[NoInput, NoInput]) -> web.Response:
    trash = shared_trash(call)  # none in multi-user mode (404), as for the trash API
    entries = await asyncio.to_thread(trash.entries)
    rows = [_row(entry.summary()) for entry in reversed(entries)]  # newest first, as the API lists them
    return render(call.request, "trash.html", {"rows": rows, "enabled": trash.enabled})


def _row(summary: dict[str, Any]) -> dict[str, Any]:
    folder = os.path.dirname(str(summary["original_path"]))
    size = summary["size"]
    return {**summary, "folder": folder, "folder_href": browse_url(folder),
            "size_text": human_size(size) if isinstance(size, int) else ""}


PAGES = [Endpoint("GET", "/trash", trash_page, access=Access.PAGE, in_schema=False)]
