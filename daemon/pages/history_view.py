"""The file page's History panel: `/history/panel?path=&id=`, an HTML fragment that static/js/history.js
puts into the page. It lists the file's versions (when, by which route, size) and shows one version's
diff against the file as it is now, laid out by the compare page's own rendering (`compare_view`)
from the same diff document `GET /files/history/diff` returns. Restore is the history API's, from the
browser."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from aiohttp import web
from msgspec import Meta, Struct

from daemon.errors import ApiError
from daemon.files import history_endpoints
from daemon.http.endpoints import Access, Call, Endpoint
from daemon.http.inputs import NoInput
from daemon.pages import compare_view
from daemon.pages.layout import render
from daemon.pages.listing import human_size, timestamp

#: Rows of diff in the panel (the compare page shows more; this is a side panel).
MAX_ROWS = 2000


class PanelQuery(Struct, kw_only=True):
    path: Annotated[str, Meta(max_length=4096)]
    #: The version whose diff is shown; none: the newest.
    id: Annotated[str, Meta(max_length=64)] = ""


async def history_panel(call: Call[PanelQuery, NoInput]) -> web.Response:
    asked = Call(call.request, history_endpoints.PathQuery(path=call.query.path), NoInput())
    listing = await history_endpoints.list_versions(asked)
    versions = [_version(version) for version in listing["versions"]]  # type: ignore[attr-defined]
    chosen = next((version for version in versions if version["id"] == call.query.id), None)
    chosen = chosen or (versions[0] if versions else None)
    diff, problem = None, ""
    if chosen is not None:
        try:
            diff = await _diff(call, chosen["id"])
        except ApiError as exc:  # a binary file keeps versions, without a text diff
            problem = str(exc.detail)
    return render(call.request, "history_panel.html", {
        "path": listing["path"], "versions": versions, "chosen": chosen, "diff": diff, "problem": problem,
    })


async def _diff(call: Call[PanelQuery, NoInput], version_id: str) -> compare_view.SideBySide:
    asked = Call(call.request, history_endpoints.VersionQuery(path=call.query.path, id=version_id), NoInput())
    body = (await history_endpoints.version_diff(asked)).body
    assert isinstance(body, bytes)
    return await asyncio.to_thread(lambda: compare_view.side_by_side(orjson.loads(body), MAX_ROWS))


def _version(version: dict[str, Any]) -> dict[str, Any]:
    return {**version, "when": timestamp(float(version["at"])), "size_text": human_size(int(version["size"]))}


PAGES = [Endpoint("GET", "/history/panel", history_panel, query=PanelQuery, access=Access.PAGE, in_schema=False)]
