"""Which folders a search must not walk into: the kernel's pseudo file systems.

Walking `/` would otherwise descend into /proc (every process's files, some of which block on read
and /proc/kcore alone claims 128 TiB), /sys and /dev. They are found in /proc/self/mountinfo by
type, plus /proc, /sys and /dev by name (a container may mount a plain tmpfs on /dev). Only those
are skipped: `--one-file-system` would also skip a /home on another disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from daemon.errors import bad_request

PSEUDO_TYPES = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs", "tracefs",
    "pstore", "bpf", "configfs", "fusectl", "mqueue", "hugetlbfs", "binfmt_misc", "autofs", "efivarfs",
    "rpc_pipefs", "nsfs", "selinuxfs", "nfsd", "binder",
})
PSEUDO_NAMES = ("/proc", "/sys", "/dev")
MOUNTINFO = "/proc/self/mountinfo"
#: Where ripgrep runs, so the absolute globs of `Excluded.rg_globs` are anchored right.
RG_CWD = "/"


def pseudo_mounts(mountinfo: str = MOUNTINFO) -> list[str]:
    """Mount points of pseudo file systems, plus /proc, /sys and /dev; sorted, no duplicates."""
    found = set(PSEUDO_NAMES)
    found.update(mount_point for mount_point, fs_type in _mounts(mountinfo) if fs_type in PSEUDO_TYPES)
    return sorted(found)


def refuse_removing(removed: str, mountinfo: str = MOUNTINFO) -> None:
    """400 for a delete or move that would take the machine's own files: anything in the kernel's
    pseudo file systems (/dev/zero, a /proc entry), or a mount point or a folder holding one (a tree
    removal would go on into the other file system, as removing /dev would empty devtmpfs)."""
    table = _mounts(mountinfo)
    pseudo = set(PSEUDO_NAMES) | {point for point, fs_type in table if fs_type in PSEUDO_TYPES}
    if within(removed, pseudo):
        raise bad_request(f"Refusing to remove the system's device and kernel files: {removed}")
    held = sorted(point for point, _ in table if point != "/" and within(point, [removed]))
    if held:
        raise bad_request(f"Refusing to remove a mount point or a folder that holds one ({held[0]}): {removed}")


def _mounts(mountinfo: str) -> list[tuple[str, str]]:
    """(mount point, type) of every mount; none when the table cannot be read."""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as source:
            lines = source.read().splitlines()
    except OSError:
        return []
    return [fields for fields in map(_fields, lines) if fields[0]]


def _fields(line: str) -> tuple[str, str]:
    """(mount point, type) of one mountinfo line; optional fields end at the " - " separator."""
    before, _, after = line.partition(" - ")
    fields = before.split(" ")
    if len(fields) < 5 or not after:
        return "", ""
    return _unescape(fields[4]), after.split(" ", 1)[0]


def _unescape(field: str) -> str:
    r"""mountinfo writes space, tab, newline and backslash as \040, \011, \012 and \134."""
    if "\\" not in field:
        return field
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


def within(path: str, mounts: Iterable[str]) -> bool:
    """Whether `path` is one of `mounts` or below one."""
    return any(path == mount or path.startswith(mount.rstrip("/") + "/") for mount in mounts)


def below(top: str, mounts: Iterable[str]) -> list[str]:
    """The `mounts` strictly below `top` (the ones a walk from `top` would reach)."""
    top = os.path.normpath(top)
    prefix = top.rstrip("/") + "/"
    return [mount for mount in mounts if mount.startswith(prefix)]


class Excluded:
    """The pseudo mounts as a walk from one folder meets them: skip the folder itself when it is
    (inside) one, and skip these folders below it."""

    def __init__(self, top: str, mounts: list[str] | None = None) -> None:
        mounts = pseudo_mounts() if mounts is None else mounts
        self.everything = within(os.path.normpath(top), mounts)
        self.paths = frozenset(below(top, mounts))

    def skips(self, path: str) -> bool:
        return path in self.paths

    def rg_globs(self) -> list[str]:
        """ripgrep arguments excluding the pseudo mounts below the top folder.

        ripgrep anchors a glob's leading `/` at its working directory, not at the searched folder:
        these are absolute paths, for a ripgrep started in `/` (see RG_CWD).
        """
        globs: list[str] = []
        for path in sorted(self.paths):
            globs += ["--glob", "!" + _glob_escape(path)]
        return globs

    def find_prunes(self) -> list[str]:
        """`find` expressions that prune the pseudo mounts (to put before the real test)."""
        prunes: list[str] = []
        for path in sorted(self.paths):
            prunes += ["-path", _glob_escape(path), "-prune", "-o"]
        return prunes


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "\\*?[]{}!" else char for char in text)
