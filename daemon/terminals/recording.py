"""Asciinema v2 recordings of terminal sessions, and their retention.

A recording is an asciicast v2 file (https://docs.asciinema.org/manual/asciicast/v2/): one JSON
header line, then one `[seconds, type, text]` line per event, which `asciinema play` and the web
player read as they are. It holds everything shown (and, if enabled, typed), so it is private to
the daemon's user.

Events gather in memory and reach the disk in one write per ~64 KiB or per half second (checked on
the next event: a live session calls often), so the event loop pays for a few page-cache writes,
never for one write per chunk of output. A disk that refuses a write ends the recording, not the
session: the file is cut back to its last whole line, so it still plays up to that moment.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import stat
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from time import monotonic  # one name for tests to replace with their own clock

import orjson

log = logging.getLogger(__name__)

FLUSH_BYTES = 64 * 1024
FLUSH_INTERVAL = 0.5
#: The environment variables a header keeps, as `asciinema rec` does by default.
CAPTURED_ENV = ("SHELL", "TERM")
SUFFIX = ".cast"


class Recorder:
    """One session's recording. Raises `OSError` only from the constructor (no file, no header)."""

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        *,
        command: str,
        env: Mapping[str, str],
        started: float | None = None,
    ) -> None:
        """`started` is the header's wall-clock time (default now); event times count from this call."""
        self.path = path
        self._origin = self._flushed_at = monotonic()
        # Each stream keeps the bytes of a character cut between two reads until the rest arrives.
        self._output_text = codecs.getincrementaldecoder("utf-8")("replace")
        self._input_text = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = bytearray()
        self._on_disk = 0  # always ends on a whole line
        header = {
            "version": 2,
            "width": int(width),
            "height": int(height),
            "timestamp": int(time.time() if started is None else started),
            "command": _valid_text(command),
            "env": {name: _valid_text(env[name]) for name in CAPTURED_ENV if name in env},
        }
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        self._fd = os.open(path, flags, 0o600)
        try:
            os.fchmod(self._fd, 0o600)  # a file left under the same name keeps its old mode through O_TRUNC
            self._pending += orjson.dumps(header) + b"\n"
            self._write_pending()
        except OSError:
            self._release()
            with contextlib.suppress(OSError):
                path.unlink()
            raise

    @property
    def active(self) -> bool:
        """False once closed, or once the disk refused a write."""
        return self._fd >= 0

    def output(self, data: bytes) -> None:
        if self._fd >= 0:
            self._event("o", self._output_text.decode(data))

    def input(self, data: bytes) -> None:
        if self._fd >= 0:
            self._event("i", self._input_text.decode(data))

    def resize(self, cols: int, rows: int) -> None:
        if self._fd >= 0:
            self._event("r", f"{cols}x{rows}")

    def flush(self) -> None:
        """Put everything recorded so far on disk (before the cast is served)."""
        if self._fd >= 0:
            self._flush()

    def close(self) -> None:
        if self._fd < 0:
            return
        # A character still cut short at the very end shows as U+FFFD rather than vanishing.
        self._append("o", self._output_text.decode(b"", final=True), monotonic())
        self._append("i", self._input_text.decode(b"", final=True), monotonic())
        self._flush()
        self._release()

    def _event(self, kind: str, text: str) -> None:
        now = monotonic()
        self._append(kind, text, now)
        if len(self._pending) >= FLUSH_BYTES or now - self._flushed_at >= FLUSH_INTERVAL:
            self._flush()

    def _append(self, kind: str, text: str, now: float) -> None:
        if text:
            self._pending += orjson.dumps([round(now - self._origin, 6), kind, text])
            self._pending += b"\n"

    def _flush(self) -> None:
        """Write what is pending; a refused write ends the recording, never the caller."""
        self._flushed_at = monotonic()
        try:
            self._write_pending()
        except OSError as exc:
            log.warning("recording %s stopped: %s", self.path, exc)
            self._release()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, bytearray()
        view = memoryview(batch)
        written = 0
        try:
            while written < len(batch):
                written += os.write(self._fd, view[written:])
        except OSError:
            # A write cut short mid-line would leave a file no player reads past; keep whole lines.
            kept = batch.rfind(b"\n", 0, written) + 1
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._on_disk + kept)
            raise
        self._on_disk += written

    def _release(self) -> None:
        fd, self._fd = self._fd, -1
        self._pending.clear()
        with contextlib.suppress(OSError):
            os.close(fd)


def sweep_recordings(
    directory: Path, retention_days: float, now: float | None = None, *, keep: Collection[Path] = (),
) -> int:
    """Delete `*.cast` files last written more than `retention_days` ago; return how many.

    A retention of zero or less keeps everything. `keep` names recordings still being written,
    which an idle session may not have touched for longer than the retention.
    """
    if retention_days <= 0:
        return 0
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not entry.name.endswith(SUFFIX) or Path(entry.path) in keep:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_mtime >= cutoff:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed += 1
    return removed


def _valid_text(value: str) -> str:
    """Undo the surrogate escapes that `os.environ` and argv use for bytes that are not UTF-8."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
