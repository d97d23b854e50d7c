"""Resource limits per command tree, per terminal and per user: which mechanism, and the argv that applies it.

Every command or terminal shell gets a group of its own (`cmd-<id>`, `term-<id>`) inside a group per
user (`user-<hash of Owner.user_id>`), inside one group per daemon. The child joins its groups BEFORE
it execs anything of the command: the spawned program is a tiny `/bin/sh` that writes its own pid
into each group's `cgroup.procs`, then execs `prlimit` (which sets its rlimits and execs on), then
the sandbox and the command. Both exec, so the command's pid is the spawned one (`sandbox.command_pid`
still finds it) and no instant of the command runs outside its limits.

Mechanisms, best first (`OPEN_TERMINAL_LIMIT_MECHANISM=auto` picks the first that works here):
- `cgroup2`: a delegated cgroup v2 group (pids.max, memory.max, memory.events' oom_kill).
- `cgroup1`: writable v1 `pids` and `memory` hierarchies (pids.max, memory.limit_in_bytes and
  memory.memsw.limit_in_bytes, memory.oom_control's oom_kill). Both are thin mappings of the same
  operations (`cgroups.py`), so the v1 tests here exercise the shared logic.
- `rlimit`: RLIMIT_NPROC and RLIMIT_AS instead of the groups: per process, not per tree.
File size (RLIMIT_FSIZE) and CPU seconds (RLIMIT_CPU) are rlimits under every mechanism.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.cgroups import Cgroups, find_cgroups

if TYPE_CHECKING:
    from daemon.config import Config

log = logging.getLogger(__name__)

MECHANISMS = ("auto", "cgroup2", "cgroup1", "rlimit")
#: The limit a finished command hit, as its status and its log's end record say it.
MEMORY, PROCESSES, CPU, FILE_SIZE = "memory", "processes", "cpu", "file_size"
#: Joins each group named before `--`, then execs what follows. `exit 126` (cannot execute): a
#: command whose group cannot be joined never runs unconfined.
JOIN_SCRIPT = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"'
#: Seconds between SIGXCPU (the soft CPU limit: the command may say so and exit) and SIGKILL.
CPU_GRACE = 1
#: Tries, 20 ms apart, to remove the groups at shutdown once their processes are killed.
CLOSE_TRIES = 50
#: Seconds before a busy ended group is tried again, doubling up to RETRY_MAX.
RETRY_FIRST, RETRY_MAX = 0.05, 5.0

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class LimitsUnavailable(OSError):
    """The mechanism asked for cannot be used here; the message says why."""


def parse_size(text: str) -> int | None:
    """`2G`, `512M`, `100k`, `1.5GiB` or plain bytes (powers of 1024); empty, `0` or `off`: no limit."""
    if text.strip().lower() in ("", "0", "off", "none"):
        return None
    match = _SIZE.match(text)
    if match is None:
        raise ValueError("expected a size such as 2G, 512M or 1048576")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()]) or None


def parse_count(text: str) -> int | None:
    """A positive whole number; empty, `0` or `off`: no limit."""
    if text.strip().lower() in ("", "0", "off", "none"):
        return None
    value = int(text)
    if value < 0:
        raise ValueError(f"must be positive, got {text}")
    return value


def parse_mechanism(text: str) -> str:
    value = text.strip().lower()
    if value not in MECHANISMS:
        raise ValueError("expected " + ", ".join(MECHANISMS))
    return value


@dataclass(frozen=True)
class TreeLimits:
    """What one command tree or terminal may use; None: unlimited."""

    processes: int | None = None
    memory: int | None = None
    file_size: int | None = None
    cpu_seconds: int | None = None


@dataclass(frozen=True)
class UserLimits:
    """What all of one user's trees may use together; None: unlimited."""

    processes: int | None = None
    memory: int | None = None


@dataclass(eq=False)
class LimitGroup:
    """One command tree's (or terminal's) groups; `wrap` puts the child in them before its exec."""

    limits: Limits
    user: str
    name: str
    user_id: str = ""
    joins: tuple[Path, ...] = ()
    closed: bool = field(default=False)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return [*self.limits.prefix(self.joins, self.user_id), *argv]

    def finished(self, exit_code: int) -> str | None:
        """The limit the tree hit (or None), read before its groups are removed."""
        reason = self.limits.reason(self, exit_code)
        self.limits.release(self)
        return reason


class Limits:
    """The daemon's limits and the groups it made; created and closed with the app."""

    def __init__(self, tree: TreeLimits, user: UserLimits, mechanism: str, cgroups: Cgroups | None,
                 prlimit: str | None) -> None:
        self.tree = tree
        self.user = user
        self.mechanism = mechanism
        self._cgroups = cgroups
        self._prlimit = prlimit
        #: Per-user totals set at run time (a tenant's own limits), by user id.
        self._user_overrides: dict[str, UserLimits] = {}
        #: Groups whose tree has ended but which still held a process (a background job) at the time.
        self._lingering: list[LimitGroup] = []
        self._open: set[LimitGroup] = set()
        self._retry: asyncio.TimerHandle | None = None
        self._retry_delay = RETRY_FIRST

    @property
    def active(self) -> bool:
        return any(value is not None for value in (*vars(self.tree).values(), *vars(self.user).values())) or bool(
            self._user_overrides)

    def describe(self) -> dict[str, object]:
        """The mechanism and each limit, and what enforces it (for `GET /api/limits`)."""
        grouped = self._cgroups is not None
        return {
            "mechanism": self.mechanism if self.active else "off",
            "tree": vars(self.tree), "user": vars(self.user),
            "enforced_by": {
                PROCESSES: "pids.max (per tree and per user)" if grouped else "RLIMIT_NPROC (per uid; not for root)",
                MEMORY: ("memory.max" if self.mechanism == "cgroup2" else "memory.limit_in_bytes")
                if grouped else "RLIMIT_AS (per process, address space)",
                FILE_SIZE: "RLIMIT_FSIZE (per process, per file)",
                "cpu_seconds": "RLIMIT_CPU (per process)",
            },
        }

    def set_user_limits(self, user_id: str, limits: UserLimits | None) -> None:
        """A user's own totals (a tenant's), instead of the daemon-wide ones; None: back to those."""
        if limits is None:
            self._user_overrides.pop(user_id, None)
        else:
            self._user_overrides[user_id] = limits
        if self._cgroups is not None and self._cgroups.exists(user_group(user_id)):
            self._cgroups.set_limits(user_group(user_id), *self._user_totals(user_id))

    def _user_totals(self, user_id: str) -> tuple[int | None, int | None]:
        chosen = self._user_overrides.get(user_id, self.user)
        return chosen.processes, chosen.memory

    def open(self, user_id: str, name: str) -> LimitGroup | None:
        """The groups for a new tree, made now; None when no limit is set (today's spawn, exactly)."""
        if not self.active:
            return None
        self._retry_lingering()
        group = LimitGroup(self, user_group(user_id), name, user_id)
        if self._cgroups is not None:
            user = user_group(user_id)
            if not self._cgroups.exists(user):
                self._cgroups.make(user)
                self._cgroups.set_limits(user, *self._user_totals(user_id))
            path = f"{user}/{name}"
            self._cgroups.make(path)
            self._cgroups.set_limits(path, self.tree.processes, self.tree.memory)
            group.joins = tuple(self._cgroups.procs_files(path))
        self._open.add(group)
        return group

    def prefix(self, joins: Sequence[Path], user_id: str = "") -> list[str]:
        argv: list[str] = []
        if joins:
            argv += ["/bin/sh", "-c", JOIN_SCRIPT, "opentermd-limits", *map(str, joins), "--"]
        rlimits = self._rlimits(user_id)
        if rlimits:
            if self._prlimit is None:  # only a tenant's totals, added at run time, can get here
                raise LimitsUnavailable("this limit needs prlimit (util-linux): not on PATH")
            argv += [self._prlimit, *rlimits, "--"]
        return argv

    def _rlimits(self, user_id: str) -> list[str]:
        options = []
        if self.tree.file_size is not None:
            options.append(f"--fsize={self.tree.file_size}")
        if self.tree.cpu_seconds is not None:
            options.append(f"--cpu={self.tree.cpu_seconds}:{self.tree.cpu_seconds + CPU_GRACE}")
        if self._cgroups is None:
            # RLIMIT_NPROC counts every process of the uid: the user's total more than the tree's.
            processes = min((n for n in (self.tree.processes, self._user_totals(user_id)[0]) if n is not None),
                            default=None)
            if processes is not None:
                options.append(f"--nproc={processes}")
            if self.tree.memory is not None:
                options.append(f"--as={self.tree.memory}")
        return options

    def reason(self, group: LimitGroup, exit_code: int) -> str | None:
        if self._cgroups is not None:
            path = f"{group.user}/{group.name}"
            if self._cgroups.oom_kills(path) > 0:
                return MEMORY
            if self._cgroups.fork_refusals(path) > 0:
                return PROCESSES
        # A signal shows as -N when the command was the shell's last (exec'd), as 128+N when not.
        if self.tree.cpu_seconds is not None and exit_code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            return CPU
        if self.tree.file_size is not None and exit_code in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
            return FILE_SIZE
        return None

    def release(self, group: LimitGroup) -> None:
        """Remove the tree's groups (and its user's, when it was the last); a group still holding a
        background job is removed once that is gone (checked at each later start and end)."""
        if group.closed:
            return
        group.closed = True
        self._open.discard(group)
        if not self._remove(group):
            self._lingering.append(group)
        self._retry_lingering()

    def _remove(self, group: LimitGroup) -> bool:
        if self._cgroups is None:
            return True
        path = f"{group.user}/{group.name}"
        if not self._cgroups.remove(path):
            return False
        self._cgroups.remove(group.user)  # busy while the user has other trees: fine, kept
        return True

    def _retry_lingering(self) -> None:
        self._lingering = [group for group in self._lingering if not self._remove(group)]
        if not self._lingering:
            self._retry_delay = RETRY_FIRST
        elif self._retry is None:
            # Killed or orphaned processes leave once reaped, which may be by init, a moment later;
            # a background job that lives on is checked every RETRY_MAX seconds (one rmdir each).
            with contextlib.suppress(RuntimeError):  # no loop running (a plain function's caller)
                self._retry = asyncio.get_running_loop().call_later(self._retry_delay, self._retry_tick)
                self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)

    def _retry_tick(self) -> None:
        self._retry = None
        self._retry_lingering()

    def kill(self, group: LimitGroup) -> None:
        """SIGKILL every process in the tree's group, until none is left (a fork bomb included)."""
        if self._cgroups is not None:
            self._cgroups.kill(f"{group.user}/{group.name}")

    def group_paths(self, group: LimitGroup) -> list[Path]:
        return self._cgroups.paths(f"{group.user}/{group.name}") if self._cgroups is not None else []

    def controller_path(self, group: LimitGroup, controller: str) -> Path | None:
        """The tree's folder in one controller's hierarchy (`pids`, `memory`); None without cgroups."""
        return self._cgroups.bases[controller] / group.user / group.name if self._cgroups is not None else None

    def close(self) -> None:
        """Shutdown: whatever is left in any group is killed, then every group made is removed."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._cgroups is None:
            return
        left = [*self._open, *self._lingering]
        for group in left:
            self.kill(group)
        # A killed process leaves its group only once reaped (by us, or by init for an orphan): shortly.
        for _ in range(CLOSE_TRIES):
            left = [group for group in left if not self._remove(group)]
            if not left:
                break
            time.sleep(0.02)
        if left:
            log.warning("limits: %d cgroup(s) still busy at shutdown, left in place", len(left))
        self._cgroups.remove_base()


def user_group(user_id: str) -> str:
    # Hashed: a user id is any text the caller sends; a group name must be one safe path component.
    return "user-" + hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def from_config(config: Config) -> Limits:
    tree = TreeLimits(config.limit_processes, config.limit_memory, config.limit_file_size, config.limit_cpu_seconds)
    user = UserLimits(config.user_limit_processes, config.user_limit_memory)
    # Tenants (daemon/tenants.py) may bring per-user totals at run time: their groups must be makeable.
    return build(tree, user, config.limit_mechanism, grouped=getattr(config, "tenants_file", None) is not None)


def build(tree: TreeLimits, user: UserLimits, mechanism: str = "auto", *, grouped: bool = False) -> Limits:
    """The limits with the best mechanism allowed here; LimitsUnavailable when the one asked for is not."""
    prlimit = shutil.which("prlimit")
    needs_prlimit = tree.file_size is not None or tree.cpu_seconds is not None or mechanism == "rlimit"
    if needs_prlimit and prlimit is None:
        raise LimitsUnavailable("file size, CPU and rlimit limits need prlimit (util-linux): not on PATH")
    cgroups = None
    if mechanism != "rlimit" and (grouped or any(v is not None for v in (*vars(tree).values(), *vars(user).values()))):
        cgroups = find_cgroups(None if mechanism == "auto" else mechanism, f"opentermd-{os.getpid()}-"
                               f"{secrets.token_hex(3)}")
        if cgroups is None and mechanism != "auto":
            raise LimitsUnavailable(f"--limit-mechanism {mechanism}: no writable {mechanism} hierarchy here")
    if cgroups is None and (tree.processes is not None or tree.memory is not None) and prlimit is None:
        raise LimitsUnavailable("no cgroup can be made here and prlimit (util-linux) is not on PATH")
    chosen = cgroups.version if cgroups is not None else "rlimit"
    return Limits(tree, user, chosen, cgroups, prlimit)


def safely_close(limits: Limits) -> None:
    with contextlib.suppress(OSError):
        limits.close()
