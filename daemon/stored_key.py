"""The generated API key, kept in the state directory so it survives restarts.

Without it every restart would print a new key, breaking the Open WebUI connection and every
browser login. The file is `<state>/api-key`, mode 0600 in a 0700 directory, and is only ever
replaced whole (a private temp file, fsync, rename), so a reader never sees half a key.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

FILE_NAME = "api-key"


def key_path(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def generate() -> str:
    # 48 random bytes: 384 bits, the same strength as the reference's generated key.
    return secrets.token_urlsafe(48)


def read(path: Path) -> str | None:
    """The stored key, or None when there is none (or the file is empty)."""
    try:
        key = path.read_text("utf-8").strip()
    except FileNotFoundError:
        return None
    return key or None


def write(path: Path, key: str) -> None:
    """Replace the stored key atomically; the directory is created private (0700) if missing."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    # O_EXCL: never write through a file (or symlink) someone else put at the temp name.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def load_or_create(state_dir: Path) -> tuple[str, bool]:
    """The stored key and False, or a new key (now stored) and True."""
    path = key_path(state_dir)
    key = read(path)
    if key is not None:
        return key, False
    key = generate()
    write(path, key)
    return key, True


def rotate(state_dir: Path) -> str:
    """Store a new key in place of the old one; a running daemon notices and ends the old key's sessions."""
    key = generate()
    write(key_path(state_dir), key)
    return key
