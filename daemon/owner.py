"""Who a process, terminal, notebook or file call belongs to."""

from __future__ import annotations

import os
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # document workers import this module (through files/): no aiohttp for them
    from aiohttp import web


@dataclass(frozen=True)
class Owner:
    """Open WebUI's user (`X-User-Id`) and chat (`X-Session-Id`); `""` when absent, as the reference."""

    user_id: str = ""
    session_id: str = ""


def owner_of(request: web.Request) -> Owner:
    """The request's owner: `Call.owner` for handlers, this for middlewares, WebSockets and pages."""
    from daemon.tenants import TENANT  # a tenant's token (set by auth.identify) is the user, whatever X-User-Id says

    headers = request.headers
    tenant = request.get(TENANT)
    return Owner(headers.get("x-user-id", "") if tenant is None else tenant, headers.get("x-session-id", ""))


#: Multi-user as root (daemon/users.py): the (uid, gid) that what the file API creates for this
#: request belongs to, so the user's own commands can change it; None: the daemon's, as always.
#: A context variable: asyncio.to_thread carries it into the worker that creates the file.
FILE_OWNER: ContextVar[tuple[int, int] | None] = ContextVar("opentermd_file_owner", default=None)


def adopt(fd: int) -> None:
    """Give the new file or folder open as `fd` to the request's user (multi-user as root only)."""
    owner = FILE_OWNER.get()
    if owner is not None:
        os.fchown(fd, *owner)


def adopt_at(name: str, dir_fd: int) -> None:
    """`adopt` for an entry just made by name in the folder `dir_fd` (a symlink itself, not its target)."""
    owner = FILE_OWNER.get()
    if owner is not None:
        os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)
