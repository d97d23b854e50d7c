"""Interactive terminals: a shell under a PTY, the recent output, and at most one attached viewer.

A session outlives its WebSocket when it is detachable: the shell keeps running, output goes on
filling a byte-bounded replay buffer, and the next attach replays it before going live. The
PTY is read with `loop.add_reader` (no threads); when the viewer falls behind, reading stops
and the shell blocks on its full PTY, instead of output piling up in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from daemon.errors import ApiError
from daemon.owner import Owner
from daemon.processes.runner import PtyProcess, child_environment, set_window_size, terminate
from daemon.sandbox import Sandbox
from daemon.terminals.recording import Recorder

log = logging.getLogger(__name__)

#: What `read_user_terminal` returns at most (the reference's 64 KiB).
USER_OUTPUT_BYTES = 64 * 1024
#: Frames carry what is available, up to this much, instead of one small frame per read.
FRAME_BYTES = 64 * 1024
#: Past this much output waiting for a slow viewer, the PTY is not read until it drains.
BACKLOG_HIGH = 1024 * 1024
BACKLOG_LOW = 256 * 1024
CLOSE_GRACE = 2.0

Send = Callable[[bytes], Awaitable[None]]


class ReplayBuffer:
    """The last `limit` bytes of output, cut at a line start when possible (a clean replay)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data = bytearray()

    def add(self, chunk: bytes) -> None:
        self._data += chunk
        excess = len(self._data) - 2 * self.limit
        if excess > 0:
            del self._data[:excess + self.limit]

    def tail(self, size: int | None = None) -> bytes:
        size = self.limit if size is None else min(size, self.limit)
        data = bytes(self._data[-size:]) if size else b""
        if len(self._data) > size:
            newline = data.find(b"\n")
            if 0 <= newline < 4096:
                data = data[newline + 1:]
        return data


@dataclass
class SessionOptions:
    """What a create request may choose beyond the reference's defaults."""

    command: str | None = None
    cwd: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cols: int = 80
    rows: int = 24
    detachable: bool = False
    record: bool = False


class TerminalSession:
    def __init__(self, owner: Owner, options: SessionOptions, *, replay_bytes: int,
                 sandbox: Sandbox | None = None) -> None:
        self.id = uuid.uuid4().hex[:8]
        self.created_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.owner = owner
        self.options = options
        self.detachable = options.detachable
        self.replay = ReplayBuffer(max(replay_bytes, USER_OUTPUT_BYTES))
        self.pty = PtyProcess(on_bytes=self._output, sandbox=sandbox)
        self.recorder: Recorder | None = None
        self.recording_path: Path | None = None
        self.detached_at: float | None = time.monotonic()
        #: Until a viewer first attaches, the session holds a slot only for the attach grace.
        self.ever_attached = False
        self._viewer: Viewer | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.pty.pid

    @property
    def alive(self) -> bool:
        """Until the shell has exited *and* its output has been read (a viewer may still come for it)."""
        return not self.pty.finished.done() and self._closing is None

    @property
    def awaiting_first_viewer(self) -> bool:
        """A detachable session whose shell ended before anyone attached: kept until the attach grace,
        so that its first viewer still gets what it printed (the replay) and a clean close."""
        return self.detachable and not self.ever_attached and self.pty.finished.done() and self._closing is None

    @property
    def viewable(self) -> bool:
        """Can still be attached to (or looked up): alive, or ended and awaiting its first viewer."""
        return self.alive or self.awaiting_first_viewer

    @property
    def attached(self) -> bool:
        return self._viewer is not None

    def summary(self) -> dict[str, object]:
        return {"id": self.id, "created_at": self.created_at, "pid": self.pid}

    def current_directory(self) -> str | None:
        """Where the shell is now (its /proc cwd link), or None when that cannot be read."""
        try:
            # In a cold-started sandbox the spawned pid is bwrap's, whose cwd is the daemon's: ask the shell.
            return os.readlink(f"/proc/{self.pty.command_pid}/cwd")
        except (OSError, ValueError):
            return None

    def start(self, shell: str, env: dict[str, str]) -> None:
        command = self.options.command or f"exec {shlex.quote(shell)}"
        self.pty.start(command, self.options.cwd, env, rows=self.options.rows, cols=self.options.cols)
        if not self.detachable:
            # Like the reference: output waits in the PTY for the one viewer (the program blocks
            # when it fills), so a command's output is never cut to the replay buffer's size.
            self.pty.pause_reading()

    def record_to(self, path: Path, env: dict[str, str]) -> None:
        self.recording_path = path
        self.recorder = Recorder(path, self.options.cols, self.options.rows,
                                 command=self.options.command or env.get("SHELL", ""), env=env)

    # --- viewers --------------------------------------------------------------------------------

    def attach(self, send: Send) -> Viewer:
        """Connect a viewer: it first gets the recent output, then live output.

        For the reference's one-attach sessions this is what its PTY held before the socket came
        (the first prompt); for a re-attach it is what happened meanwhile.
        """
        if self._viewer is not None:
            raise ApiError(409, "Session already connected")
        viewer = Viewer(send, self.pty)
        viewer.push(self.replay.tail())
        self._viewer = viewer
        self.detached_at = None
        self.ever_attached = True
        self.pty.resume_reading()
        return viewer

    def detach(self, viewer: Viewer) -> None:
        if self._viewer is viewer:
            self._viewer = None
            self.detached_at = time.monotonic()
            viewer.stop()
            self.pty.resume_reading()

    async def write(self, data: bytes) -> None:
        await self.pty.write(data)

    def resize(self, cols: int, rows: int) -> None:
        cols, rows = max(1, min(cols, 1000)), max(1, min(rows, 1000))
        with contextlib.suppress(OSError):
            if self.pty.running:
                set_window_size(self.pty.master_fd, rows, cols)
        if self.recorder is not None:
            self.recorder.resize(cols, rows)

    def _output(self, data: bytes) -> None:
        self.replay.add(data)
        if self.recorder is not None:
            self.recorder.output(data)
        if self._viewer is not None:
            self._viewer.push(data)

    # --- ending -------------------------------------------------------------------------------------

    def close(self) -> asyncio.Task[None]:
        """Hang up and stop the whole process group, reap it, free the PTY (once)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        return self._closing

    async def _close(self) -> None:
        # Output still waiting in the PTY must be read, or the reap never completes.
        self.pty.resume_reading()
        if self.pty.running:
            await terminate(self.pty, force=False, grace=CLOSE_GRACE, hangup=True)
        else:
            await self.pty.finished
        self.pty.close()
        if self.recorder is not None:
            self.recorder.close()
        # An attached viewer is left to send what it holds; its socket handler ends it.


class Viewer:
    """Output on its way to one WebSocket: frames of up to 64 KiB, with backpressure on the PTY."""

    def __init__(self, send: Send, pty: PtyProcess) -> None:
        self._send = send
        self._pty = pty
        self._pending: list[bytes] = []
        self._size = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopped = False
        self.task = asyncio.ensure_future(self._pump())

    def push(self, data: bytes) -> None:
        if not data or self._stopped:
            return
        self._pending.append(data)
        self._size += len(data)
        self._idle.clear()
        self._wake.set()
        if self._size > BACKLOG_HIGH:
            self._pty.pause_reading()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._idle.set()

    async def drained(self) -> None:
        """Wait until everything pushed so far has been sent (used before a final close)."""
        await self._idle.wait()

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and not self._stopped:
                frame = self._take(FRAME_BYTES)
                try:
                    await self._send(frame)
                except (ConnectionError, RuntimeError):
                    self._stopped = True
                    break
                if self._size < BACKLOG_LOW:
                    self._pty.resume_reading()
            if not self._pending:
                self._idle.set()
            if self._stopped:
                self._pty.resume_reading()
                return

    def _take(self, limit: int) -> bytes:
        """Coalesce pending chunks into one frame of at most `limit` bytes."""
        parts, size = [], 0
        while self._pending and size < limit:
            chunk = self._pending[0]
            room = limit - size
            if len(chunk) > room:
                parts.append(chunk[:room])
                self._pending[0] = chunk[room:]
                size += room
                break
            parts.append(self._pending.pop(0))
            size += len(chunk)
        self._size -= size
        return b"".join(parts)


def default_shell() -> str:
    return os.environ.get("SHELL") or "/bin/sh"


def session_environment(term: str, extra: dict[str, str]) -> dict[str, str]:
    return {**child_environment(), "TERM": term, **extra}
