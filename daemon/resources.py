"""Where `templates/` and `static/` live, from a source checkout or a frozen executable alike."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path


def root() -> Path:
    frozen = getattr(sys, "_MEIPASS", None)
    return Path(frozen) if frozen else Path(__file__).resolve().parent.parent


def templates_dir() -> Path:
    return root() / "templates"


def static_dir() -> Path:
    return root() / "static"


def self_command() -> list[str]:
    """How to start this program again (for worker processes), from source or frozen."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "daemon"]


def without_launcher(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` as it was before the single executable's launcher changed it.

    The onefile launcher points LD_LIBRARY_PATH at its extraction folder (keeping the user's value
    in LD_LIBRARY_PATH_ORIG) and adds `_PYI_*` markers. A user's command must load the system's
    libraries, not our bundled OpenSSL or libpython, and an executable it starts must not take
    itself for a child of ours.
    """
    env = {key: value for key, value in environ.items() if not key.startswith("_PYI_")}
    if getattr(sys, "frozen", False):
        original = env.pop("LD_LIBRARY_PATH_ORIG", None)
        if original is None:
            env.pop("LD_LIBRARY_PATH", None)
        else:
            env["LD_LIBRARY_PATH"] = original
    return env


def system_environment() -> dict[str, str]:
    """The environment for a system program (a shell, rg, git): ours without the launcher's changes."""
    return without_launcher(os.environ)
