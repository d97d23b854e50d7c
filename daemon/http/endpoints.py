"""The endpoint registry: one declaration per endpoint.

A declaration registers the route, validates the query and body into typed msgspec Structs
(`daemon.http.inputs`), and feeds the OpenAPI document (and later the MCP tools), so the three can never disagree.
"""

from __future__ import annotations

import ast
import enum
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec
import orjson
from aiohttp import web
from multidict import MultiMapping

from daemon.config import Config
from daemon.errors import ApiError, validation_failed
from daemon.http.inputs import NoInput, decode_json, field_names, list_fields, validate
from daemon.owner import Owner, owner_of

Q = TypeVar("Q", bound=msgspec.Struct)
B = TypeVar("B", bound=msgspec.Struct)


class Access(enum.Enum):
    PUBLIC = "public"
    #: The API key as a bearer token, or a web-page session cookie (with CSRF for changes).
    BEARER = "bearer"
    #: A web page: a session cookie; without one, GETs are sent to the login page.
    PAGE = "page"


@dataclass(frozen=True)
class Call(Generic[Q, B]):
    """What a handler gets: the validated query and body, and the request for everything else."""

    request: web.Request
    query: Q
    body: B

    @property
    def app(self) -> web.Application:
        return self.request.app

    @property
    def owner(self) -> Owner:
        return owner_of(self.request)

    def path(self, name: str) -> str:
        return self.request.match_info[name]


Handler = Callable[[Call[Any, Any]], Awaitable[Any]]
#: The 401 line every keyed operation of the reference's schema carries.
UNAUTHORIZED: Mapping[int, str] = {401: "Invalid or missing API key."}
Describe = str | Callable[[Config], str]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    operation_id: str | None = None
    summary: str | None = None
    description: Describe | None = None
    query: type[msgspec.Struct] = NoInput
    body: type[msgspec.Struct] | None = None
    access: Access = Access.BEARER
    in_schema: bool = True
    responses: Mapping[int, str] = field(default_factory=dict)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"\{(\w+)", self.path)

    def describe(self, config: Config) -> str | None:
        return self.description(config) if callable(self.description) else self.description


def hidden(method: str, path: str, handler: Handler, **options: Any) -> Endpoint:
    """An endpoint kept out of /openapi.json (so out of the LLM's tools), like the reference's."""
    return Endpoint(method, path, handler, in_schema=False, **options)


def register(app: web.Application, endpoints: Sequence[Endpoint], access: dict[Any, Access]) -> None:
    """Add each endpoint's route; remember its access rule for the auth middleware."""
    for endpoint in endpoints:
        route = app.router.add_route(endpoint.method, endpoint.path, _route_handler(endpoint))
        access[route] = endpoint.access


def _route_handler(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        query = parse_query(endpoint.query, request.query)
        body = await parse_body(endpoint.body, request) if endpoint.body else NoInput()
        return to_response(await endpoint.handler(Call(request, query, body)))

    handle.__name__ = endpoint.operation_id or endpoint.handler.__name__
    return handle


def to_response(result: Any) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    return json_response(result)


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=json_bytes(payload), status=status, content_type="application/json")


def json_bytes(payload: Any) -> bytes:
    """Compact UTF-8 JSON, like Starlette's JSONResponse.

    orjson writes a 10,000-entry directory listing about three times faster than the json module;
    the json module remains for what orjson refuses (integers past 64 bits, non-string keys).
    """
    try:
        return orjson.dumps(payload)
    except TypeError:
        return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


# --- query parsing --------------------------------------------------------------------------------


def parse_query(model: type[Q], query: MultiMapping[str]) -> Q:
    """Validate query parameters, accepting what Open WebUI's backend sends.

    The literal `null` means unset; booleans arrive as Python's `True`/`False` (accepted, as by
    pydantic's lax parsing); lists arrive as repeated keys or as one `str(list)` literal.
    """
    data: dict[str, Any] = {}
    lists = list_fields(model)
    for name in field_names(model):
        values = [value for value in query.getall(name, []) if value.lower() != "null"]
        if values:
            data[name] = _list_values(values) if name in lists else values[-1]
    return validate(model, data, ["query"])


def _list_values(values: list[str]) -> list[Any]:
    if len(values) == 1 and values[0].startswith("[") and values[0].endswith("]"):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(values[0])
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
            if isinstance(parsed, list | tuple):
                return [str(item) for item in parsed]
    return values


# --- body parsing ---------------------------------------------------------------------------------


async def parse_body(model: type[B], request: web.Request) -> B:
    raw = await request.read()
    if not raw.strip():
        raise validation_failed([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
    content_type = request.headers.get("Content-Type", "")
    if content_type and "json" not in content_type.lower() and not _looks_like_json(raw):
        # e.g. `curl -d` without a Content-Type header sends form encoding.
        raise ApiError(415, f"Unsupported content type {content_type!r}: send application/json")
    return decode_json(model, raw, ["body"])


def _looks_like_json(raw: bytes) -> bool:
    try:
        msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True
