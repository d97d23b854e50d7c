"""With the network off a sandbox has its own network namespace: /ports still lists the servers
started inside, and /proxy still reaches them (through a socket made in that namespace)."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from daemon.net import namespaces
from tests.conftest import Api, eventually, output_text
from tests.test_sandbox import sandboxed

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

SERVER = ("echo served > page.txt; python3 -c \"import http.server as h; "
          "s = h.HTTPServer(('127.0.0.1', 0), h.SimpleHTTPRequestHandler); "
          "print('listening', s.server_address[1], flush=True); s.serve_forever()\"")


async def _port(api: Api, process_id: str) -> int | None:
    status = await api.json("GET", f"/execute/{process_id}/status")
    found = re.search(r"listening (\d+)", output_text(status))
    return int(found.group(1)) if found else None


async def test_a_server_in_a_sandbox_without_network_is_listed_and_proxied(aiohttp_client: Any,
                                                                            workspace: Path) -> None:
    api = await sandboxed(aiohttp_client, workspace, sandbox_network=False)
    started = await api.json("POST", "/execute", json={"command": SERVER})
    port = await eventually(lambda: _port(api, started["id"]))

    async def listed() -> bool:
        return port in [entry["port"] for entry in (await api.json("GET", "/ports"))["ports"]]

    await eventually(listed)
    async with api.request("GET", f"/proxy/{port}/page.txt") as response:
        assert response.status == 200 and await response.text() == "served\n"
    # The control: the server is not on the daemon's own loopback (a namespace of its own).
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=3):
        pass
    await api.json("DELETE", f"/execute/{started['id']}?force=true")


def test_a_socket_made_in_another_namespace_belongs_to_it() -> None:
    """As root: the socket the proxy gets lives in the pid's namespace, here our own (a no-op entry)."""
    import os

    made = namespaces.socket_in(os.getpid(), (socket.AF_INET, socket.SOCK_STREAM, 0, "", ("127.0.0.1", 0)))
    with made:
        assert made.family == socket.AF_INET
    assert namespaces.namespace_of(os.getpid()) == os.stat("/proc/self/ns/net").st_ino
    assert namespaces.namespace_of(2**22 + 12345) is None
