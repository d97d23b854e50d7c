"""Compare workload of the benchmark: ``POST /files/compare`` on two 10,000-line text files.

The two files are generated (the same bytes on every run) into the scratch directory: code-like
lines, each one unique, and in the revised file about 5% of them changed: a word changed inside a
line (intraline segments), a line replaced by a new one, a line inserted, a line deleted, in turn.
Since every line is unique, the diff's counts are known from how the files were made.

* **compare**: ``POST /files/compare {"original", "revised"}``, one at a time after warm-ups:
  p50 and max over the runs, request sent to reply read. Each reply must give the additions and
  deletions the files were made with, and hunks that hold exactly those added and removed lines,
  with changed intraline segments where a word changed.

Run alone with ``.venv/bin/python bench/compare.py [--smoke]`` (the reference and opentermd, A B
alternating, as `make bench` does).
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    Latency,
    Report,
    Sample,
    Server,
    fetch,
    measure_workload,
    open_session,
    parse_object,
    run_alone,
)

#: One line in this many is changed in the revised file (5%).
CHANGE_EVERY = 20
#: What happens to a changed line, in turn.
EDITS = ("word", "replace", "insert", "delete")


@dataclass(frozen=True)
class Sizes:
    lines: int
    warmup: int
    runs: int


FULL = Sizes(lines=10_000, warmup=1, runs=8)
SMOKE = Sizes(lines=400, warmup=1, runs=3)


@dataclass(frozen=True)
class Pair:
    """The two files, and what a right diff of them says."""

    original: Path
    revised: Path
    additions: int
    deletions: int
    word_changes: int


def code_line(number: int) -> str:
    """A unique, code-like line (its number is in it)."""
    indent = " " * (4 * (number % 3))
    return f"{indent}value_{number} = compute(item_{number % 97}, limit={number * 7 % 1000})  # step {number}"


def revised_lines(lines: int) -> tuple[list[str], int, int, int]:
    """The revised file's lines, with its additions, deletions and intraline word changes."""
    revised: list[str] = []
    additions = deletions = words = 0
    for number in range(lines):
        line = code_line(number)
        if number % CHANGE_EVERY != CHANGE_EVERY // 2:
            revised.append(line)
            continue
        edit = EDITS[number // CHANGE_EVERY % len(EDITS)]
        if edit == "word":
            revised.append(line.replace("compute(", "evaluate("))
            words += 1
        elif edit == "replace":
            revised.append(f"raise NotImplementedError('rewritten step {number}')")
        elif edit == "insert":
            revised.extend((line, f"log.debug('inserted after step {number}')"))
        if edit != "insert":
            deletions += 1
        if edit != "delete":
            additions += 1
    return revised, additions, deletions, words


def write_pair(server: Server, sizes: Sizes) -> Pair:
    """The two files, one pair per server (as a server might cache what it read)."""
    original = server.scratch / f"compare-{server.label}-original.py"
    revised = server.scratch / f"compare-{server.label}-revised.py"
    original.write_text("".join(f"{code_line(number)}\n" for number in range(sizes.lines)))
    lines, additions, deletions, words = revised_lines(sizes.lines)
    revised.write_text("".join(f"{line}\n" for line in lines))
    return Pair(original, revised, additions, deletions, words)


def problem_with(reply: dict[str, Any], pair: Pair) -> str | None:
    """What is wrong with a reply, or None when it is the diff the files were made with."""
    if (reply.get("additions"), reply.get("deletions")) != (pair.additions, pair.deletions):
        return (f"compare: {reply.get('additions')} additions and {reply.get('deletions')} deletions, "
                f"not {pair.additions} and {pair.deletions}")
    lines = [line for hunk in reply.get("hunks") or [] for line in hunk.get("lines", [])]
    added = sum(line.get("type") == "added" for line in lines)
    removed = sum(line.get("type") == "removed" for line in lines)
    if not reply.get("hunks") or (added, removed) != (pair.additions, pair.deletions):
        return f"compare: the hunks hold {added} added and {removed} removed lines"
    intraline = sum(line.get("type") == "added" and any(part.get("changed") for part in line.get("segments", []))
                    for line in lines)
    if intraline < pair.word_changes:
        return f"compare: {intraline} added lines with changed segments, not at least {pair.word_changes}"
    return None


async def compare_runs(server: Server, sizes: Sizes, report: Report) -> Latency:
    pair = write_pair(server, sizes)
    body = json.dumps({"original": str(pair.original), "revised": str(pair.revised)})
    async with open_session(server.key) as session:
        samples, failures = [], 0
        for index in range(sizes.warmup + sizes.runs):
            started = time.perf_counter()
            payload = await fetch(session, "POST", f"{server.base_url}/files/compare", body)
            elapsed = (time.perf_counter() - started) * 1000
            problem = problem_with(parse_object(payload, "POST /files/compare"), pair)
            if problem is not None:
                report.wrong_answer(problem)
            if index >= sizes.warmup:
                samples.append(elapsed)
                failures += problem is not None
        return Latency(samples, failures)


def compare_samples(server: Server, report: Report, sizes: Sizes) -> list[Sample]:
    latency = asyncio.run(compare_runs(server, sizes, report))
    name = f"compare two {sizes.lines:,}-line files"
    return [Sample(f"{name} p50 ({sizes.runs}x)", latency.p50, "ms", "lower", relative=1.0, digits=1),
            Sample(f"{name} max", latency.max, "ms", "lower", digits=1)]


def run(servers: list[Server], smoke: bool, report: Report) -> None:
    """The compare workload, alternating the servers (opentermd last); if it breaks, it is reported."""
    sizes = SMOKE if smoke else FULL
    measure_workload(servers, "compare", functools.partial(compare_samples, sizes=sizes), report)


def main(argv: list[str]) -> int:
    """This workload alone: the reference and opentermd (or, with --smoke, opentermd twice)."""
    return run_alone(run, argv, "compare")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
