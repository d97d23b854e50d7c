"""Benchmark of the real daemon: command latency, output throughput and the file API, as one table.

Run as ``.venv/bin/python bench/run.py [--smoke]`` (``make bench``). The script starts
``python -m daemon run`` on 127.0.0.1 with a free port, a fresh key and a scratch home, then runs:

* **exec latency**: sequential ``POST /execute?wait=5 {"command": "echo hi"}`` over one
  keep-alive connection, after a warm-up; every reply must carry ``hi\\r\\n``.
* **output throughput**: ``cat`` of a deterministic ~67 MB base64 file, followed with the
  long-poll ``GET /execute/{id}/status?offset=N&wait=5&until=output``; the text received must
  equal the file (the PTY turns ``\\n`` into ``\\r\\n``, which is undone before comparing).
* **file API**: list, read, grep, upload and view, described in ``bench/files.py``.
* **terminals**: WebSocket output throughput and keystroke echo latency, described in
  ``bench/terminals.py``.

Shared parts (the daemon, the client session, the table) live in ``bench/harness.py``.
``--smoke`` runs the same code with tiny sizes, to prove the script works in a few seconds.

A workload that breaks (an endpoint missing, an error status) is reported and the others still run.
Exit status: 0 when the run completed, even if a speed target was missed (this is a report);
1 when an answer was wrong or output lost; 2 when the daemon or a workload failed to run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import math
import os
import random
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from yarl import URL

if __package__ in (None, ""):  # run as a script, `python bench/run.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import files, terminals
from bench.harness import (
    WORKLOAD_ERRORS,
    BenchError,
    Daemon,
    Json,
    Latency,
    Report,
    Row,
    call,
    describe,
    machine_facts,
    megabytes,
    open_session,
    print_table,
    verdict,
)

#: Long-poll wait of one status request, in seconds (the API's `wait`).
POLL_WAIT = 5
#: Upper bounds of the throughput poll loop: it never runs longer or more often than this.
MAX_POLLS = 200_000
FOLLOW_TIMEOUT = 300.0
CORPUS_NAME = "corpus.b64"
BASE64_LINE = 76  # columns per line of `base64`, and of base64.encodebytes
EXPECTED_ECHO = "hi\r\n"


@dataclass(frozen=True)
class Sizes:
    warmup: int
    iterations: int
    file_bytes: int


FULL = Sizes(warmup=10, iterations=200, file_bytes=67_000_000)
SMOKE = Sizes(warmup=2, iterations=5, file_bytes=200_000)


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


# --- the exec workloads -----------------------------------------------------------------------------


def joined_output(reply: Json) -> str:
    return "".join(entry.get("data", "") for entry in reply.get("output", []) if entry.get("type") == "output")


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


# --- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: prove the script works in seconds")
    return parser.parse_args(argv)


def exec_workloads(daemon: Daemon, sizes: Sizes, corpus: Path, report: Report) -> None:
    try:
        expected = corpus.read_text(encoding="ascii")
        latency, throughput = asyncio.run(run_workloads(daemon, sizes, corpus, expected))
    except (BenchError, *WORKLOAD_ERRORS) as exc:
        report.errors.append(f"exec: {describe(exc)}")
        return
    finally:
        corpus.unlink(missing_ok=True)
    report.rows.extend(rows(latency, throughput))
    if latency.failures:
        report.wrong_answer(f"exec: {latency.failures} of {len(latency.samples_ms)} replies to `echo hi` were wrong")
    if not throughput.correct:
        report.wrong_answer(f"exec: `cat` output lost {throughput.lost} bytes (differs: {throughput.mismatch}, "
                            f"truncated: {throughput.truncated})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    print(machine_facts(args.smoke), flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="opentermd-bench-"))
    daemon = Daemon(scratch)
    report = Report()
    try:
        corpus = write_corpus(scratch, sizes.file_bytes)
        daemon.start()
        exec_workloads(daemon, sizes, corpus, report)
        files.run(daemon, scratch, args.smoke, report)
        terminals.run(daemon, args.smoke, report)
    except (BenchError, *WORKLOAD_ERRORS) as exc:
        report.errors.append(describe(exc))
    finally:
        problem = daemon.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    if problem:
        report.errors.append(problem)
    if report.rows:
        print_table(report.rows)
    for wrong in report.wrong:
        print(f"bench: WRONG: {wrong}", file=sys.stderr)
    for error in report.errors:
        print(f"bench: FAILED: {error}", file=sys.stderr)
    return 2 if report.errors else 1 if report.wrong_count else 0


if __name__ == "__main__":
    sys.exit(main())
