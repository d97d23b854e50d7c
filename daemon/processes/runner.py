"""Spawn a shell command under a PTY and follow it without threads or polling.

The child is started with `posix_spawn` (vfork-fast) in a new session, and opens the PTY slave
*after* `setsid`, so the PTY becomes its controlling terminal: Ctrl-C sent as input (`\\x03`)
interrupts the foreground job as it would in a real terminal. Output is read with
`loop.add_reader` on the master; exit is noticed through a pidfd, at once.

Children are started through a `SpawnGate`: `posix_spawn` holds the GIL and blocks its thread until
the child has exec'd, so a burst of requests must not start hundreds of them in one loop iteration.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import os
import shlex
import signal
import struct
import termios
from collections import deque
from collections.abc import Callable, Mapping
from typing import TypeVar

from daemon import launcher
from daemon.limits import LimitGroup
from daemon.resident import Launch, ResidentPool
from daemon.resources import system_environment
from daemon.sandbox import Sandbox, command_pid

READ_SIZE = 64 * 1024
#: Seconds between SIGTERM and SIGKILL when a process group is stopped.
KILL_GRACE = 3.0
#: Output read in one loop turn is coalesced into one entry, up to this many bytes.
COALESCE_LIMIT = 256 * 1024
#: At most this long a request waits for the pid of a start in a resident sandbox.
START_SECONDS = 10.0
#: After the shell exits, how long to wait for PTY end-of-file before deciding a background job
#: still holds the terminal open.
DRAIN_GRACE = 0.25
#: Children started in one event-loop iteration at most. A start (openpty, posix_spawn until the
#: child's exec, pidfd) costs the loop about 0.4 ms on an idle machine, and 3-6 ms of waiting on a
#: busy one (the vfork child queues for a CPU while the parent waits). 500 requests arriving
#: together started ~170 in one iteration: a 130-160 ms stall (bench/safety.py's load). Per turn,
#: 1 and 2 gave the same stall there (20-45 ms), 4 and 8 more (27-66 ms); 2 starts twice as fast as 1.
SPAWNS_PER_TURN = 2

T = TypeVar("T")


def child_environment() -> dict[str, str]:
    """The daemon's environment minus its own settings (which may hold the key) and minus what the
    single executable's launcher added."""
    return {key: value for key, value in system_environment().items() if not key.startswith("OPEN_TERMINAL_")}


#: Back to their default action in every child (daemon/launcher.py says why): the launcher, which cannot
#: import the daemon, holds the list.
CHILD_DEFAULT_SIGNALS = launcher.DEFAULT_SIGNALS


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def spawn_on_pty(argv: list[str], env: Mapping[str, str], rows: int = 24, cols: int = 80) -> tuple[int, int]:
    """Start `argv` in a new session on a new PTY (the slave its controlling terminal); its pid and
    the master."""
    master, slave = os.openpty()
    try:
        set_window_size(slave, rows, cols)
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.ttyname(slave), os.O_RDWR, 0),
                   (os.POSIX_SPAWN_DUP2, 0, 1),
                   (os.POSIX_SPAWN_DUP2, 0, 2)]
        pid = os.posix_spawn(argv[0], argv, dict(env), file_actions=actions, setsid=True,
                             setsigdef=CHILD_DEFAULT_SIGNALS)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return pid, master


def effective(sandbox: Sandbox, env: Mapping[str, str]) -> dict[str, str]:
    """The environment a command in `sandbox` gets from `env`: a uid switch's `env HOME=... USER=...`
    wins (a resident sandbox's launcher execs the command with exactly this)."""
    if sandbox.user is None:
        return {**env, "HOME": sandbox.home} if sandbox.home else dict(env)
    user = sandbox.user
    return {**env, "HOME": user.home, "USER": user.name, "LOGNAME": user.name}


class SpawnGate:
    """Runs child starts in arrival order, at most `per_turn` in one loop iteration.

    Between two turns the loop runs everything else that is ready (timers, sockets, echoes), so a
    burst of starts costs each iteration a bounded slice instead of one long stall. A thread would
    not help: `os.posix_spawn` keeps the GIL for the whole vfork-and-exec (measured on 3.11.7).
    A start runs inside the gate's own callback, not in the caller's task, so "at most `per_turn`"
    holds whatever else the loop schedules; a caller cancelled while waiting starts nothing.
    """

    def __init__(self, per_turn: int = SPAWNS_PER_TURN) -> None:
        if per_turn < 1:
            raise ValueError("a spawn gate must let at least one start through per turn")
        self.per_turn = per_turn
        #: Resident sandboxes for the children this gate starts (daemon/resident.py `attach`).
        self.residents: ResidentPool | None = None
        self._waiting: deque[tuple[Callable[[], object], asyncio.Future[object]]] = deque()
        self._turn_handle: asyncio.Handle | None = None

    async def run(self, start: Callable[[], T]) -> T:
        """`start()` in its turn; its result, or its exception, for this caller only."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[object] = loop.create_future()
        self._waiting.append((start, done))
        if self._turn_handle is None:
            self._turn_handle = loop.call_soon(self._turn)
        return await done  # type: ignore[return-value]  # `done` holds what `start` returned

    async def prepare(self, sandbox: Sandbox | None) -> None:
        """Before a start in `sandbox`: its resident sandbox ready (daemon/resident.py)."""
        if self.residents is not None:
            await self.residents.prepare(sandbox)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _turn(self) -> None:
        self._turn_handle = None
        started = 0
        while self._waiting and started < self.per_turn:
            start, done = self._waiting.popleft()
            if done.done():  # its caller was cancelled: nothing to start
                continue
            started += 1
            try:
                done.set_result(start())
            except Exception as exc:  # the caller's failure (a full PTY table, a 429), not the gate's
                done.set_exception(exc)
        if self._waiting:
            # call_soon from inside a callback runs in the next iteration, after what is ready now.
            self._turn_handle = asyncio.get_running_loop().call_soon(self._turn)


class PtyProcess:
    """One `/bin/sh -c command` under its own PTY.

    `on_output(text)` is called with decoded output as it arrives (UTF-8 sequences split across
    reads are kept whole), or `on_bytes(data)` with the raw bytes (what a terminal emulator
    wants); `finished` resolves to the exit code (negative for a signal) once the shell has
    exited and its output has been drained.
    """

    def __init__(self, on_output: Callable[[str], None] | None = None,
                 on_bytes: Callable[[bytes], None] | None = None, sandbox: Sandbox | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._sandbox = sandbox
        #: The tree's limit group (daemon/limits.py), set before `start`; None: no limits.
        self.limits: LimitGroup | None = None
        #: Resident sandboxes (daemon/resident.py), set before `start`; None: always a cold start.
        self.residents: ResidentPool | None = None
        #: The start in a resident sandbox, whose pid comes a moment later (0 until then).
        self._launch: Launch | None = None
        self._held_signals: list[int] = []
        #: Output is read once the child is known to run (at once for a cold start).
        self._launched = False
        self._read_wanted = True
        self._on_output = on_output
        self._on_bytes = on_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.finished: asyncio.Future[int] = self._loop.create_future()
        self.pid = 0
        self._master = -1
        self._pidfd = -1
        self._exit_code: int | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._write_lock = asyncio.Lock()
        self._reading = False

    def start(self, command: str, cwd: str, env: Mapping[str, str], rows: int = 24, cols: int = 80) -> None:
        # posix_spawn has no chdir action; `cd` in the script also sets $PWD correctly.
        argv = ["/bin/sh", "-c", f"cd -- {shlex.quote(cwd)} || exit 1\n{command}"]
        if self._start_resident(argv, env, rows, cols):
            return
        if self._sandbox is not None:
            argv = self._sandbox.wrap(argv, cwd)
        if self.limits is not None:  # outermost: joins its groups and sets rlimits, then execs on
            argv = self.limits.wrap(argv)
        self.pid, self._master = spawn_on_pty(argv, env, rows, cols)
        self._pidfd = os.pidfd_open(self.pid)
        os.set_blocking(self._master, False)
        self._launched = True
        self._apply_reading()
        self._loop.add_reader(self._pidfd, self._reap)

    def _start_resident(self, argv: list[str], env: Mapping[str, str], rows: int, cols: int) -> bool:
        """Start in the sandbox's resident (daemon/resident.py); False when it cannot (start cold)."""
        if self.residents is None or self._sandbox is None or self.limits is not None:
            return False
        master, slave = os.openpty()
        try:
            set_window_size(slave, rows, cols)
            if self._sandbox.user is not None:  # the launcher, as the user, opens it again (as a login's is theirs)
                os.fchown(slave, self._sandbox.user.uid, self._sandbox.user.gid)
            launch = self.residents.launch(self._sandbox, argv, effective(self._sandbox, env), slave)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)  # the launcher holds its own copy
        if launch is None:
            os.close(master)
            return False
        self._master, self._launch = master, launch
        os.set_blocking(master, False)
        launch.started.add_done_callback(self._started)
        launch.ended.add_done_callback(lambda ended: self._exited(ended.result()))
        return True

    def _started(self, started: asyncio.Future[int]) -> None:
        if started.exception() is None:
            self.pid = started.result()
            for sig in self._held_signals:
                self.signal_group(sig)
        self._held_signals.clear()
        self._launched = True
        self._apply_reading()

    def when_started(self, callback: Callable[[], None]) -> None:
        """`callback()` once the pid is known (at once but for a start in a resident sandbox)."""
        if self._launch is None or self._launch.started.done():
            callback()
        else:
            self._launch.started.add_done_callback(lambda _: callback())

    async def started(self) -> None:
        """Until the pid is known (or the start has failed, and `finished` will say so); bounded, so
        that a launcher that does not answer holds no request (the pid is then 0 until it does)."""
        if self._launch is not None:
            await asyncio.wait([self._launch.started], timeout=START_SECONDS)

    @property
    def command_pid(self) -> int:
        """The pid of the shell itself: below bwrap and its init in a cold-started sandbox."""
        cold_sandbox = self._sandbox is not None and bool(self._sandbox.bwrap) and self._launch is None
        return command_pid(self.pid) if cold_sandbox else self.pid

    @property
    def master_fd(self) -> int:
        return self._master

    @property
    def running(self) -> bool:
        return self._exit_code is None

    def pause_reading(self) -> None:
        """Stop reading output; the child blocks once the PTY buffer fills (backpressure)."""
        self._read_wanted = False
        self._apply_reading()

    def resume_reading(self) -> None:
        self._read_wanted = True
        self._apply_reading()

    def _apply_reading(self) -> None:
        wanted = self._read_wanted and self._launched and self._master >= 0
        if wanted and not self._reading:
            self._loop.add_reader(self._master, self._read_available)
            self._reading = True
        elif not wanted and self._reading:
            self._loop.remove_reader(self._master)
            self._reading = False

    def signal_group(self, sig: int) -> None:
        """Signal the whole process group (the shell and everything it started)."""
        if self.pid == 0:  # started in a resident sandbox, its pid not known (yet)
            if self._launch is not None and not self._launch.started.done():
                self._held_signals.append(sig)  # sent once it is
            elif self._launch is not None and self._exit_code is None:
                self._launch.signal(sig)  # not found: the launcher signals it
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            # Only an unreaped pid is still ours; a reaped one may already belong to a stranger.
            if self._exit_code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)

    def group_alive(self) -> bool:
        if self.pid == 0:
            return self._exit_code is None
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    async def write(self, data: bytes) -> None:
        """Write input to the terminal, waiting for room if its buffer is full; serialised."""
        async with self._write_lock:
            view = memoryview(data)
            while view:
                if self._master < 0:
                    raise BrokenPipeError("terminal is closed")
                try:
                    view = view[os.write(self._master, view):]
                except BlockingIOError:
                    await self._writable()

    async def _writable(self) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_writer(self._master, wake)
        try:
            await ready
        finally:
            self._loop.remove_writer(self._master)

    def _read_available(self) -> None:
        chunks: list[bytes] = []
        size = 0
        eof = False
        while size < COALESCE_LIMIT:
            try:
                chunk = os.read(self._master, READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                # EIO: every holder of the slave side has closed it.
                eof = True
                break
            if not chunk:
                eof = True
                break
            chunks.append(chunk)
            size += len(chunk)
        if chunks:
            self._emit(b"".join(chunks))
        if eof:
            self._finish()

    def _emit(self, data: bytes, *, final: bool = False) -> None:
        if self._on_bytes is not None and data:
            self._on_bytes(data)
        if self._on_output is not None:
            text = self._decoder.decode(data, final=final)
            if text:
                self._on_output(text)

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self._exited(os.waitstatus_to_exitcode(status))

    def _exited(self, code: int) -> None:
        """The shell has ended with `code`: drain what it wrote, then finish."""
        self._exit_code = code
        if self._launch is not None and self._launch.started.exception() is not None and self.pid == 0:
            failure = self._launch.started.exception()
            self._emit(f"opentermd: cannot start command: {failure}\r\n".encode())
        if self._master >= 0:
            self._read_available()
        if not self.finished.done():
            # Still no end-of-file: a background job holds the terminal. Give in-flight output a
            # moment to arrive, then finish anyway (closing the master hangs the job up, as
            # closing a terminal window would).
            self._grace = self._loop.call_later(DRAIN_GRACE, self._grace_expired)

    def _grace_expired(self) -> None:
        if not self._reading and self._master >= 0:
            # Reading is paused for backpressure: output is still waiting in the PTY.
            self._grace = self._loop.call_later(DRAIN_GRACE, self._grace_expired)
        else:
            self._finish()

    def _finish(self) -> None:
        if self._exit_code is None:
            # End-of-file came before the exit notification; the pidfd callback finishes.
            self.pause_reading()
            return
        if self.finished.done():
            return
        if self._grace is not None:
            self._grace.cancel()
        self._emit(b"", final=True)
        self._close_master()
        self.finished.set_result(self._exit_code)

    def _close_master(self) -> None:
        if self._master >= 0:
            self.pause_reading()
            os.close(self._master)
            self._master = -1

    def close(self) -> None:
        """Release every descriptor; used at shutdown after the group was killed."""
        self._close_master()
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self._grace is not None:
            self._grace.cancel()


async def terminate(pty: PtyProcess, *, force: bool, grace: float = KILL_GRACE, hangup: bool = False) -> None:
    """SIGTERM (or SIGKILL) the group; SIGKILL whatever is left after `grace`; await the reap.

    `hangup` sends SIGHUP first, as closing a terminal window does: interactive shells ignore
    SIGTERM but end on a hangup, and pass it on to their jobs.
    """
    if hangup and not force:
        pty.signal_group(signal.SIGHUP)
    pty.signal_group(signal.SIGKILL if force else signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(pty.finished), grace)
    except TimeoutError:
        pty.signal_group(signal.SIGKILL)
        await pty.finished
    if pty.group_alive():
        # The shell died but a child that ignored SIGTERM lives on in the group.
        pty.signal_group(signal.SIGKILL)
