"""Interactive terminals: Open WebUI's handshake, close codes, re-attach, reaping, the user-shell tools."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.keys import TERMINALS
from daemon.terminals import endpoints
from daemon.terminals import session as session_module
from daemon.terminals import table as table_module
from tests.conftest import (
    KEY,
    Api,
    ApiFactory,
    FakeClock,
    eventually,
    needs_host_view,
    process_group_members,
    process_stats,
)

Socket = aiohttp.ClientWebSocketResponse


async def create(api: Api, status: int = 200, headers: dict[str, str] | None = None, **body: Any) -> Any:
    options: dict[str, Any] = {"json": body} if body else {}
    return await api.json("POST", "/api/terminals", status=status, headers=headers or {}, **options)


async def attach(api: Api, session_id: str, *, token: str = KEY, chat_id: str | None = None,
                 headers: dict[str, str] | None = None, query: str = "", resize: bool = True) -> Socket:
    """Connect and authenticate as Open WebUI does: auth frame, then a resize frame at once."""
    socket = await api.client.ws_connect(f"/api/terminals/{session_id}{query}", headers=headers or {})
    frame: dict[str, str] = {"type": "auth", "token": token}
    if chat_id is not None:
        frame["chat_id"] = chat_id
    await socket.send_str(json.dumps(frame))
    if resize:
        await socket.send_str(json.dumps({"type": "resize", "cols": 43, "rows": 13}))
    return socket


async def read_until(socket: Socket, needle: bytes, timeout: float = 10) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        message = await socket.receive(timeout=max(0.01, deadline - time.monotonic()))
        if message.type != aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"socket ended ({message.type}, {message.data!r}) before {needle!r}; got {seen!r}")
        seen += message.data
    return seen


async def closed_with(socket: Socket) -> int | None:
    while True:
        message = await socket.receive(timeout=10)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return socket.close_code
        assert message.type == aiohttp.WSMsgType.BINARY, message


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(table_module, "time", fake)
    monkeypatch.setattr(session_module, "time", fake)
    return fake


def open_ptys() -> int:
    """PTY masters this test process holds (the server runs in it)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "/dev/ptmx"
        except OSError:
            continue
    return count


# --- the Open WebUI protocol ------------------------------------------------------------------------


async def test_create_list_get_delete(api: Api) -> None:
    created = await create(api)
    assert set(created) == {"id", "created_at", "pid"} and len(created["id"]) == 8
    assert created["created_at"].endswith("Z")
    listed = await api.json("GET", "/api/terminals")
    assert listed == [{**created, "attached": False, "cwd": listed[0]["cwd"]}]
    assert await api.json("GET", f"/api/terminals/{created['id']}") == created
    assert await api.json("DELETE", f"/api/terminals/{created['id']}") == {"status": "deleted"}
    assert await api.json("GET", f"/api/terminals/{created['id']}", status=404) == {"error": "Session not found"}
    assert await api.json("DELETE", f"/api/terminals/{created['id']}", status=404) == {"error": "Session not found"}
    assert await eventually(lambda: process_group_members(created["pid"]) == [])


async def test_rest_needs_the_key(api: Api) -> None:
    created = await create(api)
    assert await api.json("GET", "/api/terminals", auth=False, status=401) == {"detail": "Invalid API key"}
    assert await api.json("GET", f"/api/terminals/{created['id']}", auth=False, status=401)
    assert await api.json("POST", "/api/terminals", auth=False, status=401)


async def test_the_whole_handshake_keystrokes_resize_and_exit(api: Api) -> None:
    session = await create(api)
    socket = await attach(api, session["id"])
    await socket.send_str(json.dumps({"type": "ping"}))
    await socket.send_bytes(b"stty size; echo he''llo\n")
    output = await read_until(socket, b"hello")
    assert b"13 43" in output
    await socket.send_str(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
    await socket.send_bytes(b"stty size\n")
    await read_until(socket, b"40 120")
    await socket.send_bytes(b"exit\n")
    assert await closed_with(socket) == 1000
    assert await api.json("GET", f"/api/terminals/{session['id']}", status=404)


async def test_text_frames_never_reach_the_shell(api: Api, tmp_path: Path) -> None:
    session = await create(api)
    socket = await attach(api, session["id"])
    marker = tmp_path / "typed"
    await socket.send_str(f"touch {marker}\n")
    await socket.send_str(json.dumps({"type": "other", "data": f"touch {marker}\n"}))
    await socket.send_str("[" * 100_000 + "]" * 100_000)
    await socket.send_bytes(b"echo done-$((40+2))\n")
    await read_until(socket, b"done-42")
    assert not marker.exists()
    await socket.close()


async def test_bad_auth_closes_4001_and_a_session_once_attached_survives(api: Api) -> None:
    session = await create(api, detach=True)
    first = await attach(api, session["id"], token=f"  {KEY} ")
    await first.send_bytes(b"echo ok-$((1+1))\n")
    await read_until(first, b"ok-2")
    await first.close()
    socket = await attach(api, session["id"], token="wrong")
    assert await closed_with(socket) == 4001
    raw = await api.client.ws_connect(f"/api/terminals/{session['id']}")
    await raw.send_str("not json")
    assert await closed_with(raw) == 4001
    deep = await api.client.ws_connect(f"/api/terminals/{session['id']}")
    await deep.send_str("[" * 100_000 + "]" * 100_000)  # past the JSON parser's nesting limit
    assert await closed_with(deep) == 4001
    good = await attach(api, session["id"])
    await good.send_bytes(b"echo ok-$((2+2))\n")
    await read_until(good, b"ok-4")
    await good.close()


@pytest.mark.parametrize("how", ["frame", "subprotocol", "garbage"])
async def test_a_failed_auth_frees_a_session_never_attached(api: Api, how: str) -> None:
    session = await create(api)
    if how == "frame":
        socket = await attach(api, session["id"], token="wrong")
    elif how == "subprotocol":
        socket = await api.client.ws_connect(f"/api/terminals/{session['id']}",
                                             protocols=("opentermd", "opentermd.token.wrong"))
    else:
        socket = await api.client.ws_connect(f"/api/terminals/{session['id']}")
        await socket.send_str("not json")
    assert await closed_with(socket) == 4001
    assert await eventually(lambda: process_group_members(session["pid"]) == [], timeout=10)
    assert await api.json("GET", "/api/terminals") == []


async def test_creates_followed_by_failed_auths_never_fill_the_table(api: Api) -> None:
    """The reproduction: 16 creates whose sockets fail auth made every later create 429 for ten minutes."""
    for _ in range(16):
        session = await create(api)
        socket = await attach(api, session["id"], token="wrong")
        assert await closed_with(socket) == 4001
    last = await create(api)
    socket = await attach(api, last["id"])
    await socket.send_bytes(b"echo room-$((5+5))\n")
    await read_until(socket, b"room-10")
    await socket.close()


async def test_a_session_never_attached_gives_its_slot_back_after_the_grace(
        api_with: ApiFactory, clock: FakeClock) -> None:
    api = await api_with(max_sessions=2, attach_grace=30)
    abandoned = [await create(api), await create(api)]
    assert await create(api, status=429) == {"error": "Maximum number of terminal sessions (2) reached"}
    clock.advance(30)
    await create(api, status=429)  # the grace is inclusive at its edge
    clock.advance(0.5)
    fresh = await create(api)
    assert [entry["id"] for entry in await api.json("GET", "/api/terminals")] == [fresh["id"]]
    assert await eventually(lambda: all(process_group_members(gone["pid"]) == [] for gone in abandoned), timeout=10)


def _shell_ended(api: Api, session_id: str) -> bool:
    session = api.client.app[TERMINALS].find(session_id)
    return session is not None and session.pty.finished.done()


async def test_a_detachable_session_that_ended_before_any_attach_still_shows_its_output(api: Api) -> None:
    """Its output went into the replay buffer, not the PTY: the session waits for its first viewer
    (it used to be removed at once, and a late viewer got 403 with the output lost)."""
    session = await create(api, detach=True, cmd="echo printed-$((40+2)) before anyone came")
    await eventually(lambda: _shell_ended(api, session["id"]))
    listed = await api.json("GET", "/api/terminals")
    assert [entry["id"] for entry in listed] == [session["id"]]
    socket = await attach(api, session["id"])
    assert b"printed-42 before anyone came" in await read_until(socket, b"came")
    assert await closed_with(socket) == 1000
    await eventually(lambda: api.client.app[TERMINALS].find(session["id"]) is None)
    assert await api.json("GET", "/api/terminals") == []


async def test_an_ended_session_nobody_attached_to_is_freed_at_the_attach_grace(
        api_with: ApiFactory, clock: FakeClock) -> None:
    api = await api_with(attach_grace=30, max_sessions=1)
    session = await create(api, detach=True, cmd="true")
    await eventually(lambda: _shell_ended(api, session["id"]))
    await create(api, status=429)  # kept for its first viewer, so it still holds its slot
    clock.advance(30.5)
    await create(api)
    assert api.client.app[TERMINALS].find(session["id"]) is None


async def test_an_attached_session_is_not_reaped_by_the_attach_grace(api_with: ApiFactory, clock: FakeClock) -> None:
    api = await api_with(attach_grace=30)
    session = await create(api)
    socket = await attach(api, session["id"])
    await socket.send_bytes(b"echo here\n")
    await read_until(socket, b"here")
    clock.advance(31)
    api.client.app[TERMINALS].reap_detached()
    await socket.send_bytes(b"echo still-$((6+6))\n")
    await read_until(socket, b"still-12")
    await socket.close()


@pytest.mark.parametrize("body", [
    {"env": {"A\u0000B": "x"}}, {"env": {"A=B": "x"}}, {"env": {"": "x"}}, {"env": {"A": "x\u0000y"}},
    {"env": {"A": 1}}, {"env": {"A": None}}, {"env": ["A=1"]}, {"env": {"A": "\ud800"}},
    {"cmd": "echo \u0000"}, {"cmd": 5}, {"cwd": "a\u0000b"}, {"cwd": "\udc80\ud800"},
    {"cols": 10**30}, {"rows": -1}, {"cols": 0}, {"rows": 100_000}, {"cols": "wide"}, {"detach": "yes"},
    {"env": {"BIG": "x" * 200_000}}, [], "text", 7,
])
async def test_options_no_shell_can_start_with_are_422(api: Api, body: Any) -> None:
    reply = await api.json("POST", "/api/terminals", json=body, status=422)
    assert set(reply) == {"error"} and reply["error"].startswith("Invalid terminal options"), reply
    assert await api.json("GET", "/api/terminals") == []


async def test_auth_timeout_closes_4001(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoints, "AUTH_TIMEOUT", 0.3)
    session = await create(api)
    socket = await api.client.ws_connect(f"/api/terminals/{session['id']}")
    assert await closed_with(socket) == 4001


async def test_unknown_session_is_refused_at_the_handshake(api: Api) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.client.ws_connect("/api/terminals/nosuchid")
    assert refused.value.status == 403


async def test_ownership_follows_user_and_chat(api: Api) -> None:
    owner = {"X-User-Id": "u1", "X-Session-Id": "chat1"}
    session = await create(api, headers=owner)
    assert await api.json("GET", "/api/terminals", headers={"X-User-Id": "u2", "X-Session-Id": "chat1"}) == []
    stranger = await attach(api, session["id"], headers={"X-User-Id": "u2"}, chat_id="chat1")
    assert await closed_with(stranger) == 4004
    # A browser cannot set headers: the user comes from ?user_id=, the chat from the auth frame.
    browser = await attach(api, session["id"], query="?user_id=u1", chat_id="chat1")
    await browser.send_bytes(b"echo mine-$((2*3))\n")
    await read_until(browser, b"mine-6")
    busy = await attach(api, session["id"], headers=owner)
    assert await closed_with(busy) == 4009
    await browser.close()


async def test_a_plain_session_ends_with_its_socket(api: Api) -> None:
    """Open WebUI makes a new session per connect: closing the socket must not leak the shell."""
    session = await create(api)
    socket = await attach(api, session["id"])
    await socket.send_bytes(b"sleep 1000 & echo started-$((1+1))\n")
    await read_until(socket, b"started-2")
    await socket.close()
    assert await eventually(lambda: process_group_members(session["pid"]) == [], timeout=10)
    assert await api.json("GET", "/api/terminals") == []


# --- beyond the reference ---------------------------------------------------------------------------


@needs_host_view("uses tmp_path, outside the sandbox's workspace")
async def test_reattach_replays_what_happened_meanwhile(api: Api, tmp_path: Path) -> None:
    session = await create(api, detach=True)
    first = await attach(api, session["id"])
    await first.send_bytes(b"echo before-$((3*3))\n")
    await read_until(first, b"before-9")
    flag = tmp_path / "go"
    await first.send_bytes(f"while [ ! -e {flag} ]; do sleep 0.01; done; echo while-away-$((4*4))\n".encode())
    await first.close()
    live = api.client.app[TERMINALS].find(session["id"])
    assert live is not None
    await eventually(lambda: not live.attached)
    flag.touch()  # only now, with nobody attached, does the shell print
    await eventually(lambda: b"while-away-16" in live.replay.tail())
    second = await attach(api, session["id"])
    replay = await read_until(second, b"while-away-16")
    assert b"before-9" in replay
    await second.send_bytes(b"echo live-$((5*5))\n")
    await read_until(second, b"live-25")
    await second.close()
    assert process_group_members(session["pid"]), "a detachable shell outlives its socket"


@needs_host_view("uses tmp_path, outside the sandbox's workspace")
async def test_the_list_says_which_sessions_are_attached_and_where_their_shells_are(api: Api, tmp_path: Path) -> None:
    """What the terminal page's sessions list shows: a detached session to re-attach, one attached elsewhere."""
    session = await create(api, detach=True, cwd=str(tmp_path))

    async def listed() -> dict[str, Any]:
        entries = await api.json("GET", "/api/terminals")
        return next(entry for entry in entries if entry["id"] == session["id"])

    async def listed_is(expected: dict[str, Any]) -> bool:
        return await listed() == expected

    # The shell changes into its folder a moment after it is forked: until then /proc shows the daemon's.
    await eventually(lambda: listed_is({**session, "attached": False, "cwd": str(tmp_path)}))
    socket = await attach(api, session["id"])
    (tmp_path / "inner").mkdir()
    await socket.send_bytes(b"cd inner && echo moved-$((2*3))\n")
    await read_until(socket, b"moved-6")
    assert await listed() == {**session, "attached": True, "cwd": str(tmp_path / "inner")}
    await socket.close()
    live = api.client.app[TERMINALS].find(session["id"])
    assert live is not None
    await eventually(lambda: not live.attached)
    assert (await listed())["attached"] is False


async def test_detached_sessions_are_reaped_after_the_timeout(api_with: ApiFactory, clock: FakeClock) -> None:
    api = await api_with(detach_timeout=0.25)  # exact in binary, as is the clock's start
    session = await create(api)
    socket = await attach(api, session["id"])
    await socket.send_bytes(b"echo up\n")
    await read_until(socket, b"up")
    await socket.close()
    table = api.client.app[TERMINALS]
    live = table.find(session["id"])
    assert live is not None
    await eventually(lambda: not live.attached)
    clock.advance(0.25)
    table.reap_detached()
    assert table.find(session["id"]) is live  # the timeout is inclusive at its edge
    clock.advance(0.125)
    table.reap_detached()
    assert await eventually(lambda: process_group_members(session["pid"]) == [], timeout=10)
    assert await api.json("GET", f"/api/terminals/{session['id']}", status=404)


async def test_the_key_as_a_subprotocol(api: Api) -> None:
    session = await create(api)
    socket = await api.client.ws_connect(f"/api/terminals/{session['id']}",
                                         protocols=("opentermd", f"opentermd.token.{KEY}"))
    assert socket.protocol == "opentermd"
    await socket.send_bytes(b"echo proto-$((6*7))\n")
    await read_until(socket, b"proto-42")
    await socket.close()


async def test_create_options(api: Api, tmp_path: Path) -> None:
    (tmp_path / "home" / "sub").mkdir()
    session = await create(api, cmd="printf '%s|' \"$PWD\" \"$GREETING\"; stty size; sleep 5", cwd="sub",
                           cols=90, rows=20, env={"GREETING": "hey"})
    socket = await attach(api, session["id"], resize=False)
    output = await read_until(socket, b"20 90")
    assert f"{tmp_path}/home/sub|hey|".encode() in output
    await socket.close()
    bad = await api.json("POST", "/api/terminals", json={"cols": 0}, status=422)
    assert "error" in bad


async def test_the_session_cap_is_429(api_with: ApiFactory) -> None:
    api = await api_with(max_sessions=2)
    await create(api)
    await create(api)
    assert await create(api, status=429) == {"error": "Maximum number of terminal sessions (2) reached"}


async def test_user_shell_tools(api: Api) -> None:
    assert await api.json("GET", "/api/terminals/user/output", status=404) == {"detail": "No connected user shell"}
    session = await create(api)
    socket = await attach(api, session["id"])
    await socket.send_bytes(b"echo visible-$((7*7))\n")
    await read_until(socket, b"visible-49")
    output = await api.json("GET", "/api/terminals/user/output")
    assert "visible-49" in output["output"]
    assert await api.json("POST", "/api/terminals/user/input", json={"input": "echo typed-$((8*8))\n"}) == {
        "status": "ok"}
    await read_until(socket, b"typed-64")
    await socket.close()
    assert await eventually(lambda: process_group_members(session["pid"]) == [], timeout=10)
    assert await api.json("GET", "/api/terminals/user/output", status=404)


async def test_recording_makes_an_asciicast(api_with: ApiFactory) -> None:
    api = await api_with(recording="always")
    session = await create(api)
    socket = await attach(api, session["id"])
    await socket.send_bytes(b"echo recorded-$((9*9))\n")
    await read_until(socket, b"recorded-81")
    async with api.request("GET", f"/api/terminals/{session['id']}/recording") as response:
        assert response.status == 200
        lines = (await response.text()).splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and header["width"] == 80 and header["height"] == 24
    events = [json.loads(line) for line in lines[1:]]
    assert all(isinstance(time_, float | int) and kind in "oir" for time_, kind, _ in events)
    assert "recorded-81" in "".join(text for _, kind, text in events if kind == "o")
    assert any(event[1] == "r" and event[2] == "43x13" for event in events)
    await socket.close()
    unrecorded = await api_with()
    plain = await create(unrecorded)
    assert await unrecorded.json("GET", f"/api/terminals/{plain['id']}/recording", status=404) == {
        "error": "This session is not being recorded"}


async def test_many_cycles_leave_no_processes_and_no_ptys(api: Api) -> None:
    before = open_ptys()
    pids = []
    for _ in range(200):
        session = await create(api)
        pids.append(session["pid"])
        socket = await attach(api, session["id"])
        await socket.close()
    assert await eventually(lambda: all(process_group_members(pid) == [] for pid in pids), timeout=30)
    assert await eventually(lambda: open_ptys() == before, timeout=10), (open_ptys(), before)
    assert await api.json("GET", "/api/terminals") == []


async def test_user_terminal_tools_match_the_reference_schema(api: Api) -> None:
    document = await api.json("GET", "/openapi.json", auth=False)
    assert document["paths"]["/api/terminals/user/output"]["get"]["operationId"] == "read_user_terminal"
    assert document["paths"]["/api/terminals/user/input"]["post"]["operationId"] == "send_user_terminal_input"
    assert "/api/terminals" not in document["paths"]


async def test_the_web_ui_cookie_authenticates_a_socket_from_our_origin_only(api: Api) -> None:
    async with api.client.post("/login", data={"key": KEY, "next": "/"}, allow_redirects=False) as response:
        assert response.status == 303
    session = await create(api)
    origin = str(api.client.make_url("")).rstrip("/")
    ours = await api.client.ws_connect(f"/api/terminals/{session['id']}", headers={"Origin": origin})
    await ours.send_bytes(b"echo cookie-$((11*11))\n")
    await read_until(ours, b"cookie-121")
    await ours.close()
    other = await create(api)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.client.ws_connect(f"/api/terminals/{other['id']}", headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403


@needs_host_view("uses tmp_path, outside the sandbox's workspace")
@pytest.mark.parametrize("detach", [False, True])
async def test_all_output_arrives_before_the_close_even_for_a_slow_late_viewer(
        api: Api, detach: bool, tmp_path: Path) -> None:
    """A command's output waits in its PTY for the viewer (or streams into it), and none is lost at exit."""
    # A detachable session drains its PTY into the replay buffer, so unheld, seq could end before the
    # attach (and the session with it: see the stop note). It starts once the viewer is there.
    started = tmp_path / "viewer-attached"
    hold = f"while [ ! -e {started} ]; do sleep 0.01; done; " if detach else ""
    session = await create(api, cmd=f"{hold}seq 1 150000", detach=detach)
    if not detach:
        # seq only ever sleeps blocked on its full PTY: then it waits for a reader.
        await eventually(lambda: any(fields[0] == "S" for fields in _named(session["pid"], "seq")))
    socket = await attach(api, session["id"], resize=False)
    started.touch()
    received = b""
    while True:
        message = await socket.receive(timeout=20)
        if message.type != aiohttp.WSMsgType.BINARY:
            break
        received += message.data
        await asyncio.sleep(0.002)  # A slow client: the daemon must not outrun it and drop the rest.
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1000
    numbers = received.replace(b"\r\n", b"\n").split()
    assert numbers[-1] == b"150000"
    if not detach:  # A detachable session keeps only its replay buffer of what came before the attach.
        assert numbers == [str(n).encode() for n in range(1, 150001)]


async def test_a_wrong_key_as_subprotocol_is_refused_at_once(api: Api) -> None:
    session = await create(api)
    started = time.monotonic()
    socket = await api.client.ws_connect(f"/api/terminals/{session['id']}",
                                         protocols=("opentermd", "opentermd.token.wrong"))
    assert await closed_with(socket) == 4001
    assert time.monotonic() - started < 2, "no 10 s wait for an auth frame"


async def test_shutdown_says_goodbye_to_attached_browsers(daemon_process: tuple[int, str, dict[str, str]]) -> None:
    import signal

    pid, url, headers = daemon_process
    async with aiohttp.ClientSession(headers=headers) as client:
        async with client.post(f"{url}/api/terminals", json={"detach": True}) as response:
            session = await response.json()
        socket = await client.ws_connect(f"{url}/api/terminals/{session['id']}",
                                         protocols=("opentermd", f"opentermd.token.{headers['Authorization'][7:]}"))
        await socket.send_bytes(b"echo attached\n")
        await read_until(socket, b"attached")
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        assert await closed_with(socket) == 1001
    assert await eventually(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=15)
    assert time.monotonic() - started < 10
    assert await eventually(lambda: process_group_members(session["pid"]) == [], timeout=10)


def _named(pgid: int, name: str) -> list[list[str]]:
    """The stat fields of the live members of a process group with this command name."""
    found = []
    for pid, fields in process_stats().items():
        if int(fields[2]) == pgid and fields[0] != "Z":
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                    found.append(fields)
    return found


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True
