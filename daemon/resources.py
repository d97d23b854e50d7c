"""Where `templates/` and `static/` live, from a source checkout or a frozen executable alike."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from collections.abc import Mapping
from pathlib import Path


def root() -> Path:
    frozen = getattr(sys, "_MEIPASS", None)
    return Path(frozen) if frozen else Path(__file__).resolve().parent.parent


def templates_dir() -> Path:
    return root() / "templates"


def static_dir() -> Path:
    return root() / "static"


def self_command() -> list[str]:
    """How to start this program again (for worker processes), from source or frozen."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "daemon"]


def without_launcher(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` as it was before the single executable's launcher changed it.

    The onefile launcher points LD_LIBRARY_PATH at its extraction folder (keeping the user's value
    in LD_LIBRARY_PATH_ORIG) and adds `_PYI_*` markers. A user's command must load the system's
    libraries, not our bundled OpenSSL or libpython, and an executable it starts must not take
    itself for a child of ours.
    """
    env = {key: value for key, value in environ.items() if not key.startswith("_PYI_")}
    if getattr(sys, "frozen", False):
        original = env.pop("LD_LIBRARY_PATH_ORIG", None)
        if original is None:
            env.pop("LD_LIBRARY_PATH", None)
        else:
            env["LD_LIBRARY_PATH"] = original
    return env


def system_environment() -> dict[str, str]:
    """The environment for a system program (a shell, rg, git): ours without the launcher's changes."""
    return without_launcher(os.environ)


def keep_inherited_descriptors() -> int:
    """Mark the descriptors this process was started with (beyond stdio) close-on-exec; how many.
    Python leaves them inheritable, so every command and shell got the descriptors of whatever
    started the daemon (a shell's job-control pipe, a CI runner's)."""
    marked = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
                    marked += 1
    return marked


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit; return (soft before, soft now).

    Login shells and systemd give 1,024 by default (soft), far below what the kernel allows
    (hard): the daemon holds a socket per client and a PTY, pidfd and log per running command.
    The hard limit is the administrator's word; the soft one is only a default for old programs
    that use select(). An unlimited hard limit is capped at the kernel's `fs.nr_open`.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if target == resource.RLIM_INFINITY:
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            return soft, soft
    if soft != resource.RLIM_INFINITY and soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        return soft, soft
    return soft, target
