"""Who a process (and later a terminal) belongs to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Owner:
    """Open WebUI's user (`X-User-Id`) and chat (`X-Session-Id`); `""` when absent, as the reference."""

    user_id: str = ""
    session_id: str = ""
