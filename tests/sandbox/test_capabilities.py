"""A sandboxed child holds no capability, even in its own user namespace.

The attack: bubblewrap keeps every capability for a daemon running as root (uid 0 in the sandbox's
user namespace), and with CAP_SYS_ADMIN there a command unmounts the tmpfs laid over the daemon's
state folder and reads what is beneath. Tried from a command in the resident sandbox, a cold-started
one (under limits) and a terminal shell."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import output_text
from tests.terminals.test_terminals import attach, create, read_until
from tests.test_sandbox import sandboxed

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

ATTEMPT = "grep CapEff /proc/self/status; umount {state} 2>/dev/null; cat {state}/secret 2>/dev/null; echo end-$((6*7))"


@pytest.mark.parametrize("limited", [False, True], ids=["resident", "cold under limits"])
async def test_a_command_cannot_unmount_what_hides_the_state(aiohttp_client: Any, workspace: Path,
                                                             limited: bool) -> None:
    api = await sandboxed(aiohttp_client, workspace, **({"limit_processes": 50} if limited else {}))
    reply = await api.run(ATTEMPT.format(state=workspace / "state"))
    assert output_text(reply).split() == ["CapEff:", "0000000000000000", "end-42"]


async def test_a_terminal_shell_cannot_unmount_what_hides_the_state(aiohttp_client: Any, workspace: Path) -> None:
    api = await sandboxed(aiohttp_client, workspace)
    socket = await attach(api, (await create(api))["id"])
    await socket.send_bytes((ATTEMPT.format(state=workspace / "state") + "\n").encode())
    seen = await read_until(socket, b"end-42")
    assert b"CapEff:\t0000000000000000" in seen and b"state secret" not in seen
    await socket.close()
