"""`/openapi.json` and `/docs` (Swagger UI vendored from npm, so it works offline)."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from daemon.http import openapi
from daemon.http.endpoints import Access, Call, Endpoint
from daemon.http.inputs import NoInput
from daemon.keys import CONFIG, ENDPOINTS


async def openapi_document(call: Call[NoInput, NoInput]) -> dict[str, object]:
    endpoints: tuple[Endpoint, ...] = call.app[ENDPOINTS]
    return openapi.build(endpoints, call.app[CONFIG])


async def swagger_ui(call: Call[NoInput, NoInput]) -> web.StreamResponse:
    return aiohttp_jinja2.render_template("docs.html", call.request, {})


ENDPOINTS_DECLARED = [
    Endpoint("GET", "/openapi.json", openapi_document, access=Access.PUBLIC, in_schema=False),
    Endpoint("GET", "/docs", swagger_ui, access=Access.PUBLIC, in_schema=False),
]
