"""The audit trail: one JSON line per change made through the daemon, in `<state>/audit/audit.jsonl`.

A record says what changed (`kind`: write, replace, upload, delete, move, rename, create, copy,
extract, restore, commit, command...), when (`ts`, epoch seconds), who (`who`: `by` "page", "api" or
"link", and Open WebUI's `user`/`session` from X-User-Id/X-Session-Id when sent; never the key or a
cookie), and which paths (`path`, or `source`/`destination`, or `paths`), plus a few details.

Writing is one `os.write` of one small line on a descriptor opened with O_APPEND, on the event loop
itself: a few microseconds, cheaper than the thread hop it would take to move it off the loop, and a
line is never interleaved with another (O_APPEND writes of under a page land whole). Past
`max_bytes` the file is rotated (`audit.1.jsonl` ... `audit.<keep>.jsonl`, the oldest dropped), so
the trail is bounded at about (keep + 1) x max_bytes. A disk that refuses the write loses the record
(logged once), never the change itself: the audit follows the work, it does not gate it.

Reading (`search`) runs in a worker thread: newest file first, each read backwards, stopping at the
limit or at the first record older than `since` (records are appended in time order).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from daemon.owner import owner_of

log = logging.getLogger(__name__)

FILE_NAME = "audit.jsonl"
#: Bytes of one audit file before it is rotated.
MAX_BYTES = 4 * 1024 * 1024
#: Rotated files kept beside the live one (the oldest is dropped when another is rotated out).
KEEP = 4
#: A longer string field (a command line, a header) is cut: a record stays one small line.
FIELD_CHARS = 2000
#: Fields that name paths: the path filter looks at these.
PATH_FIELDS = ("path", "source", "destination", "paths")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class AuditLog:
    """The append side and the read side of the trail in one folder."""

    def __init__(self, folder: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.keep = keep
        self._fd = -1
        self._size = 0
        self._warned = False
        #: Records the disk refused (each logged only the first time).
        self.lost = 0

    @property
    def live(self) -> Path:
        return self.folder / FILE_NAME

    def rotated(self, number: int) -> Path:
        return self.folder / f"audit.{number}.jsonl"

    def files(self) -> list[Path]:
        """The trail's files, newest first."""
        return [self.live, *(self.rotated(number) for number in range(1, self.keep + 1))]

    def prepare(self) -> None:
        """Open the trail at start: its one descriptor is held from the start (not opened by the first
        change), and a state directory it cannot write is reported then."""
        try:
            if self._fd < 0:
                self._open()
        except OSError as exc:
            self._failed(exc)

    def append(self, record: dict[str, Any]) -> None:
        line = encode(record)
        try:
            if self._fd < 0:
                self._open()
            self._size += os.write(self._fd, line)
            if self._size >= self.max_bytes:
                self._rotate()
        except OSError as exc:
            self.lost += 1
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        self._close_file()
        if not self._warned:
            self._warned = True
            log.warning("cannot write the audit trail in %s: %s (records are lost until it can)", self.folder, exc)

    def _open(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(self.live, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size
        if self._size and os.pread(self._fd, 1, self._size - 1) != b"\n":
            # The last daemon died mid-line: end that line, so the next record is not joined to it.
            self._size += os.write(self._fd, b"\n")

    def _rotate(self) -> None:
        self._close_file()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.rotated(self.keep))
        for number in range(self.keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(self.rotated(number), self.rotated(number + 1))
        os.rename(self.live, self.rotated(1))

    def _close_file(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        self._close_file()

    def search(self, query: Query) -> list[dict[str, Any]]:
        """Records matching `query`, newest first (blocking: call it in a worker thread)."""
        found: list[dict[str, Any]] = []
        for record in self._newest_first():
            stamp = record.get("ts")
            if not isinstance(stamp, int | float):
                continue
            if query.since is not None and stamp < query.since:
                break  # appended in time order: everything further back is older still
            if query.until is not None and stamp > query.until:
                continue
            if query.path and not touches(record, query.path):
                continue
            if query.user is not None and not _by(record, query.user):
                continue
            found.append(record)
            if len(found) >= query.limit:
                break
        return found

    def _newest_first(self) -> Iterator[dict[str, Any]]:
        for path in self.files():
            try:
                raw = path.read_bytes()
            except (FileNotFoundError, NotADirectoryError):  # nothing recorded (yet, or the folder refused)
                continue
            for line in reversed(raw.splitlines()):
                try:
                    record = json.loads(line)
                except ValueError:  # a line cut short by a crash mid-write
                    continue
                if isinstance(record, dict):
                    yield record


@dataclass(frozen=True)
class Query:
    path: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = DEFAULT_LIMIT
    #: Multi-user (daemon/users.py): only this user's records; None: everyone's.
    user: str | None = None


def _by(record: dict[str, Any], user: str) -> bool:
    who = record.get("who")
    return isinstance(who, dict) and who.get("user") == user


def touches(record: dict[str, Any], path: str) -> bool:
    """Whether the record names `path` or something below it."""
    below = path.rstrip("/") + "/"
    for name in PATH_FIELDS:
        value = record.get(name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and (item == path or item.startswith(below) or path == "/"):
                return True
    return False


def encode(record: dict[str, Any]) -> bytes:
    # ensure_ascii: a file name that is not UTF-8 (a lone surrogate here) still makes valid JSON.
    return (json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=str) + "\n").encode()


def _bounded(value: Any) -> Any:
    if isinstance(value, str) and len(value) > FIELD_CHARS:
        return value[:FIELD_CHARS] + "\u2026"
    if isinstance(value, list | tuple):
        return [_bounded(item) for item in value[:100]]
    return value


# --- the edge: who asked, and the app's one trail ---------------------------------------------------

AUDIT = web.AppKey("audit", AuditLog)


def caller(request: web.Request) -> dict[str, str]:
    """Who made a request, as the trail records it: how they came in, and Open WebUI's user and chat."""
    from daemon.http.auth import SESSION_KEY, bearer_token  # auth imports much; keep this module light

    by = "page" if request.get(SESSION_KEY) is not None else "api" if bearer_token(request) else "link"
    who = {"by": by}
    owner = owner_of(request)  # a tenant is its user, whatever X-User-Id says
    for value, name in ((owner.user_id, "user"), (owner.session_id, "session")):
        if value.strip():
            who[name] = value.strip()[:200]
    return who


def record(app_or_log: web.Application | AuditLog, kind: str, who: Any, **fields: Any) -> None:
    """Append one record. `who` is the request (or the endpoint's `Call`), or an already made `caller()`
    dict. Never raises for a disk problem; an app without a trail records nothing."""
    trail = app_or_log if isinstance(app_or_log, AuditLog) else app_or_log.get(AUDIT)
    if trail is None:
        return
    if isinstance(who, dict):
        by = who
    else:
        request = getattr(who, "request", who)
        by = caller(request)
        fields.setdefault("route", f"{request.method} {request.path}")
    entry = {"ts": time.time(), "kind": kind, "who": by}
    entry.update({name: _bounded(value) for name, value in fields.items() if value is not None})
    trail.append(entry)


def install(app: web.Application, state_dir: Path) -> None:
    """Give the app its trail (`<state>/audit/`), closed with the app."""
    app[AUDIT] = AuditLog(state_dir / "audit")

    async def prepare(app: web.Application) -> None:
        app[AUDIT].prepare()

    async def close(app: web.Application) -> None:
        app[AUDIT].close()

    app.on_startup.append(prepare)
    app.on_cleanup.append(close)
