"""Interactive terminal workloads of the benchmark: WebSocket output throughput and keystroke echo.

Each workload creates its terminal with ``POST /api/terminals`` (a ``cmd`` instead of the login
shell), attaches with ``WS /api/terminals/{id}`` (an ``auth`` text frame, then a ``resize``), sends
keystrokes as binary frames and reads the PTY's output from binary frames, checking what arrives as
it measures:

* **WebSocket throughput**: the terminal runs ``head -c 100000000 /dev/urandom | base64`` and every
  binary frame is read until the daemon closes with 1000 when the shell exits: MB/s of output
  received (as sent, ``\\r\\n`` line ends included), from the keystroke that starts the command to the
  close frame. The PTY turns each ``\\n`` into ``\\r\\n``; once the ``\\r`` are removed the text must
  have exactly the length of the base64 of 100 MB (133,333,336 characters and 1,754,386 line ends),
  every line but the last must be 76 characters that decode to 57 bytes, and all of them together
  must decode to exactly 100 MB. The check runs frame by frame; the output is never held whole.
  The command waits for a keystroke before producing anything (and turns the PTY's echo off first),
  so nothing is produced before the WebSocket is attached: output made while no viewer is attached
  only reaches the session's bounded replay buffer. On a terminal ``base64``'s output is line
  buffered, one ``write`` of 77 bytes per line, and that bounds this figure more than the daemon does.
* **keystroke echo**: the terminal runs ``cat`` on a PTY in its default (canonical) mode, whose
  line discipline echoes every typed character at once, as a terminal does for the user. One letter
  is sent at a time and the clock stops when that letter comes back: p50 and p95 over 500 round
  trips, after 50 warm-ups. Every echo must be the letter sent; at the end a newline and Ctrl-D end
  ``cat``, and the daemon must close with 1000.

The close code that counts is the one in the daemon's close frame (see `Terminal`).

Every loop is bounded in count and in time; everything runs on the loopback interface.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import gc
import json
import math
import string
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp

from bench.harness import (
    WORKLOAD_ERRORS,
    BenchError,
    Daemon,
    Latency,
    Measure,
    Report,
    Row,
    Sample,
    Server,
    alternate,
    call,
    describe,
    megabytes,
    open_session,
    rows_of,
)

MB = 1_000_000
#: Random bytes per line of `base64` output, and the line as the PTY sends it (76 columns + "\r\n").
LINE_BYTES = 57
LINE_COLUMNS = 76
RAW_LINE = LINE_COLUMNS + 2
COLS, ROWS = 120, 40
#: Printed by the throughput command once the echo is off; the command then waits for a keystroke.
READY = b"READY\r\n"
#: The PTY's canonical line holds at most 4095 characters; the echo workload never sends that many.
CANONICAL_LINE_MAX = 4095
#: Bounds: of the whole stream, of one wait for a frame, of one echo, of the wait for the final close.
STREAM_TIMEOUT = 300.0
FRAME_TIMEOUT = 30.0
ECHO_TIMEOUT = 5.0
CLOSE_TIMEOUT = 10.0
#: Why a server may print a shell prompt where the workload's `cmd` should run.
SHELL_HINT = " (a shell prompt: this server ignores the `cmd` of POST /api/terminals)"
#: Close code of a terminal whose shell exited.
CLOSE_ENDED = 1000


@dataclass(frozen=True)
class Sizes:
    stream_bytes: int
    echo_warmup: int
    echo_samples: int
    #: Seconds the echo loop may take; a loop that runs out reports the samples it took.
    echo_budget: float


FULL = Sizes(stream_bytes=100 * MB, echo_warmup=50, echo_samples=500, echo_budget=60.0)
SMOKE = Sizes(stream_bytes=1 * MB, echo_warmup=5, echo_samples=20, echo_budget=10.0)
assert FULL.echo_warmup + FULL.echo_samples < CANONICAL_LINE_MAX


# --- the terminal -----------------------------------------------------------------------------------


async def create_terminal(session: aiohttp.ClientSession, daemon: Daemon, cmd: str) -> str:
    body = json.dumps({"cmd": cmd, "cols": COLS, "rows": ROWS}).encode()
    reply = await call(session, "POST", f"{daemon.base_url}/api/terminals", body)
    terminal = reply.get("id")
    if not isinstance(terminal, str) or not terminal:
        raise BenchError(f"POST /api/terminals answered {reply!r}, with no id")
    return terminal


class Terminal:
    """A terminal's WebSocket, read as a stream of output frames.

    The close code is the one in the daemon's close frame: aiohttp's own `close_code` turns into
    1006 when its reply to that frame cannot be written because the daemon already dropped the
    connection, which says nothing about how the terminal ended.
    """

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.close_code: int | None = None
        self.close_reason = ""

    async def send(self, keys: bytes) -> None:
        await self.socket.send_bytes(keys)

    async def output(self, timeout: float) -> bytes | None:
        """The next binary frame, or None once the daemon closed the socket."""
        while True:
            try:
                message = await self.socket.receive(timeout=timeout)
            except TimeoutError:
                raise BenchError(f"the terminal sent nothing for {timeout:.0f} s") from None
            if message.type == aiohttp.WSMsgType.BINARY:
                data: bytes = message.data
                return data
            if message.type == aiohttp.WSMsgType.CLOSE:
                self.close_code, self.close_reason = int(message.data), str(message.extra or "")
                return None
            if message.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                if self.close_code is None:
                    self.close_code = self.socket.close_code
                return None
            if message.type == aiohttp.WSMsgType.ERROR:
                raise BenchError(f"terminal WebSocket failed: {self.socket.exception()!r}")
            # A text frame is a control message; the daemon sends none, and they carry no output.

    @property
    def ended(self) -> bool:
        """The daemon closed with 1000: the shell exited."""
        return self.close_code == CLOSE_ENDED

    def closed_with(self) -> str:
        reason = f" {self.close_reason!r}" if self.close_reason else ""
        return f"close code {self.close_code}{reason}"


@contextlib.asynccontextmanager
async def attached(session: aiohttp.ClientSession, daemon: Daemon, terminal: str) -> AsyncIterator[Terminal]:
    """The terminal's WebSocket, authenticated with the key and sized; closed on the way out."""
    url = f"ws://{daemon.base_url.removeprefix('http://')}/api/terminals/{terminal}"
    socket = await session.ws_connect(url, heartbeat=None, compress=0,
                                      timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT))
    try:
        await socket.send_str(json.dumps({"type": "auth", "token": daemon.key}))
        await socket.send_str(json.dumps({"type": "resize", "cols": COLS, "rows": ROWS}))
        yield Terminal(socket)
    finally:
        await socket.close()


# --- 1. WebSocket throughput ------------------------------------------------------------------------


def base64_text_size(size: int) -> tuple[int, int]:
    """Characters and line ends of `base64` (76 columns) of `size` bytes."""
    return 4 * math.ceil(size / 3), math.ceil(size / LINE_BYTES)


class Base64Check:
    """What `base64` of `size` random bytes must look like once the PTY sent it, checked frame by frame.

    Whole lines are checked in blocks (`\\r\\n` at every 78th byte and nowhere else, and the 76
    columns between decode strictly to 57 bytes); at least one line is held back, since only the
    last one may be shorter or padded, and is checked in `finish`.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.received = 0  # bytes as sent by the daemon, "\r" included
        self.frames = 0
        self.returns = 0
        self.lines = 0  # complete lines checked
        self.decoded = 0
        self.problems: list[str] = []
        self._carry = b""

    def feed(self, frame: bytes) -> None:
        self.received += len(frame)
        self.frames += 1
        self.returns += frame.count(b"\r")
        text = self._carry + frame
        cut = (len(text) // RAW_LINE - 1) * RAW_LINE
        if cut <= 0:
            self._carry = text
            return
        self._check_block(text[:cut])
        self._carry = text[cut:]

    def _check_block(self, block: bytes) -> None:
        count = len(block) // RAW_LINE
        first = self.lines + 1
        self.lines += count
        self.decoded += count * LINE_BYTES
        if self.problems:
            return  # one problem is enough; the rest of the stream is only counted
        # "\r\n" at the end of every line; strict decoding refuses any other "\r" or "\n" (and any "="
        # but at the very end), and a "\r\n" elsewhere would make the block decode short.
        framed = block[LINE_COLUMNS::RAW_LINE] == b"\r" * count and block[LINE_COLUMNS + 1::RAW_LINE] == b"\n" * count
        try:
            decoded = binascii.a2b_base64(block.replace(b"\r\n", b""), strict_mode=True) if framed else b""
            good = framed and len(decoded) == count * LINE_BYTES
        except binascii.Error:
            good = False
        if not good:
            self._locate(block, first)

    def _locate(self, block: bytes, first: int) -> None:
        """Name the first bad line of a block that failed (the slow path)."""
        for offset in range(0, len(block), RAW_LINE):
            line = block[offset:offset + RAW_LINE]
            problem = self._line_problem(line[:-2], full=True) if line.endswith(b"\r\n") else "no \\r\\n at column 77"
            if problem:
                self.problems.append(f"line {first + offset // RAW_LINE}: {problem}: {line[:90]!r}")
                return
        self.problems.append(f"lines {first}-{first + len(block) // RAW_LINE - 1}: malformed")

    @staticmethod
    def _line_problem(line: bytes, *, full: bool) -> str | None:
        if b"\r" in line or b"\n" in line:
            return "stray line break"
        if full and len(line) != LINE_COLUMNS:
            return f"{len(line)} columns, not {LINE_COLUMNS}"
        try:
            data = binascii.a2b_base64(line, strict_mode=True)
        except binascii.Error as exc:
            return f"not base64 ({exc})"
        if full and len(data) != LINE_BYTES:
            return f"decodes to {len(data)} bytes, not {LINE_BYTES}"
        return None

    def finish(self) -> None:
        """Check the held-back tail (the last line or two) and the totals."""
        tail, self._carry = self._carry, b""
        if not tail.endswith(b"\r\n"):
            self.problems.append(f"the output does not end with a line end: {tail[-90:]!r}")
        lines = tail.split(b"\r\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for index, line in enumerate(lines):
            last = index == len(lines) - 1
            problem = self._line_problem(line, full=not last)
            if problem is None and last and not (0 < len(line) <= LINE_COLUMNS):
                problem = f"{len(line)} columns"
            if problem is not None:
                self.problems.append(f"line {self.lines + index + 1}: {problem}: {line[:90]!r}")
            with contextlib.suppress(binascii.Error):
                self.decoded += len(binascii.a2b_base64(line))
        self.lines += len(lines)
        chars, ends = base64_text_size(self.size)
        if self.text_bytes != chars + ends:
            self.problems.append(f"{self.text_bytes:,} bytes without \\r, not {chars:,} characters + {ends:,} "
                                 f"line ends = {chars + ends:,}")
        if self.returns != self.lines or self.lines != ends:
            self.problems.append(f"{self.lines:,} lines and {self.returns:,} \\r, not {ends:,}")
        if self.decoded != self.size:
            self.problems.append(f"the lines decode to {self.decoded:,} bytes, not {self.size:,}")

    @property
    def text_bytes(self) -> int:
        return self.received - self.returns

    @property
    def lost(self) -> int:
        chars, ends = base64_text_size(self.size)
        return abs(chars + ends - self.text_bytes)


@dataclass(frozen=True)
class Stream:
    check: Base64Check
    seconds: float
    close: str
    ended: bool  # closed with 1000

    @property
    def megabytes_per_second(self) -> float:
        return self.check.received / MB / self.seconds if self.seconds > 0 else math.inf

    @property
    def correct(self) -> bool:
        return self.ended and not self.check.problems


async def websocket_throughput(daemon: Daemon, sizes: Sizes) -> Stream:
    size = sizes.stream_bytes
    # The echo is turned off before READY, so the starting keystroke adds nothing to the output.
    cmd = f"stty -echo && printf 'READY\\n' && read -r _ && head -c {size} /dev/urandom | base64"
    check = Base64Check(size)
    async with open_session(daemon.key) as session:
        terminal = await create_terminal(session, daemon, cmd)
        async with attached(session, daemon, terminal) as shell:
            ready = b""
            while len(ready) < len(READY):
                frame = await shell.output(FRAME_TIMEOUT)
                if frame is None:
                    raise BenchError(f"terminal closed before the command was ready ({shell.closed_with()})")
                ready += frame
            if ready != READY:
                raise BenchError(f"the throughput command printed {ready[:200]!r}, not {READY!r}{SHELL_HINT}")
            frame_cap = 2 * math.ceil(size * 4 / 3) + 1000  # each frame holds at least one byte
            gc.collect()
            gc.disable()
            try:
                started = time.perf_counter()
                deadline = time.monotonic() + STREAM_TIMEOUT
                await shell.send(b"\n")
                while (frame := await shell.output(FRAME_TIMEOUT)) is not None:
                    check.feed(frame)
                    if check.frames > frame_cap or time.monotonic() > deadline:
                        raise BenchError(f"terminal output still flowing after {check.frames:,} frames / "
                                         f"{STREAM_TIMEOUT:.0f} s ({check.received:,} bytes)")
                seconds = time.perf_counter() - started
            finally:
                gc.enable()
    check.finish()
    return Stream(check, seconds, shell.closed_with(), shell.ended)


def throughput_samples(stream: Stream, report: Report) -> list[Sample]:
    check = stream.check
    label = f"terminal WS output ({megabytes(check.size)} base64)"
    average = check.received / check.frames / 1024 if check.frames else 0.0
    if not stream.ended:
        report.wrong_answer(f"terminal throughput: the daemon ended the stream with {stream.close}, not {CLOSE_ENDED}")
    for problem in check.problems:
        report.wrong_answer(f"terminal throughput: {problem}")
    return [
        Sample(label, stream.megabytes_per_second, "MB/s", "higher", 28),
        Sample("terminal WS frames (count)", check.frames, digits=0),
        Sample("terminal WS frame avg", average, "KiB"),
        Sample("terminal output bytes lost", check.lost, "", "lower", 0,
               digits=0, target="0"),
    ]


# --- 2. keystroke echo ------------------------------------------------------------------------------


async def echo_latency(daemon: Daemon, sizes: Sizes) -> tuple[Latency, str, bool]:
    letters = string.ascii_lowercase.encode()
    samples: list[float] = []
    failures = 0
    async with open_session(daemon.key) as session:
        terminal = await create_terminal(session, daemon, "cat")
        async with attached(session, daemon, terminal) as shell:
            deadline = time.monotonic() + sizes.echo_budget
            gc.collect()
            gc.disable()
            try:
                for index in range(sizes.echo_warmup + sizes.echo_samples):
                    if time.monotonic() > deadline and len(samples) > 0:
                        break
                    key = letters[index % len(letters):][:1]
                    started = time.perf_counter()
                    await shell.send(key)
                    echo = await shell.output(ECHO_TIMEOUT)
                    elapsed = (time.perf_counter() - started) * 1000
                    if echo is None:
                        raise BenchError(f"terminal closed during the echo loop ({shell.closed_with()})")
                    if index >= sizes.echo_warmup:
                        samples.append(elapsed)
                        failures += echo != key
                    elif echo != key:
                        raise BenchError(f"typing {key!r} echoed {echo[:100]!r}{SHELL_HINT}")
            finally:
                gc.enable()
            if not samples:
                raise BenchError(f"no echo measured within {sizes.echo_budget:.0f} s")
            # End the line (cat prints it) and then the input: `cat` exits, and so does the terminal.
            await shell.send(b"\n\x04")
            deadline = time.monotonic() + CLOSE_TIMEOUT
            while await shell.output(CLOSE_TIMEOUT) is not None:
                if time.monotonic() > deadline:
                    raise BenchError(f"terminal still open {CLOSE_TIMEOUT:.0f} s after Ctrl-D")
            return Latency(samples, failures), shell.closed_with(), shell.ended


def echo_samples(result: tuple[Latency, str, bool], sizes: Sizes, report: Report) -> list[Sample]:
    latency, close, ended = result
    if latency.failures:
        report.wrong_answer(f"terminal echo: {latency.failures} of {len(latency.samples_ms)} keystrokes echoed wrong")
    if not ended:
        report.wrong_answer(f"terminal echo: `cat` ended with {close}, not {CLOSE_ENDED}")
    wrong = latency.failures + (not ended)
    return [
        Sample(f"terminal echo p50 ({sizes.echo_samples}x)", latency.p50, "ms", "lower", 0.3, digits=3),
        Sample("terminal echo p95", latency.p95, "ms", "lower", digits=3),
        Sample("terminal echo wrong", wrong, "", "lower", 0, digits=0, target="0"),
    ]


# --- both of them -----------------------------------------------------------------------------------


def throughput(sizes: Sizes) -> Measure:
    return lambda server, report: throughput_samples(asyncio.run(websocket_throughput(server, sizes)), report)


def echo(sizes: Sizes) -> Measure:
    return lambda server, report: echo_samples(asyncio.run(echo_latency(server, sizes)), sizes, report)


WORKLOADS: tuple[tuple[str, Callable[[Sizes], Measure]], ...] = (
    ("terminal WS throughput", throughput),
    ("terminal echo", echo),
)


def run(servers: list[Server], smoke: bool, report: Report) -> None:
    """Every terminal workload in turn, alternating the servers (opentermd last); one that breaks is
    reported as such and the others still run."""
    sizes = SMOKE if smoke else FULL
    for name, workload in WORKLOADS:
        try:
            outcomes = alternate(servers, workload(sizes))
            report.rows.extend(rows_of(outcomes[0] if len(outcomes) > 1 else None, outcomes[-1], report))
        except (BenchError, *WORKLOAD_ERRORS) as exc:
            report.errors.append(f"{name}: {describe(exc)}")
            report.rows.append(Row(name, "-", "error", "-", "-", "FAIL"))
