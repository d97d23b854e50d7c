"""/openapi.json: generated from the registry, and what becomes LLM tools is exactly the reference's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.conftest import Api, ApiFactory

REFERENCE = json.loads((Path(__file__).parent.parent / "data" / "reference_openapi_0.14.5.json").read_text())
#: Every operation the reference's schema lists (get_info only when configured).
IMPLEMENTED = {"list_processes", "run_command", "get_process_status", "send_process_input", "kill_process",
               "list_files", "read_file", "display_file", "write_file", "replace_file_content",
               "read_user_terminal", "send_user_terminal_input",
               "grep_search", "glob_search", "search_files", "match_files"}
SYSTEM_LINE = re.compile(
    r"This system is running \S+ \S+ \(\S+\) on \S+ as user '[^']*' with \S+\. Python [\d.]+ is available\.")


def operations(document: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {op["operationId"]: (method, path, op)
            for path, methods in document["paths"].items() for method, op in methods.items()}


def tool_view(document: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    """What Open WebUI builds a tool from: parameters and the resolved body schema."""
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body:
        body = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    return {
        "summary": op.get("summary"),
        "parameters": op.get("parameters", []),
        "body": body,
        "responses": sorted(op["responses"]),
        "security": op.get("security"),
    }


async def test_the_document_describes_the_reference_api(api: Api) -> None:
    document = await api.json("GET", "/openapi.json", auth=False)
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "Open Terminal"
    assert document["info"]["description"] == "A remote terminal API."
    ours, reference = operations(document), operations(REFERENCE)
    assert set(ours) == IMPLEMENTED
    for operation_id, (method, path, op) in ours.items():
        ref_method, ref_path, ref_op = reference[operation_id]
        assert (method, path) == (ref_method, ref_path)
        assert tool_view(document, op) == tool_view(REFERENCE, ref_op), operation_id
        if operation_id == "run_command":
            assert SYSTEM_LINE.sub("", op["description"]) == SYSTEM_LINE.sub("", ref_op["description"])
        else:
            assert op["description"] == ref_op["description"]


async def test_run_command_description_carries_live_system_facts(api_with: ApiFactory) -> None:
    api = await api_with(execute_description="Use uv for Python.")
    document = await api.json("GET", "/openapi.json", auth=False)
    description = document["paths"]["/execute"]["post"]["description"]
    assert SYSTEM_LINE.search(description)
    assert description.endswith("\n\nUse uv for Python.")


async def test_get_info_appears_only_when_configured(api_with: ApiFactory) -> None:
    plain = await (await api_with()).json("GET", "/openapi.json", auth=False)
    assert "get_info" not in operations(plain)
    informed = await (await api_with(info="x")).json("GET", "/openapi.json", auth=False)
    _, _, op = operations(informed)["get_info"]
    assert op["description"] == operations(REFERENCE).get("get_info", (0, 0, op))[2]["description"]


async def test_hidden_extensions_stay_out_of_the_tools(api: Api) -> None:
    document = await api.json("GET", "/openapi.json", auth=False)
    names = {p["name"] for ops in document["paths"].values() for op in ops.values() for p in op.get("parameters", [])}
    assert "stream" not in names and "until" not in names
    assert "/processes/{process_id}/status" not in document["paths"]


async def test_swagger_ui_is_served_from_vendored_files(api: Api) -> None:
    async with api.request("GET", "/docs", auth=False) as response:
        page = await response.text()
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in assets
    assert "http" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', page)), "no CDN"
    for asset in assets:
        async with api.request("GET", asset, auth=False) as response:
            assert response.status == 200, asset
            assert len(await response.read()) > 100
