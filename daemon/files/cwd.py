"""Per-chat working directories (`X-Session-Id`), with a sliding time-to-live."""

from __future__ import annotations

import os
import time

from daemon.files.paths import resolve


class SessionDirectories:
    """The working directory of each chat; chats without an id share `home`.

    Keyed by (home, session) like the reference, so a future multi-home setup cannot mix them.
    """

    def __init__(self, home: str, ttl: float) -> None:
        self.home = home
        self._ttl = ttl
        self._entries: dict[tuple[str, str], tuple[str, float]] = {}

    def get(self, session_id: str) -> str:
        self._expire()
        key = (self.home, session_id)
        if session_id and key in self._entries:
            path, _ = self._entries[key]
            self._entries[key] = (path, time.monotonic())
            return path
        return self.home

    def set(self, session_id: str, path: str) -> None:
        if session_id:
            self._expire()
            self._entries[(self.home, session_id)] = (path, time.monotonic())

    def resolve(self, path: str | None, session_id: str) -> str:
        """A command's or file's path: relative to the chat's cwd; none given means that cwd."""
        base = self.get(session_id)
        return resolve(path, base) if path else base

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [key for key, (_, seen) in self._entries.items() if now - seen > self._ttl]:
            del self._entries[key]


def browser_root(setting: str, home: str) -> dict[str, str] | None:
    """The file browser's root, from `OPEN_TERMINAL_FILE_BROWSER_ROOT` (as the reference)."""
    mode = setting.strip()
    if mode.lower() in ("", "home"):
        return {"path": home, "label": "Home"}
    if mode.lower() == "filesystem":
        return None
    path = mode.replace("{{home}}", home)
    if path == "~":
        path = home
    elif path.startswith("~/"):
        path = os.path.join(home, path[2:])
    root = resolve(path, home)
    return {"path": root, "label": "Home" if root == home else os.path.basename(root) or root}
