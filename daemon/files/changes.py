"""Changes to the tree: make folders, delete, move. Plain synchronous functions, like ops.

Each acts on the folder descriptor that holds the named entry and never follows a final symlink:
a delete removes the link, a move moves it, and a tree is removed through directory descriptors.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable

from daemon.errors import ApiError, bad_request, from_os_error, not_found
from daemon.files.beneath import Beneath
from daemon.files.ops import UNCONFINED, os_errors


def make_directory(path: str, opener: Beneath = UNCONFINED) -> None:
    """Make a folder and its missing parents, one `mkdirat` at a time beneath the checked parent."""
    with os_errors():
        os.close(opener.directory(path, create=True))


def delete(path: str, opener: Beneath = UNCONFINED,
           set_aside: Callable[[int, str, os.stat_result], None] | None = None) -> str:
    """Remove a file, a symlink (never its target) or a whole directory tree; returns its type.

    The tree is removed through directory descriptors (shutil.rmtree with dir_fd), which never
    follows a symlink, not even one swapped in while it runs. With `set_aside` (the trash), the
    entry is handed to it (its folder's descriptor, its name) instead of being removed.
    """
    parent, name = _parent_or_404(path, opener, "Path not found")
    try:
        info = _lstat_or_404(parent, name, "Path not found")
        kind = "directory" if stat.S_ISDIR(info.st_mode) or _is_directory_link(parent, name, info) else "file"
        if set_aside is not None:
            set_aside(parent, name, info)
            return kind
        with os_errors():
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)
        return kind
    finally:
        os.close(parent)


def move(source: str, destination: str, opener: Beneath = UNCONFINED) -> None:
    """Rename without ever replacing an existing destination (409), across file systems too."""
    source_parent, source_name = _parent_or_404(source, opener, "Source path not found")
    try:
        info = _lstat_or_404(source_parent, source_name, "Source path not found")
        try:
            target_parent, target_name = opener.parent(destination, follow=False)
        except (FileNotFoundError, NotADirectoryError):
            raise bad_request("Destination parent directory not found") from None
        except OSError as exc:
            raise from_os_error(exc) from None
        try:
            _move_at((source_parent, source_name), (target_parent, target_name), info)
        finally:
            os.close(target_parent)
    finally:
        os.close(source_parent)


def rename(path: str, name: str, opener: Beneath = UNCONFINED) -> str:
    """Give an entry a new name in the same folder; never over an existing one (409). The name is
    checked first (no `/`, `..`, NUL...), so a rename cannot move the entry anywhere else."""
    from daemon.files.naming import check_name, exists  # naming places files with rename_no_replace below

    check_name(name)
    destination = os.path.join(os.path.dirname(path), name)
    try:
        move(path, destination, opener)
    except ApiError as error:
        if error.status == 409:
            raise exists(name) from None
        raise
    return destination


At = tuple[int, str]


def _move_at(source: At, destination: At, info: os.stat_result) -> None:
    try:
        os.stat(destination[1], dir_fd=destination[0], follow_symlinks=False)
        raise ApiError(409, "Destination already exists")
    except FileNotFoundError:
        pass
    try:
        rename_no_replace(*source, *destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise from_os_error(exc) from None
        with os_errors():
            _move_across_devices(source, destination, info)


def _parent_or_404(path: str, opener: Beneath, missing: str) -> At:
    try:
        return opener.parent(path, follow=False)
    except (FileNotFoundError, NotADirectoryError):
        raise not_found(missing) from None
    except OSError as exc:
        raise from_os_error(exc) from None


def _lstat_or_404(parent: int, name: str, missing: str) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        raise not_found(missing) from None
    except OSError as exc:
        raise from_os_error(exc) from None


def _is_directory_link(parent: int, name: str, info: os.stat_result) -> bool:
    if not stat.S_ISLNK(info.st_mode):
        return False
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=parent).st_mode)
    except OSError:
        return False


def _at_path(at: At) -> str:
    """A path that reaches `name` through the folder's descriptor (the kernel does not walk the
    folder's path again), for the library functions that only take paths."""
    return f"/proc/self/fd/{at[0]}/{at[1]}"


def _move_across_devices(source: At, destination: At, info: os.stat_result) -> None:
    """Copy beside the destination under a temp name, rename it into place, then drop the source.

    Special files are made anew (mknod), never opened: reading a device would copy it forever.
    """
    staging = tempfile.mkdtemp(dir=f"/proc/self/fd/{destination[0]}", prefix=".move-")
    try:
        copy = os.path.join(staging, "entry")
        if stat.S_ISDIR(info.st_mode):
            shutil.copytree(_at_path(source), copy, symlinks=True, copy_function=_copy_entry)
        else:
            _copy_entry(_at_path(source), copy)
        rename_no_replace(_AT_FDCWD, copy, *destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(source[1], dir_fd=source[0])
    else:
        os.unlink(source[1], dir_fd=source[0])


def _copy_entry(source: str, destination: str) -> None:
    info = os.lstat(source)
    if stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode):
        shutil.copy2(source, destination, follow_symlinks=False)
        return
    os.mknod(destination, info.st_mode, info.st_rdev)
    shutil.copystat(source, destination, follow_symlinks=False)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_no_replace(source_dir: int, source: str, destination_dir: int, destination: str) -> None:
    """renameat2(RENAME_NOREPLACE): atomic, and it cannot clobber a file created meanwhile."""
    def exists() -> bool:
        try:
            os.stat(destination, dir_fd=destination_dir, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    if _renameat2 is not None:
        result = _renameat2(source_dir, os.fsencode(source), destination_dir, os.fsencode(destination),
                            _RENAME_NOREPLACE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code != errno.EINVAL or exists():  # EINVAL: the file system lacks NOREPLACE (some FUSE).
            raise OSError(code, os.strerror(code), source, None, destination)
    elif exists():
        raise FileExistsError(errno.EEXIST, "File exists", destination)
    if not stat.S_ISDIR(os.stat(source, dir_fd=source_dir, follow_symlinks=False).st_mode):
        # link(2) never replaces either (EEXIST): still atomic for anything but a folder.
        try:
            os.link(source, destination, src_dir_fd=source_dir, dst_dir_fd=destination_dir, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:
            pass  # No hard links here (some FUSE): the checked rename below is all there is.
        else:
            os.unlink(source, dir_fd=source_dir)
            return
    os.rename(source, destination, src_dir_fd=source_dir, dst_dir_fd=destination_dir)
