"""Open paths so that `--root` holds even while someone swaps folders for symlinks under our feet.

Checking a path with `realpath` and then opening it again by name leaves a window: a folder inside
the root can be exchanged for a symlink to an outside folder in between (`renameat2` with
RENAME_EXCHANGE), and the open then reads or writes outside. Here every open under a root is done
relative to a descriptor of the root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the
kernel refuses, at the moment of the open, any step that would leave the root. Where openat2 is
missing (Linux < 5.6, some seccomp filters: ENOSYS) the same guarantee comes from a walk of one
component at a time with O_NOFOLLOW, where any symlink met on the (already resolved) path is refused.

Without a root, paths are opened as they always were, in one syscall.

With `--sandbox bwrap` the file API sees what commands see (`Sandbox.access`, the definition bwrap's
argv is built from): a hidden path is refused (403) for reads too, and writes land in the workspace
only. Writes are opened beneath the workspace as above (race-free); every descriptor is checked
again by the path the kernel gives for it, so a symlink swapped in after the check cannot lead a read
into a hidden folder either.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import platform
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

from daemon.errors import ApiError
from daemon.owner import adopt_at

if TYPE_CHECKING:
    from daemon.sandbox import Sandbox

#: openat2 is 437 on every architecture that joined the unified syscall table (x86_64, aarch64, ...).
SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
#: Read-only opens never block (a FIFO or a terminal must not hold a worker thread) nor adopt a tty.
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: The kernel answers EAGAIN when a rename raced the walk; a few retries always settle it.
RETRIES = 8
OUTSIDE = "Path is outside the allowed file root"
HIDDEN = "Path is hidden by the sandbox: commands cannot see it either"
READ_ONLY = "Path is read-only in the sandbox: the file API writes where commands can, in the workspace"
#: Flags that change what they open: such opens need the sandbox's WRITE access.
WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    """The raw openat2(2) system call; raises OSError like os.open."""
    # openat2 is strict where open(2) is lenient: a mode without O_CREAT is EINVAL.
    creates = flags & os.O_CREAT or flags & os.O_TMPFILE == os.O_TMPFILE  # O_TMPFILE holds O_DIRECTORY's bit.
    how = OpenHow(flags, mode if creates else 0, resolve)
    fd = _syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(path)),
                  ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


def _probe_openat2() -> bool:
    if platform.system() != "Linux":
        return False
    try:
        os.close(openat2(-100, ".", os.O_PATH | os.O_CLOEXEC, 0, RESOLVE_BENEATH))
    except OSError:
        return False  # ENOSYS (old kernel) or EPERM (a seccomp filter): walk instead.
    return True


HAVE_OPENAT2 = _probe_openat2()


def real_path(path: str) -> str:
    """os.path.realpath, which raises EINVAL when a symlink becomes a folder between its lstat and
    its readlink: then the path is resolved again (a swap loop cannot win every time)."""
    for _ in range(RETRIES):
        try:
            return os.path.realpath(path)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    return os.path.realpath(path)


def outside_root() -> ApiError:
    return ApiError(403, OUTSIDE)


class Beneath:
    """Opens absolute paths, confined beneath `root` when one is set (`root` is already a real path)."""

    def __init__(self, root: str | None, *, use_openat2: bool = HAVE_OPENAT2, sandbox: Sandbox | None = None) -> None:
        self.root = root
        self._resolve_beneath: Callable[[int, str, int, int], int] = (
            self._openat2 if use_openat2 else self._walk)
        self.sandbox = sandbox
        #: With a sandbox, writes are opened beneath the workspace (the root, when one is set, is it).
        self._writer = (Beneath(root or os.path.realpath(sandbox.workspace), use_openat2=use_openat2)
                        if sandbox is not None else self)

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        """A descriptor of `path` (symlinks followed, as a realpath would), never outside the root.

        Raises OSError for the file system's refusals, ApiError(403) for a step out of the root
        (or, with a sandbox, into what the sandbox hides or keeps read-only).
        """
        if self.sandbox is None:
            return self._open(path, flags, mode)
        from daemon.sandbox import Access  # here: document workers import this module, not aiohttp

        wanted = Access.WRITE if flags & WRITING else Access.READ
        self.require(real_path(path), wanted)
        fd = (self._writer if wanted == Access.WRITE else self)._open(path, flags, mode)
        return self._checked(fd, wanted)

    def require(self, real: str, wanted: int) -> None:
        """403 unless the sandbox (if any) gives at least `wanted` access at the real path `real`."""
        if self.sandbox is not None and (found := self.sandbox.access(real)) < wanted:
            raise ApiError(403, HIDDEN if found == 0 else READ_ONLY)

    def _checked(self, fd: int, wanted: int) -> int:
        """`fd`, once the path the kernel knows it by is shown by the sandbox; else closed, 403."""
        try:
            self.require(os.readlink(f"/proc/self/fd/{fd}"), wanted)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open(self, path: str, flags: int, mode: int) -> int:
        if self.root is None:
            return os.open(path, flags | os.O_CLOEXEC, mode)
        real = real_path(path)
        relative = self.relative(real)
        root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if relative == ".":
                return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=root_fd)
            return self._resolve_beneath(root_fd, relative, flags | os.O_CLOEXEC, mode)
        finally:
            os.close(root_fd)

    def relative(self, real: str) -> str:
        """`real` relative to the root, or 403 when it is not beneath it."""
        assert self.root is not None
        if real == self.root:
            return "."
        if not real.startswith(self.root.rstrip("/") + "/"):
            raise outside_root()
        return real[len(self.root.rstrip("/")) + 1:]

    def directory(self, path: str, *, create: bool = False) -> int:
        """A descriptor of the directory `path`; with `create`, missing ones are made (like makedirs)."""
        if create and self.sandbox is not None:
            from daemon.sandbox import Access

            self.require(real_path(path), Access.WRITE)
            return self._checked(self._writer.directory(path, create=True), Access.WRITE)
        try:
            return self.open(path, DIRECTORY_FLAGS)
        except NotADirectoryError:
            if create and os.path.isfile(path):  # As makedirs says: the name is taken (409).
                raise FileExistsError(errno.EEXIST, "A file with this name exists", path) from None
            raise  # A FIFO, a device, a socket, or a file on the way: 400.
        except FileNotFoundError:
            parent, name = os.path.split(real_path(path))
            if not create or not name or parent == path:
                raise
        parent_fd = self.directory(parent, create=True)
        try:
            # Made meanwhile, or a file: the open below tells which.
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o777, dir_fd=parent_fd)
                adopt_at(name, parent_fd)
            return os.open(name, DIRECTORY_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)

    def parent(self, path: str, *, create: bool = False, follow: bool = True) -> tuple[int, str]:
        """The descriptor of the folder that holds `path`'s final component, and that component's name.

        `follow` resolves a final symlink first (a write goes through it); without it the name
        is the link itself (a delete or a move acts on the link, never on its target).
        """
        real = real_path(path) if follow else os.path.join(real_path(os.path.dirname(path)), os.path.basename(path))
        folder, name = os.path.split(real)
        if not name:
            raise ApiError(400, "Path names no file")
        if self.root is not None and real != self.root:
            self.relative(real)
        if self.sandbox is None:
            return self.directory(folder, create=create), name
        from daemon.sandbox import Access

        self.require(real, Access.WRITE)  # the name itself too: a hidden folder in the workspace is not removable
        return self._checked(self._writer.directory(folder, create=create), Access.WRITE), name

    # --- the two ways to resolve beneath a root ---

    @staticmethod
    def _openat2(root_fd: int, relative: str, flags: int, mode: int) -> int:
        for _ in range(RETRIES):
            try:
                return openat2(root_fd, relative, flags, mode, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
            except OSError as exc:
                if exc.errno == errno.EXDEV or (exc.errno == errno.ELOOP and flags & os.O_NOFOLLOW == 0):
                    raise outside_root() from None
                if exc.errno != errno.EAGAIN:
                    raise
        raise OSError(errno.EAGAIN, "The path kept changing while it was opened", relative)

    @staticmethod
    def _walk(root_fd: int, relative: str, flags: int, mode: int) -> int:
        """One component at a time, none of them a symlink: the path was resolved before, so a
        symlink met now was swapped in since, and is refused."""
        parts = relative.split("/")
        current = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
        try:
            for part in parts[:-1]:
                step = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
                mode_bits = os.fstat(step).st_mode
                os.close(current)
                current = step
                if stat.S_ISLNK(mode_bits):
                    raise outside_root()  # Resolved as a folder a moment ago: it was swapped since.
                if not stat.S_ISDIR(mode_bits):
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), part)
            try:
                return os.open(parts[-1], flags | os.O_NOFOLLOW, mode, dir_fd=current)
            except OSError as exc:
                if exc.errno == errno.ELOOP and flags & os.O_NOFOLLOW == 0:
                    raise outside_root() from None
                raise
        finally:
            os.close(current)

