"""What every benchmark module shares: the daemon under test, its client session and the report table."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import queue
import re
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from yarl import URL

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0
#: Wrong answers quoted on stderr; the rest are only counted.
QUOTED_PROBLEMS = 10
URL_LINE = re.compile(r"Local URL: http://(?:\[[^\]]+\]|[^\s:/]+):(\d+)")

Json = dict[str, Any]

#: What a workload may raise when the daemon misbehaves or the network fails; anything else is a bug.
WORKLOAD_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, KeyError, ValueError, TypeError)


class BenchError(Exception):
    """The daemon or the benchmark failed; the run has no figures worth reporting."""


def describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Latency:
    samples_ms: list[float]
    failures: int

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest rank

    @property
    def max(self) -> float:
        return max(self.samples_ms)


@dataclass(frozen=True)
class Row:
    workload: str
    figure: str
    target: str
    result: str  # PASS, FAIL or "-" (reported only)


@dataclass
class Report:
    """What the workloads found: table rows, wrong answers (exit 1), and workloads that broke (exit 2)."""

    rows: list[Row] = field(default_factory=list)
    #: The first few distinct wrong answers, quoted on stderr; `wrong_count` counts them all.
    wrong: list[str] = field(default_factory=list)
    wrong_count: int = 0
    errors: list[str] = field(default_factory=list)

    def wrong_answer(self, problem: str) -> None:
        self.wrong_count += 1
        if len(self.wrong) < QUOTED_PROBLEMS and problem not in self.wrong:
            self.wrong.append(problem)


# --- the daemon -------------------------------------------------------------------------------------


class Daemon:
    """`python -m daemon run` on a free loopback port, with its own scratch home."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.key = secrets.token_urlsafe(24)
        self.stderr_path = scratch / "daemon.stderr"
        self.port = 0
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise BenchError("the daemon is not running")
        return self._process.pid

    def start(self) -> None:
        command = [sys.executable, "-m", "daemon", "run", "--host", HOST, "--port", "0",
                   f"--api-key={self.key}", "--cwd", str(self.scratch)]  # a key may start with "-"
        env = {**os.environ, "HOME": str(self.scratch), "SHELL": "/bin/bash",
               "XDG_STATE_HOME": str(self.scratch / "state")}
        with self.stderr_path.open("w") as stderr:
            self._process = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert self._process.stdout is not None
        threading.Thread(target=_pump, args=(self._process.stdout, self._lines), daemon=True).start()
        self.port = self._await_port()

    def _await_port(self) -> int:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        seen: list[str] = []
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise BenchError(f"daemon exited before announcing its URL{self._stderr_tail()}")
            seen.append(line.rstrip())
            if match := URL_LINE.search(line):
                return int(match.group(1))
        raise BenchError(f"daemon printed no 'Local URL' line within {STARTUP_TIMEOUT:.0f} s "
                         f"(stdout: {seen!r}){self._stderr_tail()}")

    def stop(self) -> str | None:
        """SIGTERM and wait; returns a problem to report, or None after a clean exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return None if process is None else f"daemon died during the run (exit {process.returncode})"
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
            return f"daemon ignored SIGTERM for {STOP_TIMEOUT:.0f} s and was killed"
        return None if code == 0 else f"daemon exited with status {code} after SIGTERM{self._stderr_tail()}"

    def _stderr_tail(self, lines: int = 20) -> str:
        try:
            tail = self.stderr_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n--- daemon stderr ---\n" + "\n".join(tail) if tail else ""


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Move the daemon's stdout into a queue (so reads can time out); ends at EOF."""
    for line in stream:
        lines.put(line)
    lines.put(None)


# --- the client -------------------------------------------------------------------------------------


def open_session(key: str, *, json_body: bool = True, limit: int = 4) -> aiohttp.ClientSession:
    """A keep-alive session that sends the key; `json_body` adds `Content-Type: application/json`
    to every request (leave it off when some requests carry another body, such as multipart)."""
    headers = {"Authorization": f"Bearer {key}"}
    if json_body:
        headers["Content-Type"] = "application/json"
    connector = aiohttp.TCPConnector(limit=limit)
    # No cookies to keep, and URLs parsed once by the callers: the client's share of each round trip stays small.
    return aiohttp.ClientSession(headers=headers, connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                 timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))


async def fetch(session: aiohttp.ClientSession, method: str, url: str | URL, body: Any = None,
                **options: Any) -> bytes:
    """The body of a 200 reply, or a BenchError that quotes the status and the start of the body."""
    async with session.request(method, url, data=body, **options) as response:
        payload = await response.read()
        if response.status != 200:
            raise BenchError(f"{method} {url} answered {response.status}: {payload[:300]!r}")
    return payload


def parse_object(payload: bytes, what: str) -> Json:
    reply = json.loads(payload)
    if not isinstance(reply, dict):
        raise BenchError(f"{what} answered with a {type(reply).__name__}, not an object")
    return reply


async def call(session: aiohttp.ClientSession, method: str, url: str | URL, body: Any = None,
               **options: Any) -> Json:
    """A JSON object from a 200 reply."""
    return parse_object(await fetch(session, method, url, body, **options), f"{method} {url}")


# --- the report -------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size >= 10_000_000 else f"{size / 1e6:.1f} MB"


def machine_facts(smoke: bool) -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    mode = " (smoke)" if smoke else ""
    return (f"opentermd bench{mode}: nproc {cpus}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()} {platform.machine()}, {now}")


def print_table(table: list[Row]) -> None:
    header = Row("workload", "figure", "target", "result")
    widths = [max(minimum, *(len(getattr(row, column)) + 2 for row in table))
              for column, minimum in (("workload", 29), ("figure", 20), ("target", 14))]
    for row in (header, *table):
        cells = (row.workload, row.figure, row.target)
        print("".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + row.result)
