"""The live background processes: start, find by owner, wait, input, kill, forget, sweep logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from daemon.config import Config
from daemon.errors import bad_request, not_found
from daemon.owner import Owner
from daemon.processes.output_log import LogWriter, OutputLog
from daemon.processes.runner import PtyProcess, child_environment, terminate

log = logging.getLogger(__name__)

Status = Literal["running", "done", "killed"]
#: A finished process stays listed this long (the reference's 5 minutes).
FORGET_AFTER = 300.0
SWEEP_INTERVAL = 60.0


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

    def finish(self, exit_code: int) -> None:
        self.exit_code = exit_code
        if self.status == "running":
            self.status = "done"
        self.finished_at = time.time()
        self.log.record(type="end", exit_code=exit_code, log_rotated=False, truncated=self.log.truncated)
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

    def __init__(self, config: Config) -> None:
        self._config = config
        self._processes: dict[str, Process] = {}
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
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def start(self, command: str, cwd: str, env: Mapping[str, str] | None, owner: Owner) -> Process:
        if not os.path.isdir(cwd):
            raise not_found(f"Working directory not found: {cwd}")
        self.forget_finished()
        process_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        output_log = OutputLog(self.log_dir / f"{process_id}.jsonl", cap=self._config.max_log_size,
                               writer=self._log_writer)
        process = Process(process_id, command, cwd, owner, output_log)
        output_log.on_drained = process.resume_output
        pty = PtyProcess(process.output)
        try:
            pty.start(command, cwd, {**self._environment, **(env or {})})
        except (OSError, ValueError) as exc:
            output_log.record(type="start", command=command, pid=None)
            process.output(f"opentermd: cannot start command: {getattr(exc, 'strerror', None) or exc}\r\n")
            self._finish(process, 127)
        else:
            process.pty = pty
            output_log.record(type="start", command=command, pid=pty.pid)
            pty.finished.add_done_callback(lambda done: self._finish(process, done.result()))
        self._processes[process_id] = process
        return process

    def get(self, process_id: str, owner: Owner) -> Process:
        self.forget_finished()
        process = self._processes.get(process_id)
        if process is None or process.owner != owner:
            raise not_found("Process not found")
        return process

    def owned_by(self, owner: Owner) -> list[Process]:
        self.forget_finished()
        return [process for process in self._processes.values() if process.owner == owner]

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
        process.finish(exit_code)
        self._finished.append(process)

    def forget_finished(self) -> None:
        """Drop processes finished more than FORGET_AFTER ago: O(forgotten), not O(listed)."""
        cutoff = time.time() - FORGET_AFTER
        while self._finished and (self._finished[0].finished_at or 0.0) < cutoff:
            process = self._finished.popleft()
            if self._processes.pop(process.id, None) is not None:
                closing = asyncio.get_running_loop().create_task(process.log.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)

    def sweep_logs(self) -> int:
        """Delete log files older than the retention period, except those of listed processes."""
        active = {process.log.path for process in self._processes.values()}
        cutoff = time.time() - self._config.log_retention
        removed = 0
        with contextlib.suppress(FileNotFoundError), os.scandir(self.log_dir) as entries:
            for entry in entries:
                if not entry.name.endswith(".jsonl") or Path(entry.path) in active:
                    continue
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
        return removed

    async def _sweep_forever(self) -> None:
        while True:
            self.forget_finished()
            try:
                await asyncio.to_thread(self.sweep_logs)
            except OSError as exc:
                log.warning("log retention sweep failed: %s", exc)
            await asyncio.sleep(SWEEP_INTERVAL)

    async def close(self) -> None:
        """Shutdown: kill every running group, wait for them, flush and close every log."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        running = [p for p in self._processes.values() if p.running and p.pty is not None]
        for process in running:
            process.status = "killed"
        await asyncio.gather(*(terminate(p.pty, force=False, grace=1.0) for p in running if p.pty))
        for process in self._processes.values():
            if process.pty is not None:
                process.pty.close()
        await asyncio.gather(*self._closing, *(process.log.close() for process in self._processes.values()))
        self._processes.clear()
