"""Kernels end: after 30 idle minutes, and with the daemon; checked by process group in /proc."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.app import create_app
from daemon.config import Config
from daemon.keys import NOTEBOOKS
from daemon.notebooks import table as notebook_table
from tests.conftest import Api, FakeClock, eventually, needs_host_view, process_group_members
from tests.notebooks.helpers import open_notebook, plain, run_cell, write_notebook

GROUP = "import os\nos.getpgid(0)"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(1000.0)
    monkeypatch.setattr(notebook_table, "time", fake)
    return fake


@needs_host_view("the cell reads its process group id, which a pid namespace renumbers")
async def test_sessions_idle_for_30_minutes_are_reaped(api: Api, scratch_environment: Path, clock: FakeClock) -> None:
    write_notebook(scratch_environment / "idle.ipynb", GROUP)
    table = api.client.app[NOTEBOOKS]
    idle, used = await open_notebook(api, "idle.ipynb"), await open_notebook(api, "idle.ipynb")
    group = int(plain(await run_cell(api, idle, 0)))
    clock.advance(600.0)
    await run_cell(api, used, 0)  # a cell run is use: its 30 minutes start again
    clock.advance(1200.0)
    assert await table.reap_idle() == []  # exactly 30 minutes is not past the limit
    clock.advance(0.5)
    assert await table.reap_idle() == [idle]
    await eventually(lambda: not process_group_members(group))
    await api.json("GET", f"/notebooks/{idle}", status=404)
    assert (await api.json("GET", f"/notebooks/{used}"))["status"] == "ready"
    clock.advance(600.0)
    assert await table.reap_idle() == [used]


@needs_host_view("the cell reads its process group id, which a pid namespace renumbers")
async def test_shutdown_kills_every_kernels_group(aiohttp_client: Any, config: Config,
                                                  scratch_environment: Path) -> None:
    write_notebook(scratch_environment / "bye.ipynb",
                   "import os, subprocess\nsubprocess.Popen(['sleep', '600'])\nos.getpgid(0)")
    client = await aiohttp_client(create_app(config))
    api = Api(client)
    groups = []
    for _ in range(2):
        session = await open_notebook(api, "bye.ipynb")
        groups.append(int(plain(await run_cell(api, session, 0))))
    assert all(process_group_members(group) for group in groups)
    await client.close()  # the app's cleanup: what SIGTERM leads to
    # SIGKILL is sent to each group before close() returns; /proc shows the deaths a moment later.
    await eventually(lambda: not [group for group in groups if process_group_members(group)])
