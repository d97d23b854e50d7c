"""Benchmark of the real daemon: command latency and output throughput, printed as one table.

Run as ``.venv/bin/python bench/run.py [--smoke]`` (``make bench``). The script starts
``python -m daemon run`` on 127.0.0.1 with a free port, a fresh key and a scratch home, then runs:

* **exec latency**: sequential ``POST /execute?wait=5 {"command": "echo hi"}`` over one
  keep-alive connection, after a warm-up; every reply must carry ``hi\\r\\n``.
* **output throughput**: ``cat`` of a deterministic ~67 MB base64 file, followed with the
  long-poll ``GET /execute/{id}/status?offset=N&wait=5&until=output``; the text received must
  equal the file (the PTY turns ``\\n`` into ``\\r\\n``, which is undone before comparing).

``--smoke`` runs the same code with tiny sizes, to prove the script works in a few seconds.

Exit status: 0 when the run completed, even if a speed target was missed (this is a report);
1 when output was wrong or lost; 2 when the daemon or the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import gc
import json
import math
import os
import platform
import queue
import random
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
from yarl import URL

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0
#: Long-poll wait of one status request, in seconds (the API's `wait`).
POLL_WAIT = 5
#: Upper bounds of the throughput poll loop: it never runs longer or more often than this.
MAX_POLLS = 200_000
FOLLOW_TIMEOUT = 300.0
URL_LINE = re.compile(r"Local URL: http://(?:\[[^\]]+\]|[^\s:/]+):(\d+)")
CORPUS_NAME = "corpus.b64"
BASE64_LINE = 76  # columns per line of `base64`, and of base64.encodebytes
EXPECTED_ECHO = "hi\r\n"

Json = dict[str, Any]


class BenchError(Exception):
    """The daemon or the benchmark failed; the run has no figures worth reporting."""


@dataclass(frozen=True)
class Sizes:
    warmup: int
    iterations: int
    file_bytes: int


FULL = Sizes(warmup=10, iterations=200, file_bytes=67_000_000)
SMOKE = Sizes(warmup=2, iterations=5, file_bytes=200_000)


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
class Throughput:
    file_bytes: int
    seconds: float
    lost: int
    mismatch: bool
    truncated: bool
    polls: int

    @property
    def megabytes_per_second(self) -> float:
        return self.file_bytes / 1e6 / self.seconds if self.seconds > 0 else math.inf

    @property
    def correct(self) -> bool:
        return self.lost == 0 and not self.mismatch and not self.truncated


@dataclass(frozen=True)
class Row:
    workload: str
    figure: str
    target: str
    result: str  # PASS, FAIL or "-" (reported only)


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

    def start(self) -> None:
        command = [sys.executable, "-m", "daemon", "run", "--host", HOST, "--port", "0",
                   "--api-key", self.key, "--cwd", str(self.scratch)]
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


# --- the corpus -------------------------------------------------------------------------------------


def write_corpus(directory: Path, size: int) -> Path:
    """A deterministic base64 text of about `size` bytes, wrapped at 76 columns like `base64`."""
    raw_bytes = size * 57 // (BASE64_LINE + 1)  # 57 raw bytes make one 76-column line plus newline
    text = base64.encodebytes(random.Random(1234).randbytes(raw_bytes))
    path = directory / CORPUS_NAME
    path.write_bytes(text)
    # Write it back now: the kernel flushing 67 MB in the background would otherwise be measured
    # as part of the latency workload.
    os.sync()
    return path


# --- the client -------------------------------------------------------------------------------------


async def call(session: aiohttp.ClientSession, method: str, url: str | URL, body: bytes | None = None) -> Json:
    async with session.request(method, url, data=body) as response:
        payload = await response.read()
        if response.status != 200:
            raise BenchError(f"{method} {url} answered {response.status}: {payload[:300]!r}")
    reply = json.loads(payload)
    if not isinstance(reply, dict):
        raise BenchError(f"{method} {url} answered with a {type(reply).__name__}, not an object")
    return reply


def joined_output(reply: Json) -> str:
    return "".join(entry.get("data", "") for entry in reply.get("output", []) if entry.get("type") == "output")


def open_session(key: str) -> aiohttp.ClientSession:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=4)
    # No cookies to keep, and (below) URLs parsed once: the client's share of each round trip stays small.
    return aiohttp.ClientSession(headers=headers, connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                 timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))


async def exec_latency(session: aiohttp.ClientSession, base_url: str, sizes: Sizes) -> Latency:
    url = URL(f"{base_url}/execute?wait=5")
    body = json.dumps({"command": "echo hi"}).encode()
    for _ in range(sizes.warmup):
        await call(session, "POST", url, body)
    samples: list[float] = []
    failures = 0
    # The client's own collector stays out of the timed loop; its pauses are not the daemon's.
    gc.collect()
    gc.disable()
    try:
        for _ in range(sizes.iterations):
            started = time.perf_counter()
            reply = await call(session, "POST", url, body)
            samples.append((time.perf_counter() - started) * 1000)
            if joined_output(reply) != EXPECTED_ECHO or reply.get("exit_code") != 0:
                failures += 1
    finally:
        gc.enable()
    return Latency(samples, failures)


async def output_throughput(session: aiohttp.ClientSession, base_url: str, corpus: Path, expected: str) -> Throughput:
    body = json.dumps({"command": f"cat {shlex.quote(str(corpus))}"}).encode()
    started = time.perf_counter()
    reply = await call(session, "POST", f"{base_url}/execute", body)
    status_url = f"{base_url}/execute/{reply['id']}/status"
    chunks = [joined_output(reply)]
    offset = int(reply["next_offset"])
    truncated = bool(reply.get("truncated"))
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    polls = 0
    while True:
        if polls >= MAX_POLLS or time.monotonic() > deadline:
            raise BenchError(f"`cat` still running after {polls} polls / {FOLLOW_TIMEOUT:.0f} s")
        reply = await call(session, "GET", f"{status_url}?offset={offset}&wait={POLL_WAIT}&until=output")
        polls += 1
        entries = reply.get("output", [])
        chunks.append(joined_output(reply))
        offset = int(reply["next_offset"])
        truncated = truncated or bool(reply.get("truncated"))
        if reply.get("status") != "running" and not entries:
            break
    seconds = time.perf_counter() - started
    received = "".join(chunks).replace("\r\n", "\n")
    return Throughput(file_bytes=len(expected), seconds=seconds, lost=abs(len(expected) - len(received)),
                      mismatch=received != expected, truncated=truncated, polls=polls)


async def run_workloads(daemon: Daemon, sizes: Sizes, corpus: Path, expected: str) -> tuple[Latency, Throughput]:
    async with open_session(daemon.key) as session:
        latency = await exec_latency(session, daemon.base_url, sizes)
        throughput = await output_throughput(session, daemon.base_url, corpus, expected)
    return latency, throughput


# --- the report -------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size >= 10_000_000 else f"{size / 1e6:.1f} MB"


def rows(latency: Latency, throughput: Throughput) -> list[Row]:
    flags = [flag for flag, on in (("content differs", throughput.mismatch), ("truncated", throughput.truncated)) if on]
    lost = f"{throughput.lost} ({', '.join(flags)})" if flags else str(throughput.lost)
    return [
        Row(f"exec latency p50 ({len(latency.samples_ms)}x)", f"{latency.p50:.2f} ms", "<= 1.6 ms",
            verdict(latency.p50 <= 1.6)),
        Row("exec latency p95", f"{latency.p95:.2f} ms", "(report)", "-"),
        Row("exec latency max", f"{latency.max:.2f} ms", "< 10 ms", verdict(latency.max < 10)),
        Row("exec wrong outputs", str(latency.failures), "0", verdict(latency.failures == 0)),
        Row(f"output throughput ({megabytes(throughput.file_bytes)})",
            f"{throughput.megabytes_per_second:.1f} MB/s", ">= 20 MB/s",
            verdict(throughput.megabytes_per_second >= 20)),
        Row("output bytes lost", lost, "0", verdict(throughput.correct)),
    ]


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


# --- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: prove the script works in seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    print(machine_facts(args.smoke), flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="opentermd-bench-"))
    daemon = Daemon(scratch)
    failure: str | None = None
    results: tuple[Latency, Throughput] | None = None
    try:
        corpus = write_corpus(scratch, sizes.file_bytes)
        expected = corpus.read_text(encoding="ascii")
        daemon.start()
        results = asyncio.run(run_workloads(daemon, sizes, corpus, expected))
    except (BenchError, aiohttp.ClientError, TimeoutError, OSError, KeyError, ValueError) as exc:
        failure = f"{type(exc).__name__}: {exc}" if not isinstance(exc, BenchError) else str(exc)
    finally:
        problem = daemon.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    failure = failure or problem
    if results is not None:
        print_table(rows(*results))
    if failure:
        print(f"bench: FAILED: {failure}", file=sys.stderr)
        return 2
    assert results is not None
    latency, throughput = results
    return 0 if latency.failures == 0 and throughput.correct else 1


if __name__ == "__main__":
    sys.exit(main())
