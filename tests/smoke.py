"""Checks shared by the smoke suites that drive a daemon from outside (tests/binary, tests/deploy)."""

from __future__ import annotations

import json
import os
import time

import aiohttp


async def terminal_echoes(http: aiohttp.ClientSession, url: str, key: str, timeout: float = 20.0) -> None:
    """Create a terminal, attach its WebSocket with the key, and see a command's output come back."""
    async with http.post(f"{url}/api/terminals", json={}) as reply:
        created = await reply.json()
        assert reply.status == 200, created
    socket = await http.ws_connect(f"{url}/api/terminals/{created['id']}")
    await socket.send_str(json.dumps({"type": "auth", "token": key}))
    await socket.send_bytes(b"echo smoke-$((40+2))\n")
    seen = b""
    deadline = time.monotonic() + timeout
    while b"smoke-42" not in seen:
        message = await socket.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert message.type == aiohttp.WSMsgType.BINARY, (message, seen)
        seen += message.data
    await socket.close()


async def writes_reads_and_uploads(http: aiohttp.ClientSession, url: str, directory: str) -> bytes:
    """Write a file and read it back, then upload random bytes as `<directory>/up.bin`; the bytes sent."""
    async with http.post(f"{url}/files/write", json={"path": "notes/a.txt", "content": "héllo\n"}) as reply:
        assert reply.status == 200, await reply.text()
    async with http.get(f"{url}/files/read?path=notes/a.txt") as reply:
        body = await reply.json()
        assert reply.status == 200 and body["content"] == "héllo\n", body
    payload = os.urandom(100_000)
    form = aiohttp.FormData()
    form.add_field("file", payload, filename="up.bin")
    async with http.post(f"{url}/files/upload?directory={directory}", data=form) as reply:
        body = await reply.json()
        assert reply.status == 200, body
        assert body["size"] == len(payload)
    return payload
