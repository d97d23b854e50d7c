"""What `--sandbox bwrap` costs: the same workloads on two opentermd servers in one run, one without
the sandbox and one with it, alternating (A B A B A B), as the other benchmarks do.

Run as ``.venv/bin/python bench/sandbox.py [--smoke] [--source]`` (``make bench`` runs it after
``bench/run.py``); ``--source`` runs ``python -m daemon`` even where ``dist/opentermd`` exists.

* **exec latency p50**: sequential ``POST /execute?wait=5 {"command": "echo hi"}`` back to back (target:
  at most +3 ms over no sandbox). The commands are forked inside the user's resident sandbox
  (daemon/resident.py): bubblewrap's start, new namespaces and a dozen mounts, is paid once per sandbox.
* **exec latency p50, paced**: the same with ``PACE_SECONDS`` between commands, as a client that reads
  the output before its next command.
* **terminal start to first byte**: ``POST /api/terminals`` for ``bash``, attach, the first output frame.
* **notebook cell round trip p50**: a ``1+1`` cell (the kernel runs inside the sandbox), as bench/notebooks.py.
* **per-user memory**: the serving process's RSS growth after 20 users (``X-User-Id``) each ran one
  command and went idle, per user: the daemon's bookkeeping. Single-user here, the users share one
  sandbox; in multi-user mode each user's sandbox is its own, with its own resident.
* **resident sandbox RSS**: what a sandbox with nothing running holds (bwrap and the launcher), summed
  over its processes; it is closed after ``daemon.resident.IDLE_SECONDS`` unused (an idle user keeps none).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script, `python bench/sandbox.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import notebooks, terminals
from bench.harness import (
    ROUNDS,
    BenchError,
    Latency,
    Report,
    Row,
    Server,
    call,
    joined_output,
    open_session,
    print_table,
)

USERS = 20
EXEC_TARGET_MS = 3.0
#: Seconds between paced commands (a client reading the output first, an LLM thinking, takes longer).
PACE_SECONDS = 0.05


async def exec_latency(server: Server, runs: int, warmup: int, pace: float = 0.0) -> Latency:
    async with open_session(server.key) as session:
        samples, failures = [], 0
        body = json.dumps({"command": "echo hi"})
        for index in range(warmup + runs):
            started = time.perf_counter()
            reply = await call(session, "POST", f"{server.base_url}/execute?wait=5", body)
            elapsed = (time.perf_counter() - started) * 1000
            if index >= warmup:
                samples.append(elapsed)
                failures += "hi" not in joined_output(reply)
            if pace:
                await asyncio.sleep(pace)  # a benchmark's think time, not a synchronisation
        return Latency(samples, failures)


def tree(pid: int) -> list[int]:
    """`pid` and every process below it."""
    found, pids = [], [pid]
    while pids:
        current = pids.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            pids += [int(child) for child in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
    return found


def tree_rss_kib(pid: int) -> int:
    total = 0
    for member in tree(pid):
        with contextlib.suppress(OSError, BenchError):
            total += rss_kib(member)
    return total


async def resident_kib(server: Server) -> float:
    """The RSS of the daemon's child processes once its commands have ended: the resident sandbox."""
    async with open_session(server.key) as session:
        await call(session, "POST", f"{server.base_url}/execute?wait=5", json.dumps({"command": "true"}))
    pid = server.serving_pid()
    deadline = time.monotonic() + 10
    while True:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        # Set up: bwrap and the launcher.
        ready = sum(len(tree(int(child))) for child in found) >= 2
        if ready or time.monotonic() > deadline or "bwrap" not in server.label:
            return float(sum(tree_rss_kib(int(child)) for child in found))
        await asyncio.sleep(0.05)  # the entry is being set up


async def terminal_first_byte(server: Server, runs: int) -> Latency:
    async with open_session(server.key) as session:
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            terminal = await terminals.create_terminal(session, server, "bash")
            async with terminals.attached(session, server, terminal) as attached:
                if await attached.output(timeout=30) is None:
                    raise BenchError("the terminal closed before its first byte")
                samples.append((time.perf_counter() - started) * 1000)
            # Closing the socket ended the shell and its session: nothing left to delete.
        return Latency(samples, 0)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for {pid}")


async def per_user_kib(server: Server) -> float:
    pid = server.serving_pid()
    async with open_session(server.key) as session:
        await call(session, "POST", f"{server.base_url}/execute?wait=5", json.dumps({"command": "true"}))
        before = rss_kib(pid)
        for user in range(USERS):
            await call(session, "POST", f"{server.base_url}/execute?wait=5", json.dumps({"command": "true"}),
                       headers={"X-User-Id": f"bench-user-{user}"})
        return (rss_kib(pid) - before) / USERS


def measure(servers: list[Server], smoke: bool) -> dict[str, dict[str, float]]:
    runs, warmup = (5, 1) if smoke else (200, 20)
    sizes = notebooks.SMOKE if smoke else notebooks.FULL
    figures: dict[str, dict[str, list[float]]] = {server.label: {} for server in servers}

    def one_round(server: Server) -> None:
        found = figures[server.label]
        exec_ = asyncio.run(exec_latency(server, runs, warmup))
        if exec_.failures:
            raise BenchError(f"{server.label}: {exec_.failures} commands did not print hi")
        found.setdefault("exec latency p50 (ms)", []).append(exec_.p50)
        paced = asyncio.run(exec_latency(server, max(5, runs // 4), warmup, PACE_SECONDS))
        found.setdefault(f"exec latency p50, {PACE_SECONDS * 1000:g} ms apart (ms)", []).append(paced.p50)
        found.setdefault("terminal start to first byte p50 (ms)", []).append(
            asyncio.run(terminal_first_byte(server, max(3, runs // 20))).p50)
        cell = asyncio.run(notebooks.round_trips(server, sizes))
        found.setdefault("notebook cell round trip p50 (ms)", []).append(cell.p50)

    for _ in range(ROUNDS):
        for server in servers:  # A B A B A B: a busy moment weighs on both
            one_round(server)
    result = {label: {name: statistics.median(values) for name, values in found.items()}
              for label, found in figures.items()}
    for server in servers:
        result[server.label]["per idle user RSS (KiB)"] = asyncio.run(per_user_kib(server))
        result[server.label]["resident sandbox RSS (KiB)"] = asyncio.run(resident_kib(server))
    return result


class SourceServer(Server):
    """`--source`: `python -m daemon` even when dist/opentermd exists (a binary older than the tree)."""

    def command(self, port: int) -> tuple[list[str], str]:
        command, what = super().command(port)
        if command[0] == sys.executable:
            return command, what
        return [sys.executable, "-m", "daemon", *command[1:]], "python -m daemon (--source)"


def main(argv: list[str]) -> int:
    import shutil
    import tempfile

    smoke = "--smoke" in argv
    scratch = Path(tempfile.mkdtemp(prefix="opentermd-bench-sandbox-"))
    kind = SourceServer if "--source" in argv else Server
    servers = [kind(scratch, label="no sandbox", settings={"OPEN_TERMINAL_SANDBOX": "off"}),
               kind(scratch, label="sandbox bwrap", settings={"OPEN_TERMINAL_SANDBOX": "bwrap"})]
    report = Report()
    try:
        for server in servers:
            print(f"bench: {server.label} is {server.start()}, on {server.base_url}", flush=True)
        figures = measure(servers, smoke)
    except BenchError as exc:
        report.errors.append(str(exc))
        figures = {}
    finally:
        report.errors.extend(problem for problem in (server.stop() for server in servers) if problem)
        shutil.rmtree(scratch, ignore_errors=True)
    if figures:
        plain, boxed = figures["no sandbox"], figures["sandbox bwrap"]
        for name in plain:
            added = boxed[name] - plain[name]
            target = f"+{EXEC_TARGET_MS:g} ms" if name.startswith("exec") else "-"
            verdict = ("PASS" if added <= EXEC_TARGET_MS else "FAIL") if name.startswith("exec") else "-"
            report.rows.append(Row(name, f"{plain[name]:.1f}", f"{boxed[name]:.1f}", f"{added:+.1f}", target, verdict))
        print_table(report.rows, ("workload", "no sandbox", "sandbox bwrap", "added", "target", "result"))
    for line in report.errors:
        print(f"bench: {line}", file=sys.stderr)
    return 2 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
