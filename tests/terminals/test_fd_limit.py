"""Terminals under `ulimit -n 256` (issue 11): 200 create, attach, echo, Ctrl-D cycles all succeed, and
the daemon's descriptors come back to where they started."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.conftest import eventually
from tests.processes import test_limits
from tests.processes.test_limits import open_fds
from tests.terminals.test_terminals import closed_with, read_until

#: The daemon as its own process under `prlimit --nofile` (the fixture, shared with the commands' test).
limited_daemon = test_limits.limited_daemon

CYCLES = 200
#: Only bounds a failing run.
CYCLES_DEADLINE = 240.0


async def _cycle(client: aiohttp.ClientSession, url: str, key: str, index: int) -> None:
    async with client.post(f"{url}/api/terminals", json={"cmd": "cat"}) as response:
        assert response.status == 200, (index, await response.text())
        session = await response.json()
    socket = await client.ws_connect(f"{url}/api/terminals/{session['id']}",
                                     protocols=("opentermd", f"opentermd.token.{key}"))
    try:
        await socket.send_bytes(f"line {index}\n".encode())
        await read_until(socket, f"line {index}".encode())
        await socket.send_bytes(b"\x04")  # end of input: cat exits, the session ends
        assert await closed_with(socket) == 1000, (index, socket.close_code)
    finally:
        await socket.close()


@pytest.mark.timeout(CYCLES_DEADLINE + 60)
@pytest.mark.parametrize("limited_daemon", ["256:256"], indirect=True)
async def test_two_hundred_terminal_cycles_under_ulimit_256(limited_daemon: tuple[int, str, str]) -> None:
    pid, url, key = limited_daemon
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as client:
        await _cycle(client, url, key, -1)  # warm-up: the client's connection is open from here on
        baseline = open_fds(pid)
        deadline = time.monotonic() + CYCLES_DEADLINE
        for index in range(CYCLES):
            await _cycle(client, url, key, index)
            assert time.monotonic() < deadline, f"only {index} cycles within {CYCLES_DEADLINE} s"
        await eventually(lambda: open_fds(pid) <= baseline + 2, timeout=30)
