"""The live terminal sessions: the cap, ownership, detached-session reaping, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable
from typing import Any

from daemon.config import Config
from daemon.errors import ApiError
from daemon.limits import Limits
from daemon.owner import Owner
from daemon.processes.runner import SpawnGate
from daemon.sandbox import Sandbox
from daemon.terminals.recording import sweep_recordings
from daemon.terminals.session import SessionOptions, TerminalSession, default_shell, session_environment

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 5.0


def terminal_error(status: int, message: str) -> ApiError:
    """Terminal endpoints answer `{"error": ...}` (what Open WebUI's terminal client expects)."""
    return ApiError(status, message, key="error")


def _start_failed(exc: OSError | ValueError) -> ApiError:
    """An input the shell cannot be started with is the caller's mistake (422); a full system is 503."""
    if isinstance(exc, ValueError) or exc.errno == errno.E2BIG:  # NUL bytes, unencodable text, too big
        return terminal_error(422, f"Invalid terminal options: {exc}")
    return terminal_error(503, f"Out of PTY devices or cannot start the shell: {exc.strerror or exc}")


class TerminalTable:
    def __init__(self, config: Config, gate: SpawnGate | None = None, sandbox: Sandbox | None = None,
                 confine: Callable[[Owner], Sandbox | None] | None = None,
                 limits: Limits | None = None) -> None:
        self._config = config
        self._limits = limits
        self._sandbox = sandbox
        #: Multi-user (daemon/users.py): each owner's own sandbox and uid; None: `sandbox` for everyone.
        self._confine = confine
        #: Shared with the processes (the app gives both the same one): it paces the loop's spawns.
        self._gate = gate or SpawnGate()
        self._sessions: dict[str, TerminalSession] = {}
        self._sweeper: asyncio.Task[None] | None = None
        #: The attached WebSockets, closed with 1001 when the server shuts down.
        self.sockets: set[Any] = set()
        #: Session id -> when a never-attached session gives its slot back.
        self._attach_by: dict[str, float] = {}

    async def create(self, owner: Owner, options: SessionOptions) -> TerminalSession:
        self._prune()
        self.reap_detached()
        self._check_room()
        if self._config.detach_timeout is not None:
            options.detachable = True
        session = TerminalSession(owner, options, replay_bytes=self._config.replay_bytes,
                                  sandbox=self._sandbox_for(owner))
        env = session_environment(self._config.term, options.env)
        if self._records(options):
            try:
                session.record_to(self._config.recording_dir / f"{session.id}.cast", env)
            except OSError as exc:
                log.warning("terminal %s: not recorded: %s", session.id, exc)
        try:
            if self._limits is None or not self._limits.active:  # under limits a start is cold
                await self._gate.prepare(self._sandbox_for(owner))
            started = await self._gate.run(lambda: self._launch(session, env))
            await started.pty.started()  # a start in a resident sandbox learns its pid a moment later
            return started
        except BaseException:  # refused, failed, or cancelled while waiting its turn: no shell runs
            if session.recorder is not None and session.id not in self._sessions:
                session.recorder.close()
            raise

    def _sandbox_for(self, owner: Owner) -> Sandbox | None:
        return self._confine(owner) if self._confine is not None else self._sandbox

    def _check_room(self) -> None:
        if len(self._sessions) >= self._config.max_sessions:
            raise terminal_error(429, f"Maximum number of terminal sessions ({self._config.max_sessions}) reached")

    def _launch(self, session: TerminalSession, env: dict[str, str]) -> TerminalSession:
        """Start and list the shell in one step (the gate's turn): a caller cancelled after this
        leaves a listed session (freed after the attach grace), never an untracked shell. The cap is
        checked again, since others may have started while this one waited its turn."""
        self._check_room()
        try:
            group = session.pty.limits = self._limits.open(session.owner.user_id, f"term-{session.id}") \
                if self._limits else None
            session.pty.residents = self._gate.residents
            session.start(default_shell(), env)
        except (OSError, ValueError) as exc:
            if session.pty.limits is not None:
                session.pty.limits.finished(127)
            raise _start_failed(exc) from None
        if group is not None:
            session.pty.finished.add_done_callback(lambda done: group.finished(done.result()))
        self._sessions[session.id] = session
        self._attach_by[session.id] = time.monotonic() + self._config.attach_grace
        session.pty.finished.add_done_callback(lambda _: self._shell_ended(session))
        return session

    def _shell_ended(self, session: TerminalSession) -> None:
        """The shell exited: the session goes, unless nobody has seen its output yet and it is
        detachable (its output was drained into the replay buffer, not held in the PTY): then it
        waits for its first viewer until the attach grace (`reap_detached`)."""
        if not session.awaiting_first_viewer:
            self._end(session)

    def _records(self, options: SessionOptions) -> bool:
        mode = self._config.recording
        return mode == "always" or (mode == "enabled" and options.record)

    def get(self, session_id: str, owner: Owner) -> TerminalSession:
        session = self._sessions.get(session_id)
        if session is None or session.owner != owner or not session.viewable:
            raise terminal_error(404, "Session not found")
        return session

    def find(self, session_id: str) -> TerminalSession | None:
        """A session by id whoever owns it (the WebSocket checks ownership after auth)."""
        session = self._sessions.get(session_id)
        return session if session is not None and session.viewable else None

    def owned_by(self, owner: Owner) -> list[TerminalSession]:
        self._prune()
        return [session for session in self._sessions.values() if session.owner == owner]

    def pids_of(self, user_id: str) -> set[int]:
        """The shells' pids of this user, every chat of theirs (for /ports per user)."""
        return {session.pid for session in self._sessions.values()
                if session.owner.user_id == user_id and session.alive and session.pid}

    def user_shell(self, owner: Owner) -> TerminalSession:
        """The newest connected, alive shell of this user and chat (for the LLM's user-terminal tools)."""
        for session in reversed(self._sessions.values()):
            if session.owner == owner and session.attached and session.alive:
                return session
        raise ApiError(404, "No connected user shell")

    async def delete(self, session: TerminalSession) -> None:
        await self._end(session)

    def release(self, session: TerminalSession) -> None:
        """The viewer left: a detachable session waits for a re-attach, any other one ends (and so
        does a detachable one whose shell has ended: its first viewer has had the output)."""
        if not session.detachable or not session.alive:
            self._end(session)

    def abandon(self, session: TerminalSession) -> None:
        """A WebSocket failed to authenticate: a session nobody ever attached to ends at once.

        A client with a wrong key would otherwise hold its slots until the attach grace ends, and a
        few creates with failed sockets would make every later create a 429.
        """
        if not session.ever_attached:
            log.info("terminal %s: failed authentication before any attach, closing", session.id)
            self._end(session)

    def grace(self, session: TerminalSession) -> float:
        if self._config.detach_timeout is not None:
            return self._config.detach_timeout
        return self._config.detach_grace

    def _end(self, session: TerminalSession) -> asyncio.Task[None]:
        self._sessions.pop(session.id, None)
        self._attach_by.pop(session.id, None)
        return session.close()

    def _prune(self) -> None:
        for session in [session for session in self._sessions.values() if not session.viewable]:
            self._end(session)

    # --- lifetime -------------------------------------------------------------------------------

    def start_sweeping(self) -> None:
        self._sweeper = asyncio.ensure_future(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        recordings_swept = 0.0
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.reap_detached()
            if time.monotonic() - recordings_swept > 3600:
                recordings_swept = time.monotonic()
                live = [s.recording_path for s in self._sessions.values() if s.recording_path is not None]
                await asyncio.to_thread(sweep_recordings, self._config.recording_dir,
                                        self._config.recording_retention, keep=live)

    def reap_detached(self) -> None:
        """Kill sessions never attached within the attach grace, or unwatched past their grace."""
        now = time.monotonic()
        for session in list(self._sessions.values()):
            if not session.ever_attached and not session.attached:
                if now > self._attach_by.get(session.id, now):
                    log.info("terminal %s: never attached, closing", session.id)
                    self._end(session)
            elif session.detached_at is not None and now - session.detached_at > self.grace(session):
                log.info("terminal %s: detached for too long, closing", session.id)
                self._end(session)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(session.close() for session in sessions), return_exceptions=True)
