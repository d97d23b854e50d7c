"""The sandbox's view holds while a command swaps a workspace folder with a link into the hidden state.

The attack (as tests/files/test_root_race.py's for `--root`): `dir` (a real folder) and `swap` (a
link to the state folder, hidden from commands) are exchanged with renameat2(RENAME_EXCHANGE) in a
loop while the file API reads and writes `dir/secret.txt`. A check of the path followed by an open by
name would read the state's file, or write into the state, some of the time; the descriptor's own
path is checked after the open (reads) and writes are opened beneath the workspace: 0 escapes.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.files.test_root_race import Swapper
from tests.test_sandbox import sandboxed

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

TRIES = 600
SECRET = "STATE-SECRET"


async def test_swapping_a_folder_for_a_link_into_the_state_never_leaks(aiohttp_client: Any, workspace: Path) -> None:
    (workspace / "dir").mkdir()
    (workspace / "dir" / "secret.txt").write_text("inside\n")
    (workspace / "state" / "secret.txt").write_text(f"{SECRET}\n")
    (workspace / "swap").symlink_to(workspace / "state")
    api = await sandboxed(aiohttp_client, workspace)
    swapper = Swapper(workspace / "dir", workspace / "swap")
    outcomes: dict[int, int] = {}
    leaks = 0

    async def one(index: int) -> None:
        nonlocal leaks
        if index % 2:
            read = {"path": str(workspace / "dir" / "secret.txt")}
            async with api.request("GET", "/files/read", params=read) as reply:
                leaks += SECRET in await reply.text()
                outcomes[reply.status] = outcomes.get(reply.status, 0) + 1
        else:
            async with api.request("POST", "/files/write", json={"path": str(workspace / "dir" / f"w{index}.txt"),
                                                                  "content": "x"}) as reply:
                outcomes[reply.status] = outcomes.get(reply.status, 0) + 1

    swapper.start()
    try:
        for start in range(0, TRIES, 6):
            await asyncio.gather(*(one(index) for index in range(start, start + 6)))
    finally:
        swapper.finish()
    assert leaks == 0
    assert not list((workspace / "state").glob("w*.txt")), "a write landed in the hidden state"
    assert 500 not in outcomes and outcomes.get(200, 0) > 0, outcomes
