"""Tenants by token: several bearer tokens share one daemon, each resolved to a tenant.

The tenants file (`OPEN_TERMINAL_TENANTS_FILE`, TOML) lists `[[tenant]]` tables: `name`,
`token_sha256` (hex SHA-256 of the token), optional `processes`, `memory` (`2G`) and `network`.
A tenant is the user of the multi-user machinery: its name becomes `Owner.user_id` (stored on the
request under `TENANT`, which `owner_of` prefers over any `X-User-Id` header).

Only digests are kept. A token is hashed once and compared with every tenant's digest by
`hmac.compare_digest`, never stopping at the first match, so the time taken does not tell which
tenant (or how many) a guess came near.

The file is read again when it changes (inotify on its folder, a stat at most once a second per
request, and SIGHUP); a file that cannot be used keeps the last good tenants and logs one warning
per broken version. A missing file counts as broken (an editor's delete-then-write must not drop
every tenant); an empty file is zero tenants.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import re
import signal
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from inotify_simple import INotify, flags

if TYPE_CHECKING:
    from daemon.http.sessions import PageSessions
    from daemon.limits import Limits
    from daemon.users import Users

log = logging.getLogger(__name__)

#: How often, at most, a request makes the book look at the file (a stat call).
RECHECK_INTERVAL = 1.0
TENANT_REMOVED = "Tenant removed"
#: A name that is safe as a user id, a folder name and a log field.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DIGEST = re.compile(r"[0-9a-fA-F]{64}")
FIELDS = frozenset({"name", "token_sha256", "processes", "memory", "network"})

Closer = Callable[[str], Any]


class TenantsError(Exception):
    """The tenants file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Tenant:
    name: str
    digest: bytes
    #: Processes at once for the whole tenant (Part L's per-user group); None: the daemon's setting.
    processes: int | None = None
    #: Bytes of memory for the whole tenant; None: the daemon's setting.
    memory: int | None = None
    #: Whether its sandbox shares the host's network; None: the daemon's setting.
    network: bool | None = None


#: What `TenantBook.subscribe` calls: the tenants before a change and after it.
Changed = Callable[[tuple[Tenant, ...], tuple[Tenant, ...]], None]


def token_digest(token: str) -> bytes:
    # The same trimming as the API key (daemon.http.auth): Open WebUI trims what it sends.
    return hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).digest()


def parse(text: str) -> tuple[Tenant, ...]:
    """The tenants a file's text lists; TenantsError for anything that is not exactly right."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TenantsError(f"not TOML: {exc}") from None
    extra = set(document) - {"tenant"}
    if extra:
        raise TenantsError(f"unknown top-level key(s): {', '.join(sorted(extra))}")
    tables = document.get("tenant", [])
    if not isinstance(tables, list):
        raise TenantsError("`tenant` must be an array of tables ([[tenant]])")
    tenants = tuple(_tenant(index, table) for index, table in enumerate(tables, 1))
    _unique([tenant.name for tenant in tenants], "name")
    _unique([tenant.digest.hex() for tenant in tenants], "token_sha256")
    return tenants


def _tenant(index: int, table: Any) -> Tenant:
    where = f"tenant {index}"
    if not isinstance(table, dict):
        raise TenantsError(f"{where}: must be a table")
    unknown = set(table) - FIELDS
    if unknown:
        raise TenantsError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")
    name, digest = table.get("name"), table.get("token_sha256")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise TenantsError(f"{where}: name must be 1-64 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    where = f"tenant {name!r}"
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise TenantsError(f"{where}: token_sha256 must be 64 hex digits (sha256sum of the token)")
    network = table.get("network")
    if network is not None and not isinstance(network, bool):
        raise TenantsError(f"{where}: network must be true or false")
    return Tenant(name, bytes.fromhex(digest), _count(where, table.get("processes")),
                  _size(where, table.get("memory")), network)


def _count(where: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TenantsError(f"{where}: processes must be a whole number of at least 1")
    return value


def _size(where: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    from daemon.limits import parse_size  # the same sizes as OPEN_TERMINAL_USER_LIMIT_MEMORY

    try:
        size = parse_size(value) if isinstance(value, str) else None
    except ValueError:
        size = None
    if size is None:
        raise TenantsError(f"{where}: memory must be bytes or a size like 512M or 2G")
    return size


def _unique(values: list[str], field: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value.lower() in seen:
            shown = value if field == "name" else value[:12] + "..."
            raise TenantsError(f"two tenants share the {field} {shown!r}")
        seen.add(value.lower())


def read(path: Path) -> tuple[Tenant, ...]:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeError) as exc:
        raise TenantsError(f"cannot read {path}: {exc}") from None
    try:
        return parse(text)
    except TenantsError as exc:
        raise TenantsError(f"{path}: {exc}") from None


class TenantBook:
    """The tenants in force, read again from their file when it changes."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._signature = _signature(path)
        self._tenants = read(path)  # no last good set yet: a broken file at start is the caller's error
        self._checked = clock()
        self._sockets: dict[str, set[Closer]] = {}
        self._closing: set[asyncio.Future[Any]] = set()
        self._on_change: list[Changed] = []

    @property
    def tenants(self) -> tuple[Tenant, ...]:
        return self._tenants

    def find(self, token: str | None) -> Tenant | None:
        """The tenant whose token this is, or None; compares with every tenant whatever matches."""
        if token is None:
            return None
        self._recheck()
        digest = token_digest(token)
        found: Tenant | None = None
        for tenant in self._tenants:
            if hmac.compare_digest(digest, tenant.digest):
                found = tenant
        return found

    def subscribe(self, callback: Changed) -> None:
        """Call `callback(before, after)` now (before: none) and whenever the tenants change."""
        self._on_change.append(callback)
        callback((), self._tenants)

    def named(self, name: str) -> Tenant | None:
        """The tenant called `name` (for the per-user limits and network switch), or None."""
        return next((tenant for tenant in self._tenants if tenant.name == name), None)

    def _recheck(self) -> None:
        if self._clock() - self._checked >= RECHECK_INTERVAL:
            self.reload()

    def reload(self, *, force: bool = False) -> bool:
        """Read the file again if it changed (or always, with `force`); True when the tenants changed."""
        self._checked = self._clock()
        signature = _signature(self.path)
        if signature == self._signature and not force:
            return False
        self._signature = signature
        try:
            tenants = read(self.path)
        except TenantsError as exc:
            log.warning("tenants file not used, the last good tenants stay in force: %s", exc)
            return False
        if tenants == self._tenants:
            return False
        self._end_sockets(_gone(self._tenants, tenants))
        before, self._tenants = self._tenants, tenants
        for callback in self._on_change:
            try:
                callback(before, tenants)
            except Exception:  # e.g. a cgroup that cannot be written: the request that noticed must not fail
                log.exception("applying the tenants file's change")
        log.info("tenants file %s read: %d tenant(s)", self.path, len(tenants))
        return True

    @contextlib.contextmanager
    def tied(self, name: str, closer: Closer) -> Iterator[None]:
        """While inside, removing the tenant (or changing its token) runs `closer` (its WebSocket)."""
        sockets = self._sockets.setdefault(name, set())
        sockets.add(closer)
        try:
            yield
        finally:
            sockets.discard(closer)
            if not sockets and self._sockets.get(name) is sockets:
                del self._sockets[name]

    def _end_sockets(self, names: set[str]) -> None:
        for name in names:
            for closer in self._sockets.pop(name, set()):
                task = asyncio.ensure_future(closer(TENANT_REMOVED))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)


def limits_applier(limiting: Limits) -> Changed:
    """Each tenant's own totals to its per-user limit group; a tenant without them (or removed) gets
    the daemon's per-user settings back."""
    from daemon.limits import UserLimits

    def apply(before: tuple[Tenant, ...], after: tuple[Tenant, ...]) -> None:
        for name in {tenant.name for tenant in before} - {tenant.name for tenant in after}:
            limiting.set_user_limits(name, None)
        for tenant in after:
            own = tenant.processes is not None or tenant.memory is not None
            limiting.set_user_limits(tenant.name, UserLimits(tenant.processes, tenant.memory) if own else None)

    return apply


def sessions_ender(sessions: PageSessions) -> Changed:
    """The page sessions a tenant logged in end when it is removed or its token changes."""

    def end(before: tuple[Tenant, ...], after: tuple[Tenant, ...]) -> None:
        sessions.end_tenants(_gone(before, after), TENANT_REMOVED)

    return end


def work_ender(app: Mapping[Any, Any]) -> Changed:
    """A removed tenant's running commands, terminal shells, notebook sessions and (as root) every other
    process of its uid end with it: nobody can reach them any more, and they would go on using its home,
    ports and limits. A new token for the same tenant leaves them running (the tenant is still there;
    only what the old token opened ends)."""

    sweeps: set[asyncio.Future[Any]] = set()

    def end(before: tuple[Tenant, ...], after: tuple[Tenant, ...]) -> None:
        removed = {tenant.name for tenant in before} - {tenant.name for tenant in after}
        if removed:
            end_work(app, removed)
            sweep = asyncio.ensure_future(end_strays(app, removed))
            sweeps.add(sweep)
            sweep.add_done_callback(sweeps.discard)

    return end


async def end_strays(app: Mapping[Any, Any], names: set[str]) -> None:
    """The tenants' notebook sessions stop (kernel and all); and as root, where each tenant has a uid of
    its own, whatever still runs as it (a `setsid cmd &` that left its shell's group) is killed too.
    Without root there is no such uid to go by."""
    from daemon.keys import NOTEBOOKS
    from daemon.users import USERS, end_processes_of

    notebooks = app.get(NOTEBOOKS)
    if notebooks is not None:
        stopping = [notebooks.delete(session) for name in names for session in notebooks.of_user(name)]
        for failed in await asyncio.gather(*stopping, return_exceptions=True):
            if isinstance(failed, Exception):
                log.warning("stopping a removed tenant's notebook: %s", failed)
    people = app.get(USERS)
    if people is None or not people.as_root:
        return
    for name in sorted(names):
        account = people.known(name)
        if account is not None:
            killed = await asyncio.to_thread(end_processes_of, account.uid)
            log.info("tenant %s removed: %d more process(es) of uid %d ended", name, killed, account.uid)


def end_work(app: Mapping[Any, Any], names: set[str]) -> None:
    """SIGKILL the process groups of these users' running commands and terminal shells (each is its
    group's leader, under its own PTY); the tables then see them end (a command's status says
    `killed`, exit code -9). Safe from pid reuse: the tables list only unreaped children."""
    from daemon.keys import PROCESSES, TERMINALS

    pids: set[int] = set()
    for name in sorted(names):
        log.info("tenant %s removed: ending its commands and terminal shells", name)
        for process in app[PROCESSES].running_of(name):
            if process.pty is not None:
                process.status = "killed"  # as a DELETE /execute/{id} says, not "done"
                pids.add(process.pty.pid)
        if TERMINALS in app:
            pids |= app[TERMINALS].pids_of(name)
    end_sandboxes(app, names)
    for pid in pids - {0}:  # 0: a start in a resident sandbox, ended with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def end_sandboxes(app: Mapping[Any, Any], names: set[str]) -> None:
    """Close the tenants' resident sandboxes (daemon/resident.py): whatever still runs in them, a
    `setsid cmd &` that left its shell's group too, ends with them, root or not."""
    from daemon.resident import POOL
    from daemon.users import USERS

    pool, people = app.get(POOL), app.get(USERS)
    if pool is None or people is None:
        return
    homes = {Path(account.home) for account in map(people.known, names) if account is not None}
    pool.end_where(lambda box: box.workspace in homes)


def network_applier(people: Users, sandboxed: bool) -> Changed:
    """Each tenant's `network` to its sandbox (from its next command or shell on); without a sandbox
    nothing can take a child's network away, which is said once per change rather than ignored."""
    from daemon.users import account_name

    def apply(before: tuple[Tenant, ...], after: tuple[Tenant, ...]) -> None:
        for tenant in before:
            people.network.pop(account_name(tenant.name, people.prefix), None)
        for tenant in after:
            if tenant.network is not None:
                people.network[account_name(tenant.name, people.prefix)] = tenant.network
        cut = [tenant.name for tenant in after if tenant.network is False]
        if cut and not sandboxed:
            log.warning("tenants %s: network = false needs --sandbox bwrap; their commands keep the network",
                        ", ".join(cut))

    return apply


def _gone(before: tuple[Tenant, ...], after: tuple[Tenant, ...]) -> set[str]:
    """Tenants removed, or whose token changed: what they opened must end."""
    kept = {(tenant.name, tenant.digest) for tenant in after}
    return {tenant.name for tenant in before if (tenant.name, tenant.digest) not in kept}


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size


TENANTS = web.AppKey("tenants", TenantBook)
#: The user a request authenticated as, set by `daemon.http.auth.identify`: a tenant (its name), or the
#: user a page session logged in as (multi-user: the admin key and a user id at /login).
TENANT = web.RequestKey("opentermd.tenant", str)


def book_of(app: Mapping[Any, Any]) -> TenantBook | None:
    return app.get(TENANTS)


def login(app: Mapping[Any, Any], token: str) -> str | None:
    """The tenant a login form's token names (for a page session of its own), or None."""
    book = book_of(app)
    tenant = book.find(token) if book is not None else None
    return tenant.name if tenant is not None else None


def cleanup_context(book: TenantBook) -> Callable[[web.Application], AsyncIterator[None]]:
    """While the app runs: inotify on the file's folder (the file is usually replaced by a rename,
    so a watch on the file itself would go stale) and SIGHUP both make the book read it again; and a
    removed tenant's commands and shells (the app's, which exist only while it runs) end."""

    async def watch(app: web.Application) -> AsyncIterator[None]:
        book.subscribe(work_ender(app))
        loop = asyncio.get_running_loop()
        notify = _watch(book.path.parent)
        if notify is not None:
            def readable() -> None:
                if book.path.name in {event.name for event in notify.read(timeout=0)}:
                    book.reload()

            loop.add_reader(notify.fileno(), readable)
        hangup = _on_hangup(loop, book)
        try:
            yield
        finally:
            if hangup:
                loop.remove_signal_handler(signal.SIGHUP)
            if notify is not None:
                loop.remove_reader(notify.fileno())
                notify.close()

    return watch


def _watch(folder: Path) -> INotify | None:
    notify: INotify | None = None
    try:
        notify = INotify()
        notify.add_watch(folder, flags.MOVED_TO | flags.CLOSE_WRITE | flags.CREATE | flags.DELETE)
    except OSError as exc:
        log.warning("cannot watch %s for tenant changes (checked per request and on SIGHUP): %s", folder, exc)
        if notify is not None:
            with contextlib.suppress(OSError):
                notify.close()
        return None
    return notify


def _on_hangup(loop: asyncio.AbstractEventLoop, book: TenantBook) -> bool:
    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: book.reload(force=True))
    except (RuntimeError, ValueError, NotImplementedError):
        return False  # not the main thread (an embedded app): the watch and the per-request check remain
    return True
