"""Notebook workloads of the benchmark: kernel start and a cell's round trip, through /notebooks.

Both servers run the same kernel: a `python3` kernelspec written into each server's HOME that starts
this interpreter's ipykernel (`sys.executable -m ipykernel_launcher`), so the figures compare the
servers, not two Python installations (the single executable bundles no kernel).

* **create to ready**: ``POST /notebooks`` on a one-cell notebook until its ``{"status": "ready"}``
  reply (the kernel started and answered), then ``DELETE``; the median of a few per round.
* **cell round trip**: ``POST /notebooks/{id}/execute`` of ``1+1``, one at a time, after warm-ups:
  p50 over 50 runs, request sent to reply read. Each reply must be ``{"status": "ok"}`` with the
  execute_result ``2``; each run also saves the notebook, on both servers.

Run alone with ``.venv/bin/python bench/notebooks.py [--smoke]`` (the reference and opentermd, A B
alternating, as `make bench` does).
"""

from __future__ import annotations

import asyncio
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench.harness import (
    BenchError,
    Latency,
    Report,
    Sample,
    Server,
    call,
    measure_workload,
    open_session,
    run_alone,
)

NOTEBOOK = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3",
            "display_name": "Python 3", "language": "python"}},
            "cells": [{"cell_type": "code", "id": "bench", "metadata": {}, "execution_count": None,
                       "outputs": [], "source": "1+1"}]}


@dataclass(frozen=True)
class Sizes:
    creates: int
    warmup: int
    runs: int


FULL = Sizes(creates=3, warmup=5, runs=50)
SMOKE = Sizes(creates=1, warmup=1, runs=5)


def prepare(server: Server) -> Path:
    """The notebook (one per server: each saves its own) and the shared kernelspec in the server's HOME."""
    spec = server.home / ".local/share/jupyter/kernels/python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    path = server.scratch / f"bench-{server.label}.ipynb"
    path.write_text(json.dumps(NOTEBOOK))
    return path


async def open_notebook(session: aiohttp.ClientSession, server: Server, path: Path) -> str:
    reply = await call(session, "POST", f"{server.base_url}/notebooks", json.dumps({"path": str(path)}))
    if reply.get("status") != "ready" or not isinstance(reply.get("id"), str):
        raise BenchError(f"POST /notebooks answered {reply!r}")
    notebook: str = reply["id"]
    return notebook


async def create_to_ready(server: Server, sizes: Sizes) -> list[float]:
    path = prepare(server)
    async with open_session(server.key) as session:
        seconds = []
        for _ in range(sizes.creates):
            started = time.perf_counter()
            notebook = await open_notebook(session, server, path)
            seconds.append(time.perf_counter() - started)
            await call(session, "DELETE", f"{server.base_url}/notebooks/{notebook}")
        return seconds


def right_answer(reply: dict[str, Any]) -> bool:
    results = [o for o in reply.get("outputs", []) if o.get("output_type") == "execute_result"]
    return reply.get("status") == "ok" and len(results) == 1 and results[0].get("data", {}).get("text/plain") == "2"


async def round_trips(server: Server, sizes: Sizes) -> Latency:
    path = prepare(server)
    async with open_session(server.key) as session:
        notebook = await open_notebook(session, server, path)
        url = f"{server.base_url}/notebooks/{notebook}/execute"
        body = json.dumps({"cell_index": 0})
        samples, failures = [], 0
        try:
            for index in range(sizes.warmup + sizes.runs):
                started = time.perf_counter()
                reply = await call(session, "POST", url, body)
                elapsed = (time.perf_counter() - started) * 1000
                if index >= sizes.warmup:
                    samples.append(elapsed)
                    failures += not right_answer(reply)
        finally:
            await call(session, "DELETE", f"{server.base_url}/notebooks/{notebook}")
        return Latency(samples, failures)


def create_samples(server: Server, report: Report, sizes: Sizes) -> list[Sample]:
    seconds = asyncio.run(create_to_ready(server, sizes))
    return [Sample(f"notebook create to ready (median of {sizes.creates})", statistics.median(seconds) * 1000,
                   "ms", "lower", relative=1.0, digits=0)]


def round_trip_samples(server: Server, report: Report, sizes: Sizes) -> list[Sample]:
    latency = asyncio.run(round_trips(server, sizes))
    if latency.failures:
        report.wrong_answer(f"notebook cell: {latency.failures} of {len(latency.samples_ms)} replies were not 2")
    # At most 0.7x the reference's time: at least 1/0.7 times better by the ratio of medians.
    return [Sample(f"notebook cell `1+1` p50 ({sizes.runs}x)", latency.p50, "ms", "lower", relative=1 / 0.7,
                   digits=2)]


SizedMeasure = Callable[[Server, Report, Sizes], list[Sample]]
WORKLOADS: tuple[tuple[str, SizedMeasure], ...] = (
    ("notebook create", create_samples),
    ("notebook cell round trip", round_trip_samples),
)


def _sized(server: Server, report: Report, *, workload: SizedMeasure, sizes: Sizes) -> list[Sample]:
    return workload(server, report, sizes)


def run(servers: list[Server], smoke: bool, report: Report) -> None:
    """Each notebook workload, alternating the servers (opentermd last); one that breaks is reported."""
    sizes = SMOKE if smoke else FULL
    for name, workload in WORKLOADS:
        measure_workload(servers, name, functools.partial(_sized, workload=workload, sizes=sizes), report)


def main(argv: list[str]) -> int:
    """These workloads alone: the reference and opentermd (or, with --smoke, opentermd twice)."""
    return run_alone(run, argv, "notebooks")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
