"""Resident sandboxes: one bubblewrap per sandbox in use, kept running, that starts its commands.

bwrap's start (new namespaces, a dozen mounts, and their teardown at the end) costs 4-8 ms of CPU,
more than the +3 ms a sandboxed `POST /execute` may add; a sandbox started ahead for each command
still pays it once per command, so commands back to back waited for it. Instead each sandbox in use (a
user's, with its uid switch and network setting) is started once with daemon/launcher.py as its pid 1,
and its commands and terminal shells are started inside it: the PTY slave is handed over a socket
(SCM_RIGHTS), the launcher spawns the command in a session of its own with the slave as controlling
terminal (`\\x03` interrupts), the daemon finds its pid (as the host numbers it) among the launcher's
children, and the launcher reports its end. A command then costs what an unsandboxed one does, plus one hop.

So the commands of one sandbox share its `/tmp` (a tmpfs) and see each other in `ps`, as on a
machine of their own; the host, the daemon's state and other users stay out of sight as before. A
sandbox with no command or shell running for `IDLE_SECONDS` is closed, and everything in it ends
(an idle user keeps no process); it ends with the daemon too (`--die-with-parent`, and end-of-file).

Started cold (a bubblewrap of their own, as before): the first command of a sandbox while its resident
starts (the interpreter's start, tens of ms), commands under limits (their group is made per tree
before the spawn), requests too large for one message, and any start while the resident is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from daemon import launcher
from daemon.sandbox import Sandbox

if TYPE_CHECKING:
    from daemon.processes.runner import SpawnGate

log = logging.getLogger(__name__)

#: Seconds a sandbox may run nothing before it is closed.
IDLE_SECONDS = 60.0
#: At most this long `close` waits for sandboxes to end.
CLOSE_SECONDS = 5.0
#: At most this long a start waits for its sandbox's resident to be ready (then it starts cold).
READY_SECONDS = 5.0
#: Seconds a sandbox whose resident failed to start goes without one (its commands start cold).
RETRY_SECONDS = 60.0
#: A request larger than this (a huge command or environment) starts cold rather than block the loop.
MESSAGE_LIMIT = 128 * 1024
#: How a code ends when its sandbox ended first (every process in it was killed with it).
KILLED = -9
#: The app's pool (None without a sandbox), for introspection and tests.
POOL: web.AppKey[ResidentPool | None] = web.AppKey("opentermd_resident_pool")
_CREDENTIALS = struct.calcsize("3i")


def launcher_argv() -> list[str]:
    """How to run daemon/launcher.py inside a sandbox with the daemon's own interpreter (shown there
    read-only): isolated and without site-packages from source; the binary's own entry when frozen."""
    if getattr(sys, "frozen", False):
        return [sys.executable, launcher.ARGUMENT]
    return [sys.executable, "-I", "-S", str(Path(__file__).with_name("launcher.py"))]


def launcher_environment() -> dict[str, str]:
    """The launcher's own environment: the daemon's without its settings (the sandbox's processes may
    read it), but with the single executable's markers, so that it reuses the unpacked files."""
    return {key: value for key, value in os.environ.items() if not key.startswith("OPEN_TERMINAL_")}


@dataclass(eq=False)
class Launch:
    """One command started in a resident sandbox."""

    #: The command's pid as the daemon sees it, once the child has said so (0: not found).
    started: asyncio.Future[int]
    #: Its exit code (negative for a signal).
    ended: asyncio.Future[int]
    #: Signals its process group through the launcher: for a command whose pid was not found.
    signal: Callable[[int], None]


@dataclass(eq=False)
class Resident:
    """One running sandbox: bwrap's pid (and pidfd), the launcher's socket, the commands in flight."""

    sandbox: Sandbox
    pid: int
    pidfd: int
    control: socket.socket
    ready: asyncio.Future[bool]
    clock: Callable[[], float] = time.monotonic
    launches: dict[int, Launch] = field(default_factory=dict)
    #: When it last started or ended a command (the idle sweep's measure).
    used_at: float = 0.0
    next_id: int = 0
    #: Closed by the daemon (idle, a removed tenant, shutdown), not ended on its own.
    closed: bool = False

    @property
    def alive(self) -> bool:
        return self.control.fileno() >= 0

    def launch(self, argv: list[str], env: Mapping[str, str], slave: int) -> Launch | None:
        """Ask the launcher to start `argv` on the PTY `slave`; None when it cannot take the request now."""
        self.next_id += 1
        message = json.dumps({"id": self.next_id, "argv": argv, "env": dict(env)}).encode()
        if len(message) > MESSAGE_LIMIT or not self.alive:
            return None
        try:
            socket.send_fds(self.control, [message], [slave])
        except (BlockingIOError, OSError):
            return None
        loop = asyncio.get_running_loop()
        request = self.next_id
        launch = Launch(loop.create_future(), loop.create_future(),
                        lambda sig: self._say({"signal": request, "number": sig}))
        self.launches[request] = launch
        return launch

    def receive(self) -> bool:
        """Read what the launcher and its children said; False once the sandbox is gone."""
        while True:
            try:
                message, ancillary, _, _ = self.control.recvmsg(4096, socket.CMSG_SPACE(_CREDENTIALS))
            except BlockingIOError:
                return True
            except OSError:
                message = b""
            if not message:
                self.gone()
                return False
            self._dispatch(json.loads(message), _sender(ancillary))

    def _dispatch(self, said: dict[str, Any], sender: int) -> None:
        if said.get("ready") is True and not self.ready.done():
            self.ready.set_result(True)
        elif (launch := self.launches.get(said.get("started", 0))) is not None and not launch.started.done():
            launch.started.set_result(_host_pid(sender, int(said.get("pid", 0))))
            self._say({"known": said["started"]})  # the launcher may reap it now
        elif (launch := self.launches.pop(said.get("exit", 0), None)) is not None:
            self.used_at = self.clock()
            _settle(launch.started, OSError("the command ended before it started"))
            launch.ended.set_result(int(said["code"]))
        elif (launch := self.launches.pop(said.get("failed", 0), None)) is not None:
            _settle(launch.started, OSError(str(said.get("error", "cannot start"))))
            launch.ended.set_result(127)

    def _say(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # a full or closed socket: the sandbox is going, `gone` follows
            self.control.send(json.dumps(message).encode())

    def gone(self) -> None:
        """The sandbox ended (or is being closed): what ran in it ended with it."""
        if not self.ready.done():
            self.ready.set_result(False)
        for launch in self.launches.values():
            _settle(launch.started, OSError("the sandbox ended"))
            if not launch.ended.done():
                launch.ended.set_result(KILLED)
        self.launches.clear()
        if self.alive:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.control.fileno())
            self.control.close()


def _settle(future: asyncio.Future[int], failure: Exception) -> None:
    if not future.done():
        future.set_exception(failure)
        future.exception()  # retrieved: nobody may be waiting for a start that never came


def _host_pid(launcher: int, inner: int) -> int:
    """The pid the daemon knows the launcher's child `inner` (its pid inside) by: the launcher's child
    whose NSpid ends in it. 0 when it is gone already (reaped: nothing is left to signal)."""
    try:
        children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    except OSError:
        return 0
    for child in children:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("NSpid:") and int(line.split()[-1]) == inner:
                    return int(child)
    return 0


def _sender(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The sender's pid from SCM_CREDENTIALS (the kernel puts it in our pid namespace's numbering)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= _CREDENTIALS:
            return int(struct.unpack("3i", data[:_CREDENTIALS])[0])
    return 0


class ResidentPool:
    """The resident sandboxes of one app: started on first use, closed when idle and with the app."""

    def __init__(self, gate: SpawnGate, clock: Callable[[], float] = time.monotonic,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        self._gate = gate
        self._clock = clock
        self.idle_seconds = idle_seconds
        self._residents: dict[Sandbox, Resident] = {}
        self._starting: dict[Sandbox, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: bwrap pids not yet reaped, for `close` to wait on.
        self._living: set[int] = set()
        #: When a sandbox's resident last failed to start: it is not tried again for `RETRY_SECONDS`.
        self._failed_at: dict[Sandbox, float] = {}
        self._all_reaped = asyncio.Event()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def residents(self) -> list[Resident]:
        return [resident for resident in self._residents.values() if resident.alive]

    async def prepare(self, sandbox: Sandbox | None) -> None:
        """Before a start in `sandbox`: its resident started, and waited for (bounded), so that
        a sandbox's commands all run in it from the first on (they share its `/tmp`)."""
        if sandbox is None or not sandbox.bwrap or self._closed:
            return
        resident = self._residents.get(sandbox)
        if resident is None or not resident.alive:
            task = self._start_later(sandbox)
            if task is not None:
                await asyncio.wait([task], timeout=READY_SECONDS)
            resident = self._residents.get(sandbox)
        if resident is not None and not resident.ready.done():
            await asyncio.wait([resident.ready], timeout=READY_SECONDS)

    def launch(self, sandbox: Sandbox, argv: list[str], env: Mapping[str, str], slave: int) -> Launch | None:
        """Start `argv` in `sandbox`'s resident; None (start it cold) while there is none ready,
        in which case one is started for the next command."""
        if not sandbox.bwrap or self._closed:
            return None
        resident = self._residents.get(sandbox)
        if resident is None or not resident.alive:
            self._start_later(sandbox)
            return None
        resident.used_at = self._clock()
        if not resident.ready.done() or not resident.ready.result():
            return None
        return resident.launch(argv, env, slave)

    def _start_later(self, sandbox: Sandbox) -> asyncio.Task[None] | None:
        """Start `sandbox`'s resident in the background; the task (one already on its way, perhaps), or
        None while a failed start is recent."""
        if sandbox in self._starting:
            return self._starting[sandbox]
        if self._clock() - self._failed_at.get(sandbox, -RETRY_SECONDS) < RETRY_SECONDS:
            return None
        task = asyncio.get_running_loop().create_task(self._start(sandbox))
        self._starting[sandbox] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start(self, sandbox: Sandbox) -> None:
        try:
            resident = await self._gate.run(lambda: self._spawn(sandbox))
        except OSError as exc:
            log.warning("cannot start a resident sandbox: %s", exc)
            return
        finally:
            self._starting.pop(sandbox, None)
        if self._closed:
            self._end(resident)
            return
        resident.used_at = self._clock()
        self._residents[sandbox] = resident
        self._sweep_later()

    def _spawn(self, sandbox: Sandbox) -> Resident:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            box = sandbox.inside()  # as root, the uid switch inside bwrap: the interpreter stays reachable
            argv = box.wrap(launcher_argv(), str(sandbox.workspace), init=True)
            actions: list[tuple[Any, ...]] = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
            actions.append((os.POSIX_SPAWN_DUP2, theirs.fileno(), 3))
            pid = os.posix_spawn(argv[0], argv, launcher_environment(), file_actions=actions, setsid=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        loop = asyncio.get_running_loop()
        resident = Resident(sandbox, pid, os.pidfd_open(pid), ours, loop.create_future(), self._clock)
        self._living.add(pid)
        self._all_reaped.clear()
        loop.add_reader(ours.fileno(), resident.receive)
        loop.add_reader(resident.pidfd, self._reaper(resident))
        return resident

    def _reaper(self, resident: Resident) -> Callable[[], None]:
        def reap() -> None:
            status = 0
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(resident.pid, os.WNOHANG)
                if pid == 0:
                    return
            started = resident.ready.done() and resident.ready.result()
            if not started and not resident.closed:  # it failed: say why once, and start cold for a while
                log.warning("a resident sandbox ended before it was ready (exit code %d): its commands start "
                            "cold for %g s", os.waitstatus_to_exitcode(status), RETRY_SECONDS)
                self._failed_at[resident.sandbox] = self._clock()
            loop = asyncio.get_running_loop()
            loop.remove_reader(resident.pidfd)
            os.close(resident.pidfd)
            resident.pidfd = -1
            self._living.discard(resident.pid)
            if not self._living:
                self._all_reaped.set()
            resident.gone()
            if self._residents.get(resident.sandbox) is resident:
                del self._residents[resident.sandbox]

        return reap

    def _end(self, resident: Resident) -> None:
        """Close its socket: the launcher reads end-of-file and exits, and as pid 1 takes everything
        in the sandbox with it; the pidfd reaps bwrap."""
        resident.closed = True
        resident.gone()

    def end_where(self, doomed: Callable[[Sandbox], bool]) -> int:
        """Close the sandboxes `doomed` picks (a removed tenant's) and all that runs in them."""
        ended = [resident for sandbox, resident in list(self._residents.items()) if doomed(sandbox)]
        for resident in ended:
            del self._residents[resident.sandbox]
            self._end(resident)
        return len(ended)

    def sweep(self) -> int:
        """Close the sandboxes that have run nothing for `idle_seconds`; how many were closed."""
        now = self._clock()
        return self.end_where(lambda sandbox: not self._residents[sandbox].launches
                              and now - self._residents[sandbox].used_at >= self.idle_seconds)

    def _sweep_later(self) -> None:
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(self.idle_seconds, self._sweep_tick)

    def _sweep_tick(self) -> None:
        self._sweeper = None
        self.sweep()
        if self._residents:
            self._sweep_later()

    async def close(self) -> None:
        """Close every sandbox and wait (bounded) for them to be gone: at the app's cleanup."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.end_where(lambda _sandbox: True)
        if self._tasks:  # a start still in the gate ends its sandbox itself: it sees `_closed`
            _, late = await asyncio.wait(set(self._tasks), timeout=CLOSE_SECONDS)
            for task in late:
                task.cancel()
        if self._living:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_reaped.wait(), CLOSE_SECONDS)


def attach(gate: SpawnGate, box: Sandbox | None) -> ResidentPool | None:
    """Give the gate (shared by commands and shells) a pool when there is a sandbox."""
    gate.residents = ResidentPool(gate) if box is not None else None
    return gate.residents


def cleanup_context(gate: SpawnGate) -> Callable[[object], AsyncIterator[None]]:
    """For `app.cleanup_ctx`: the sandboxes end with the app."""

    async def lifetime(_app: object) -> AsyncIterator[None]:
        yield
        if gate.residents is not None:
            await gate.residents.close()

    return lifetime
