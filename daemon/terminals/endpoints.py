"""`/api/terminals`: the REST calls, the WebSocket Open WebUI's xterm.js speaks, the LLM's user-shell tools."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Annotated, Any

import msgspec
from aiohttp import WSMsgType, web
from msgspec import Meta, Struct, field

from daemon.errors import ApiError
from daemon.http.auth import Identity, identify, tied_socket
from daemon.http.endpoints import Access, Call, Endpoint, hidden
from daemon.http.inputs import NoInput
from daemon.keys import DIRECTORIES, TERMINALS
from daemon.owner import Owner
from daemon.processes.endpoints import InputRequest
from daemon.spawn_inputs import spawn_problem
from daemon.tenants import TENANT
from daemon.terminals.session import USER_OUTPUT_BYTES, SessionOptions, TerminalSession
from daemon.terminals.table import TerminalTable, terminal_error

log = logging.getLogger(__name__)

AUTH_TIMEOUT = 10.0
#: How long the last output may take to reach a slow client after the shell exits.
DRAIN_TIMEOUT = 30.0
#: Offered by browsers that carry the key in the handshake: `opentermd` plus `opentermd.token.<key>`.
PROTOCOL = "opentermd"
TOKEN_PROTOCOL = "opentermd.token."
CLOSE_BAD_AUTH, CLOSE_NOT_FOUND, CLOSE_BUSY, CLOSE_GOING_AWAY = 4001, 4004, 4009, 1001


class CreateRequest(Struct, kw_only=True):
    """Beyond the reference (which takes no body): what to run, where, at what size, detachable or not."""

    cmd: Annotated[str | None, Meta(description="Program to run instead of the login shell.")] = None
    cwd: Annotated[str | None, Meta(description="Working directory (relative paths: the chat's).")] = None
    env: Annotated[dict[str, str], Meta(description="Extra environment variables.")] = field(default_factory=dict)
    cols: Annotated[int, Meta(ge=1, le=1000)] = 80
    rows: Annotated[int, Meta(ge=1, le=1000)] = 24
    detach: Annotated[bool, Meta(description="Keep the shell when the WebSocket closes, for a re-attach.")] = False
    record: Annotated[bool, Meta(description="Record an asciinema cast (when recording is enabled).")] = False


# --- REST -------------------------------------------------------------------------------------------


async def create_terminal(call: Call[NoInput, NoInput]) -> dict[str, object]:
    body = await _create_body(call.request)
    directories = call.app[DIRECTORIES]
    cwd = directories.resolve(body.cwd, call.owner.session_id)
    options = SessionOptions(command=body.cmd, cwd=cwd, env=body.env, cols=body.cols, rows=body.rows,
                             detachable=body.detach, record=body.record)
    return (await call.app[TERMINALS].create(call.owner, options)).summary()


async def _create_body(request: web.Request) -> CreateRequest:
    """Open WebUI sends no body; anything else must be a valid JSON object."""
    raw = await request.read()
    if not raw.strip():
        return CreateRequest()
    try:
        body = msgspec.json.decode(raw, type=CreateRequest, strict=False)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise terminal_error(422, f"Invalid terminal options: {exc}") from None
    problem = spawn_problem({"cmd": body.cmd, "cwd": body.cwd}, body.env)
    if problem is not None:
        raise terminal_error(422, f"Invalid terminal options: {problem.message}")
    return body


async def list_terminals(call: Call[NoInput, NoInput]) -> list[dict[str, object]]:
    """Beyond the reference: whether a viewer is attached (the terminal page lists detached sessions to
    re-attach, and says which are attached elsewhere) and the shell's working directory."""
    return [{**session.summary(), "attached": session.attached, "cwd": session.current_directory()}
            for session in call.app[TERMINALS].owned_by(call.owner)]


async def get_or_attach(call: Call[NoInput, NoInput]) -> web.StreamResponse | dict[str, object]:
    """One path, two uses: a WebSocket upgrade attaches; a plain GET describes the session."""
    if call.request.headers.get("Upgrade", "").lower() == "websocket":
        return await terminal_socket(call)
    identify(call.request).require()
    return call.app[TERMINALS].get(call.path("session_id"), call.owner).summary()


async def delete_terminal(call: Call[NoInput, NoInput]) -> dict[str, str]:
    table = call.app[TERMINALS]
    await table.delete(table.get(call.path("session_id"), call.owner))
    return {"status": "deleted"}


async def get_recording(call: Call[NoInput, NoInput]) -> web.StreamResponse:
    session = call.app[TERMINALS].get(call.path("session_id"), call.owner)
    if session.recorder is None or session.recording_path is None:
        raise terminal_error(404, "This session is not being recorded")
    session.recorder.flush()  # What the cast holds so far, including the last moments.
    return web.FileResponse(session.recording_path, headers={
        "Content-Type": "application/x-asciicast", "Content-Disposition": f'attachment; filename="{session.id}.cast"'})


async def read_user_terminal(call: Call[NoInput, NoInput]) -> dict[str, str]:
    session = call.app[TERMINALS].user_shell(call.owner)
    return {"output": session.replay.tail(USER_OUTPUT_BYTES).decode("utf-8", "replace")}


async def send_user_terminal_input(call: Call[NoInput, InputRequest]) -> dict[str, str]:
    session = call.app[TERMINALS].user_shell(call.owner)
    try:
        await session.write(call.body.input.encode())
    except OSError:
        raise ApiError(409, "User shell has disconnected") from None
    return {"status": "ok"}


# --- the WebSocket ----------------------------------------------------------------------------------


async def terminal_socket(call: Call[NoInput, NoInput]) -> web.StreamResponse:
    request = call.request
    table = call.app[TERMINALS]
    session = table.find(call.path("session_id"))
    if session is None:
        # Like the reference: refused before the handshake completes (the browser sees a 403).
        raise web.HTTPForbidden(reason="Session not found")
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    socket = web.WebSocketResponse(protocols=(PROTOCOL,) if PROTOCOL in offered else (), heartbeat=None,
                                   max_msg_size=4 * 1024 * 1024)
    tokens = [p[len(TOKEN_PROTOCOL):] for p in offered if p.startswith(TOKEN_PROTOCOL)]
    identity = identify(request, tokens)
    if identity.cross_site and not identity.key:
        # A page session from another origin (or without Origin): refused before any byte reaches the shell.
        table.abandon(session)
        raise web.HTTPForbidden(reason="Cross-origin session refused")
    await socket.prepare(request)
    chat_id = await _authenticate(socket, request, identity, bool(tokens))
    if chat_id is None:
        table.abandon(session)
        return socket
    # A tenant's token (handshake or auth frame) is the user, whatever the headers or query say.
    user = request.get(TENANT, request.headers.get("X-User-Id", request.query.get("user_id", "")))
    chat = request.headers.get("X-Session-Id", chat_id)
    if session.owner != Owner(user, chat) or not session.viewable:
        await socket.close(code=CLOSE_NOT_FOUND, message=b"Session not found")
        return socket
    if session.attached:
        await socket.close(code=CLOSE_BUSY, message=b"Session already connected")
        return socket

    async def close(reason: str) -> None:
        await socket.close(code=CLOSE_BAD_AUTH, message=reason.encode())

    # Opened with the page cookie, it ends with that page session (logout, expiry); opened with
    # the key, when the key is rotated (4001 "Key rotated").
    with tied_socket(request, identity, close) as live:
        if not live:
            await close("Logged out")
            return socket
        await _serve(socket, session, table)
    return socket


async def _authenticate(socket: web.WebSocketResponse, request: web.Request, identity: Identity,
                        offered_key: bool) -> str | None:
    """The chat id the client named (or ""), or None after closing the socket with 4001.

    The handshake authenticates with the key (bearer header or subprotocol) or the page cookie
    from our origin; a wrong key as subprotocol is refused at once; otherwise Open WebUI's auth
    frame must come.
    """
    if identity.key:
        return ""
    if offered_key:
        await socket.close(code=CLOSE_BAD_AUTH, message=b"Invalid API key")
        return None
    if identity.session is not None:
        return ""
    try:
        message = await socket.receive(timeout=AUTH_TIMEOUT)
        payload = json.loads(message.data) if message.type == WSMsgType.TEXT else None
    except (TimeoutError, ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict) or payload.get("type") != "auth":
        await socket.close(code=CLOSE_BAD_AUTH, message=b"Auth timeout or invalid payload")
        return None
    token = payload.get("token")
    if not isinstance(token, str) or not identify(request, [token]).key:
        await socket.close(code=CLOSE_BAD_AUTH, message=b"Invalid API key")
        return None
    chat_id = payload.get("chat_id")
    return chat_id if isinstance(chat_id, str) else ""


async def _serve(socket: web.WebSocketResponse, session: TerminalSession, table: TerminalTable) -> None:
    """Pump keystrokes in and output out until either side ends."""

    async def send(frame: bytes) -> None:
        await socket.send_bytes(frame)

    viewer = session.attach(send)
    table.sockets.add(socket)
    ended: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(session.pty.finished))
    reader: asyncio.Future[Any] = asyncio.ensure_future(_read_client(socket, session))
    try:
        await asyncio.wait({ended, reader}, return_when=asyncio.FIRST_COMPLETED)
        if ended.done():
            # Everything the shell printed goes out before the close frame.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(viewer.drained(), DRAIN_TIMEOUT)
            # Stop our own receive first, so close() can wait for the client's close frame.
            await _cancelled(reader)
            await socket.close(code=1000, message=b"Session ended")
    finally:
        table.sockets.discard(socket)
        await _cancelled(reader)
        ended.cancel()
        session.detach(viewer)
        table.release(session)


async def _cancelled(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _read_client(socket: web.WebSocketResponse, session: TerminalSession) -> None:
    async for message in socket:
        if message.type == WSMsgType.BINARY:
            try:
                await session.write(message.data)
            except OSError:
                return
        elif message.type == WSMsgType.TEXT:
            _control(session, message.data)


def _control(session: TerminalSession, text: str) -> None:
    """Text frames are control messages only (resize, ping); they never reach the shell."""
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return
    if isinstance(payload, dict) and payload.get("type") == "resize":
        cols, rows = payload.get("cols", 80), payload.get("rows", 24)
        if isinstance(cols, int) and isinstance(rows, int):
            session.resize(cols, rows)



ENDPOINTS = [
    Endpoint("GET", "/api/terminals/user/output", read_user_terminal, operation_id="read_user_terminal",
             summary="Read User Terminal",
             description="Read recent output from the user's connected shell. Inspect before sending input:\n"
             "a foreground program may already be running. Does not create a shell."),
    Endpoint("POST", "/api/terminals/user/input", send_user_terminal_input, operation_id="send_user_terminal_input",
             summary="Send User Terminal Input",
             description="Send literal text to the user's connected shell or its foreground program.\n"
             "Include actual newlines to submit input. Read the shell first. Sending input\n"
             "does not wait for command completion and does not create a shell.",
             body=InputRequest),
    hidden("POST", "/api/terminals", create_terminal),
    hidden("GET", "/api/terminals", list_terminals),
    hidden("GET", "/api/terminals/{session_id}/recording", get_recording),
    # The WebSocket authenticates itself (auth frame, subprotocol or cookie), after the handshake.
    hidden("GET", "/api/terminals/{session_id}", get_or_attach, access=Access.PUBLIC),
    hidden("DELETE", "/api/terminals/{session_id}", delete_terminal),
]


async def close_sockets(app: web.Application) -> None:
    """At shutdown, say goodbye (1001) to every attached browser instead of holding the exit up."""
    sockets = list(app[TERMINALS].sockets)
    await asyncio.gather(*(socket.close(code=CLOSE_GOING_AWAY, message=b"Server shutting down")
                           for socket in sockets), return_exceptions=True)
