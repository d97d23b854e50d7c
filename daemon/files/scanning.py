"""What keeps a search from outliving its request: a budget it checks, children it can kill, and
reads that never block.

A search runs in a worker thread. The request's side (search_endpoints.py) stops the budget when the
client goes away or the search deadline passes; from then on the worker's next check raises
`SearchStopped`, and every child the search started (ripgrep, find, git) is killed at once, so a
thread blocked reading a child's output wakes up on EOF. Children also die with the daemon
(`PR_SET_PDEATHSIG`), so a killed daemon leaves no ripgrep walking the disk behind it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from daemon.resources import system_environment

PR_SET_PDEATHSIG = 1


class SearchStopped(Exception):
    """The search's client left or its deadline passed; `expired` tells which."""

    def __init__(self, expired: bool) -> None:
        super().__init__("search deadline passed" if expired else "search cancelled")
        self.expired = expired


class Budget:
    """A search's deadline and cancellation, shared by the worker thread and the request."""

    def __init__(self, timeout: float | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.deadline = math.inf if timeout is None else clock() + timeout
        self._stopped: bool | None = None  # None while running, else `expired`
        self._lock = threading.Lock()
        self._children: set[subprocess.Popen[bytes]] = set()

    @property
    def expired(self) -> bool:
        return self._stopped is True or self._clock() >= self.deadline

    def check(self) -> None:
        """Raise SearchStopped once the search should end; cheap enough to call per file."""
        if self._stopped is None and self._clock() >= self.deadline:
            self.stop(expired=True)
        if self._stopped is not None:
            raise SearchStopped(self._stopped)

    def stop(self, *, expired: bool) -> None:
        """End the search: later checks raise, and every child is killed now (from any thread)."""
        with self._lock:
            if self._stopped is None:
                self._stopped = expired
            children = list(self._children)
        for child in children:
            _kill(child)

    def spawn(self, command: list[str], cwd: str | None = None) -> subprocess.Popen[bytes]:
        """Start `command` with its output piped, killed when the search stops or the daemon dies.

        The caller reaps it with `release`.
        """
        self.check()
        process = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, env=system_environment(),
                                   preexec_fn=_die_with_parent(os.getpid()))
        with self._lock:
            self._children.add(process)
            stopped = self._stopped is not None
        if stopped:  # stopped while it started: stop() did not see it
            _kill(process)
        return process

    def release(self, process: subprocess.Popen[bytes]) -> None:
        """Kill `process` if it still runs, reap it, and forget it."""
        _kill(process)
        process.wait()
        with self._lock:
            self._children.discard(process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    # Popen.kill does nothing once the process was reaped, so a pid reused since is never hit.
    with contextlib.suppress(OSError):
        process.kill()


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec hook: the child gets SIGKILL when the thread that started it (and so the daemon) ends.

    posix_spawn cannot ask for this, so these children are forked; `prctl` is looked up before the
    fork, so the child only makes one plain C call. A parent that died before the call was made is
    noticed by the child's new parent pid.
    """
    prctl = _prctl()

    def hook() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return hook


def _prctl() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


# --- reading without blocking ---------------------------------------------------------------------


def open_regular(path: str) -> BinaryIO | None:
    """`path` opened for reading if it is a regular file, else None (also when it cannot be opened).

    Opened non-blocking and checked on the opened fd, so a FIFO or device met while walking (or
    swapped in since) is never read: opening a FIFO for reading would wait for a writer forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return open(fd, "rb")
    except OSError:
        pass
    os.close(fd)
    return None


def read_regular(path: str, limit: int) -> bytes | None:
    """The bytes of `path` if it is a regular file of at most `limit` bytes, else None.

    The size is checked again while reading: /proc and /sys files say 0 and may hold more.
    """
    source = open_regular(path)
    if source is None:
        return None
    with source:
        try:
            size = os.fstat(source.fileno()).st_size
            if size > limit:
                return None
            # read() sizes its buffer from fstat; a file that says 0 is read in chunks up to the cap.
            data = source.read() if size else _read_upto(source, limit + 1)
        except OSError:
            return None
    return None if data is None or len(data) > limit else data


def _read_upto(source: BinaryIO, size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = source.read(min(left, 65536))
        if chunk is None:  # a non-blocking file with nothing to give now (/proc/kmsg)
            return None
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
