"""Shared fixtures: a real daemon on a free loopback port, with a scratch home and state dir."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from daemon.app import create_app
from daemon.config import Config

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                               ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """In CI (`CI=true`) a skipped test fails: a missing chromium or ripgrep must not pass quietly."""
    report: pytest.TestReport = yield
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("CI", "").lower() in ("1", "true"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {reason}"
    return report


@pytest.fixture(autouse=True)
def scratch_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Shells get a scratch HOME (the machine's ~/.bashrc runs pyenv, slow under load)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHELL", "/bin/bash")
    return home


#: `OPEN_TERMINAL_TEST_SANDBOX=bwrap` runs the suites with every test server sandboxed (see `make test`).
TEST_SANDBOX = os.environ.get("OPEN_TERMINAL_TEST_SANDBOX", "off")
#: On a test that reaches outside the workspace on purpose: the sandboxed run leaves it out (`-m "not host_view"`).
needs_host_view = pytest.mark.host_view


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "api_key": KEY, "cwd": tmp_path / "home", "state_dir": tmp_path / "state", "sandbox": TEST_SANDBOX,
    }
    settings.update(overrides)
    return Config(**settings)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


class Api:
    """A client of a real server on 127.0.0.1 that sends the key unless told otherwise."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client

    def request(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        headers = {**(AUTH if auth else {}), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    async def json(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        async with self.request(method, path, **kwargs) as response:
            body = await response.json()
            assert response.status == status, (response.status, body)
            return body

    async def run(self, command: str, wait: float = 10, headers: dict[str, str] | None = None,
                  **body: Any) -> dict[str, Any]:
        """Start a command, waiting up to `wait` seconds for it to finish; return the reply."""
        reply: dict[str, Any] = await self.json(
            "POST", f"/execute?wait={wait}", json={"command": command, **body}, headers=headers or {})
        return reply


ApiFactory = Callable[..., Any]


@pytest.fixture
async def api(aiohttp_client: Any, config: Config) -> AsyncIterator[Api]:
    client = await aiohttp_client(create_app(config))
    yield Api(client)


@pytest.fixture
def api_with(aiohttp_client: Any, tmp_path: Path) -> ApiFactory:
    """A server with some settings changed: `await api_with(max_log_size=1000)`."""

    async def start(**overrides: Any) -> Api:
        return Api(await aiohttp_client(create_app(make_config(tmp_path, **overrides))))

    return start


def output_text(reply: dict[str, Any]) -> str:
    return "".join(entry["data"] for entry in reply["output"])


PROCESS_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")


def process_stats() -> dict[int, list[str]]:
    """Every process's /proc/<pid>/stat fields after its name: state, ppid, pgrp, ..."""
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        stats[int(entry)] = stat[stat.rindex(")") + 2:].split()
    return stats


def process_group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`, read from /proc."""
    members = []
    for entry, fields in process_stats().items():
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


class FakeClock:
    """A clock moved by hand, from an exact start: never from time.monotonic(), where `now + 100 - now`
    may not be 100 and the float a run happened to start at would decide the edge tests. Call it, or
    let it stand in for the `time` module (it has `monotonic`)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll a condition from synchronous code (a thread or a subprocess test, never a coroutine:
    it would block the event loop the server runs on; use `eventually` there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


async def eventually(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.01) -> Any:
    """Wait, without blocking the event loop, until `predicate()` (or the awaitable it returns) is
    truthy, and return that value; fail with the predicate's name after `timeout` seconds.

    This is how tests synchronise on observable state instead of sleeping: the generous timeout only
    bounds a failing test, a passing one returns as soon as the state is there, however busy the machine.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition {getattr(predicate, '__qualname__', predicate)!r} "
                                 f"not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(interval)


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[tuple[int, str, dict[str, str]]]:
    """The daemon as its own process (so its memory can be read), serving tmp_path/dest."""
    import subprocess

    from tests.test_cli import ROOT, _banner, daemon_command, environment

    (tmp_path / "dest").mkdir()
    with subprocess.Popen(daemon_command("run", "--port", "0", "--cwd", str(tmp_path / "dest")), cwd=ROOT,
                          env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        for running, url in _banner(process):
            yield process.pid, url, {"Authorization": f"Bearer {running.key}"}  # type: ignore[attr-defined]
