"""MCP tools generated from the endpoint registry, called through the real HTTP API.

Every endpoint that /openapi.json lists with an operationId becomes one tool with the same name,
description and parameters (query and path parameters and the body's properties merged into one
object, the way Open WebUI turns the document into tools). A call is a real HTTP request to the
daemon's own app, served on a private unix socket, so validation, auth and errors are the API's.
build_server makes the SDK's server of them, which server.py (`opentermd mcp`) and bridge.py (/mcp) serve.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    ImageContent,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
)
from mcp_types import Tool as McpTool

from daemon import __version__
from daemon.config import Config
from daemon.http.endpoints import Endpoint
from daemon.http.inputs import field_names
from daemon.http.openapi import body_schema, path_parameters, query_parameters


@dataclass(frozen=True)
class Tool:
    endpoint: Endpoint
    name: str
    description: str
    input_schema: dict[str, Any]

    def to_mcp(self) -> McpTool:
        return McpTool(name=self.name, description=self.description, input_schema=copy.deepcopy(self.input_schema))


def build_tools(endpoints: Iterable[Endpoint], config: Config) -> dict[str, Tool]:
    """One tool per schema operation, in the document's order."""
    tools: dict[str, Tool] = {}
    for endpoint in endpoints:
        if endpoint.in_schema and endpoint.operation_id:
            tools[endpoint.operation_id] = Tool(endpoint, endpoint.operation_id, endpoint.describe(config) or "",
                                                input_schema(endpoint))
    return tools


def input_schema(endpoint: Endpoint) -> dict[str, Any]:
    """The operation's parameters and body properties as one JSON schema object."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in path_parameters(endpoint) + query_parameters(endpoint.query):
        properties[parameter["name"]] = parameter["schema"]
        if parameter["required"]:
            required.append(parameter["name"])
    schema: dict[str, Any] = {"type": "object"}
    if endpoint.body is not None:
        body = body_schema(endpoint.body)
        properties.update(body.get("properties", {}))
        required.extend(name for name in body.get("required", []) if name not in required)
        if "$defs" in body:
            schema["$defs"] = body["$defs"]
    schema["properties"] = properties
    if required:
        schema["required"] = required
    return schema


class ApiCaller:
    """Performs tool calls as HTTP requests against the daemon's API."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}

    async def call(self, tool: Tool, arguments: Mapping[str, Any]) -> CallToolResult:
        endpoint = tool.endpoint
        path = endpoint.path
        for name in endpoint.path_params:
            path = path.replace(f"{{{name}}}", quote(str(arguments.get(name, "")), safe=""))
        query: list[tuple[str, str]] = []
        for name in field_names(endpoint.query):
            if name in arguments:
                query.extend((name, _query_text(value)) for value in _as_list(arguments[name]))
        headers = dict(self._headers)
        data: bytes | None = None
        if endpoint.body is not None:
            body = {name: arguments[name] for name in field_names(endpoint.body) if name in arguments}
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        async with self._session.request(endpoint.method, self._base_url + path, params=query, headers=headers,
                                         data=data) as response:
            payload = await response.read()
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if response.status >= 400:
                text = payload.decode("utf-8", "replace")
                return CallToolResult(content=[TextContent(type="text", text=f"HTTP error {response.status}: {text}")],
                                      is_error=True)
        if content_type.startswith("image/"):
            return CallToolResult(content=[ImageContent(type="image", data=base64.b64encode(payload).decode(),
                                                        mime_type=content_type)])
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = f"({content_type or 'binary'} content, {len(payload)} bytes)"
        return CallToolResult(content=[TextContent(type="text", text=text)])


def build_server(tools: Mapping[str, Tool], caller: ApiCaller) -> Server[Any]:
    """The SDK's server listing `tools` and calling them through `caller`."""
    listed = ListToolsResult(tools=[tool.to_mcp() for tool in tools.values()])

    async def list_tools(ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None) -> ListToolsResult:
        return listed

    async def call_tool(ctx: ServerRequestContext[Any], params: CallToolRequestParams) -> CallToolResult:
        tool = tools.get(params.name)
        if tool is None:
            return CallToolResult(content=[TextContent(type="text", text=f"Unknown tool: {params.name}")],
                                  is_error=True)
        return await caller.call(tool, params.arguments or {})

    def input_schema(name: str) -> dict[str, Any] | None:
        tool = tools.get(name)
        return None if tool is None else tool.input_schema

    return Server("opentermd", version=__version__, title="Open Terminal", get_tool_input_schema=input_schema,
                  on_list_tools=list_tools, on_call_tool=call_tool)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _query_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
