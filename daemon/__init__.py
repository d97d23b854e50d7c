"""opentermd: a real shell for an AI and its human."""

from __future__ import annotations

__version__ = "0.1.0"
