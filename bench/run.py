"""Benchmark of the real daemon: command latency, output throughput and the file API, as one table.

Run as ``.venv/bin/python bench/run.py [--smoke] [--write]`` (``make bench`` passes ``--write``).
The script starts two servers on 127.0.0.1, each on a free port with a fresh key and a scratch home,
both with the same scratch directory as cwd: the reference, open-terminal 0.14.5 from ``.bench/``
(which ``make bench`` installs), and opentermd (``dist/opentermd`` when that binary exists, else
``python -m daemon``). Every workload then measures one round on the reference, one on opentermd,
and so on for 3 rounds (A B A B A B); the table gives both medians, their ratio, opentermd's target
and whether it is met. The workloads:

* **exec latency**: sequential ``POST /execute?wait=5 {"command": "echo hi"}`` over one
  keep-alive connection, after a warm-up; every reply must carry ``hi\\r\\n``.
* **output throughput**: ``cat`` of a deterministic ~67 MB base64 file, followed with the
  long-poll ``GET /execute/{id}/status?offset=N&wait=5&until=output``; the text received must
  equal the file (the PTY turns ``\\n`` into ``\\r\\n``, which is undone before comparing).
* **file API**: list, read, grep, upload and view, described in ``bench/files.py``.
* **terminals**: WebSocket output throughput and keystroke echo latency, described in
  ``bench/terminals.py``.
* **notebooks**: kernel create-to-ready time and a ``1+1`` cell's round trip, described in
  ``bench/notebooks.py``.
* **compare**: ``POST /files/compare`` on two generated 10,000-line files (5% of lines changed,
  inserted, deleted or changed by a word), p50 over the runs; in ``bench/compare.py``.
* **pages** (opentermd only): the browse page of a 10,000-entry folder (time to first byte, target
  <= 150 ms; time to usable in headless Chromium), a thumbnail per image, and the script sizes of the
  editor's and the terminal's pages (raw and gzip); in ``bench/pages.py``.
* **start**: five fresh starts of each program, alternating (fresh HOME and TMPDIR, so the binary
  unpacks itself every time): time to the first 200 on ``/health``, idle RSS of the process tree,
  and the binary's size; in ``bench/binary.py``.
* **safety** (opentermd only, each on a fresh server, once the two above are stopped): load (100
  terminal WebSockets and 500 API requests at once), churn, 5,000 commands under a 256-fd limit, and
  the longest event-loop stall of each; in ``bench/safety.py``.

Shared parts (the servers, the alternation, the client session, the table) live in ``bench/harness.py``.
``--smoke`` runs the same code with tiny sizes and without the reference: opentermd runs twice, as A
and as B, so the alternation is exercised too (plus a unit check of it), in a few seconds.
``--write`` writes the table, with the machine and the date, to ``BENCHMARKS.md``.

A workload that breaks (an endpoint missing, an error status) is reported and the others still run.
When the reference answers wrong or lacks a feature its column says n/a (with a note); only
opentermd's wrong answers fail the run. Exit status: 0 when the run completed, even if a speed target
was missed (this is a report); 1 when opentermd answered wrong or lost output; 2 when a server or a
workload failed to run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
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

from bench import binary, compare, files, notebooks, pages, safety, terminals
from bench.harness import (
    HEADER,
    REPO,
    WORKLOAD_ERRORS,
    BenchError,
    Latency,
    Measure,
    Report,
    Sample,
    Server,
    alternate,
    call,
    check_alternation,
    describe,
    joined_output,
    machine_facts,
    markdown,
    megabytes,
    open_session,
    print_table,
    rows_of,
    servers_for,
)

#: Long-poll wait of one status request, in seconds (the API's `wait`).
POLL_WAIT = 5
#: Upper bounds of the throughput poll loop: it never runs longer or more often than this.
MAX_POLLS = 200_000
FOLLOW_TIMEOUT = 150.0
CORPUS_NAME = "corpus.b64"
BASE64_LINE = 76  # columns per line of `base64`, and of base64.encodebytes
EXPECTED_ECHO = "hi\r\n"


@dataclass(frozen=True)
class Sizes:
    warmup: int
    iterations: int
    file_bytes: int


#: Per round on one server; each server gets 3 rounds.
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


async def measure_latency(server: Server, sizes: Sizes) -> Latency:
    async with open_session(server.key) as session:
        return await exec_latency(session, server.base_url, sizes)


async def measure_throughput(server: Server, corpus: Path, expected: str) -> Throughput:
    async with open_session(server.key) as session:
        return await output_throughput(session, server.base_url, corpus, expected)


# --- the report -------------------------------------------------------------------------------------


def latency_samples(latency: Latency, report: Report) -> list[Sample]:
    """One round's latency figures; wrong answers go to the report."""
    if latency.failures:
        report.wrong_answer(f"exec: {latency.failures} of {len(latency.samples_ms)} replies to `echo hi` were wrong")
    return [
        Sample(f"exec latency p50 ({len(latency.samples_ms)}x)", latency.p50, "ms", "lower", 1.6, digits=2),
        Sample("exec latency p95", latency.p95, "ms", "lower", digits=2),
        Sample("exec latency max", latency.max, "ms", "lower", 10, digits=2),
        Sample("exec wrong outputs", latency.failures, "", "lower", 0, digits=0, target="0"),
    ]


def throughput_samples(throughput: Throughput, report: Report) -> list[Sample]:
    """One round's throughput figures; lost or altered output goes to the report."""
    if not throughput.correct:
        report.wrong_answer(f"exec: `cat` output lost {throughput.lost} bytes (differs: {throughput.mismatch}, "
                            f"truncated: {throughput.truncated})")
    return [
        Sample(f"output throughput ({megabytes(throughput.file_bytes)})", throughput.megabytes_per_second,
               "MB/s", "higher", 20),
        Sample("output bytes lost", throughput.lost + (0 if throughput.correct or throughput.lost else 1), "",
               "lower", 0, digits=0, target="0"),
    ]


def exec_measures(sizes: Sizes, corpus: Path, expected: str) -> list[tuple[str, Measure]]:
    """Latency and throughput apart, so that a server failing one still shows the other."""
    return [
        ("exec latency", lambda server, report: latency_samples(asyncio.run(measure_latency(server, sizes)), report)),
        ("output throughput", lambda server, report: throughput_samples(
            asyncio.run(measure_throughput(server, corpus, expected)), report)),
    ]


# --- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, opentermd as both A and B: prove the script works in seconds")
    parser.add_argument("--write", action="store_true", help=f"write the table to {BENCHMARKS.name}")
    args = parser.parse_args(argv)
    if args.smoke and args.write:
        parser.error(f"--smoke figures do not belong in {BENCHMARKS.name}")
    return args


BENCHMARKS = REPO / "BENCHMARKS.md"


def exec_workloads(servers: list[Server], sizes: Sizes, corpus: Path, report: Report) -> None:
    try:
        expected = corpus.read_text(encoding="ascii")
        for name, measure in exec_measures(sizes, corpus, expected):
            try:
                outcomes = alternate(servers, measure)
                report.rows.extend(rows_of(outcomes[0] if len(outcomes) > 1 else None, outcomes[-1], report))
            except (BenchError, *WORKLOAD_ERRORS) as exc:
                report.errors.append(f"{name}: {describe(exc)}")
    finally:
        corpus.unlink(missing_ok=True)


def start_workload(servers: list[Server], smoke: bool, report: Report) -> None:
    """Start time, idle memory and (for the binary) size, from fresh starts alternating A B.

    Run once the servers under test are stopped, after a sync: the file workloads leave hundreds
    of megabytes to write back, and a start (the binary unpacks ~47 MB) must not queue behind them.
    """
    starts = 1 if smoke else binary.STARTS
    os.sync()
    try:
        outcomes = alternate(servers, functools.partial(binary.start_samples, starts=starts), rounds=starts)
        report.rows.extend(rows_of(outcomes[0] if len(outcomes) > 1 else None, outcomes[-1], report))
    except (BenchError, *WORKLOAD_ERRORS) as exc:
        report.errors.append(f"start: {describe(exc)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    facts = machine_facts(args.smoke)
    print(facts, flush=True)
    if args.smoke:
        check_alternation()
    scratch = Path(tempfile.mkdtemp(prefix="opentermd-bench-"))
    servers = servers_for(scratch, args.smoke)
    header = (HEADER[0], *(server.label for server in servers), *HEADER[3:])
    started: list[str] = []
    report = Report()
    try:
        corpus = write_corpus(scratch, sizes.file_bytes)
        for server in servers:
            what = server.start()
            started.append(f"{server.label}: {what}")
            print(f"bench: {server.label} is {what}, on {server.base_url}", flush=True)
        exec_workloads(servers, sizes, corpus, report)
        files.run(servers, scratch, args.smoke, report)
        terminals.run(servers, args.smoke, report)
        notebooks.run(servers, args.smoke, report)
        compare.run(servers, args.smoke, report)
        pages.run(servers, args.smoke, report)
    except (BenchError, *WORKLOAD_ERRORS) as exc:
        report.errors.append(describe(exc))
    finally:
        problems = [server.stop() for server in servers]
        try:
            start_workload(servers, args.smoke, report)
            safety.run(scratch, args.smoke, report)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    report.errors.extend(problem for problem in problems if problem)
    if report.rows:
        print_table(report.rows, header)
    for note in report.notes:
        print(f"bench: note: {note}")
    if args.write and report.rows:
        BENCHMARKS.write_text(markdown(report.rows, facts, report.notes, started))
        print(f"bench: wrote {BENCHMARKS.name}")
    for wrong in report.wrong:
        print(f"bench: WRONG: {wrong}", file=sys.stderr)
    for error in report.errors:
        print(f"bench: FAILED: {error}", file=sys.stderr)
    return 2 if report.errors else 1 if report.wrong_count else 0


if __name__ == "__main__":
    sys.exit(main())
