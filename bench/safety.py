"""Safety figures: opentermd under load, churn, thousands of commands under a low fd limit, and fuzz.

``make bench`` adds them to its table (``bench/run.py``); alone: ``.venv/bin/python bench/safety.py
[--smoke]``. Each workload starts an opentermd of its own (``dist/opentermd`` when built, else
``python -m daemon``: ``harness.Server``) on 127.0.0.1 with the event-loop watchdog on
(``OPEN_TERMINAL_LOOP_WATCHDOG``), so the longest stall it reports (``<state>/loop-stall.json``) covers
that workload alone. Only opentermd is measured: these are its safety targets, not a race.

* **load**: 100 terminals running ``cat``, attached by WebSocket (auth frame, resize), 10 being
  opened at a time (a burst of 100 shells starting at once is its own figure: the stall by then); then
  at once each types 10 keys, one at a time, awaiting each echo, while 500 API requests are all in
  flight (in turn ``GET /files/list``, ``GET /files/read`` and ``POST /execute?wait=10`` of ``echo hi``,
  every answer checked). Errors (a terminal that failed anywhere from create to its close 1000, or a
  request answered wrong) with target 0; the server's RSS and open fds before and after (after: every
  terminal closed, fds given up to 10 s to fall back); the longest event-loop stall, target <= 100 ms.
  The caps are raised to fit the load (``OPEN_TERMINAL_MAX_SESSIONS``, ``_MAX_PROCESSES`` and
  ``_MAX_CONNECTIONS``).
* **churn**: 200 cycles of a process (``POST /execute?wait=10`` of ``true``, answered at its exit) then
  a terminal (create, attach and one echo, close the WebSocket): p50 of each and of the pair (target
  <= 20 ms per pair).
* **fd limit**: the server under ``prlimit --nofile=256:256``: 5,000 ``echo hi`` from 4 clients, then
  200 terminal cycles; failures (target 0) and the fds after (target: back to the baseline taken
  after a warm-up, within 10 s).
* **fuzz**: schemathesis over ``/openapi.json`` runs in ``make test`` and ``make fuzz``
  (``tests/fuzz/``); its row points there.

Every loop is bounded in count and in time; a workload that stops after repeated failures counts
what it did not run as failed. Failures are figures here (a FAIL in the table, the first few quoted
as notes), not a broken run: the exit status is 2 only when a server or workload could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

if __package__ in (None, ""):  # run as a script, `python bench/safety.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.files import status_kib
from bench.harness import (
    HEADER,
    WORKLOAD_ERRORS,
    BenchError,
    Measure,
    Report,
    Row,
    Sample,
    Server,
    alternate,
    call,
    describe,
    joined_output,
    machine_facts,
    open_session,
    print_table,
    rows_of,
)
from bench.terminals import CLOSE_TIMEOUT, ECHO_TIMEOUT, Terminal, attached, create_terminal
from daemon.watchdog import STALL_FILE

MAX_STALL_MS = 100.0
MAX_PAIR_MS = 20.0
FD_LIMIT = 256
SETTLE_POLL = 0.1
#: Terminals being opened at once by the load workload.
OPENING = 10
#: Seconds the warm-up's connection gets to close before the "before" figures.
WARM_SETTLE = 2.0
#: Seconds one request may take here (shorter than the harness's: a stuck daemon must not stall the bench).
REQUEST_TIMEOUT = 15.0
#: A stream of work stops after this many failures in a row; what it did not run counts as failed.
GIVE_UP_AFTER = 20
#: Problems quoted in the notes, per workload.
QUOTED = 3
READ_NAME = "safety-read.txt"
READ_TEXT = "line one\nline two\n"


@dataclass(frozen=True)
class Sizes:
    terminals: int
    keystrokes: int
    requests: int
    churn: int
    commands: int
    clients: int
    terminal_cycles: int
    #: Seconds one workload may run.
    budget: float
    #: Seconds the server gets to give fds back once a workload is over.
    settle: float


FULL = Sizes(terminals=100, keystrokes=10, requests=500, churn=200, commands=5000, clients=4,
             terminal_cycles=200, budget=600.0, settle=10.0)
SMOKE = Sizes(terminals=3, keystrokes=2, requests=9, churn=3, commands=10, clients=2, terminal_cycles=2,
              budget=60.0, settle=1.0)


@dataclass
class Tally:
    """Failures of one stream of work, the first few distinct ones quoted."""

    what: str
    done: int = 0
    failed: int = 0
    quoted: list[str] = field(default_factory=list)

    def fail(self, exc: BaseException) -> None:
        self.failed += 1
        problem = describe(exc)
        if len(self.quoted) < QUOTED and problem not in self.quoted:
            self.quoted.append(problem)

    def note(self, report: Report) -> None:
        for problem in self.quoted:
            report.notes.append(f"{self.what}: {problem}")


# --- what the server holds --------------------------------------------------------------------------


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    return status_kib(pid, "VmRSS") / 1e6


async def settled_fds(pid: int, baseline: int, settle: float) -> int:
    """The server's fd count once it fell to `baseline`, or after `settle` seconds (closes finish in the
    background: a killed terminal's PTY goes once its shell is reaped)."""
    deadline = time.monotonic() + settle
    # Polling: /proc is another process's state, with nothing to wait on.
    while (count := open_fds(pid)) > baseline and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(SETTLE_POLL)
    return count


def longest_stall_ms(server: Server, figure: str = "longest_stall_ms") -> float:
    """A figure of the daemon's event-loop watchdog (`daemon/watchdog.py`), in ms."""
    path = server.state_dir / STALL_FILE
    try:
        stall: float = json.loads(path.read_text())[figure]
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"no event-loop stall figure in {path} ({describe(exc)}): a daemon without "
                         "OPEN_TERMINAL_LOOP_WATCHDOG?") from None
    return stall


def stall_samples(server: Server, workload: str) -> list[Sample]:
    """The longest stall, and the longest the loop computed between two ticks (its own code's share:
    a stall far longer than that was the process waiting for a CPU or the GIL)."""
    return [Sample(f"{workload}: longest event-loop stall", longest_stall_ms(server), "ms", "lower", MAX_STALL_MS),
            Sample(f"{workload}: longest loop busy (CPU between ticks)", longest_stall_ms(server, "longest_busy_ms"),
                   "ms")]


def raise_own_fd_limit() -> None:
    """The client holds a socket per request in flight: its soft limit goes up to its hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- one unit of work each --------------------------------------------------------------------------


class Client:
    """The requests of these workloads, each one checked."""

    def __init__(self, session: aiohttp.ClientSession, server: Server) -> None:
        self.session = session
        self.server = server
        self.timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        self.folder = server.scratch
        self.execute = URL(f"{server.base_url}/execute").with_query(wait=10)
        self.list_url = URL(f"{server.base_url}/files/list").with_query(directory=str(self.folder))
        self.read_url = URL(f"{server.base_url}/files/read").with_query(path=str(self.folder / READ_NAME))

    async def run(self, command: str, output: str) -> None:
        reply = await call(self.session, "POST", self.execute, json.dumps({"command": command}).encode(),
                           timeout=self.timeout)
        if reply.get("status") != "done" or reply.get("exit_code") != 0 or joined_output(reply) != output:
            raise BenchError(f"`{command}` answered status {reply.get('status')!r}, exit code "
                             f"{reply.get('exit_code')!r}, output {joined_output(reply)[:100]!r}")

    async def echo_hi(self) -> None:
        await self.run("echo hi", "hi\r\n")

    async def process_cycle(self) -> None:
        await self.run("true", "")

    async def list_folder(self) -> None:
        reply = await call(self.session, "GET", self.list_url, timeout=self.timeout)
        if READ_NAME not in {entry.get("name") for entry in reply.get("entries", [])}:
            raise BenchError(f"the listing of {self.folder} lacks {READ_NAME}")

    async def read_file(self) -> None:
        reply = await call(self.session, "GET", self.read_url, timeout=self.timeout)
        if reply.get("content") != READ_TEXT:
            raise BenchError(f"read {READ_NAME}: {str(reply.get('content'))[:100]!r}")

    async def mixed(self, index: int) -> None:
        await (self.list_folder, self.read_file, self.echo_hi)[index % 3]()

    async def open_terminal(self, stack: contextlib.AsyncExitStack) -> Terminal:
        """A new `cat` terminal, attached; its WebSocket closes with `stack`."""
        terminal = await create_terminal(self.session, self.server, "cat")
        return await stack.enter_async_context(attached(self.session, self.server, terminal))

    @staticmethod
    async def type_and_end(shell: Terminal, keystrokes: int) -> None:
        """Type `keystrokes` keys, awaiting each echo, then end `cat` with a newline and Ctrl-D: the
        daemon must close with 1000."""
        for index in range(keystrokes):
            key = bytes([ord("a") + index % 26])
            await shell.send(key)
            if (echo := await shell.output(ECHO_TIMEOUT)) != key:
                raise BenchError(f"typing {key!r} echoed {echo!r} ({shell.closed_with()})")
        await shell.send(b"\n\x04")
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while await shell.output(CLOSE_TIMEOUT) is not None:
            if time.monotonic() > deadline:
                raise BenchError(f"terminal still open {CLOSE_TIMEOUT:.0f} s after Ctrl-D")
        if not shell.ended:
            raise BenchError(f"`cat` ended with {shell.closed_with()}, not 1000")

    async def terminal_cycle(self, keystrokes: int = 1) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await self.type_and_end(await self.open_terminal(stack), keystrokes)

    async def attach_and_close(self) -> None:
        """The churn's terminal: create, attach (proved by one echo), close the WebSocket."""
        terminal = await create_terminal(self.session, self.server, "cat")
        async with attached(self.session, self.server, terminal) as shell:
            await shell.send(b"x")
            if (echo := await shell.output(ECHO_TIMEOUT)) != b"x":
                raise BenchError(f"terminal {terminal}: typing b'x' echoed {echo!r} ({shell.closed_with()})")


async def streams(tally: Tally, total: int, clients: int, budget: float,
                  one: Callable[[int], Awaitable[None]]) -> None:
    """`total` units from `clients` concurrent loops; stops at the budget or after GIVE_UP_AFTER failures
    in a row, counting what was not run as failed."""
    counter = itertools.count()
    deadline = time.monotonic() + budget
    in_a_row = 0

    async def loop() -> None:
        nonlocal in_a_row
        while (index := next(counter)) < total:
            if time.monotonic() > deadline or in_a_row >= GIVE_UP_AFTER:
                tally.failed += 1  # not run
                continue
            try:
                await one(index)
                tally.done += 1
                in_a_row = 0
            except (BenchError, *WORKLOAD_ERRORS) as exc:
                tally.fail(exc)
                in_a_row += 1

    await asyncio.gather(*(loop() for _ in range(clients)))
    if in_a_row >= GIVE_UP_AFTER:
        tally.quoted.append(f"stopped after {GIVE_UP_AFTER} failures in a row")


# --- the workloads ----------------------------------------------------------------------------------


async def load(server: Server, sizes: Sizes, report: Report) -> list[Sample]:
    raise_own_fd_limit()
    pid = server.serving_pid()
    fresh = open_fds(pid)
    async with open_session(server.key) as session:  # warm-up: one of each request
        for index in range(3):
            await Client(session, server).mixed(index)
    # Before and after are taken with the client's connections closed: idle keep-alive sockets are
    # the client's choice, not something the server kept.
    fds_before, rss_before = await settled_fds(pid, fresh, WARM_SETTLE), rss_mb(pid)
    async with open_session(server.key, limit=0) as session, contextlib.AsyncExitStack() as stack:
        client = Client(session, server)
        # Every terminal attached (or failed) first; then the keys and the requests, all at once.
        opening = asyncio.Semaphore(OPENING)

        async def open_one() -> Terminal:
            async with opening:
                return await client.open_terminal(stack)

        shells = await asyncio.wait_for(asyncio.gather(*(open_one() for _ in range(sizes.terminals)),
                                                       return_exceptions=True), sizes.budget)
        fds_attached, stall_attached = open_fds(pid), longest_stall_ms(server)
        typing = [client.type_and_end(shell, sizes.keystrokes) for shell in shells
                  if not isinstance(shell, BaseException)]
        requests = [client.mixed(index) for index in range(sizes.requests)]
        results = [*(shell for shell in shells if isinstance(shell, BaseException)),
                   *await asyncio.wait_for(asyncio.gather(*typing, *requests, return_exceptions=True), sizes.budget)]
    fds_after = await settled_fds(pid, fds_before, sizes.settle)
    rss_after = rss_mb(pid)
    tally = Tally("load")
    for result in results:
        if isinstance(result, BaseException):
            tally.fail(result)
    tally.note(report)
    units = f"{sizes.terminals} WS x {sizes.keystrokes} keys + {sizes.requests} requests"
    return [
        Sample(f"load: errors ({units})", tally.failed, "", "lower", 0, digits=0, target="0"),
        Sample("load: server RSS before", rss_before, "MB"),
        Sample("load: server RSS after", rss_after, "MB"),
        Sample("load: server fds before", fds_before, digits=0),
        Sample(f"load: server fds, {sizes.terminals} terminals attached", fds_attached, digits=0),
        Sample(f"load: server fds after (all closed, within {sizes.settle:g} s)", fds_after, digits=0),
        Sample("load: longest stall by the time all are attached", stall_attached, "ms"),
        *stall_samples(server, "load"),
    ]


async def churn(server: Server, sizes: Sizes, report: Report) -> list[Sample]:
    processes: list[float] = []
    terminals: list[float] = []
    tally = Tally("churn")
    async with open_session(server.key) as session:
        client = Client(session, server)

        async def pair(_: int) -> None:
            started = time.perf_counter()
            await client.process_cycle()
            middle = time.perf_counter()
            await client.attach_and_close()
            processes.append((middle - started) * 1000)
            terminals.append((time.perf_counter() - middle) * 1000)

        await pair(0)  # warm-up
        processes.clear()
        terminals.clear()
        await streams(tally, sizes.churn, 1, sizes.budget, pair)
    tally.note(report)
    if not processes:
        raise BenchError(f"no churn cycle completed: {tally.quoted[:1]}")
    pairs = [process + terminal for process, terminal in zip(processes, terminals, strict=True)]
    return [
        Sample(f"churn: process create->finish p50 ({sizes.churn}x)", statistics.median(processes), "ms", digits=2),
        Sample("churn: terminal create->attach->close p50", statistics.median(terminals), "ms", digits=2),
        Sample("churn: process + terminal pair p50", statistics.median(pairs), "ms", "lower", MAX_PAIR_MS,
               digits=2),
        Sample("churn: failed cycles", tally.failed, "", "lower", 0, digits=0, target="0"),
        *stall_samples(server, "churn"),
    ]


async def fd_limit(server: Server, sizes: Sizes, report: Report) -> list[Sample]:
    pid = server.serving_pid()
    commands = Tally(f"nofile {FD_LIMIT}: echo hi")
    cycles = Tally(f"nofile {FD_LIMIT}: terminal cycles")
    async with open_session(server.key, limit=sizes.clients) as session:
        client = Client(session, server)
        # Warm-up: what a first command and a first terminal open once may stay open; the baseline is
        # taken once the terminal's PTY is gone.
        await client.echo_hi()
        baseline = open_fds(pid)
        await client.terminal_cycle()
        baseline = max(baseline, await settled_fds(pid, baseline, sizes.settle))
        await streams(commands, sizes.commands, sizes.clients, sizes.budget, lambda _: client.echo_hi())
        await streams(cycles, sizes.terminal_cycles, 1, sizes.budget, lambda _: client.terminal_cycle())
        after = await settled_fds(pid, baseline, sizes.settle)
    commands.note(report)
    cycles.note(report)
    prefix = f"nofile {FD_LIMIT}"
    return [
        Sample(f"{prefix}: `echo hi` failures ({sizes.commands}x)", commands.failed, "", "lower", 0, digits=0,
               target="0"),
        Sample(f"{prefix}: terminal cycle failures ({sizes.terminal_cycles}x)", cycles.failed, "", "lower", 0,
               digits=0, target="0"),
        Sample(f"{prefix}: server fds after (within {sizes.settle:g} s)", after, "", "lower", baseline, digits=0,
               target=f"<= {baseline} (baseline)"),
        *stall_samples(server, prefix),
    ]


Workload = Callable[[Server, Sizes, Report], Coroutine[Any, Any, list[Sample]]]


@dataclass(frozen=True)
class Plan:
    name: str
    workload: Workload
    #: Settings beyond the watchdog, from the sizes.
    settings: Callable[[Sizes], dict[str, str]] = lambda sizes: {}
    prefix: tuple[str, ...] = ()


def load_caps(sizes: Sizes) -> dict[str, str]:
    """Caps that fit the load (the defaults are lower: 16 terminals, 512 connections)."""
    return {"OPEN_TERMINAL_MAX_SESSIONS": str(sizes.terminals + 8),
            "OPEN_TERMINAL_MAX_PROCESSES": str(sizes.requests + 8),
            "OPEN_TERMINAL_MAX_CONNECTIONS": str(sizes.terminals + sizes.requests + 64)}


PLANS = (
    Plan("load", load, load_caps),
    Plan("churn", churn),
    Plan("nofile", fd_limit, prefix=("prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", "--")),
)
FUZZ_ROW = Row("fuzz: cases run, 5xx found", "n/a", "see make fuzz", "-", "0 5xx", "-")


def measure(plan: Plan, sizes: Sizes) -> Measure:
    return lambda server, report: asyncio.run(plan.workload(server, sizes, report))


def run(scratch: Path, smoke: bool, report: Report) -> None:
    """Every safety workload, each on a fresh opentermd; rows (opentermd only) and notes to the report."""
    sizes = SMOKE if smoke else FULL
    (scratch / READ_NAME).write_text(READ_TEXT)
    for plan in PLANS:
        settings = {"OPEN_TERMINAL_LOOP_WATCHDOG": "true", **plan.settings(sizes)}
        server = Server(scratch, label=f"opentermd-{plan.name}", settings=settings, prefix=plan.prefix)
        try:
            what = server.start()
        except (BenchError, *WORKLOAD_ERRORS) as exc:
            server.stop()  # it already failed; the start's error says why
            report.errors.append(f"{plan.name}: {describe(exc)}")
            report.rows.append(Row(plan.name, "n/a", "error", "-", "-", "FAIL"))
            continue
        print(f"safety: {server.label} is {what}, on {server.base_url}", flush=True)
        try:
            outcome = alternate([server], measure(plan, sizes), rounds=1)[0]
            report.rows.extend(rows_of(None, outcome, report))
            report.notes.extend(outcome.report.notes)  # the failures quoted (rows_of takes only wrong answers)
        finally:
            if problem := server.stop():
                report.errors.append(problem)
    report.rows.append(FUZZ_ROW)
    report.notes.append("safety rows (load, churn, nofile, fuzz) measure opentermd only, each workload on a "
                        "fresh server with OPEN_TERMINAL_LOOP_WATCHDOG=true")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny counts: prove the script works in seconds")
    args = parser.parse_args(argv)
    print(machine_facts(args.smoke), flush=True)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="opentermd-safety-") as scratch:
        run(Path(scratch), args.smoke, report)
    print_table(report.rows, (HEADER[0], HEADER[1], "opentermd", *HEADER[3:]))
    for note in report.notes:
        print(f"safety: note: {note}", flush=True)
    for error in report.errors:
        print(f"safety: FAILED: {error}", file=sys.stderr)
    return 2 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
