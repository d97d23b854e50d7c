"""`/notebooks`: Open WebUI's notebook viewer runs cells through these. Kept out of /openapi.json
(so out of the LLM's tools), as in the reference."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from daemon.files.locate import from_cwd
from daemon.http.endpoints import Call, Endpoint, hidden
from daemon.http.inputs import NoInput
from daemon.keys import NOTEBOOKS


class CreateRequest(Struct, kw_only=True):
    path: Annotated[str, Meta(description="Path to the .ipynb file (relative paths: the chat's folder).")]


class ExecuteRequest(Struct, kw_only=True):
    cell_index: Annotated[int, Meta(description="Zero-based cell index to execute.")]
    source: Annotated[str | None, Meta(
        description="Override cell source. If omitted, uses the source already in the notebook.")] = None


async def create_notebook_session(call: Call[NoInput, CreateRequest]) -> dict[str, str]:
    target = from_cwd(call, call.body.path)
    session = await call.app[NOTEBOOKS].create(call.owner.user_id, target)
    return {"id": session.id, "kernel": session.kernel.name, "status": "ready"}


async def execute_notebook_cell(call: Call[NoInput, ExecuteRequest]) -> dict[str, Any]:
    table = call.app[NOTEBOOKS]
    session = table.get(call.path("session_id"), call.owner.user_id)
    return await table.execute(session, call.body.cell_index, call.body.source)


async def interrupt_notebook(call: Call[NoInput, NoInput]) -> dict[str, str]:
    table = call.app[NOTEBOOKS]
    return await table.interrupt(table.get(call.path("session_id"), call.owner.user_id))


async def get_notebook_session(call: Call[NoInput, NoInput]) -> dict[str, str]:
    return call.app[NOTEBOOKS].get(call.path("session_id"), call.owner.user_id).status()


async def delete_notebook_session(call: Call[NoInput, NoInput]) -> dict[str, str]:
    table = call.app[NOTEBOOKS]
    await table.delete(table.get(call.path("session_id"), call.owner.user_id))
    return {"status": "stopped"}


ENDPOINTS: list[Endpoint] = [
    hidden("POST", "/notebooks", create_notebook_session, operation_id="create_notebook_session",
           body=CreateRequest),
    hidden("POST", "/notebooks/{session_id}/execute", execute_notebook_cell, operation_id="execute_notebook_cell",
           body=ExecuteRequest),
    hidden("POST", "/notebooks/{session_id}/interrupt", interrupt_notebook, operation_id="interrupt_notebook"),
    hidden("GET", "/notebooks/{session_id}", get_notebook_session, operation_id="get_notebook_session"),
    hidden("DELETE", "/notebooks/{session_id}", delete_notebook_session, operation_id="delete_notebook_session"),
]
