"""Tell the KeyGuard at once when the stored key file is replaced (`opentermd key --rotate`).

inotify on the state directory (the file itself is replaced by a rename, so its own watch would
go stale); without inotify the guard still looks at the file at most once a second per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from inotify_simple import INotify, flags

from daemon.http.auth import KeyGuard

log = logging.getLogger(__name__)


def cleanup_context(guard: KeyGuard) -> Callable[[web.Application], AsyncIterator[None]]:
    async def watch(app: web.Application) -> AsyncIterator[None]:
        notify = _watch(guard)
        if notify is None:
            yield
            return
        loop = asyncio.get_running_loop()

        def readable() -> None:
            names = {event.name for event in notify.read(timeout=0)}
            if guard.stored is not None and guard.stored.name in names:
                guard.reload()

        loop.add_reader(notify.fileno(), readable)
        try:
            yield
        finally:
            loop.remove_reader(notify.fileno())
            notify.close()

    return watch


def _watch(guard: KeyGuard) -> INotify | None:
    if guard.stored is None:
        return None
    notify: INotify | None = None
    try:
        notify = INotify()
        notify.add_watch(guard.stored.parent, flags.MOVED_TO | flags.CLOSE_WRITE | flags.CREATE)
    except OSError as exc:
        log.warning("cannot watch %s for key rotations (checked per request instead): %s", guard.stored.parent, exc)
        if notify is not None:
            with contextlib.suppress(OSError):
                notify.close()
        return None
    return notify
