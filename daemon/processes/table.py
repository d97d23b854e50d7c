"""The background processes: start, find by owner, wait, input, kill, forget, sweep logs.

Processes this daemon started live in memory until FORGET_AFTER past their end (the reference's
rule). Processes from before a restart are known by their logs (`history`): listed and readable
for their owner until retention deletes the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from daemon.config import Config
from daemon.errors import ApiError, bad_request, from_os_error, not_found
from daemon.limits import Limits
from daemon.owner import Owner
from daemon.processes.history import PastProcess, read_history
from daemon.processes.output_log import LogWriter, OutputLog
from daemon.processes.runner import PtyProcess, SpawnGate, child_environment, terminate
from daemon.sandbox import Sandbox

log = logging.getLogger(__name__)

#: `lost`: from before a restart, and the daemon died before the command ended.
Status = Literal["running", "done", "killed", "lost"]
#: A finished process stays listed this long (the reference's 5 minutes).
FORGET_AFTER = 300.0
SWEEP_INTERVAL = 60.0
#: Logs from before a restart whose entry index is kept after a read (each costs 8 bytes an entry).
LOADED_PAST_LOGS = 8


@dataclass(eq=False)
class Process:
    id: str
    command: str
    cwd: str
    owner: Owner
    log: OutputLog
    pty: PtyProcess | None = None
    status: Status = "running"
    exit_code: int | None = None
    finished_at: float | None = None
    #: The limit that ended it (`memory`, `processes`, `cpu`, `file_size`: daemon/limits.py), if one did.
    limit: str | None = None
    _changed: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def running(self) -> bool:
        return self.finished_at is None

    def output(self, text: str) -> None:
        self.log.append(text)
        if self.pty is not None and self.log.backlogged:
            self.pty.pause_reading()
        self._notify()

    def resume_output(self) -> None:
        if self.pty is not None:
            self.pty.resume_reading()

    def finish(self, exit_code: int, now: float) -> None:
        self.exit_code = exit_code
        if self.status == "running":
            self.status = "done"
        self.finished_at = now
        hit = {"limit": self.limit} if self.limit is not None else {}  # absent without limits, as before
        self.log.record(type="end", exit_code=exit_code, log_rotated=False, truncated=self.log.truncated,
                        status=self.status, **hit)
        self.log.seal()
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.get_running_loop().create_future()
        changed.set_result(None)

    async def wait(self, timeout: float, *, past_offset: int | None = None) -> None:
        """Return when the process finishes, or (with `past_offset`) when output beyond that
        entry exists, or when `timeout` runs out."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.running and (past_offset is None or self.log.count <= past_offset):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            await asyncio.wait({self._changed}, timeout=remaining)

    def summary(self) -> dict[str, object]:
        return {"id": self.id, "command": self.command, "status": self.status,
                "exit_code": self.exit_code, "log_path": str(self.log.path)}


class ProcessTable:
    """Owns every background process of one app; created and closed with the app's lifetime."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time, gate: SpawnGate | None = None,
                 sandbox: Sandbox | None = None,
                 confine: Callable[[Owner], Sandbox | None] | None = None, limits: Limits | None = None) -> None:
        self._config = config
        self._limits = limits
        self._clock = clock
        #: Shared with the terminals (the app gives both the same one): it paces the loop's spawns.
        self._gate = gate or SpawnGate()
        self._sandbox = sandbox
        #: Multi-user (daemon/users.py): each owner's own sandbox and uid; None: `sandbox` for everyone.
        self._confine = confine
        self._processes: dict[str, Process] = {}
        self._running = 0
        #: Processes from before this daemon started, by id (read from their logs at start).
        self._past: dict[str, PastProcess] = {}
        self._past_loaded: OrderedDict[str, Process] = OrderedDict()
        self._history: asyncio.Task[None] | None = None
        #: Finished processes in the order they finished: forgetting looks only at the oldest.
        self._finished: deque[Process] = deque()
        # Taken once: the daemon's environment does not change while it runs.
        self._environment = child_environment()
        self._log_writer = LogWriter(config.log_flush_interval)
        self._sweeper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def log_dir(self) -> Path:
        return self._config.process_log_dir

    def start_sweeping(self) -> None:
        self._history = asyncio.create_task(self._read_history())
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _read_history(self) -> None:
        try:
            found = await asyncio.to_thread(read_history, self.log_dir)
        except OSError as exc:
            log.warning("cannot read the logs of earlier processes in %s: %s", self.log_dir, exc)
            return
        # Commands started while the folder was read are ours, not history.
        self._past = {process_id: past for process_id, past in found.items() if process_id not in self._processes}

    async def _history_read(self) -> None:
        if self._history is not None:
            await asyncio.shield(self._history)

    async def start(self, command: str, cwd: str, env: Mapping[str, str] | None, owner: Owner) -> Process:
        self._check_room()
        if not os.path.isdir(cwd):
            raise not_found(f"Working directory not found: {cwd}")
        environment = {**self._environment, **(env or {})}
        if self._limits is None or not self._limits.active:  # under limits a start is cold
            await self._gate.prepare(self._sandbox_for(owner))
        process = await self._gate.run(lambda: self._launch(command, cwd, environment, owner))
        if process.pty is not None:
            await process.pty.started()  # a start in a resident sandbox learns its pid a moment later
        return process

    def _sandbox_for(self, owner: Owner) -> Sandbox | None:
        return self._confine(owner) if self._confine is not None else self._sandbox

    def _check_room(self) -> None:
        if self._running >= self._config.max_processes:
            raise ApiError(429, f"Too many running processes ({self._config.max_processes}): wait for some to "
                                "finish or kill them")

    def _launch(self, command: str, cwd: str, environment: Mapping[str, str], owner: Owner) -> Process:
        """Start and list the process in one step (the gate's turn): a caller cancelled after this
        leaves a listed process, never an untracked child. The cap is checked again here, since
        others may have started while this one waited its turn."""
        self._check_room()
        self.forget_finished()
        process_id = self._new_id()
        output_log = OutputLog(self.log_dir / f"{process_id}.jsonl", cap=self._config.max_log_size,
                               writer=self._log_writer)
        process = Process(process_id, command, cwd, owner, output_log)
        output_log.on_drained = process.resume_output
        pty = PtyProcess(process.output, sandbox=self._sandbox_for(owner))
        try:
            pty.limits = self._limits.open(owner.user_id, f"cmd-{process_id}") if self._limits else None
            pty.residents = self._gate.residents
            pty.start(command, cwd, environment)
        except (OSError, ValueError) as exc:
            if pty.limits is not None:
                pty.limits.finished(127)
            _record_start(output_log, process, pid=None)
            process.output(f"opentermd: cannot start command: {getattr(exc, 'strerror', None) or exc}\r\n")
            self._finish(process, 127)
        else:
            process.pty = pty
            self._running += 1
            pty.when_started(lambda: _record_start(output_log, process, pid=pty.pid or None))
            pty.finished.add_done_callback(lambda done: self._finish(process, done.result()))
        self._processes[process_id] = process
        return process

    def _new_id(self) -> str:
        """The start second and 24 random bits, drawn again while taken: a few hundred commands a
        second make a repeat likely within thousands, and a repeat would share a log."""
        while True:
            process_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
            if process_id not in self._processes and process_id not in self._past and not os.path.lexists(
                    self.log_dir / f"{process_id}.jsonl"):
                return process_id

    @property
    def running_count(self) -> int:
        return self._running

    def running_of(self, user_id: str) -> list[Process]:
        """This user's running commands, every chat of theirs."""
        return [process for process in self._processes.values()
                if process.owner.user_id == user_id and process.running and process.pty is not None]

    def pids_of(self, user_id: str) -> set[int]:
        """The spawned pids of this user's running commands (for /ports per user)."""
        return {process.pty.pid for process in self.running_of(user_id) if process.pty is not None and process.pty.pid}

    async def get(self, process_id: str, owner: Owner) -> Process:
        self.forget_finished()
        process = self._processes.get(process_id)
        if process is None:
            await self._history_read()
            past = self._past.get(process_id)
            if past is not None and past.owner == owner:
                return await self._load_past(past)
        if process is None or process.owner != owner:
            raise not_found("Process not found")
        return process

    async def owned_by(self, owner: Owner) -> list[Process | PastProcess]:
        self.forget_finished()
        await self._history_read()
        earlier: list[Process | PastProcess] = [past for past in self._past.values() if past.owner == owner]
        return earlier + [process for process in self._processes.values() if process.owner == owner]

    async def _load_past(self, past: PastProcess) -> Process:
        """A process from before the restart, readable like any finished one (its index built once)."""
        loaded = self._past_loaded.get(past.id)
        if loaded is None:
            try:
                output_log = await asyncio.to_thread(
                    OutputLog.from_file, past.path, writer=self._log_writer, truncated=past.truncated)
            except FileNotFoundError:
                self._past.pop(past.id, None)
                raise not_found("Process not found") from None
            except OSError as exc:
                raise from_os_error(exc) from None
            loaded = Process(past.id, past.command, past.cwd, past.owner, output_log, status=past.status,
                             exit_code=past.exit_code, finished_at=past.finished_at, limit=past.limit)
            self._past_loaded[past.id] = loaded
            while len(self._past_loaded) > LOADED_PAST_LOGS:
                self._past_loaded.popitem(last=False)
        self._past_loaded.move_to_end(past.id)
        return loaded

    async def send_input(self, process: Process, data: bytes) -> None:
        if not process.running or process.pty is None:
            raise bad_request("Process has already exited")
        try:
            await process.pty.write(data)
        except OSError:
            raise bad_request("Process stdin is closed") from None

    async def kill(self, process: Process, *, force: bool) -> None:
        """Signal the whole group; escalate to SIGKILL if SIGTERM is ignored; wait until reaped."""
        if not process.running or process.pty is None:
            return
        process.status = "killed"
        await terminate(process.pty, force=force)

    def _finish(self, process: Process, exit_code: int) -> None:
        if process.pty is not None:
            self._running -= 1
            if process.pty.limits is not None:
                process.limit = process.pty.limits.finished(exit_code)
        process.finish(exit_code, self._clock())
        self._finished.append(process)

    def forget_finished(self) -> None:
        """Drop processes finished more than FORGET_AFTER ago: O(forgotten), not O(listed)."""
        cutoff = self._clock() - FORGET_AFTER
        while self._finished and (self._finished[0].finished_at or 0.0) < cutoff:
            process = self._finished.popleft()
            if self._processes.pop(process.id, None) is not None:
                closing = asyncio.get_running_loop().create_task(process.log.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)

    def sweep_logs(self) -> list[str]:
        """Delete log files older than the retention period, except those of listed processes;
        return the names removed. Runs in a worker thread: it only reads the table."""
        active = {process.log.path for process in list(self._processes.values())}
        cutoff = time.time() - self._config.log_retention
        removed = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.log_dir) as entries:
            for entry in entries:
                if not entry.name.endswith(".jsonl") or Path(entry.path) in active:
                    continue
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed.append(entry.name)
        return removed

    def forget_removed(self, names: list[str]) -> None:
        """Processes from before the restart whose logs retention removed are gone for good."""
        for name in names:
            process_id = name.removesuffix(".jsonl")
            self._past.pop(process_id, None)
            self._past_loaded.pop(process_id, None)

    async def _sweep_forever(self) -> None:
        await self._history_read()
        while True:
            self.forget_finished()
            try:
                self.forget_removed(await asyncio.to_thread(self.sweep_logs))
            except OSError as exc:
                log.warning("log retention sweep failed: %s", exc)
            await asyncio.sleep(SWEEP_INTERVAL)

    async def close(self) -> None:
        """Shutdown: kill every running group, wait for them, flush and close every log."""
        for task in (self._sweeper, self._history):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        running = [p for p in self._processes.values() if p.running and p.pty is not None]
        for process in running:
            process.status = "killed"
        await asyncio.gather(*(terminate(p.pty, force=False, grace=1.0) for p in running if p.pty))
        for process in self._processes.values():
            if process.pty is not None:
                process.pty.close()
        await asyncio.gather(*self._closing, *(process.log.close() for process in self._processes.values()))
        self._processes.clear()
        # Its timer and hops end with the app, not in a later turn of a loop that is closing.
        await self._log_writer.close()


def _record_start(output_log: OutputLog, process: Process, pid: int | None) -> None:
    # The owner and cwd let a restarted daemon list the process for the right caller.
    output_log.record(type="start", command=process.command, pid=pid, cwd=process.cwd,
                      user_id=process.owner.user_id, session_id=process.owner.session_id)
