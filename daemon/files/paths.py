"""Turn a user-supplied path into an absolute one."""

from __future__ import annotations

import os


def resolve(path: str, base: str) -> str:
    """Absolute paths are normalised; relative ones join `base` (the chat's cwd or home).

    `~` and `~/...` expand to the user's home: models write them often, and a directory literally
    named `~` is never what they meant.
    """
    if path == "~" or path.startswith("~/"):
        path = os.path.expanduser(path)
    return os.path.normpath(os.path.join(base, path))
