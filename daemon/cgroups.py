"""The few cgroup operations the limits need, for v2 and for v1 `pids` + `memory` alike.

Each operation is the same on both versions but for the file it touches, so the v1 tests (this
machine has only v1 controllers) exercise all the shared logic; v2 differs only in `_FILES` and in
its one directory for both controllers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from dataclasses import dataclass
from pathlib import Path

#: Per version: controller -> (limit file, extra limit file written after it, or "").
_FILES = {
    "cgroup2": {"pids": ("pids.max", ""), "memory": ("memory.max", "memory.swap.max")},
    "cgroup1": {"pids": ("pids.max", ""), "memory": ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")},
}
#: Where a kill by the OOM killer is counted: file and its `key value` line.
_OOM = {"cgroup2": ("memory.events", "oom_kill"), "cgroup1": ("memory.oom_control", "oom_kill")}
#: Rounds of "SIGKILL every pid listed" before giving up on emptying a group (a fork bomb refills it).
KILL_ROUNDS = 200


@dataclass(frozen=True)
class Cgroups:
    """This daemon's base group in each controller's hierarchy (one directory for both under v2)."""

    version: str
    bases: dict[str, Path]

    def paths(self, relative: str) -> list[Path]:
        return list(dict.fromkeys(base / relative for base in self.bases.values()))

    def exists(self, relative: str) -> bool:
        return all(path.is_dir() for path in self.paths(relative))

    def make(self, relative: str) -> None:
        for path in self.paths(relative):
            path.mkdir(exist_ok=True)

    def set_limits(self, relative: str, processes: int | None, memory: int | None) -> None:
        """`None` writes `max` (v2) or -1 (v1): a limit removed at run time is lifted."""
        for controller, value in (("pids", processes), ("memory", memory)):
            limit_file, extra = _FILES[self.version][controller]
            unlimited = "max" if self.version == "cgroup2" or controller == "pids" else "-1"
            folder = self.bases[controller] / relative
            writes = [(folder / limit_file, unlimited if value is None else str(value))]
            if extra and (folder / extra).exists():
                # v2: no swap for the group; v1: memory+swap capped at the same figure (else a hog swaps).
                writes.append((folder / extra, unlimited if value is None else
                               ("0" if self.version == "cgroup2" else str(value))))
            if value is None or value > _number(folder / limit_file):
                writes.reverse()  # v1 refuses a memory limit above memory+swap: raise that one first
            for path, text in writes:
                _write(path, text)

    def procs_files(self, relative: str) -> list[Path]:
        return [path / "cgroup.procs" for path in self.paths(relative)]

    def oom_kills(self, relative: str) -> int:
        name, key = _OOM[self.version]
        return _counter(self.bases["memory"] / relative / name, key)

    def fork_refusals(self, relative: str) -> int:
        return _counter(self.bases["pids"] / relative / "pids.events", "max")

    def kill(self, relative: str) -> None:
        for path in self.paths(relative):
            if self.version == "cgroup2" and (path / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    _write(path / "cgroup.kill", "1")
                continue
            for _ in range(KILL_ROUNDS):
                pids = _pids(path)
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def remove(self, relative: str) -> bool:
        """rmdir in each hierarchy; False while a process is still inside."""
        removed = True
        for path in self.paths(relative):
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                removed = False
        return removed

    def remove_base(self) -> None:
        for path in self.paths(""):
            with contextlib.suppress(OSError):
                for child in path.iterdir():
                    if child.is_dir():
                        child.rmdir()
                path.rmdir()


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="ascii") as file:
        file.write(text)


def _number(path: Path) -> int:
    try:
        text = path.read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 2**63


def _counter(path: Path, key: str) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def own_groups(text: str) -> dict[str, str]:
    """`/proc/self/cgroup` as {controller: path}; v2's line is under the key ""."""
    groups: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            groups[controller] = path
    return groups


def mounts(text: str) -> list[tuple[str, Path, set[str]]]:
    """cgroup mounts from /proc/self/mountinfo: (type, mount point, super options)."""
    found = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(extra) >= 3 and extra[0] in ("cgroup", "cgroup2"):
            found.append((extra[0], Path(fields[4]), set(extra[2].split(","))))
    return found


def find_cgroups(version: str | None, name: str) -> Cgroups | None:
    """This daemon's base group `name`, made under its own group in the first version that works."""
    try:
        own = own_groups(Path("/proc/self/cgroup").read_text())
        found = mounts(Path("/proc/self/mountinfo").read_text())
    except OSError:
        return None
    for candidate in ("cgroup2", "cgroup1"):
        if version not in (None, candidate):
            continue
        bases = _v2_bases(found, own) if candidate == "cgroup2" else _v1_bases(found, own)
        if bases is not None and _made(bases, name):
            return Cgroups(candidate, {controller: base / name for controller, base in bases.items()})
    return None


def _v2_bases(found: list[tuple[str, Path, set[str]]], own: dict[str, str]) -> dict[str, Path] | None:
    for kind, point, _ in found:
        if kind != "cgroup2" or "" not in own:
            continue
        base = point / own[""].lstrip("/")
        try:
            available = set((base / "cgroup.controllers").read_text().split())
            if not {"pids", "memory"} <= available:
                continue
            # Delegated: our group must let its children use both (fails while we sit in it, unless
            # we are the only ones there and it is not the root; a systemd Delegate=yes unit is).
            _write(base / "cgroup.subtree_control", "+pids +memory")
        except OSError:
            continue
        return {"pids": base, "memory": base}
    return None


def _v1_bases(found: list[tuple[str, Path, set[str]]], own: dict[str, str]) -> dict[str, Path] | None:
    bases: dict[str, Path] = {}
    for kind, point, options in found:
        for controller in ("pids", "memory"):
            if kind == "cgroup" and controller in options and controller in own:
                bases[controller] = point / own[controller].lstrip("/")
    return bases if len(bases) == 2 else None


def _sweep_dead(base: Path) -> None:
    """Groups a daemon that died (SIGKILL, a crash) left behind: `opentermd-<pid>-*` of a pid that is gone."""
    with contextlib.suppress(OSError):
        for group in base.glob("opentermd-*-*"):
            pid = group.name.split("-")[1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                for folder in sorted(group.glob("**/"), key=lambda path: len(path.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only empty ones go: a group still in use stays


def _made(bases: dict[str, Path], name: str) -> bool:
    made: list[Path] = []
    try:
        for controller, base in bases.items():
            _sweep_dead(base)
            path = base / name
            path.mkdir()
            made.append(path)
            if controller == "memory" and (path / "memory.use_hierarchy").exists():
                with contextlib.suppress(OSError):  # already 1 (it is on new kernels): the totals per user need it
                    _write(path / "memory.use_hierarchy", "1")
    except OSError:
        for path in made:
            with contextlib.suppress(OSError):
                path.rmdir()
        return False
    return True
