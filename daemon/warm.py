"""Warm sandboxes: bubblewrap started ahead of the request, so a sandboxed command skips its start.

bwrap's own start (new namespaces, a dozen mounts) costs 4-8 ms, more than the +3 ms a sandboxed
`POST /execute` may add. So, per distinct sandbox (a user's, with its uid switch and network
setting), one entry is kept started: the full argv a command would get, under its own PTY (the
slave its controlling terminal, in a session of its own), ending in `/bin/sh -c '. /dev/fd/3'`,
a shell blocked reading its script from a pipe. A request writes `exec 3<&-` (the command never
sees the pipe), the environment's differences from the one the entry started with (export/unset),
`cd` and the command, and closes the pipe: the shell runs it as `sh -c` would, in the same
process tree (the spawned pid is bwrap's, `sandbox.command_pid` still finds the shell), with the
same process group, PTY and exit code.

An entry starts with `child_environment()` (no OPEN_TERMINAL_* setting, never a request's values),
so nothing of one request reaches another: each script sets every difference from that base.
Entries are refilled through the SpawnGate, off the request path, one per sandbox that was just
used; a sandbox unused for `IDLE_SECONDS` has its entry dropped (an idle user keeps no process).
An entry whose daemon dies reads end-of-file from the pipe and exits at once (the PTY's hangup too).

Not pooled (started as before): commands under limits (their group is made per tree, before the
spawn), a uid switch without bwrap (nothing slow to save), environments a shell cannot set exactly
(a name that is not a shell identifier, or one of the shell's own variables), scripts larger than
a pipe holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from daemon.sandbox import Sandbox

if TYPE_CHECKING:
    from daemon.processes.runner import SpawnGate

log = logging.getLogger(__name__)

#: Entries kept ready per sandbox. One suffices for sequential requests; a burst takes the cold path.
PER_SANDBOX = 1
#: How nice an entry is while its sandbox is set up (a command started meanwhile comes first).
NICENESS = 10
#: At most this long `close` waits for entries still being set up.
CLOSE_SECONDS = 5.0
#: At most this long a start waits for an entry being set up (then it starts cold).
SETTLE_SECONDS = 1.0
#: Seconds a sandbox may go unused before its entry is dropped.
IDLE_SECONDS = 60.0
#: The pooled shell: says it is ready on fd 4, then runs its script as it arrives on fd 3 (builtins
#: only: no fork, no exec of another program).
WAITING_SHELL = ["/bin/sh", "-c", "echo >&4; exec 4>&-; . /dev/fd/3"]
#: A script must fit in the pipe's buffer (64 KiB) so that handing it over never blocks the loop.
SCRIPT_LIMIT = 60 * 1024
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Variables the shell reads at its start or keeps for itself: set by a script, they would not act
#: as they do when the shell is started with them.
SHELL_OWN = frozenset({"ENV", "IFS", "PPID", "OPTIND", "PS1", "PS2", "PS4", "LINENO", "PWD", "OLDPWD",
                       "HISTFILE", "MAIL", "MAILPATH", "BASH_ENV", "SHELLOPTS"})

#: The app's pool (None without a sandbox), for introspection and tests.
POOL: web.AppKey[WarmPool | None] = web.AppKey("opentermd_warm_pool")
Spawn = Callable[[list[str], Mapping[str, str], Sequence[tuple[int, int]]], tuple[int, int]]


@dataclass(eq=False)
class Entry:
    """One started sandbox waiting for its script: bwrap's pid, the PTY master, the pipe's write end."""

    pid: int
    master: int
    pidfd: int
    script: int
    #: Readable once the shell waits for its script (a line), or at end-of-file if the entry died.
    ready: int
    environment: Mapping[str, str]
    #: Resolves once the shell waits (True) or the entry died first (False); set by the fill.
    readiness: asyncio.Future[bool] | None = None


@dataclass(eq=False)
class Slot:
    """The entries of one sandbox, and when it was last asked for one."""

    ready: list[Entry] = field(default_factory=list)
    #: Started, their sandbox still being set up.
    pending: list[Entry] = field(default_factory=list)
    #: Waiting for their turn in the SpawnGate.
    starting: int = 0
    used_at: float = 0.0


def script_for(base: Mapping[str, str], wanted: Mapping[str, str], cwd: str, command: str) -> str | None:
    """The script that makes a shell started with `base` run `command` in `cwd` with `wanted` as
    `sh -c` started with `wanted` would; None when a shell cannot set that environment exactly."""
    lines = ["exec 3<&-"]  # the pipe is not the command's
    for name, value in wanted.items():
        if base.get(name) == value:
            continue
        if not _NAME.match(name) or name in SHELL_OWN:
            return None
        lines.append(f"export {name}={shlex.quote(value)}")
    for name in base:
        if name not in wanted:
            if not _NAME.match(name) or name in SHELL_OWN:
                return None
            lines.append(f"unset {name}")
    lines.append(f"cd -- {shlex.quote(cwd)} || exit 1")
    script = "\n".join([*lines, command, ""])
    return script if len(script.encode()) <= SCRIPT_LIMIT else None


def effective(sandbox: Sandbox, env: Mapping[str, str]) -> dict[str, str]:
    """The environment the shell gets from `env`: a uid switch's `env HOME=... USER=...` wins."""
    if sandbox.user is None:
        return dict(env)
    user = sandbox.user
    return {**env, "HOME": user.home, "USER": user.name, "LOGNAME": user.name}


class WarmPool:
    """Warm entries per sandbox; created with the app, closed with it (`close`)."""

    def __init__(self, gate: SpawnGate, spawn: Spawn, environment: Mapping[str, str],
                 clock: Callable[[], float] = time.monotonic, per_sandbox: int | None = None,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        self._gate = gate
        self._spawn = spawn
        self._environment = dict(environment)
        self._clock = clock
        self.per_sandbox = per_sandbox if per_sandbox is not None else PER_SANDBOX
        self.idle_seconds = idle_seconds
        self._slots: dict[Sandbox, Slot] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        nice = shutil.which("nice")
        self._idle = [nice, "-n", str(NICENESS)] if nice and NICENESS else []

    def take(self, sandbox: Sandbox, command: str, cwd: str, env: Mapping[str, str]) -> Entry | None:
        """A started entry now running `command`, or None (start it cold); refills either way."""
        if not sandbox.bwrap or self._closed:
            return None
        slot = self._slots.setdefault(sandbox, Slot())
        slot.used_at = self._clock()
        self._refill(sandbox, slot)
        while slot.ready:
            entry = slot.ready.pop(0)
            self._refill(sandbox, slot)
            script = script_for(effective(sandbox, entry.environment), effective(sandbox, env), cwd, command)
            if script is None:
                slot.ready.insert(0, entry)  # still good for the next request
                return None
            if self._hand_over(entry, script):
                return entry
        return None

    def _promote(self, entry: Entry) -> None:
        """Back to the daemon's niceness before the command runs: bwrap, its init and the waiting
        shell are the entry's process group (its session), and the command inherits the shell's."""
        if self._idle:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PGRP, entry.pid, os.getpriority(os.PRIO_PROCESS, 0))

    @property
    def entries(self) -> list[Entry]:
        return [entry for slot in self._slots.values() for entry in slot.ready]

    def _hand_over(self, entry: Entry, script: str) -> bool:
        self._promote(entry)
        try:
            os.write(entry.script, script.encode())
        except OSError:  # the entry died while waiting (killed, or its sandbox could not start)
            self._drop(entry)
            return False
        os.close(entry.script)
        entry.script = -1
        return True

    def _refill(self, sandbox: Sandbox, slot: Slot) -> None:
        self._sweep_later()
        while len(slot.ready) + len(slot.pending) + slot.starting < self.per_sandbox:
            slot.starting += 1
            task = asyncio.get_running_loop().create_task(self._fill(sandbox, slot))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fill(self, sandbox: Sandbox, slot: Slot) -> None:
        try:
            entry = await self._gate.run(lambda: self._start(sandbox))
        except OSError as exc:
            log.warning("cannot start a warm sandbox: %s", exc)
            return
        finally:
            slot.starting -= 1
        if self._closed:  # started after `close` hung up the others: it has no one to wait for
            self._drop(entry)
            return
        slot.pending.append(entry)
        ready = await self._ready(entry)
        slot.pending.remove(entry)
        if ready and not self._closed and self._slots.get(sandbox) is slot:
            slot.ready.append(entry)
        else:
            self._drop(entry)

    def _start(self, sandbox: Sandbox) -> Entry:
        script_read, script = os.pipe()
        ready, ready_write = os.pipe()
        try:
            if sandbox.user is not None:  # `. /dev/fd/3` opens the pipe again: as the user, it must be theirs
                os.fchown(script_read, sandbox.user.uid, sandbox.user.gid)
            # Niced (nice execs: no process added), so that setting up the next sandbox takes little
            # CPU from the command running now; `_promote` puts it back before its own command.
            argv = [*self._idle, *sandbox.wrap(WAITING_SHELL, str(sandbox.workspace))]
            pid, master = self._spawn(argv, self._environment, [(script_read, 3), (ready_write, 4)])
        except BaseException:
            os.close(script)
            os.close(ready)
            raise
        finally:
            os.close(script_read)
            os.close(ready_write)
        return Entry(pid, master, os.pidfd_open(pid), script, ready, self._environment)

    def _ready(self, entry: Entry) -> asyncio.Future[bool]:
        """True once the entry's shell waits for its script; False if it died first (or was dropped)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()

        def readable() -> None:
            loop.remove_reader(entry.ready)
            try:
                said = os.read(entry.ready, 1)
            except OSError:
                said = b""
            os.close(entry.ready)
            entry.ready = -1
            if not done.done():
                done.set_result(bool(said))

        loop.add_reader(entry.ready, readable)
        entry.readiness = done
        return done

    async def settle(self, sandbox: Sandbox | None) -> None:
        """Before a start in `sandbox`: when its next entry is still being set up, wait for it, at
        full priority (it is further along than a cold start would be; requests in a row would
        otherwise find it half ready every other time)."""
        slot = self._slots.get(sandbox) if sandbox is not None else None
        if slot is None or slot.ready or not slot.pending:
            return
        entry = slot.pending[0]
        self._promote(entry)
        if entry.readiness is not None:
            await asyncio.wait([entry.readiness], timeout=SETTLE_SECONDS)

    def sweep(self) -> int:
        """Drop the entries of sandboxes unused for `idle_seconds`; how many were dropped."""
        now, dropped = self._clock(), 0
        for sandbox, slot in list(self._slots.items()):
            if now - slot.used_at >= self.idle_seconds:
                del self._slots[sandbox]  # a pending entry is dropped when it is ready
                for entry in slot.ready:
                    self._drop(entry)
                    dropped += 1
        return dropped

    def _sweep_later(self) -> None:
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(self.idle_seconds, self._sweep_tick)

    def _sweep_tick(self) -> None:
        self._sweeper = None
        self.sweep()
        if self._slots:
            self._sweep_later()

    def _hang_up(self, entry: Entry) -> None:
        """Close our ends: its shell reads end-of-file (the PTY hangs up too) and the sandbox exits."""
        for fd in (entry.script, entry.master):
            if fd >= 0:
                os.close(fd)
        entry.script = entry.master = -1

    def _drop(self, entry: Entry) -> None:
        """End an unused entry; its pidfd reaps it."""
        self._hang_up(entry)
        if entry.pidfd < 0:
            return
        loop = asyncio.get_running_loop()

        def reap() -> None:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(entry.pid, os.WNOHANG)[0] == 0:
                    return
            loop.remove_reader(pidfd)
            os.close(pidfd)

        pidfd, entry.pidfd = entry.pidfd, -1
        loop.add_reader(pidfd, reap)

    async def close(self) -> None:
        """Drop every entry and wait for them to be gone (at the app's cleanup)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        pids = [entry.pid for slot in self._slots.values() for entry in (*slot.ready, *slot.pending)]
        for slot in self._slots.values():
            for entry in slot.pending:  # its fill sees it die, and drops it
                self._hang_up(entry)
            for entry in slot.ready:
                self._drop(entry)
        self._slots.clear()
        # Not cancelled at first: a fill whose start already ran would lose its entry; closed, it drops
        # it. Bounded all the same: a shutdown never waits on a sandbox that does not start.
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=CLOSE_SECONDS)
            for task in late:
                log.warning("a warm sandbox still starting at shutdown: given up")
                task.cancel()
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
            if pids:
                await asyncio.sleep(0.01)


def attach(gate: SpawnGate, box: Sandbox | None) -> WarmPool | None:
    """Give the gate (shared by commands and shells) a pool when there is a sandbox to warm."""
    from daemon.processes.runner import child_environment, warm_spawn  # runner imports this module

    gate.warm = WarmPool(gate, warm_spawn, child_environment()) if box is not None else None
    return gate.warm


def cleanup_context(gate: SpawnGate) -> Callable[[object], AsyncIterator[None]]:
    """For `app.cleanup_ctx`: the pool's entries end with the app."""

    async def lifetime(_app: object) -> AsyncIterator[None]:
        yield
        if gate.warm is not None:
            await gate.warm.close()

    return lifetime
