"""File API workloads of the benchmark: list, read, grep, upload and view (download).

Every workload builds its corpus under the scratch directory, measures, checks each answer while it
measures (a fast wrong answer is reported as wrong, not as fast) and removes its corpus again:

* **list**: ``GET /files/list`` of a directory of 10,000 entries, one request at a time: requests/s.
  Each reply must hold every entry; the first reply is compared entry by entry.
* **read 4 KB**: ``GET /files/read`` of a 4 KB UTF-8 text from 4 clients: requests/s; the content
  and line count must be the file's.
* **read 1 MB**: the same on a 1 MB text, one request at a time: p50 latency (request sent to body
  received; the check runs after the clock stops).
* **grep**: ``GET /files/grep`` over a 20,000-file tree three directories deep, with a query that
  hits a known 347 lines; timed against ``rg -n`` and ``grep -rn`` on the same tree, and all three
  must find exactly the lines that were planted.
* **upload**: ``POST /files/upload`` of 200 MB, generated and streamed by the client in 1 MiB
  chunks (never held whole), with a Content-Length: MB/s, and the daemon's RSS growth (peak VmRSS,
  sampled and from VmHWM after resetting it, minus VmRSS before). The file on disk must hash right.
* **view**: ``GET /files/view`` of a 500 MB file: MB/s; the body is hashed in a second thread as it
  arrives and must hash like the file.
* **write_file history**: ``POST /files/write`` of 4 KB over one file, one at a time: p50 on two
  opentermd servers of their own, ``OPEN_TERMINAL_HISTORY=false`` and ``true`` (each write then keeps
  the replaced 4 KB); the target is on - off <= 1 ms. Each reply must be right, and the history of
  the file must hold versions on the one server only.
* **delete**: ``DELETE /files/delete`` of a fresh folder of 10,000 small files, once per round (the
  folder is built before the clock starts): the reference removes it for good, opentermd moves it
  into the trash (one rename; the reply and the trash's listing are checked). Reported only.

Each workload builds its corpus once, then measures one round on each server in turn (A B A B A B,
`harness.alternate`); the table shows the medians of the rounds. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import os
import queue
import random
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp.payload import AsyncIterablePayload
from yarl import URL

from bench.harness import (
    WORKLOAD_ERRORS,
    BenchError,
    Json,
    Measure,
    Report,
    Row,
    Sample,
    Server,
    alternate,
    describe,
    fetch,
    megabytes,
    open_session,
    parse_object,
    rows_of,
)

MB = 1_000_000
CHUNK = 1 << 20
#: A word no generated text contains, planted in the grep tree's matching lines.
NEEDLE = "quokkaneedle"
#: Words of the generated texts: ASCII and a few multi-byte UTF-8 ones, no line separators.
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
         "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
         "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "café", "naïve", "façade", "über",
         "smörgåsbord", "東京", "λόγος", "(x)", "[1]", "a.b", "x=1;", "{}", "#", "-")
#: How long the bench waits for one big transfer, and for the hasher thread to catch up.
TRANSFER_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_read=60)
HASHER_TIMEOUT = 60.0
SUBPROCESS_TIMEOUT = 120.0
#: How often the daemon's RSS is sampled during an upload, and the most samples one upload takes.
RSS_INTERVAL = 0.002
MAX_RSS_SAMPLES = 300_000


@dataclass(frozen=True)
class Sizes:
    warmup: int
    #: Seconds one timed loop may take; a loop that runs out reports the requests it completed.
    budget: float
    rounds: int
    list_entries: int
    list_requests: int
    small_requests: int
    large_bytes: int
    large_requests: int
    #: Directories per level (three levels) and files per directory of the grep tree.
    grep_fanout: int
    grep_files_per_dir: int
    grep_hits: int
    grep_runs: int
    upload_bytes: int
    upload_runs: int
    view_bytes: int
    view_runs: int


#: Per round on one server; `harness.alternate` runs 3 rounds on each.
FULL = Sizes(warmup=5, budget=30.0, rounds=1, list_entries=10_000, list_requests=50, small_requests=2_000,
             large_bytes=1_000_000, large_requests=30, grep_fanout=10, grep_files_per_dir=20, grep_hits=347,
             grep_runs=2, upload_bytes=200 * MB, upload_runs=1, view_bytes=500 * MB, view_runs=1)
SMOKE = Sizes(warmup=1, budget=10.0, rounds=1, list_entries=100, list_requests=4, small_requests=20,
              large_bytes=64_000, large_requests=3, grep_fanout=2, grep_files_per_dir=3, grep_hits=7,
              grep_runs=1, upload_bytes=2 * MB, upload_runs=1, view_bytes=5 * MB, view_runs=1)

LIST_CLIENTS = 1
SMALL_CLIENTS = 4
SMALL_BYTES = 4096
UPLOAD_WARMUP_BYTES = MB


@dataclass
class Bench:
    corpus: Path
    sizes: Sizes


def url_of(server: Server, endpoint: str, **query: str | int) -> URL:
    return URL(server.base_url + endpoint).with_query(query)


# --- corpus -----------------------------------------------------------------------------------------


def text_lines(rng: random.Random, count: int) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 14))) + "\n" for _ in range(count)]


def text_of_size(seed: int, size: int) -> str:
    """Deterministic UTF-8 text of about `size` bytes (at least), in whole lines."""
    rng = random.Random(seed)
    lines: list[str] = []
    total = 0
    while total < size:
        batch = text_lines(rng, 64)
        lines.extend(batch)
        total += sum(len(line.encode()) for line in batch)
    return "".join(lines)


def data_chunks(seed: int, size: int) -> Iterator[bytes]:
    """`size` deterministic bytes in 1 MiB chunks, each stamped with its index so that order matters."""
    block = random.Random(seed).randbytes(CHUNK)
    for index, start in enumerate(range(0, size, CHUNK)):
        yield (index.to_bytes(8, "big") + block[8:])[: min(CHUNK, size - start)]


def sha256_of_chunks(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_back() -> None:
    """Flush dirty pages now, so that kernel writeback is not measured as part of the next workload."""
    os.sync()


# --- timing helpers ---------------------------------------------------------------------------------


async def hammer(clients: int, total: int, budget: float, one: Callable[[], Awaitable[None]]) -> float:
    """Requests/s of `clients` loops sharing `total` requests, stopping early when `budget` runs out."""
    remaining = total
    done = 0
    deadline = time.monotonic() + budget

    async def client() -> None:
        nonlocal remaining, done
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            await one()
            done += 1

    gc.collect()
    gc.disable()  # the client's own collector stays out of the timed loop
    try:
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - started
    finally:
        gc.enable()
    if done == 0:
        raise BenchError(f"no request completed within {budget:.0f} s")
    return done / seconds


async def rounds_of(bench: Bench, clients: int, total: int, one: Callable[[], Awaitable[None]]) -> float:
    """The median rate over `rounds`, after `warmup` requests."""
    for _ in range(bench.sizes.warmup):
        await one()
    per_round = max(1, total // bench.sizes.rounds)
    rates = [await hammer(clients, per_round, bench.sizes.budget / bench.sizes.rounds, one)
             for _ in range(bench.sizes.rounds)]
    return statistics.median(rates)


def clients(count: int) -> str:
    return "1 client" if count == 1 else f"{count} clients"


def rate(label: str, value: float, limit: float, relative: float | None = None) -> Sample:
    return Sample(label, value, "req/s", "higher", limit, relative)


# --- 1. list ----------------------------------------------------------------------------------------


def list_workload(bench: Bench) -> Measure:
    count = bench.sizes.list_entries
    directory = bench.corpus / "listing"
    directory.mkdir()
    expected: list[tuple[str, str, int | None]] = []
    for index in range(count):
        if index % 100 == 0:
            name = f"entry-{index:05d}"
            (directory / name).mkdir()
            expected.append((name, "directory", None))
        else:
            name = f"entry-{index:05d}.txt"
            (directory / name).write_bytes(b"x" * (index % 97))
            expected.append((name, "file", index % 97))
    expected.sort()
    write_back()
    label = f"list {count:,} entries ({clients(LIST_CLIENTS)})"
    # Issue 3: >= 10x the reference's requests/s (>= 45 req/s when the reference is not measured).
    return lambda server, report: [rate(label, asyncio.run(_list(bench, server, report, directory, expected)),
                                        45, relative=10)]


async def _list(bench: Bench, server: Server, report: Report, directory: Path,
                expected: list[tuple[str, str, int | None]]) -> float:
    url = url_of(server, "/files/list", directory=str(directory))
    first, last = expected[0][0], expected[-1][0]
    async with open_session(server.key, json_body=False) as session:
        reply = parse_object(await fetch(session, "GET", url), "GET /files/list")
        found = [(entry["name"], entry["type"], entry["size"] if entry["type"] == "file" else None)
                 for entry in reply["entries"]]
        if found != expected:
            index = next((i for i, pair in enumerate(zip(found, expected, strict=False)) if pair[0] != pair[1]),
                         min(len(found), len(expected)))
            report.wrong_answer(f"/files/list: {len(found)} entries for {len(expected)}; entry {index} is "
                                f"{found[index:index + 1]}, on disk {expected[index:index + 1]} (name, type, size)")
        if reply.get("dir") != str(directory):
            report.wrong_answer(f"/files/list: dir is {reply.get('dir')!r}, not {str(directory)!r}")

        async def one() -> None:
            entries = parse_object(await fetch(session, "GET", url), "GET /files/list")["entries"]
            if len(entries) != len(expected) or entries[0]["name"] != first or entries[-1]["name"] != last:
                report.wrong_answer(f"/files/list: {len(entries)} entries, not {len(expected)} "
                                    f"from {first!r} to {last!r}")

        return await rounds_of(bench, LIST_CLIENTS, bench.sizes.list_requests, one)


# --- 2. and 3. read ---------------------------------------------------------------------------------


def check_read(report: Report, reply: Json, path: Path, text: str) -> None:
    lines = len(text.splitlines())
    content = reply.get("content")
    if content != text:
        report.wrong_answer(f"/files/read of {path.name}: content differs "
                            f"({len(content) if isinstance(content, str) else content!r} characters for {len(text)})")
    if reply.get("total_lines") != lines:
        report.wrong_answer(f"/files/read of {path.name}: total_lines {reply.get('total_lines')!r}, not {lines}")


def read_small_workload(bench: Bench) -> Measure:
    path = bench.corpus / "small.txt"
    text = text_of_size(4, SMALL_BYTES).encode()[:SMALL_BYTES].decode(errors="ignore")
    text = text[: text.rfind("\n") + 1]
    path.write_text(text, encoding="utf-8")
    write_back()
    label = f"read {len(text.encode()) / 1000:.0f} KB ({clients(SMALL_CLIENTS)})"
    return lambda server, report: [rate(label, asyncio.run(_read_small(bench, server, report, path, text)), 1100)]


async def _read_small(bench: Bench, server: Server, report: Report, path: Path, text: str) -> float:
    url = url_of(server, "/files/read", path=str(path))
    async with open_session(server.key, json_body=False, limit=SMALL_CLIENTS) as session:

        async def one() -> None:
            check_read(report, parse_object(await fetch(session, "GET", url), "GET /files/read"), path, text)

        return await rounds_of(bench, SMALL_CLIENTS, bench.sizes.small_requests, one)


def read_large_workload(bench: Bench) -> Measure:
    path = bench.corpus / "large.txt"
    text = text_of_size(1, bench.sizes.large_bytes)
    path.write_text(text, encoding="utf-8")
    write_back()
    label = f"read {megabytes(len(text.encode()))} p50 ({bench.sizes.large_requests}x)"

    def measure(server: Server, report: Report) -> list[Sample]:
        samples = asyncio.run(_read_large(bench, server, report, path, text))
        return [Sample(label, statistics.median(samples), "ms", "lower", 12, digits=2)]

    return measure


async def _read_large(bench: Bench, server: Server, report: Report, path: Path, text: str) -> list[float]:
    url = url_of(server, "/files/read", path=str(path))
    samples: list[float] = []
    deadline = time.monotonic() + bench.sizes.budget
    async with open_session(server.key, json_body=False) as session:
        for _ in range(bench.sizes.warmup):
            await fetch(session, "GET", url)
        for _ in range(bench.sizes.large_requests):
            if time.monotonic() > deadline:
                break
            gc.collect()
            gc.disable()
            try:
                started = time.perf_counter()
                payload = await fetch(session, "GET", url)
                samples.append((time.perf_counter() - started) * 1000)
            finally:
                gc.enable()
            check_read(report, parse_object(payload, "GET /files/read"), path, text)
    if not samples:
        raise BenchError(f"no read completed within {bench.sizes.budget:.0f} s")
    return samples


# --- 4. grep ----------------------------------------------------------------------------------------

Hit = tuple[str, int, str]  # path relative to the tree, 1-based line number, line without its newline


def build_grep_tree(bench: Bench) -> tuple[Path, set[Hit], int]:
    sizes = bench.sizes
    tree = bench.corpus / "tree"
    rng = random.Random(20)
    fanout = range(sizes.grep_fanout)
    files = [Path(f"d{a}", f"d{a}{b}", f"d{a}{b}{c}", f"f{n:02d}.txt")
             for a in fanout for b in fanout for c in fanout for n in range(sizes.grep_files_per_dir)]
    lines_per_file = 12
    planted = sorted(rng.sample(range(len(files) * lines_per_file), sizes.grep_hits))
    hits: set[Hit] = set()
    for directory in sorted({file.parent for file in files}):
        (tree / directory).mkdir(parents=True)
    cursor = 0
    for number, file in enumerate(files):
        lines = text_lines(rng, lines_per_file)
        while cursor < len(planted) and planted[cursor] // lines_per_file == number:
            index = planted[cursor] % lines_per_file
            words = lines[index].split()
            words.insert(rng.randint(0, len(words)), NEEDLE)
            lines[index] = " ".join(words) + "\n"
            hits.add((str(file), index + 1, lines[index].rstrip("\n")))
            cursor += 1
        (tree / file).write_text("".join(lines), encoding="utf-8")
    write_back()
    return tree, hits, len(files)


def parse_tool_hits(output: bytes, tree: Path) -> set[Hit]:
    """`path:line:content` lines of `rg -n` / `grep -rn` as hits relative to the tree."""
    hits: set[Hit] = set()
    for line in output.decode().splitlines():
        path, number, content = line.split(":", 2)
        hits.add((os.path.relpath(path, tree), int(number), content))
    return hits


def time_tool(command: list[str], runs: int, budget: float) -> tuple[float, list[bytes]]:
    """Median wall time of a command in ms (after one warm-up run), and the output of every run."""
    outputs: list[bytes] = []
    samples: list[float] = []
    deadline = time.monotonic() + budget
    for run in range(runs + 1):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, timeout=SUBPROCESS_TIMEOUT, check=False)
        elapsed = (time.perf_counter() - started) * 1000
        if done.returncode != 0:
            raise BenchError(f"{' '.join(command)} exited with {done.returncode}: {done.stderr[:300]!r}")
        outputs.append(done.stdout)
        if run:
            samples.append(elapsed)
        if time.monotonic() > deadline:
            break
    return (statistics.median(samples) if samples else elapsed), outputs


def grep_tools(bench: Bench, tree: Path, expected: set[Hit], report: Report) -> tuple[float, float]:
    """Median times of `rg -n` and `grep -rn` on the tree (ms), checked against the planted lines."""
    sizes = bench.sizes
    runs = sizes.grep_runs * 3  # as many runs as a server gets over its rounds
    rg_ms, rg_outputs = time_tool(["rg", "-n", NEEDLE, str(tree)], runs, sizes.budget)
    grep_ms, grep_outputs = time_tool(["grep", "-rn", NEEDLE, str(tree)], runs, sizes.budget)
    # The tools are the yardstick: if they disagree with the planted lines, the corpus is at fault.
    for tool, outputs in (("rg", rg_outputs), ("grep", grep_outputs)):
        for output in outputs:
            found = parse_tool_hits(output, tree)
            if found != expected:
                report.wrong_answer(f"{tool}: {describe_hits(found, expected)}")
    return rg_ms, grep_ms


def grep_rows(servers: list[Server], bench: Bench, report: Report) -> list[Row]:
    """The grep workload: both servers alternating, then `rg -n` and `grep -rn` on the same tree."""
    tree, expected, files = build_grep_tree(bench)
    rg_ms, grep_ms = grep_tools(bench, tree, expected, report)
    label = f"grep {files:,} files ({len(expected)} hits)"

    def measure(server: Server, sink: Report) -> list[Sample]:
        took = asyncio.run(_grep(bench, server, sink, tree, expected))
        return [Sample(f"{label}: /files/grep", took, "ms", "lower", 1.5 * rg_ms,
                       target=f"<= 1.5x rg ({1.5 * rg_ms:.0f} ms)")]

    rows = both(servers, measure, report)
    return [*rows, Row(f"{label}: rg -n", "-", f"{rg_ms:.1f} ms", "-", "(report)", "-"),
            Row(f"{label}: grep -rn", "-", f"{grep_ms:.1f} ms", "-", "(report)", "-")]


def describe_hits(found: set[Hit], expected: set[Hit]) -> str:
    extra, missed = sorted(found - expected), sorted(expected - found)
    return (f"{len(found)} lines found for {len(expected)} planted; not planted: {extra[:2]}, "
            f"missed: {missed[:2]}")


def grep_hits(reply: Json, tree: Path) -> set[Hit]:
    hits: set[Hit] = set()
    for match in reply["matches"]:
        file = str(match["file"])
        absolute = file if os.path.isabs(file) else os.path.join(tree, file)
        hits.add((os.path.relpath(absolute, tree), int(match["line"]), str(match["content"]).rstrip("\r\n")))
    return hits


async def _grep(bench: Bench, server: Server, report: Report, tree: Path, expected: set[Hit]) -> float:
    url = url_of(server, "/files/grep", query=NEEDLE, path=str(tree), max_results=500)
    samples: list[float] = []
    deadline = time.monotonic() + bench.sizes.budget
    async with open_session(server.key, json_body=False) as session:
        for run in range(bench.sizes.grep_runs + 1):  # the first run warms the daemon up
            started = time.perf_counter()
            payload = await fetch(session, "GET", url, timeout=TRANSFER_TIMEOUT)
            elapsed = (time.perf_counter() - started) * 1000
            if run:
                samples.append(elapsed)
            reply = parse_object(payload, "GET /files/grep")
            found = grep_hits(reply, tree)
            if reply.get("truncated") is not False or len(reply["matches"]) != len(expected):
                report.wrong_answer(f"/files/grep: {len(reply['matches'])} matches "
                                    f"(truncated={reply.get('truncated')!r}) for {len(expected)} planted")
            if found != expected:
                report.wrong_answer(f"/files/grep: {describe_hits(found, expected)}")
            if time.monotonic() > deadline:
                break
    return statistics.median(samples) if samples else elapsed


# --- 5. upload --------------------------------------------------------------------------------------


class SizedStream(AsyncIterablePayload):
    """An async stream of chunks whose total size is known, so the multipart body gets a Content-Length."""

    def __init__(self, chunks: AsyncIterator[bytes], size: int, filename: str) -> None:
        super().__init__(chunks, content_type="application/octet-stream")
        self._size = size
        self.set_content_disposition("form-data", name="file", filename=filename)


async def generated(seed: int, size: int) -> AsyncIterator[bytes]:
    for chunk in data_chunks(seed, size):
        yield chunk


def status_kib(pid: int, field_name: str) -> int:
    """A `kB` field of /proc/<pid>/status, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"/proc/{pid}/status has no {field_name}")


class RssWatch:
    """The daemon's peak RSS while a block runs: VmRSS sampled by a thread, and VmHWM after resetting it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = 0
        self.peak = 0
        self.samples = 0
        self.exact = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RssWatch:
        self.before = status_kib(self.pid, "VmRSS")
        try:  # "5" resets the peak RSS (VmHWM) to the current RSS: Linux ≥ 4.0, own processes only
            with open(f"/proc/{self.pid}/clear_refs", "w") as clear:
                clear.write("5")
            self.exact = True
        except OSError:
            self.exact = False
        self.peak = max(self.before, status_kib(self.pid, "VmRSS"))
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(RSS_INTERVAL) and self.samples < MAX_RSS_SAMPLES:
            try:
                self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
            except (OSError, BenchError):  # the daemon is gone: the upload itself reports that
                return
            self.samples += 1

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
        if self.exact:
            self.peak = max(self.peak, status_kib(self.pid, "VmHWM"))

    @property
    def growth(self) -> int:
        return self.peak - self.before


def upload_workload(bench: Bench) -> Measure:
    sizes = bench.sizes
    directory = bench.corpus / "uploads"
    directory.mkdir()
    seed = 5
    expected = sha256_of_chunks(data_chunks(seed, sizes.upload_bytes))
    warmed: set[str] = set()

    def measure(server: Server, report: Report) -> list[Sample]:
        if server.label not in warmed:  # imports and first-use buffers are not what this measures
            asyncio.run(_upload(server, report, directory, "warmup.bin", 6, UPLOAD_WARMUP_BYTES))
            warmed.add(server.label)
        speeds: list[float] = []
        growths: list[int] = []
        exact = True
        deadline = time.monotonic() + sizes.budget
        for _ in range(sizes.upload_runs):
            if speeds and time.monotonic() > deadline:
                break
            write_back()
            with RssWatch(server.pid) as watch:
                seconds = asyncio.run(_upload(server, report, directory, "big.bin", seed, sizes.upload_bytes))
            speeds.append(sizes.upload_bytes / MB / seconds)
            growths.append(watch.growth)
            exact = exact and watch.exact
            target = directory / "big.bin"
            on_disk = target.stat().st_size
            if on_disk != sizes.upload_bytes or sha256_of_file(target) != expected:
                report.wrong_answer(f"/files/upload: the {on_disk} bytes on disk do not hash like "
                                    f"the {sizes.upload_bytes} sent")
            target.unlink()
        how = "VmHWM" if exact else "sampled"
        return [
            Sample(f"upload {megabytes(sizes.upload_bytes)}", statistics.median(speeds), "MB/s", "higher", 250,
                   digits=0),
            Sample(f"upload server RSS growth ({how})", max(growths) / 2**20, "MiB", "lower", 8),
        ]

    return measure


async def _upload(server: Server, report: Report, directory: Path, name: str, seed: int, size: int) -> float:
    url = url_of(server, "/files/upload", directory=str(directory))
    body = aiohttp.MultipartWriter("form-data")
    body.append_payload(SizedStream(generated(seed, size), size, name))
    async with open_session(server.key, json_body=False) as session:
        started = time.perf_counter()
        payload = await fetch(session, "POST", url, body, timeout=TRANSFER_TIMEOUT)
        seconds = time.perf_counter() - started
    reply = parse_object(payload, "POST /files/upload")
    where = str(directory / name)
    if reply.get("path") != where or reply.get("size") != size:
        report.wrong_answer(f"/files/upload: replied {reply!r}, not path {where!r} and size {size}")
    return seconds


# --- 6. view (download) -----------------------------------------------------------------------------


class Hasher:
    """sha256 in a second thread, fed through a bounded queue (a full queue holds the receiver back)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self.digest.update(chunk)  # hashlib lets go of the GIL for big chunks
            self.size += len(chunk)

    def feed(self, chunk: bytes) -> None:
        try:
            self._chunks.put(chunk, timeout=HASHER_TIMEOUT)
        except queue.Full:
            raise BenchError(f"the hasher thread took no chunk for {HASHER_TIMEOUT:.0f} s") from None

    def finish(self) -> str:
        self._chunks.put(None, timeout=HASHER_TIMEOUT)
        self._thread.join(timeout=HASHER_TIMEOUT)
        if self._thread.is_alive():
            raise BenchError("the hasher thread did not finish")
        return self.digest.hexdigest()

    def abandon(self) -> None:
        """Let the thread end after a failed transfer (it drops whatever is still queued)."""
        while True:
            try:
                self._chunks.put_nowait(None)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._chunks.get_nowait()


def view_workload(bench: Bench) -> Measure:
    sizes = bench.sizes
    path = bench.corpus / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as stream:
        for chunk in data_chunks(7, sizes.view_bytes):
            stream.write(chunk)
            digest.update(chunk)
    write_back()
    expected = digest.hexdigest()
    label = f"view {megabytes(sizes.view_bytes)}"

    def measure(server: Server, report: Report) -> list[Sample]:
        speeds = asyncio.run(_view(bench, server, report, path, expected))
        return [Sample(label, statistics.median(speeds), "MB/s", "higher", 700, digits=0)]

    return measure


async def _view(bench: Bench, server: Server, report: Report, path: Path, expected: str) -> list[float]:
    size = bench.sizes.view_bytes
    url = url_of(server, "/files/view", path=str(path))
    speeds: list[float] = []
    deadline = time.monotonic() + bench.sizes.budget
    async with open_session(server.key, json_body=False) as session:
        for _ in range(bench.sizes.view_runs):
            hasher = Hasher()
            try:
                started = time.perf_counter()
                async with session.get(url, timeout=TRANSFER_TIMEOUT, read_bufsize=CHUNK) as response:
                    if response.status != 200:
                        raise BenchError(f"GET {url} answered {response.status}: {(await response.read())[:300]!r}")
                    async for chunk in response.content.iter_any():
                        hasher.feed(chunk)
                seconds = time.perf_counter() - started
                received = hasher.finish()
            except BaseException:
                hasher.abandon()
                raise
            speeds.append(size / MB / seconds)
            if hasher.size != size or received != expected:
                report.wrong_answer(f"/files/view: {hasher.size} bytes received that do not hash "
                                          f"like the {size}-byte file")
            if time.monotonic() > deadline:
                break
    return speeds


# --- 7. write_file with history on and off --------------------------------------------------------

HISTORY_TARGET_MS = 1.0


def history_workload(bench: Bench) -> Measure:
    """``POST /files/write`` of 4 KB over the same file, one at a time: p50 (each write replaces the
    last, so with history on each keeps a version, at its per-file cap after 20)."""
    texts = [text_of_size(seed, SMALL_BYTES)[:SMALL_BYTES] for seed in (7, 8)]

    def measure(server: Server, report: Report) -> list[Sample]:
        path = bench.corpus / f"history-{server.label}.txt"
        samples = asyncio.run(_write_loop(bench, server, report, path, texts))
        return [Sample("write_file 4 KB p50", statistics.median(samples), "ms", "lower", digits=2)]

    return measure


async def _write_loop(bench: Bench, server: Server, report: Report, path: Path, texts: list[str]) -> list[float]:
    url = url_of(server, "/files/write")
    bodies = [write_body(str(path), text) for text in texts]
    samples: list[float] = []
    deadline = time.monotonic() + bench.sizes.budget
    async with open_session(server.key) as session:
        for index in range(bench.sizes.warmup + bench.sizes.small_requests // 4):
            if time.monotonic() > deadline:
                break
            gc.collect()
            gc.disable()
            try:
                started = time.perf_counter()
                payload = await fetch(session, "POST", url, bodies[index % 2])
                elapsed = (time.perf_counter() - started) * 1000
            finally:
                gc.enable()
            if index >= bench.sizes.warmup:
                samples.append(elapsed)
            reply = parse_object(payload, "POST /files/write")
            if reply != {"path": str(path), "size": len(texts[index % 2].encode())}:
                report.wrong_answer(f"POST /files/write answered {reply!r}")
        kept = parse_object(await fetch(session, "GET", url_of(server, "/files/history", path=str(path))),
                            "GET /files/history")["versions"]
    history_on = server.settings.get("OPEN_TERMINAL_HISTORY") != "false"
    if history_on != bool(kept):
        report.wrong_answer(f"{server.label}: {len(kept)} versions kept")
    if not samples:
        raise BenchError(f"no write completed within {bench.sizes.budget:.0f} s")
    return samples


def write_body(path: str, content: str) -> bytes:
    return json.dumps({"path": path, "content": content}).encode()


def history_rows(scratch: Path, bench: Bench, report: Report) -> list[Row]:
    """Two opentermd servers, history off and on, alternating (off first); the cost is on - off."""
    servers = [Server(scratch, label="history-off", settings={"OPEN_TERMINAL_HISTORY": "false"}),
               Server(scratch, label="history-on", settings={"OPEN_TERMINAL_HISTORY": "true"})]
    try:
        for server in servers:
            server.start()
        off, on = alternate(servers, history_workload(bench))
    finally:
        for server in servers:
            if problem := server.stop():
                report.errors.append(problem)
    for outcome in (off, on):
        for problem in outcome.report.wrong:
            report.wrong_answer(problem)
        if outcome.error is not None:
            raise BenchError(f"{outcome.label}: {outcome.error}")
    label = "write_file 4 KB p50"
    off_ms, on_ms = off.medians()[label], on.medians()[label]
    cost = on_ms - off_ms
    return [Row(f"{label}, history off", "n/a", f"{off_ms:.2f} ms", "-", "(report)", "-"),
            Row(f"{label}, history on", "n/a", f"{on_ms:.2f} ms (+{cost:.2f})", "-",
                f"on - off <= {HISTORY_TARGET_MS:g} ms", "PASS" if cost <= HISTORY_TARGET_MS else "FAIL")]


# --- 8. delete a 10,000-file folder ---------------------------------------------------------------


def delete_workload(bench: Bench) -> Measure:
    """``DELETE /files/delete`` of a fresh folder of `list_entries` files (10,000), one per round:
    the reference removes it for good, opentermd moves it to the trash (one rename). Report only."""
    count = bench.sizes.list_entries
    label = f"delete a {count:,}-file folder"
    rounds = iter(range(1_000_000))

    def measure(server: Server, report: Report) -> list[Sample]:
        folder = bench.corpus / f"doomed-{server.label}-{next(rounds)}"
        folder.mkdir()
        for index in range(count):
            (folder / f"file-{index:05d}.txt").write_bytes(b"x" * (index % 97))
        write_back()
        elapsed = asyncio.run(_delete(server, report, folder))
        return [Sample(label, elapsed, "ms", "lower", digits=1)]

    return measure


async def _delete(server: Server, report: Report, folder: Path) -> float:
    async with open_session(server.key, json_body=False) as session:
        started = time.perf_counter()
        payload = await fetch(session, "DELETE", url_of(server, "/files/delete", path=str(folder)))
        elapsed = (time.perf_counter() - started) * 1000
        reply = parse_object(payload, "DELETE /files/delete")
        if reply != {"path": str(folder), "type": "directory"} or folder.exists():
            report.wrong_answer(f"DELETE /files/delete of {folder.name} answered {reply!r} "
                                f"(still there: {folder.exists()})")
        if server.name == "opentermd" and server.settings.get("OPEN_TERMINAL_TRASH") != "false":
            trash = parse_object(await fetch(session, "GET", url_of(server, "/files/trash")), "GET /files/trash")
            if not any(entry["original_path"] == str(folder) for entry in trash["entries"]):
                report.wrong_answer(f"{folder.name} is not in opentermd's trash")
    return elapsed


# --- all of them ------------------------------------------------------------------------------------


def both(servers: list[Server], measure: Measure, report: Report) -> list[Row]:
    """Alternate `measure` over the servers (the reference first when there are two) into table rows."""
    outcomes = alternate(servers, measure)
    ours = outcomes[-1]
    return rows_of(outcomes[0] if len(outcomes) > 1 else None, ours, report)


WORKLOADS: tuple[tuple[str, Callable[[Bench], Measure]], ...] = (
    ("list", list_workload),
    ("read 4 KB", read_small_workload),
    ("read 1 MB", read_large_workload),
    ("upload", upload_workload),
    ("view", view_workload),
    ("delete to the trash", delete_workload),
)


def run(servers: list[Server], scratch: Path, smoke: bool, report: Report) -> None:
    """Every file workload in turn on every server (opentermd last); one that breaks is reported as
    such and the others still run. Only opentermd's wrong answers count; the reference's make its
    column n/a."""
    wrong_before = report.wrong_count

    def alternated(make: Callable[[Bench], Measure]) -> Callable[[Bench], list[Row]]:
        return lambda bench: both(servers, make(bench), report)

    workloads = [(name, alternated(make)) for name, make in WORKLOADS]
    workloads.insert(3, ("grep", lambda bench: grep_rows(servers, bench, report)))
    workloads.append(("write_file history", lambda bench: history_rows(scratch, bench, report)))
    for name, workload in workloads:
        corpus = scratch / "files-corpus"
        corpus.mkdir()
        try:
            report.rows.extend(workload(Bench(corpus, SMOKE if smoke else FULL)))
        except (BenchError, *WORKLOAD_ERRORS) as exc:
            report.errors.append(f"{name}: {describe(exc)}")
            report.rows.append(Row(name, "-", "error", "-", "-", "FAIL"))
        finally:
            shutil.rmtree(corpus, ignore_errors=True)
    wrong = report.wrong_count - wrong_before
    report.rows.append(Row("file API wrong answers (opentermd)", "-", str(wrong), "-", "0",
                           "PASS" if wrong == 0 else "FAIL"))
