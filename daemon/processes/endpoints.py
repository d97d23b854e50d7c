"""Thin declarations for `/execute...`: validate, call the process table, shape the reply."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import sys
from typing import Annotated, Any, Literal

from aiohttp import web
from msgspec import Meta, Struct

from daemon import audit
from daemon.config import Config
from daemon.errors import bad_request, validation_failed
from daemon.http.endpoints import UNAUTHORIZED, Call, Endpoint
from daemon.http.inputs import HIDDEN, NoInput
from daemon.keys import CONFIG, DIRECTORIES, PROCESSES
from daemon.processes.table import Process
from daemon.spawn_inputs import spawn_problem

#: Replies whose output is larger than this are streamed from disk instead of built in memory.
INLINE_LIMIT = 1024 * 1024
STREAM_CHUNK = 1024 * 1024
#: How long one stream=true wait lasts before it checks again (the client may have gone).
STREAM_POLL = 15.0

NOT_FOUND = {404: "Process not found."}
TAIL_DESCRIPTION = (
    "Return only the last N output entries. Useful to limit response size when only recent output matters."
)


class ExecRequest(Struct, kw_only=True):
    command: Annotated[str, Meta(
        description="Shell command to execute. Supports chaining (&&, ||, ;), pipes (|), and redirections.",
        examples=["echo hello", "ls -la && whoami"],
    )]
    cwd: Annotated[str | None, Meta(
        description="Working directory for the command. Defaults to the server's current directory if not set.",
    )] = None
    env: Annotated[dict[str, str] | None, Meta(
        description="Extra environment variables merged into the subprocess environment.",
    )] = None


#: The reference's `wait` query parameter: 0..300 seconds, null meaning return at once.
Wait = Annotated[float, Meta(ge=0, le=300)] | None
Tail = Annotated[Annotated[int, Meta(ge=1)] | None, Meta(description=TAIL_DESCRIPTION)]


class ExecQuery(Struct, kw_only=True):
    wait: Annotated[Wait, Meta(
        description="Seconds to wait for the command to finish before returning. If the command completes in "
        "time, output is included inline. Null to return immediately.",
    )] = None
    tail: Tail = None
    stream: Annotated[bool, HIDDEN] = False


class StatusQuery(Struct, kw_only=True):
    wait: Annotated[Wait, Meta(
        description="Seconds to wait for the process to finish before returning. Returns early if the process "
        "exits. Null to return immediately.",
    )] = None
    offset: Annotated[int, Meta(
        description="Number of output entries to skip. Use next_offset from the previous response to get "
        "only new output.",
        ge=0,
    )] = 0
    tail: Tail = None
    #: `output` makes `wait` return as soon as there is output past `offset` (a long-poll).
    until: Annotated[Literal["exit", "output"], HIDDEN] = "exit"


class InputRequest(Struct, kw_only=True):
    input: Annotated[str, Meta(
        description="Text to send to the process's stdin. Include newline characters as needed.",
    )]


class KillQuery(Struct, kw_only=True):
    force: Annotated[bool, Meta(description="Send SIGKILL instead of SIGTERM.")] = False


def run_command_description(config: Config) -> str:
    """The reference's live system line: it tells the model what machine it is driving."""
    shell = os.environ.get("SHELL") or "/bin/sh"
    user = os.environ.get("USER") or "unknown"
    text = (
        "Run a shell command in the background and return a command ID.\n\n"
        f"This system is running {platform.system()} {platform.release()} ({platform.machine()}) "
        f"on {socket.gethostname()} as user '{user}' with {shell}. "
        f"Python {sys.version.split()[0]} is available."
    )
    return text + ("\n\n" + config.execute_description if config.execute_description else "")


# --- handlers -------------------------------------------------------------------------------------


async def list_processes(call: Call[NoInput, NoInput]) -> list[dict[str, object]]:
    return [process.summary() for process in await call.app[PROCESSES].owned_by(call.owner)]


async def run_command(call: Call[ExecQuery, ExecRequest]) -> web.StreamResponse:
    check_spawnable(call.body)
    directories = call.app[DIRECTORIES]
    cwd = directories.resolve(call.body.cwd, call.owner.session_id)
    process = await call.app[PROCESSES].start(call.body.command, cwd, call.body.env, call.owner)
    audit.record(call.app, "command", call, command=call.body.command, cwd=cwd, id=process.id)
    if call.query.stream:
        return await stream_output(call.request, process)
    await process.wait(_wait_seconds(call.query.wait, call))
    return await report(call.request, process, offset=0, tail=call.query.tail, with_cwd=True)


async def get_process_status(call: Call[StatusQuery, NoInput]) -> web.StreamResponse:
    process = await call.app[PROCESSES].get(call.path("process_id"), call.owner)
    query = call.query
    past = query.offset if query.until == "output" else None
    await process.wait(_wait_seconds(query.wait, call), past_offset=past)
    return await report(call.request, process, offset=query.offset, tail=query.tail, with_cwd=False)


async def send_process_input(call: Call[NoInput, InputRequest]) -> dict[str, str]:
    table = call.app[PROCESSES]
    process = await table.get(call.path("process_id"), call.owner)
    await table.send_input(process, decode_escapes(call.body.input))
    return {"status": "ok"}


async def kill_process(call: Call[KillQuery, NoInput]) -> dict[str, str]:
    table = call.app[PROCESSES]
    await table.kill(await table.get(call.path("process_id"), call.owner), force=call.query.force)
    return {"status": "killed"}


def check_spawnable(body: ExecRequest) -> None:
    """A NUL or a bad environment name is the request's fault: a 422 as pydantic words a failed
    validator, not a spawn that fails with 127."""
    problem = spawn_problem({"command": body.command, "cwd": body.cwd}, body.env)
    if problem is not None:
        raise validation_failed([{"type": "value_error", "loc": ["body", *problem.where],
                                  "msg": f"Value error, {problem.message}", "input": problem.value,
                                  "ctx": {"error": {}}}])


def decode_escapes(text: str) -> bytes:
    """Models write `\\n` or `\\x03` literally; turn them into the control characters meant."""
    try:
        decoded = text.encode("raw_unicode_escape").decode("unicode_escape")
    except UnicodeDecodeError as exc:
        raise bad_request(f"Invalid escape sequence in input: {exc.reason}") from None
    return decoded.encode("utf-8", "replace")


def _wait_seconds(wait: float | None, call: Call[Any, Any]) -> float:
    if wait is None:
        wait = call.app[CONFIG].execute_timeout
    return wait or 0.0


# --- replies --------------------------------------------------------------------------------------


async def report(
    request: web.Request, process: Process, *, offset: int, tail: int | None, with_cwd: bool) -> web.StreamResponse:
    """The reference's status object; large output is streamed from the log, not held in memory."""
    head: dict[str, Any] = {"id": process.id, "command": process.command}
    if with_cwd:
        head["cwd"] = process.cwd
    head.update(status=process.status, exit_code=process.exit_code, log_path=str(process.log.path))
    if process.limit is not None:  # which limit ended it (daemon/limits.py); absent otherwise, as before
        head["limit"] = process.limit
    window = process.log.window(offset, tail)
    prefix = json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1].encode() + b',"output":['
    suffix = f'],"next_offset":{window.last},"truncated":{json.dumps(window.truncated)}}}'.encode()
    start, end = process.log.span(window.first, window.last)
    if end - start <= INLINE_LIMIT:
        body = prefix + await process.log.render(window.first, window.last) + suffix
        return web.Response(body=body, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(prefix)
    separator = b""
    for a, b in process.log.chunks(window.first, window.last, STREAM_CHUNK):
        await response.write(separator + await process.log.render(a, b))
        separator = b","
    await response.write(suffix)
    await response.write_eof()
    return response


async def stream_output(request: web.Request, process: Process) -> web.StreamResponse:
    """`POST /execute?stream=true`: JSON lines while the command runs, then a final status line.

    A client that disconnects stops the stream, never the command.
    """
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    head = {"type": "process", "id": process.id, "command": process.command, "cwd": process.cwd,
            "log_path": str(process.log.path)}
    offset = 0
    with contextlib.suppress(ConnectionError):
        await response.write(_line(head))
        while True:
            window = process.log.window(offset, None)
            for a, b in process.log.chunks(window.first, window.last, STREAM_CHUNK):
                await response.write(await process.log.render(a, b, separator=b"\n") + b"\n")
            offset = window.last
            if not process.running and offset >= process.log.count:
                break
            await process.wait(STREAM_POLL, past_offset=offset)
        await response.write(_line({
            "type": "status", "id": process.id, "status": process.status, "exit_code": process.exit_code,
            "next_offset": offset, "truncated": process.log.truncated,
            **({"limit": process.limit} if process.limit is not None else {}),
        }))
        await response.write_eof()
    return response


def _line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


ENDPOINTS = [
    Endpoint("GET", "/execute", list_processes, "list_processes", "List running commands",
             "Returns tracked processes for the current user and chat, including running, done, and killed.",
             responses=UNAUTHORIZED),
    Endpoint("POST", "/execute", run_command, "run_command", "Execute a command", run_command_description,
             query=ExecQuery, body=ExecRequest, responses=UNAUTHORIZED),
    Endpoint("GET", "/execute/{process_id}/status", get_process_status, "get_process_status",
             "Get command status and output",
             "Returns new output since the given offset, process status, and exit code. Reads do not consume "
             "output; each reader keeps its own offset.",
             query=StatusQuery, responses={**NOT_FOUND, **UNAUTHORIZED}),
    Endpoint("GET", "/processes/{process_id}/status", get_process_status, query=StatusQuery, in_schema=False),
    Endpoint("POST", "/execute/{process_id}/input", send_process_input, "send_process_input",
             "Send input to a running command",
             "Write text to the process's stdin. Include newline characters as needed.",
             body=InputRequest,
             responses={**NOT_FOUND, 400: "Process has already exited or stdin is closed.", **UNAUTHORIZED}),
    Endpoint("DELETE", "/execute/{process_id}", kill_process, "kill_process", "Kill a running command",
             "Terminate the process. Sends SIGTERM by default for graceful shutdown. Use force=true to send "
             "SIGKILL.",
             query=KillQuery, responses={**NOT_FOUND, **UNAUTHORIZED}),
]
