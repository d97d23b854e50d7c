"""Where `templates/` and `static/` live, from a source checkout or a frozen executable alike."""

from __future__ import annotations

import sys
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
