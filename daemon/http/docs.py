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


#: Swagger UI's scripts and styles come from /static; it shows data: images and calls the API on
#: this origin. Like the other pages, only our own pages may frame it.
DOCS_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
    ),
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


async def swagger_ui(call: Call[NoInput, NoInput]) -> web.StreamResponse:
    response = aiohttp_jinja2.render_template("docs.html", call.request, {})
    response.headers.update(DOCS_HEADERS)
    return response


ENDPOINTS_DECLARED = [
    Endpoint("GET", "/openapi.json", openapi_document, access=Access.PUBLIC, in_schema=False),
    Endpoint("GET", "/docs", swagger_ui, access=Access.PUBLIC, in_schema=False),
]
