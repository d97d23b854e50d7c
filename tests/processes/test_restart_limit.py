"""After a restart, a process a limit ended still says which limit (read back from its log's end record)."""

from __future__ import annotations

from typing import Any

from daemon.app import create_app
from tests.conftest import Api, make_config


async def test_the_limit_survives_a_restart(aiohttp_client: Any, tmp_path: Any) -> None:
    config = make_config(tmp_path, limit_cpu_seconds=1, limit_mechanism="rlimit")
    before = Api(await aiohttp_client(create_app(config)))
    spun = await before.run("while :; do :; done", wait=60)
    assert spun["limit"] == "cpu", spun
    fine = await before.run("true")
    await before.client.close()  # flushes and seals every log

    after = Api(await aiohttp_client(create_app(make_config(tmp_path))))  # limits off now: only the log says it
    status = await after.json("GET", f"/execute/{spun['id']}/status")
    assert status["limit"] == "cpu" and status["exit_code"] == spun["exit_code"], status
    assert "limit" not in await after.json("GET", f"/execute/{fine['id']}/status")  # absent when none did
