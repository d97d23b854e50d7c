"""A process's output as JSONL on disk, with an index of where each output entry starts.

Records follow the reference: `{"type":"start",...}`, `{"type":"output","data",...,"ts"}` per
chunk, `{"type":"end","exit_code",...}`. Reading entries `[first, last)` is one slice of a byte
range found in the index, so its cost follows what is returned, not the size of the log.

Lines gather in memory and reach the disk in batches (on a short timer, or at once past a
megabyte); the newest bytes stay in memory, so following a running command (the common read) never
touches the disk. If the disk falls behind, `backlogged` turns true and the producer pauses until a
batch lands. One `LogWriter` serves every log of a process table: one timer for all, and one
worker-thread hop for all the batches due at the same moment. It closes with its table (the timer
cancelled, every write under way settled), and a hop is a future, not a task, so a loop that stops
mid-hop leaves no coroutine behind to warn "never awaited" in some later test.

A log holds a file descriptor only while its command runs: `seal()` at exit writes what is pending
on the shared timer and then closes the file, so a thousand finished commands hold no descriptor.
Reads of output older than what memory keeps open the file for that one read. `from_file` rebuilds
a log from disk (after a restart) by scanning its lines once.

A disk that refuses a write (ENOSPC, EDQUOT, EIO, EFBIG past RLIMIT_FSIZE) loses nothing already
accepted: what did not land stays in memory, is served from there, and is written again every
`retry_interval`; the bytes that did land count (the file is always an exact prefix of the log). While
the disk refuses, new output is kept in memory up to OUTAGE_BYTES unwritten and dropped past it,
`truncated` turns true, and the next line accepted after the drops is preceded by a `gap` record
(`{"type": "gap", "offset": <entry offset>, "bytes": <output bytes dropped>}`), so a reader of the
file, now or after a restart, sees where output is missing instead of output silently joined. The
producer is never paused for a failing disk: the command runs on and ends with its exit code.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import json
import logging
import os
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FLUSH_BYTES = 1024 * 1024
#: Bytes already on disk that stay in memory too, for cheap reads of recent output.
RECENT_BYTES = 1024 * 1024
#: Unwritten bytes past which the producer is asked to pause.
BACKLOG_BYTES = 16 * 1024 * 1024
#: While the disk refuses writes, output is kept in memory up to this many unwritten bytes, then dropped.
OUTAGE_BYTES = 1024 * 1024
#: Seconds between attempts to write to a disk that refused (one failing write a second costs nothing).
RETRY_INTERVAL = 1.0
TS_MARKER = b',"ts":'
GAP_PREFIX = b'{"type": "gap"'


#: Writes submitted to one worker-thread hop, each with the future its log awaits.
Calls = list[tuple[Callable[[], None], asyncio.Future[None]]]


@dataclass(frozen=True)
class Window:
    """Which entries a read returns: `[first, last)`, and whether anything was cut."""

    first: int
    last: int
    truncated: bool


class LogWriter:
    """The disk side of many logs: their batches written together, off the event loop.

    With a timer and a thread hop per log, every short command cost a hop of its own 20 ms later,
    competing with the next requests for the GIL and the CPUs (about 0.4 ms of the median latency
    of `echo hi` on a 2-CPU machine). Gathered, a burst of commands costs one hop per interval.
    """

    def __init__(self, flush_interval: float, retry_interval: float = RETRY_INTERVAL) -> None:
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self._due: dict[OutputLog, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._calls: Calls = []
        #: Every call submitted and not yet settled, and every hop under way: `close()` waits for them
        #: (a hop whose callers gave up still writes).
        self._pending: set[asyncio.Future[Any]] = set()
        #: Worker-thread hops so far (each carries every batch due at that moment).
        self.hops = 0
        #: Closed with its table: no timer is armed any more; a log's own drain()/close() still writes.
        self.closed = False

    @property
    def idle(self) -> bool:
        """Nothing due on the timer and no write submitted or under way."""
        return self._timer is None and not self._due and not self._pending

    def schedule(self, log: OutputLog) -> None:
        """Flush `log` at the next tick of the shared timer."""
        if self.closed:
            return
        self._due[log] = None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval, self._flush_due)

    def _flush_due(self) -> None:
        self._timer = None
        due, self._due = self._due, {}
        for log in due:
            log.flush()

    async def run(self, call: Callable[[], None]) -> None:
        """Run `call` in a worker thread, in one hop with the calls submitted in the same loop turn."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._calls.append((call, done))
        self._pending.add(done)
        done.add_done_callback(self._pending.discard)
        if len(self._calls) == 1:
            loop.call_soon(self._dispatch)
        await done

    def _dispatch(self) -> None:
        # A future, not a task: a hop dispatched in the loop's last turn leaves no coroutine that
        # never ran (which Python reports as "never awaited" whenever it is collected).
        calls, self._calls = self._calls, []
        self.hops += 1
        try:
            hop = asyncio.get_running_loop().run_in_executor(None, _call_each, [call for call, _ in calls])
        except RuntimeError as exc:  # no thread to run them (shutdown): their logs must not wait forever
            _settle(calls, [OSError(f"log write not run: {exc!r}")] * len(calls))
            return
        self._pending.add(hop)
        hop.add_done_callback(self._pending.discard)
        hop.add_done_callback(functools.partial(_settle_hop, calls))

    async def close(self) -> None:
        """Arm no more timers; write what was due at once; return when every write has settled."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due, self._due = self._due, {}
        await asyncio.gather(*(log.drain() for log in due))
        while self._pending:
            await asyncio.wait(set(self._pending))


def _settle_hop(calls: Calls, hop: asyncio.Future[list[Exception | None]]) -> None:
    if hop.cancelled():
        _settle(calls, [OSError("log write cancelled")] * len(calls))
    elif (failure := hop.exception()) is not None:
        _settle(calls, [OSError(f"log write not run: {failure!r}")] * len(calls))
    else:
        _settle(calls, hop.result())


def _settle(calls: Calls, outcomes: list[Exception | None]) -> None:
    """Each call gets its own outcome; callers that gave up meanwhile are skipped."""
    for (_, done), outcome in zip(calls, outcomes, strict=True):
        if done.done():
            continue
        if outcome is None:
            done.set_result(None)
        else:
            done.set_exception(outcome)


def _call_each(calls: list[Callable[[], None]]) -> list[Exception | None]:
    outcomes: list[Exception | None] = []
    for call in calls:
        try:
            call()
        except Exception as exc:  # any failure belongs to its own log; the others' writes still run
            outcomes.append(exc)
        else:
            outcomes.append(None)
    return outcomes


class OutputLog:
    def __init__(self, path: Path, *, cap: int, writer: LogWriter) -> None:
        self.path = path
        self._cap = cap
        self._disk = writer
        #: Called when a backlog has been written out; the producer may resume.
        self.on_drained: Callable[[], None] | None = None
        self._fd = -1
        self._closed = False
        #: No more lines will come (the command ended): the file is let go once everything is written.
        self._sealed = False
        self._memory = bytearray()   # log bytes [_memory_base, _size)
        self._memory_base = 0
        self._written = 0            # log bytes [0, _written) are on disk
        self._size = 0
        self._starts = array("Q")
        self._outputs_end = 0
        self._writer: asyncio.Task[None] | None = None
        #: Bytes of the batch under way that reached the file (set by the worker thread).
        self._landed = 0
        #: The last write failed: only the retry timer writes until one succeeds.
        self._failing = False
        self._retry: asyncio.TimerHandle | None = None
        self._warned = False
        self._capped = False
        #: An open gap: output dropped since `_gap_offset`, not yet marked by a `gap` record.
        self._gap_offset: int | None = None
        self._gap_bytes = 0
        #: Output bytes dropped because the disk refused them, over the log's whole life.
        self.dropped_bytes = 0
        #: True once output was dropped: the size cap was reached or the disk refused a write.
        self.truncated = False

    @property
    def count(self) -> int:
        """How many output entries exist: the `next_offset` of a read that reaches the end."""
        return len(self._starts)

    @property
    def backlogged(self) -> bool:
        # A refusing disk never pauses the producer: its output is dropped instead of blocking the command.
        return self._size - self._written > BACKLOG_BYTES and not self._failing

    def record(self, **fields: Any) -> None:
        """A bookkeeping line (start, end); never counted as output, never refused by the cap."""
        if self._closed:
            return
        self._close_gap()
        self._queue(_record_line(fields))

    def append(self, data: str, kind: str = "output") -> None:
        # A closed log let go of its memory: a line accepted now would be written from the wrong place.
        if self._capped or self._closed:
            return
        line = _line(kind, data)
        if self._failing and (self._gap_offset is not None or self._size - self._written + len(line) > OUTAGE_BYTES):
            self._drop(data)
            return
        self._close_gap()
        room = self._cap - self._size
        if len(line) > room:
            # Keep what fits: output up to the cap is never lost, only what comes after it.
            self.truncated = self._capped = True
            data = data[: max(room - len(_line(kind, "")), 0)]
            while data and len(line := _line(kind, data)) > room:
                data = data[: len(data) * 3 // 4]
            if not data:
                return
        self._starts.append(self._size)
        self._queue(line)
        self._outputs_end = self._size

    def _drop(self, data: str) -> None:
        if self._gap_offset is None:
            self._gap_offset = self.count
        dropped = len(data.encode(errors="surrogatepass"))
        self._gap_bytes += dropped
        self.dropped_bytes += dropped
        self.truncated = True

    def _close_gap(self) -> None:
        """Mark the end of dropped output with a `gap` record, before the next line that is kept."""
        if self._gap_offset is None:
            return
        fields = {"type": "gap", "offset": self._gap_offset, "bytes": self._gap_bytes}
        self._gap_offset, self._gap_bytes = None, 0
        self._queue(_record_line(fields))

    def _queue(self, line: bytes) -> None:
        self._memory += line
        self._size += len(line)
        if self._size - self._written >= FLUSH_BYTES:
            self.flush()
        else:
            self._disk.schedule(self)

    def flush(self) -> None:
        """Start writing what is pending, unless a write is already under way (it will loop) or the
        disk refused the last one (the retry timer writes then)."""
        if not self._failing:
            self._start_writing()

    def _start_writing(self) -> None:
        if self._writer is None and self._size > self._written:
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())

    async def _write_pending(self) -> None:
        try:
            while self._size > self._written:
                start = self._written - self._memory_base
                batch = bytes(self._memory[start:])
                self._landed = 0
                try:
                    await self._disk.run(functools.partial(self._write, batch))
                except Exception as exc:  # a writer that raised into the loop would stop every later write
                    self._written += self._landed  # the file holds exactly what landed: no byte twice
                    self._refused(exc)
                    return
                self._written += len(batch)
                self._forget_old_memory()
                self._failing = False
                if self._gap_offset is not None:
                    self._recovered()
                if self.on_drained and self._size - self._written <= BACKLOG_BYTES:
                    self.on_drained()
        finally:
            self._writer = None
            if self._sealed and (self._size == self._written or self._failing):
                self._release_file()

    def _refused(self, exc: Exception) -> None:
        """The disk refused a write: keep what is pending in memory and try again later."""
        if not self._warned:
            # Once per log: a full disk must not turn into a warning per write.
            self._warned = True
            log.warning("cannot write process log %s: %s; output is kept in memory and written again when "
                        "the disk takes it (past %d bytes it is dropped and the log marks the gap)",
                        self.path, exc, OUTAGE_BYTES)
        self._failing = True
        self._release_file()  # a finished command holds no descriptor, also while its disk is full
        if not self._closed:
            self._retry = asyncio.get_running_loop().call_later(self._disk.retry_interval, self._try_again)
        if self.on_drained:
            self.on_drained()  # a producer paused for a backlog runs on: its output is dropped, not blocked

    def _try_again(self) -> None:
        # `_failing` stays set until a write lands: output meanwhile still meets the outage bound.
        self._retry = None
        self._start_writing()

    def _recovered(self) -> None:
        """A write landed after output was dropped: mark the gap now, not at the next output."""
        log.info("process log %s is written again; %d bytes of output were dropped", self.path, self.dropped_bytes)
        self._close_gap()

    def _write(self, batch: bytes) -> None:
        if self._fd < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        view = memoryview(batch)
        while view:
            written = os.write(self._fd, view)
            self._landed += written
            view = view[written:]

    def _forget_old_memory(self) -> None:
        excess = (self._written - self._memory_base) - RECENT_BYTES
        if excess > 0:
            del self._memory[:excess]
            self._memory_base += excess

    def window(self, offset: int, tail: int | None) -> Window:
        total = self.count
        first = min(offset, total)
        cut = tail is not None and total - first > tail
        if cut and tail is not None:
            first = total - tail
        return Window(first, total, cut or self.truncated)

    def span(self, first: int, last: int) -> tuple[int, int]:
        """The byte range holding entries `[first, last)`."""
        if first >= last:
            return 0, 0
        end = self._starts[last] if last < self.count else self._outputs_end
        return self._starts[first], end

    async def render(self, first: int, last: int, separator: bytes = b",") -> bytes:
        """Entries `[first, last)` as `{"type","data"}` JSON objects joined by `separator`."""
        start, end = self.span(first, last)
        if start == end:
            return b""
        # Memory holds [base, size); anything older is on disk (memory only lets go of written
        # bytes). Take the in-memory part first: the await below lets the writer move `base`.
        base = self._memory_base
        split = min(max(start, base), end)
        recent = bytes(self._memory[split - base: end - base]) if end > split else b""
        # Read through a descriptor of our own: the writer's may be closed (and its number reused)
        # while the read runs in its thread.
        older = await asyncio.to_thread(_read_range, self.path, start, split - start) if split > start else b""
        raw = older + recent
        if len(raw) > FLUSH_BYTES:
            return await asyncio.to_thread(_as_entries, raw, separator)
        return _as_entries(raw, separator)

    def chunks(self, first: int, last: int, chunk_bytes: int) -> Iterator[tuple[int, int]]:
        """Split `[first, last)` into runs of whole entries of about `chunk_bytes` each."""
        while first < last:
            start, _ = self.span(first, last)
            stop = max(bisect.bisect_right(self._starts, start + chunk_bytes, first + 1, last), first + 1)
            yield first, stop
            first = stop

    async def drain(self) -> None:
        """Return once everything appended so far is on disk (or the disk has refused it)."""
        self.flush()
        while self._writer is not None:
            await asyncio.shield(self._writer)
            self.flush()

    def seal(self) -> None:
        """No more lines will come: write what is pending on the shared timer, then close the file.

        Recent output stays in memory for reads; older output is read from the file again.
        """
        self._sealed = True
        if self._size > self._written and not self._failing:
            self._disk.schedule(self)
        elif self._writer is None:
            self._release_file()

    def _release_file(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    @property
    def holds_file(self) -> bool:
        return self._fd >= 0

    async def close(self) -> None:
        """Write everything still pending, then release the file and the memory."""
        if self._closed:
            return
        self._closed = True
        self._sealed = True
        if self._retry is not None:
            # One last attempt, now: nothing would be left to write it later.
            self._retry.cancel()
            self._try_again()
        await self.drain()
        if self._size > self._written:
            log.warning("process log %s: %d bytes never reached the disk", self.path, self._size - self._written)
        self._release_file()
        self._memory = bytearray()

    @classmethod
    def from_file(cls, path: Path, *, writer: LogWriter, truncated: bool) -> OutputLog:
        """A finished log rebuilt from disk: its entry index from one scan, nothing kept in memory.

        Entries are the lines this module's `_line` wrote (compact `{"type":"`); bookkeeping
        records are `json.dumps` with its default separators (`{"type": "`), so they are told
        apart without parsing. A last line cut short (the daemon died mid-write) is left out.
        A `gap` record (output the disk refused) makes the log `truncated`.
        """
        restored = cls(path, cap=0, writer=writer)
        restored._sealed = True
        restored.truncated = truncated
        size = 0
        with open(path, "rb") as file:
            for line in file:
                if line.startswith(b'{"type":"') and line.endswith(b"}\n") and TS_MARKER in line:
                    restored._starts.append(size)
                    restored._outputs_end = size + len(line)
                elif line.startswith(GAP_PREFIX):
                    restored.truncated = True
                size += len(line)
        restored._size = restored._written = restored._memory_base = size
        return restored


def _record_line(fields: dict[str, Any]) -> bytes:
    return (json.dumps({**fields, "ts": time.time()}, ensure_ascii=False) + "\n").encode()


def _line(kind: str, data: str) -> bytes:
    return b"".join((
        b'{"type":"', kind.encode(), b'","data":', json.dumps(data, ensure_ascii=False).encode(),
        TS_MARKER, repr(time.time()).encode(), b"}\n",
    ))


def _read_range(path: Path, start: int, length: int) -> bytes:
    with open(path, "rb", buffering=0) as file:
        return os.pread(file.fileno(), length, start)


def _as_entries(raw: bytes, separator: bytes) -> bytes:
    # A line is `{"type":..,"data":".."` + `,"ts":..}`; inside the JSON string every quote is
    # escaped, so the last `,"ts":` of a line is always the one this module wrote.
    return separator.join(line[: line.rindex(TS_MARKER)] + b"}" for line in raw.split(b"\n") if line)
