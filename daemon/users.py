"""Several users on one daemon (`OPEN_TERMINAL_MULTI_USER`): an account and a home per `X-User-Id`.

As root each user gets a Linux account of their own (`useradd`, home mode 0700 owned by it), and every
command and terminal shell runs as that uid (`setpriv` placed before bubblewrap, so that bwrap runs
unprivileged in its own user namespace and the files it writes belong to the user). Without root the
accounts cannot differ, so the separation is the sandbox's alone: each user's bwrap sees its own home
as the workspace and an empty folder over everyone else's (multi-user without root needs `--sandbox bwrap`).

The file API reaches only the requesting user's home. Its handlers use the app's one `FileScope` and
`SessionDirectories`; in multi-user mode those are `UserScope` and `UserDirectories`, which answer for
the account the middleware put in `CURRENT` for this request (a context variable: `asyncio.to_thread`
copies it into the worker thread, and no other request can see it).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hashlib
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from daemon import sandbox
from daemon.errors import ApiError
from daemon.files.cwd import SessionDirectories
from daemon.files.paths import FileScope
from daemon.http.endpoints import Access
from daemon.keys import PROCESSES, TERMINALS
from daemon.net import ports
from daemon.net.ports import ListeningPort
from daemon.owner import FILE_OWNER, Owner, owner_of
from daemon.sandbox import Sandbox, UserSwitch

if TYPE_CHECKING:
    from daemon.config import Config

log = logging.getLogger(__name__)

MISSING_USER = "X-User-Id is required in multi-user mode"
#: Said at start: as root the uids keep the homes apart, but only the sandbox's own /proc hides processes.
NO_SANDBOX = ("multi-user mode without --sandbox bwrap: each user's commands run as their own uid in their "
              "own home, but users can see each other's processes and command lines (ps, /proc); "
              "use --sandbox bwrap (OPEN_TERMINAL_SANDBOX=bwrap) to isolate them")
#: Linux account names: at most 32 characters, a lowercase letter first (useradd's default rule).
MAX_NAME = 32
#: Characters of the id kept readable in the account name (the reference keeps 8 and stops there:
#: two ids with the same first 8 characters then share one account).
READABLE = 8
#: Hex digits of the id's SHA-256 after them: 40 bits, so that two ids meet only by a deliberate search.
HASHED = 10
#: Below this uid accounts are the system's own, never one of ours.
FIRST_USER_UID = 1000
#: Room left for OPEN_TERMINAL_USER_PREFIX: the "_" before the hash and a possible leading "u".
MAX_PREFIX = MAX_NAME - READABLE - HASHED - 2
PREFIX_PATTERN = re.compile(rf"[a-z_][a-z0-9_-]{{0,{MAX_PREFIX - 1}}}")

#: The account of the request being handled (set by `middleware`), None outside one.
CURRENT: contextvars.ContextVar[Account | None] = contextvars.ContextVar("opentermd_account", default=None)


class UsersUnavailable(Exception):
    """Multi-user mode cannot give each user their own confinement here; the message says why."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


def account_name(user_id: str, prefix: str = "") -> str:
    """A valid, collision-resistant Linux name for `user_id`: prefix, up to 8 readable characters, a hash."""
    readable = re.sub(r"[^a-z0-9]", "", user_id.lower())[:READABLE]
    digest = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:HASHED]
    name = f"{prefix}{readable}_{digest}" if readable else f"{prefix}{digest}"
    return name if name[0].isalpha() or name[0] == "_" else f"u{name}"


def check_prefix(prefix: str) -> str:
    """`OPEN_TERMINAL_USER_PREFIX`: it must keep every name valid and within 32 characters."""
    if prefix and not PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(f"must be lowercase letters, digits, '_' or '-' (a letter or '_' first), at most "
                         f"{MAX_PREFIX} characters")
    return prefix


class Users:
    """Accounts by user id: made on first use, cached, and the confinement each one's children get."""

    def __init__(self, homes: Path, prefix: str = "", *, as_root: bool, sandbox: Sandbox | None,
                 max_users: int = 1000) -> None:
        self.homes = homes
        self.prefix = prefix
        self.max_users = max_users
        #: The names `account_name` makes with this prefix: what counts against `max_users`.
        self._ours = re.compile(f"u?{re.escape(prefix)}(?:[a-z0-9]{{1,{READABLE}}}_)?[0-9a-f]{{{HASHED}}}")
        self.as_root = as_root
        self._sandbox = sandbox
        self._setpriv = shutil.which("setpriv") or "setpriv"
        self._env = shutil.which("env") or "/usr/bin/env"
        self._accounts: dict[str, Account] = {}
        self._scopes: dict[str, FileScope] = {}
        self._lock = threading.Lock()
        #: A user's own network switch (a tenant's `network`), by account name; absent: the sandbox's.
        self.network: dict[str, bool] = {}

    def account(self, user_id: str) -> Account:
        """The user's account, made now if it is new (blocking: `useradd` took 15 ms p50, 31 ms max here; call
        it off the loop). A known user costs a dict lookup (0.2 µs) and ~500 bytes."""
        found = self._accounts.get(user_id)  # the usual case, without waiting for another user's useradd
        if found is not None:
            return found
        with self._lock:
            found = self._accounts.get(user_id)
            if found is None:
                name = account_name(user_id, self.prefix)
                self._check_room(name)
                found = self._provision(name) if self.as_root else self._folder(name)
                self._accounts[user_id] = found
                confinement = self.sandbox_of(found)
                self._scopes[found.name] = FileScope(found.home, confinement if confinement.bwrap else None)
            return found

    def _check_room(self, name: str) -> None:
        """A new home only while fewer than `max_users` of ours are there: an X-User-Id per request would
        otherwise make accounts and homes without end. Counted on disk, so a restart does not reset it."""
        if (self.homes / name).exists():
            return
        try:
            made = sum(1 for entry in os.scandir(self.homes) if self._ours.fullmatch(entry.name))
        except FileNotFoundError:
            made = 0
        if made >= self.max_users:
            raise ApiError(429, f"Too many users ({self.max_users}, OPEN_TERMINAL_MAX_USERS): no account is made "
                                "for another X-User-Id")

    def known(self, user_id: str) -> Account | None:
        """The user's account if this daemon has made or found it already (never makes one)."""
        return self._accounts.get(user_id)

    def scope(self, account: Account) -> FileScope:
        return self._scopes[account.name]

    def sandbox_for(self, owner: Owner) -> Sandbox | None:
        """What a child of this owner runs in: as their uid, in their own home, the others' hidden."""
        return self.sandbox_of(self.account(owner.user_id))

    def sandbox_of(self, account: Account) -> Sandbox:
        switch = UserSwitch(self._setpriv, self._env, account.uid, account.gid, account.name, account.home)
        if self._sandbox is None:  # as root only (from_config refuses otherwise): the uid is the wall
            return Sandbox("", Path(account.home), user=switch)
        return dataclasses.replace(self._sandbox, workspace=Path(account.home),
                                   hidden=(*self._sandbox.hidden, self.homes),
                                   user=switch if self.as_root else None, home=account.home,
                                   network=self.network.get(account.name, self._sandbox.network))

    def _folder(self, name: str) -> Account:
        home = self.homes / name
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        _refuse_link(home)
        return Account(name, os.getuid(), os.getgid(), str(home))

    def _provision(self, name: str) -> Account:
        try:
            found = pwd.getpwnam(name)
        except KeyError:
            log.info("multi-user: creating the account %s", name)
            self.homes.mkdir(mode=0o755, parents=True, exist_ok=True)
            done = subprocess.run(["useradd", "--create-home", "--base-dir", str(self.homes), "--shell",
                                   "/bin/bash", "--user-group", "--key", "UMASK=077", name],
                                  capture_output=True, timeout=60, check=False)
            if done.returncode != 0:
                detail = done.stderr.decode(errors="replace").strip()
                raise ApiError(503, f"Cannot create the account for this user: {detail}") from None
            found = pwd.getpwnam(name)
        if found.pw_uid < FIRST_USER_UID or found.pw_uid in (os.getuid(), os.geteuid()):
            raise ApiError(403, f"Refusing to use the system account {name!r}")
        home = Path(found.pw_dir)
        home.mkdir(mode=0o700, exist_ok=True)
        _refuse_link(home)
        os.chown(home, found.pw_uid, found.pw_gid)
        home.chmod(0o700)
        return Account(name, found.pw_uid, found.pw_gid, str(home))


USERS = web.AppKey("users", Users)

#: Scans of /proc before `end_processes_of` gives up on a uid whose processes keep forking.
END_ROUNDS = 50


def end_processes_of(uid: int) -> int:
    """SIGKILL every process whose real or effective uid is `uid` (one of our accounts: never below 1000
    nor the daemon's), scanning /proc again until none is left, since one may fork between a scan and its
    kill. Reaches what left its process group (`setsid cmd &`), as killing the groups alone would not.
    Each kill goes through a pidfd opened before the uid is checked, so a reused pid is never hit.
    Returns how many were killed; blocking (run it off the loop)."""
    if uid < FIRST_USER_UID or uid in (os.getuid(), os.geteuid()):
        raise ValueError(f"refusing to end the processes of uid {uid}")
    killed = 0
    for _ in range(END_ROUNDS):
        found = 0
        for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()):
            found += _kill_if_owned(pid, uid)
        killed += found
        if not found:
            return killed
    log.warning("uid %d: processes still appearing after %d rounds of SIGKILL", uid, END_ROUNDS)
    return killed


def _kill_if_owned(pid: int, uid: int) -> int:
    try:
        handle = os.pidfd_open(pid)
    except OSError:
        return 0  # gone already
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        if str(uid) not in fields.get("Uid", "").split()[:2] or fields.get("State", "").split()[:1] == ["Z"]:
            return 0  # someone else's, or dead already (a zombie waits for its parent, not for a signal)
        signal.pidfd_send_signal(handle, signal.SIGKILL)
        return 1
    except OSError:
        return 0  # exited meanwhile
    finally:
        os.close(handle)


def identity() -> dict[str, str]:
    """The system prompt's `user` and `home` for the request's user; empty in single-user mode."""
    account = CURRENT.get()
    return {} if account is None else {"user": account.name, "home": account.home}


def trash_config(config: Config) -> Config:
    """Multi-user: no trash yet. The one trash the daemon keeps lies at its root (here, above every
    home), so one user could list and restore another's deleted files: deletes are for good instead."""
    return dataclasses.replace(config, trash=False) if config.multi_user else config


def _refuse_link(home: Path) -> None:
    if home.is_symlink() or not home.is_dir():
        raise ApiError(503, f"The user's home {home} is not a folder of its own")


def from_config(config: Config, sandbox: Sandbox | None) -> Users | None:
    """The users of a multi-user daemon, or None in single-user mode; refuses what would not separate them."""
    if not config.multi_user:
        return None
    as_root = os.geteuid() == 0
    if not as_root and sandbox is None:
        raise UsersUnavailable("multi-user mode without root needs --sandbox bwrap (OPEN_TERMINAL_SANDBOX=bwrap): "
                               "only the sandbox can keep one user's commands out of another's home")
    if as_root and shutil.which("useradd") is None:
        raise UsersUnavailable("multi-user mode as root needs useradd (Debian package passwd)")
    if as_root and shutil.which("setpriv") is None:
        raise UsersUnavailable("multi-user mode as root needs setpriv (Debian package util-linux)")
    if sandbox is None:
        log.warning(NO_SANDBOX)
    homes = config.user_homes or (Path("/home") if as_root else config.state_dir / "homes")
    return Users(Path(os.path.realpath(homes)), config.user_prefix, as_root=as_root, sandbox=sandbox,
                 max_users=config.max_users)


class UserScope(FileScope):
    """The file scope of the request's user: their home is the root (as `--root` would be), with
    their sandbox's view when there is one. FileScope's methods run unchanged; the state they read
    (`root`, `beneath`, `sandbox`) is the current user's scope's."""

    def __init__(self, users: Users) -> None:  # no super().__init__: the state is per request
        self._users = users

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_users":
            raise AttributeError(name)
        account = CURRENT.get()
        # Outside a request (start-up, sweeps): all homes, never the whole machine.
        mine = FileScope(str(self._users.homes)) if account is None else self._users.scope(account)
        return getattr(mine, name)


class UserDirectories(SessionDirectories):
    """Chat working directories, starting in the request's user's home (entries are keyed by home)."""

    def __init__(self, users: Users, ttl: float) -> None:
        super().__init__(str(users.homes), ttl)
        self._users = users

    @property
    def home(self) -> str:
        account = CURRENT.get()
        return account.home if account is not None else str(self._users.homes)

    @home.setter
    def home(self, value: str) -> None:
        pass  # SessionDirectories.__init__ sets it; each request's home is its user's


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(users: Users, access: dict[Any, Access]) -> Any:
    """Every request but the public ones names its user; the account is made before the handler runs,
    and the handler's file scope, chat folders, sandbox (for kernels, git, file workers) are theirs."""

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = request.match_info
        if match.http_exception is not None or access.get(match.route, Access.BEARER) is Access.PUBLIC:
            return await handler(request)
        account = await account_of(request, users)
        confinement = users.sandbox_of(account)
        token = CURRENT.set(account)
        # Kernels, document workers and git (started deep inside handlers) run as the user too.
        box = sandbox.CURRENT.set(confinement if confinement.bwrap or confinement.user else None)
        owned = FILE_OWNER.set((account.uid, account.gid) if users.as_root else None)
        try:
            return await handler(request)
        finally:
            FILE_OWNER.reset(owned)
            sandbox.CURRENT.reset(box)
            CURRENT.reset(token)

    return handle


async def account_of(request: web.Request, users: Users) -> Account:
    """The request's user's account (made on first use); 400 when the request names no user."""
    user_id = owner_of(request).user_id
    if not user_id:
        raise ApiError(400, MISSING_USER)
    return await asyncio.to_thread(users.account, user_id)


def own_ports(listed: Sequence[ListeningPort], roots: Iterable[int]) -> list[ListeningPort]:
    """The ports that the user's own commands and shells (`roots`) or their descendants listen on."""
    mine = set(roots)
    for root in list(mine):
        mine |= ports.descendants(root)
    return [entry for entry in listed if entry.pid in mine]


def user_roots(app: web.Application, user_id: str) -> set[int]:
    roots = app[PROCESSES].pids_of(user_id)
    if TERMINALS in app:
        roots |= app[TERMINALS].pids_of(user_id)
    return roots


async def ports_of(request: web.Request) -> list[ListeningPort] | None:
    """Multi-user: the listening ports of the request's user only (400 without one); None otherwise."""
    users = request.app.get(USERS)
    if users is None:
        return None
    await account_of(request, users)  # 400 without a user
    user_id = owner_of(request).user_id
    listed = await asyncio.to_thread(ports.listening_ports)
    return own_ports(listed, user_roots(request.app, user_id))
