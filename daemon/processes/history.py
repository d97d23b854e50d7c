"""Processes from before a restart, as their `.jsonl` logs tell them.

The first record (`start`) names the command, its working directory and, since logs record it, its
owner; the last (`end`) its exit code and status. A log with no end record belongs to a process the
daemon lost track of: it died (or was killed) before the command ended. Only the first and the last
line are read here, so listing thousands of old logs costs two small reads each; a log's entry index
is built only when someone reads its output (`OutputLog.from_file`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from daemon.owner import Owner

#: `<YYYYmmdd-HHMMSS>-<6 hex>.jsonl`: the names the table gives; anything else in the folder is not ours.
LOG_NAME = re.compile(r"^(\d{8}-\d{6}-[0-9a-f]{6})\.jsonl$")
#: Past the largest start record a request can cause (its command comes in a JSON body).
FIRST_RECORD_LIMIT = 64 * 1024 * 1024
#: The end record is small; a tail this long always holds it whole.
LAST_RECORD_LIMIT = 64 * 1024


@dataclass(frozen=True)
class PastProcess:
    """What a log says about a process this daemon did not start."""

    id: str
    path: Path
    command: str
    cwd: str
    owner: Owner
    #: `done` or `killed` from the end record; `lost` when there is none.
    status: Literal["done", "killed", "lost"]
    exit_code: int | None
    truncated: bool
    started_at: float
    finished_at: float
    #: The limit that ended it (`memory`, `processes`...: daemon/limits.py), from the end record.
    limit: str | None = None

    def summary(self) -> dict[str, object]:
        """The same fields `GET /execute` lists for a process of this daemon."""
        return {"id": self.id, "command": self.command, "status": self.status, "exit_code": self.exit_code,
                "log_path": str(self.path)}


def read_past_process(path: Path) -> PastProcess | None:
    """The process a log describes, or None when the file is not one of our logs (without a start
    record, nobody could be told its owner)."""
    match = LOG_NAME.match(path.name)
    if match is None:
        return None
    with open(path, "rb") as file:
        first = file.readline(FIRST_RECORD_LIMIT)
        size = file.seek(0, os.SEEK_END)
        file.seek(max(size - LAST_RECORD_LIMIT, 0))
        tail = file.read()
        modified = os.fstat(file.fileno()).st_mtime
    start = _record(first, "start")
    if start is None:
        return None
    end = _record(tail.rstrip(b"\n").rpartition(b"\n")[2], "end")
    # Logs written before owners were recorded belong to the default owner.
    owner = Owner(str(start.get("user_id") or ""), str(start.get("session_id") or ""))
    return PastProcess(
        id=match.group(1), path=path, command=str(start.get("command") or ""), cwd=str(start.get("cwd") or ""),
        owner=owner,
        status=("killed" if end.get("status") == "killed" else "done") if end is not None else "lost",
        exit_code=end.get("exit_code") if end is not None and isinstance(end.get("exit_code"), int) else None,
        truncated=bool(end.get("truncated")) if end is not None else False,
        started_at=_timestamp(start, modified),
        finished_at=_timestamp(end, modified),
        limit=_limit(end),
    )


def read_history(log_dir: Path) -> dict[str, PastProcess]:
    """Every process whose log is in `log_dir`, in the order they started."""
    found: list[PastProcess] = []
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        return {}
    for name in names:
        try:
            past = read_past_process(log_dir / name)
        except OSError:
            continue  # removed meanwhile, or unreadable: not something we can show
        if past is not None:
            found.append(past)
    found.sort(key=lambda past: (past.started_at, past.id))
    return {past.id: past for past in found}


def _limit(end: dict[str, Any] | None) -> str | None:
    value = end.get("limit") if end is not None else None
    return value if isinstance(value, str) else None


def _timestamp(record: dict[str, Any] | None, fallback: float) -> float:
    value = record.get("ts") if record is not None else None
    return float(value) if isinstance(value, int | float) else fallback


def _record(line: bytes, kind: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("type") == kind else None
