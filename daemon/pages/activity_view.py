"""The audit trail read back: the hidden `GET /audit` (JSON, for an agent or a script) and the
`/activity` page (the same records, filtered by path and time), both through `AuditLog.search`."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from aiohttp import web
from msgspec import Meta, Struct

from daemon import audit
from daemon.errors import bad_request
from daemon.files.locate import from_home
from daemon.http.endpoints import Access, Call, Endpoint, hidden
from daemon.http.inputs import NoInput
from daemon.pages.layout import browse_url, render
from daemon.pages.listing import timestamp
from daemon.users import USERS

PAGE_LIMIT = 200


class AuditQuery(Struct, kw_only=True):
    path: Annotated[str, Meta(max_length=4096)] | None = None
    #: Epoch seconds, or ISO 8601 (a time without a zone is the server's local time).
    since: Annotated[str, Meta(max_length=64)] | None = None
    until: Annotated[str, Meta(max_length=64)] | None = None
    limit: Annotated[int, Meta(ge=1, le=audit.MAX_LIMIT)] = audit.DEFAULT_LIMIT


def parse_time(name: str, value: str | None) -> float | None:
    """`value` as epoch seconds: a number, or an ISO 8601 date/time (the page's datetime-local)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return number
        raise bad_request(f"{name}: not a time: {value!r}")
    try:
        return datetime.fromisoformat(text).timestamp()  # naive: local time, as datetime does
    except ValueError:
        raise bad_request(f"{name}: not a time: {value!r} (use epoch seconds or ISO 8601)") from None


async def search(call: Call[AuditQuery, Any], limit: int) -> list[dict[str, Any]]:
    query = call.query
    since, until = parse_time("since", query.since), parse_time("until", query.until)
    path = from_home(call, query.path) if query.path and query.path.strip() else None
    trail = call.app.get(audit.AUDIT)
    if trail is None:
        return []
    # Multi-user: a user's own records only (they name files and commands).
    user = call.owner.user_id if USERS in call.app else None
    return await asyncio.to_thread(trail.search, audit.Query(path, since, until, limit, user=user))


async def audit_records(call: Call[AuditQuery, NoInput]) -> dict[str, Any]:
    return {"records": await search(call, call.query.limit)}


async def activity_page(call: Call[AuditQuery, NoInput]) -> web.Response:
    records = await search(call, min(call.query.limit, PAGE_LIMIT))
    query = call.query
    return render(call.request, "activity.html", {
        "rows": [_row(record) for record in records], "limit": min(query.limit, PAGE_LIMIT),
        "path": query.path or "", "since": query.since or "", "until": query.until or "",
        "filtered": bool(query.path or query.since or query.until),
    })


def activity_url(path: str) -> str:
    """The activity page filtered to `path` (the file page links here)."""
    return "/activity?" + urlencode({"path": path})


def _row(record: dict[str, Any]) -> dict[str, Any]:
    who = record["who"] if isinstance(record.get("who"), dict) else {}
    paths = [(str(record[name]), browse_url(str(record[name])))
             for name in ("path", "source", "destination") if isinstance(record.get(name), str)]
    details = {name: value for name, value in record.items()
               if name not in ("ts", "kind", "who", "route", "path", "source", "destination")}
    stamp = record.get("ts")
    return {"when": timestamp(stamp) if isinstance(stamp, int | float) else "",
            "iso": datetime.fromtimestamp(stamp).isoformat(timespec="seconds") if isinstance(stamp, int | float)
            else "",
            "kind": str(record.get("kind", "")), "by": str(who.get("by", "")), "user": str(who.get("user", "")),
            "session": str(who.get("session", "")), "route": str(record.get("route", "")), "paths": paths,
            "details": ", ".join(f"{name}: {value}" for name, value in details.items())}


#: The JSON side (an API segment: an unknown path under /audit is a JSON 404) and the page.
API = [hidden("GET", "/audit", audit_records, query=AuditQuery)]
PAGES = [Endpoint("GET", "/activity", activity_page, query=AuditQuery, access=Access.PAGE, in_schema=False)]
