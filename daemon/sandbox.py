"""How a command or a terminal shell is confined: the bubblewrap argv put before it.

With `--sandbox bwrap` every child gets its own mount, pid, ipc, uts and (unless the network is on)
network namespaces: the system read-only, the workspace (`--root`, else `--cwd`) read-write, a
private `/tmp`, and empty folders over what the daemon keeps to itself (its state directory, logs,
config folder, the host's `/run` sockets) and over other people's homes (`/root`, `/home`: the
workspace is bound back, and so is the daemon's own interpreter, read-only, when it lies in one, so that
kernels and workers still start); a key file is replaced by `/dev/null`.

No `--new-session`: the PTY must stay the controlling terminal so that `\\x03` interrupts. Its usual
reason, TIOCSTI (pushing input into the terminal), buys nothing here: each child's PTY is its own,
only sandboxed processes read from it, and it is closed once they are gone.

Mounts are ordered parent first, so a hidden folder inside the workspace stays hidden and a
workspace inside a hidden folder (or under `/tmp`) stays visible.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from daemon.config import SYSTEM_CONFIG

if TYPE_CHECKING:
    from daemon.config import Config

MODES = ("off", "bwrap")
#: Where people's homes are: each becomes an empty folder in the sandbox (but the workspace, and the
#: daemon's interpreter when it lies there, shown again).
HOMES = (Path("/root"), Path("/home"))
#: Processes between the spawned bwrap and the command: bwrap itself, then its init (pid 1 inside).
WRAPPERS = 2


#: The sandbox's own /tmp (a tmpfs, shared by the commands of one resident sandbox): an interpreter
#: there (a checkout or a venv under /tmp, a one-file binary unpacked in /tmp/_MEI*) is shown again,
#: as one in a hidden home is.
OWN_TMP = Path("/tmp")


class SandboxUnavailable(Exception):
    """bubblewrap is missing or cannot make namespaces here; the message says which."""


class Access(enum.IntEnum):
    """What a sandboxed command can do at a path; the file API allows the same (see `access`)."""

    NONE = 0  # hidden (an empty tmpfs, /dev/null), or the sandbox's own /proc, /dev and /tmp
    READ = 1
    WRITE = 2


@dataclass(frozen=True)
class Mount:
    path: Path
    access: Access
    argv: tuple[str, ...]


@dataclass(frozen=True)
class UserSwitch:
    """Multi-user as root (daemon/users.py): become the user's uid before bwrap, so that bwrap runs
    unprivileged in a user namespace of its own and what the command writes belongs to the user.
    setpriv and env exec, so they add no process for `command_pid` to step over."""

    setpriv: str
    env: str
    uid: int
    gid: int
    name: str
    home: str

    def prefix(self) -> list[str]:
        return [self.setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *self._env()]

    def inside(self) -> list[str]:
        """The switch as the sandbox's first command (`Sandbox.inside`): the only capabilities bwrap
        hands it (setuid, setgid) go with the switch, and none is left inheritable."""
        return [self.setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--inh-caps=-all",
                "--", *self._env()]

    def _env(self) -> list[str]:
        return [self.env, f"HOME={self.home}", f"USER={self.name}", f"LOGNAME={self.name}"]


@dataclass(frozen=True)
class Sandbox:
    #: "" when only the user is switched (multi-user as root with --sandbox off).
    bwrap: str
    workspace: Path
    network: bool = True
    #: Folders replaced by an empty tmpfs.
    hidden: tuple[Path, ...] = ()
    #: Files replaced by /dev/null.
    hidden_files: tuple[Path, ...] = ()
    user: UserSwitch | None = None
    #: Folders shown read-only although they lie in a hidden one: the daemon's own interpreter.
    revealed: tuple[Path, ...] = ()
    #: The uid switch made inside bwrap (which then runs as root) instead of before it: see `inside`.
    switch_inside: bool = False
    #: The HOME its children get: a user's own in multi-user mode without root (with root the uid
    #: switch sets it), not the daemon's, which the sandbox shows read-only if at all.
    home: str = ""

    def mounts(self) -> list[Mount]:
        """What the sandbox shows, parent first: the one definition behind bwrap's argv and the file API.

        /proc, /dev and /tmp are the sandbox's own (a new procfs, a minimal /dev, a tmpfs):
        the host's are not what a command sees, so the file API refuses them (NONE).
        """
        mounts = [Mount(Path("/"), Access.READ, ("--ro-bind", "/", "/")),
                  Mount(Path("/dev"), Access.NONE, ("--dev", "/dev")),
                  Mount(Path("/proc"), Access.NONE, ("--proc", "/proc")),
                  Mount(OWN_TMP, Access.NONE, ("--perms", "1777", "--tmpfs", str(OWN_TMP))),  # as a /tmp is
                  Mount(self.workspace, Access.WRITE, ("--bind", str(self.workspace), str(self.workspace)))]
        mounts += [Mount(folder, Access.NONE, ("--tmpfs", str(folder))) for folder in self.hidden
                   if folder.is_dir() and folder not in (self.workspace, Path("/"))]
        mounts += [Mount(path, Access.NONE, ("--ro-bind", "/dev/null", str(path))) for path in self.hidden_files
                   if path.is_file()]
        mounts += [Mount(path, Access.READ, ("--ro-bind", str(path), str(path))) for path in _resolver(self.hidden)]
        if self.user is None or self.switch_inside:  # a uid switched before bwrap cannot reach them
            mounts += [Mount(path, Access.READ, (*self._passable(path), "--ro-bind", str(path), str(path)))
                       for path in self.revealed if path.is_dir() and not path.is_relative_to(self.workspace)]
        mounts.sort(key=lambda mount: len(mount.path.parts))  # stable: /tmp before a workspace at /tmp
        return mounts

    def _passable(self, path: Path) -> list[str]:
        """The folders bwrap makes on the way to `path` in a hidden one, searchable by every uid (it
        would make them 0700, as root's, and a kernel switched to its user could not pass)."""
        above = [folder for folder in (*self.hidden, OWN_TMP) if path.is_relative_to(folder) and path != folder]
        if not above:
            return []
        top = max(above, key=lambda folder: len(folder.parts))
        steps = [parent for parent in reversed(path.parents) if parent.is_relative_to(top) and parent != top]
        return [argument for step in steps for argument in ("--perms", "0755", "--dir", str(step))]

    def access(self, real: str | Path) -> Access:
        """What a command may do at the real path `real`: the deepest mount that holds it decides."""
        path, decided = Path(real), Access.NONE
        for folder, access in self._rules:
            if path.is_relative_to(folder):
                decided = access
        return decided

    def hidden_below(self, top: str) -> list[str]:
        """The hidden paths strictly below `top`, for a walk or ripgrep to leave out. (A workspace
        inside one of them, as under /tmp, is left out of a walk from above it as well.)"""
        below = Path(top)
        return [str(path) for path, access in self._rules
                if access == Access.NONE and path != below and path.is_relative_to(below)]

    @functools.cached_property
    def _rules(self) -> tuple[tuple[Path, Access], ...]:
        """The mounts' paths and access; a hidden path that does not exist (yet) is hidden all the same."""
        rules = [(mount.path, mount.access) for mount in self.mounts()]
        rules += [(path, Access.NONE) for path in (*self.hidden, *self.hidden_files)
                  if path not in (self.workspace, Path("/"))]
        return tuple(sorted(rules, key=lambda rule: len(rule[0].parts)))

    def prefix(self, cwd: str, binds: Sequence[str] = (), unset: Sequence[str] = (), init: bool = False) -> list[str]:
        """The argv that runs what follows it inside the sandbox, starting in `cwd`; `binds` are host
        folders shown read-write at the same place (a kernel's socket folder under /tmp); `unset` are
        environment variables taken away; `init`: what follows is the sandbox's pid 1 (daemon/launcher.py),
        not a child of bwrap's own init."""
        if self.switch_inside and self.user is not None:
            # bwrap as root makes no user namespace (its uid 0 could not become the user's in one), and
            # hands the command only what `UserSwitch.inside` needs to become the user.
            argv = [self.bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                    *(() if self.network else ("--unshare-net",)), "--cap-add", "CAP_SETUID,CAP_SETGID"]
        else:
            # No capability, even in its own user namespace: bwrap keeps them all for a daemon running
            # as root, and with them a command could unmount the tmpfs over the state folder.
            argv = [self.bwrap, "--unshare-all", *(("--share-net",) if self.network else ()), "--cap-drop", "ALL"]
        argv.append("--die-with-parent")
        if init:
            argv.append("--as-pid-1")
        for mount in self.mounts():
            argv += mount.argv
        for folder in binds:
            argv += ["--bind", folder, folder]
        for name in unset:
            argv += ["--unsetenv", name]
        if self.home and self.user is None:
            argv += ["--setenv", "HOME", self.home]
        return [*argv, "--chdir", cwd]

    def wrap(self, argv: Sequence[str], cwd: str, binds: Sequence[str] = (), unset: Sequence[str] = (),
             init: bool = False) -> list[str]:
        if self.switch_inside and self.user is not None and self.bwrap:
            return [*self.prefix(cwd, binds, unset, init), *self.user.inside(), *argv]
        inner = [*self.prefix(cwd, binds, unset, init), *argv] if self.bwrap else list(argv)
        return [*self.user.prefix(), *inner] if self.user is not None else inner

    def inside(self) -> Sandbox:
        """This sandbox with the uid switched inside bwrap, for a child that needs the daemon's own
        interpreter (a notebook kernel): a user's bwrap cannot reach it through a hidden `/root`, bwrap as
        root can. Only as root (bwrap privileged); otherwise the sandbox as it is."""
        if self.user is None or not self.bwrap or os.geteuid() != 0:
            return self
        return dataclasses.replace(self, switch_inside=True)


def _resolver(hidden: Sequence[Path]) -> list[Path]:
    """/etc/resolv.conf is often a link into /run (systemd-resolved): keep name lookups working."""
    try:
        target = Path("/etc/resolv.conf").resolve(strict=True)
    except OSError:
        return []
    if any(target.is_relative_to(folder) for folder in hidden) and target.is_file():
        return [target]
    return []


#: The sandbox of the app serving the current request: file workers, git and notebook kernels are
#: started deep inside endpoints that do not hold the app, so the request carries it (`middleware`).
CURRENT: ContextVar[Sandbox | None] = ContextVar("opentermd_sandbox", default=None)


def current() -> Sandbox | None:
    return CURRENT.get()


def middleware(box: Sandbox | None) -> Any:
    """Sets `CURRENT` for every request of an app (tasks a handler starts inherit it)."""

    @web.middleware
    async def sandbox_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        token = CURRENT.set(box)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            CURRENT.reset(token)

    return sandbox_middleware


def from_config(config: Config) -> Sandbox | None:
    """The sandbox the settings ask for, or None when it is off."""
    if config.sandbox == "off":
        return None
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("--sandbox bwrap needs bubblewrap (apt-get install bubblewrap): bwrap not on PATH")
    own = [config.state_dir, config.log_dir or config.state_dir]
    for folder in own:
        # Made now, so that a sandboxed command cannot plant it (or a symlink in its place) first.
        with contextlib.suppress(OSError):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    hidden = [*own, Path("/run"), *HOMES]
    # The config files may hold the key too.
    hidden += [SYSTEM_CONFIG.parent] + ([config.config_file.parent] if config.config_file is not None else [])
    # The tenants file holds only digests, but which tenants there are and their limits are the daemon's.
    files = [path for path in (config.api_key_file, config.tenants_file) if path is not None]
    hidden = list(dict.fromkeys(_absolute(path) for path in hidden))
    return Sandbox(bwrap, config.file_root or config.cwd, config.sandbox_network, hidden=tuple(hidden),
                   hidden_files=tuple(_absolute(path) for path in files),
                   revealed=tuple(folder for folder in interpreter_folders()
                                  if any(folder.is_relative_to(place) for place in (*hidden, OWN_TMP))))


def interpreter_folders() -> list[Path]:
    """Where the daemon's own Python lives: the venv, the Python it was made from, a frozen binary's
    folder and unpacked files. Kernels and document workers run it."""
    folders = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    if getattr(sys, "frozen", False):
        folders += [os.path.dirname(sys.executable), getattr(sys, "_MEIPASS", sys.prefix)]
    else:  # this package itself, which a source checkout (an editable install) keeps outside the venv
        folders.append(os.path.dirname(os.path.abspath(__file__)))
    return list(dict.fromkeys(_absolute(Path(folder)) for folder in folders))


def reachable_by_others(folders: Sequence[Path]) -> bool:
    """Whether any uid can run what is in `folders`: every folder above them searchable by others."""
    for folder in folders:
        for step in (folder, *folder.parents):
            try:
                if not step.stat().st_mode & stat.S_IXOTH:
                    return False
            except OSError:
                return False
    return True


def _absolute(path: Path) -> Path:
    return Path(os.path.realpath(path))


def check(sandbox: Sandbox) -> None:
    """Start `true` in the sandbox once, so a machine without user namespaces fails at start-up."""
    try:
        done = subprocess.run(sandbox.wrap(["/bin/true"], "/"), capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"bubblewrap cannot start: {exc}") from exc
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        raise SandboxUnavailable(f"bubblewrap cannot make a sandbox here: {reason}")


def command_pid(pid: int) -> int:
    """The sandboxed command's pid seen from the host: `WRAPPERS` first children below the bwrap `pid`."""
    for _ in range(WRAPPERS):
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return pid
        if not children:
            return pid
        pid = int(children[0])
    return pid
