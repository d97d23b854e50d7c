"""The live notebook sessions: one kernel each, owned by a user, capped, reaped when idle, closed with the app.

Ownership is Open WebUI's user (`X-User-Id`) alone, as in the reference: the notebook viewer is
not tied to a chat, so another user's session is a 404, whatever the chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
import secrets
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from daemon import sandbox
from daemon.config import Config
from daemon.errors import ApiError, bad_request, not_found
from daemon.files.beneath import Beneath
from daemon.limits import Limits
from daemon.processes.runner import child_environment

log = logging.getLogger(__name__)

#: A session nobody executed a cell in for this long is stopped (CONTRACT §5.4: 30 min).
IDLE_TIMEOUT = 30 * 60.0
SWEEP_INTERVAL = 60.0
#: The largest .ipynb read; images make notebooks large, but a notebook is held whole in memory.
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024
#: A notebook last saved at most this large is saved on the event loop: a small JSON dump and a few
#: syscalls (~0.2 ms) cost less than the hop to a worker thread and back, which on a busy machine
#: takes milliseconds (it was the largest part of a `1+1` round trip under load). Larger ones go to
#: a thread. Output logs of commands are written on the loop the same way.
INLINE_SAVE_BYTES = 64 * 1024
#: What one cell's outputs may hold in the reply (and in the saved notebook).
CELL_OUTPUT_LIMIT = 16 * 1024 * 1024


@dataclass(eq=False)
class NotebookSession:
    id: str
    path: str
    user_id: str
    notebook: Any
    kernel: Any  # kernel.Kernel (its module loads with the first notebook)
    last_used: float
    #: The notebook file's size when last read or written (how it is saved next: INLINE_SAVE_BYTES).
    saved_bytes: int
    running: asyncio.Task[dict[str, Any]] | None = None

    @property
    def busy(self) -> bool:
        return self.running is not None and not self.running.done()

    def status(self) -> dict[str, str]:
        return {"id": self.id, "path": self.path, "kernel": self.kernel.name,
                "status": "busy" if self.busy else "ready"}


class NotebookTable:
    def __init__(self, config: Config, opener: Beneath, limits: Limits | None = None) -> None:
        self._config = config
        self._opener = opener
        self._limits = limits
        self._sessions: dict[str, NotebookSession] = {}
        self._starting = 0
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None
        # Taken once, as for commands: no OPEN_TERMINAL_* setting (which may hold the key) reaches a kernel.
        self._environment = child_environment()
        self._modules: tuple[ModuleType, ModuleType] | None = None

    async def _load(self) -> tuple[ModuleType, ModuleType]:
        """jupyter_client, pyzmq and nbformat load with the first notebook, in a worker thread."""
        if self._modules is None:
            kernel, document = await asyncio.to_thread(
                lambda: (importlib.import_module("daemon.notebooks.kernel"),
                         importlib.import_module("daemon.notebooks.document")))
            self._modules = kernel, document
        return self._modules

    # --- sessions -------------------------------------------------------------------------------

    async def create(self, user_id: str, path: str) -> NotebookSession:
        self._check_room()
        self._starting += 1
        try:
            kernels, document = await self._load()
            notebook, size = await asyncio.to_thread(document.read_notebook, path, self._opener, MAX_NOTEBOOK_BYTES)
            kernel = await self._start_kernel(kernels, notebook, os.path.dirname(path), user_id)
        finally:
            self._starting -= 1
        if self._closed:  # the daemon began to shut down while the kernel started
            await kernel.stop()
            _release(kernel)
            raise ApiError(503, "The server is shutting down")
        session = NotebookSession(self._new_id(), path, user_id, notebook, kernel, time.monotonic(), size)
        self._sessions[session.id] = session
        log.info("notebook %s: kernel %s (group %s) for %s", session.id, kernel.name, kernel.pgid, path)
        return session

    async def _start_kernel(self, kernels: ModuleType, notebook: Any, cwd: str, user_id: str) -> Any:
        wanted = notebook.metadata.get("kernelspec", {}).get("name")
        name = await self._kernel_name(kernels, wanted if isinstance(wanted, str) else None)
        # A kernel is like a terminal: a tree of its own (its cells' children too) in the user's group.
        group = self._limits.open(user_id, f"kernel-{secrets.token_hex(6)}") if self._limits else None
        kernel = kernels.Kernel(name, cwd, dict(self._environment), sandbox.current(), group)
        try:
            await kernel.start(self._config.notebook_start_timeout)
        except kernels.KernelStartError as exc:
            _release(kernel)
            raise ApiError(500, str(exc)) from None
        except BaseException:
            _release(kernel)
            raise
        return kernel

    @staticmethod
    async def _kernel_name(kernels: ModuleType, wanted: str | None) -> str:
        try:
            name: str = await asyncio.to_thread(kernels.choose_kernel, wanted)
        except kernels.KernelStartError as exc:
            raise ApiError(500, str(exc)) from None
        return name

    def _check_room(self) -> None:
        limit = self._config.max_notebooks
        if len(self._sessions) + self._starting >= limit:
            raise ApiError(429, f"Too many notebook sessions ({limit}): stop one with DELETE /notebooks/{{id}}")

    def _new_id(self) -> str:
        while True:
            session_id = secrets.token_hex(6)
            if session_id not in self._sessions:
                return session_id

    def get(self, session_id: str, user_id: str) -> NotebookSession:
        session = self._sessions.get(session_id)
        if session is None or session.user_id != user_id:
            raise not_found("Session not found")
        return session

    def of_user(self, user_id: str) -> list[NotebookSession]:
        """This user's sessions (a removed tenant's are stopped)."""
        return [session for session in self._sessions.values() if session.user_id == user_id]

    async def delete(self, session: NotebookSession) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        if session.running is not None:
            session.running.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await session.running
        await session.kernel.stop()
        _release(session.kernel)
        log.info("notebook %s: stopped", session.id)

    # --- cells ----------------------------------------------------------------------------------

    async def execute(self, session: NotebookSession, cell_index: int, source: str | None) -> dict[str, Any]:
        if session.busy:
            raise ApiError(409, "Cell already executing")
        cells = session.notebook.cells
        if not 0 <= cell_index < len(cells):
            raise bad_request(f"cell_index {cell_index} out of range (0..{len(cells) - 1})")
        cell = cells[cell_index]
        if source is not None:
            cell.source = source
        session.last_used = time.monotonic()
        # The cell runs in a task of the session's: a client that goes away does not stop it (its outputs
        # are still saved); only DELETE, the idle reaper or shutdown cancel it.
        task = session.running = asyncio.ensure_future(self._run(session, cell))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and not (current is not None and current.cancelling()):
                raise ApiError(409, "Notebook session was stopped while the cell ran") from None
            raise

    async def _run(self, session: NotebookSession, cell: Any) -> dict[str, Any]:
        try:
            reply: dict[str, Any] = {"status": "ok", "execution_count": None, "outputs": []}
            if cell.cell_type == "code":
                result = await session.kernel.execute(
                    cell.source, limit=self._config.notebook_cell_timeout or None, output_limit=CELL_OUTPUT_LIMIT,
                    restart_timeout=self._config.notebook_start_timeout)
                cell.outputs, cell.execution_count = result.outputs.outputs, result.execution_count
                reply = {"status": result.status, "execution_count": result.execution_count,
                         "outputs": result.outputs.as_dicts()}
            problem = await self._save(session)
            if problem is not None:
                reply["save_error"] = problem
            return reply
        finally:
            session.last_used = time.monotonic()

    async def _save(self, session: NotebookSession) -> str | None:
        """Write the notebook back; the reference ignores a failed save, here the reply says why."""
        _, document = await self._load()
        try:
            save = functools.partial(document.save_notebook, session.path, session.notebook, self._opener)
            session.saved_bytes = save() if session.saved_bytes <= INLINE_SAVE_BYTES else await asyncio.to_thread(save)
        except (ApiError, OSError) as exc:
            reason = exc.detail if isinstance(exc, ApiError) else (exc.strerror or str(exc))
            log.warning("notebook %s: not saved to %s: %s", session.id, session.path, reason)
            return f"The notebook was not saved: {reason}"
        return None

    async def interrupt(self, session: NotebookSession) -> dict[str, str]:
        if session.busy:
            await session.kernel.interrupt()
        session.last_used = time.monotonic()
        return session.status()

    # --- lifetime -------------------------------------------------------------------------------

    def start_sweeping(self) -> None:
        self._sweeper = asyncio.ensure_future(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            await self.reap_idle()

    async def reap_idle(self) -> list[str]:
        """Stop the sessions idle (no cell running) for longer than IDLE_TIMEOUT; return their ids."""
        now = time.monotonic()
        stale = [session for session in self._sessions.values()
                 if not session.busy and now - session.last_used > IDLE_TIMEOUT]
        for session in stale:
            log.info("notebook %s: idle for %d min, stopping", session.id, IDLE_TIMEOUT // 60)
        await asyncio.gather(*(self.delete(session) for session in stale))
        return [session.id for session in stale]

    async def close(self) -> None:
        """Shutdown: every kernel group is killed before the app is gone."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await asyncio.gather(*(self.delete(session) for session in list(self._sessions.values())),
                             return_exceptions=True)


def _release(kernel: Any) -> None:
    """The kernel's limit group goes with it (once its processes are gone: Limits retries a busy one)."""
    if kernel.group is not None:
        kernel.group.limits.release(kernel.group)
