"""Servers in a sandbox with the network off: each sandbox has a network namespace of its own.

Its listening sockets are not in the daemon's namespace, so sock_diag does not see them; the
kernel shows them in `/proc/<pid>/net/tcp*` of any process inside. The proxy reaches them through a
socket made inside that namespace: a short-lived thread enters it (`setns`, through ctypes: Python
3.11 has no `os.setns`), creates the socket and hands it back; the socket keeps its namespace, so the
event loop connects it as any other. Entering takes root (CAP_SYS_ADMIN over the namespace): a
daemon without it lists these ports but answers 502 for them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import threading
from collections.abc import Iterable
from typing import Any

from daemon.net import ports

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def namespace_of(pid: int) -> int | None:
    """The inode of `pid`'s network namespace, or None when it is gone or not ours to see."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def listening_elsewhere(pids: Iterable[int]) -> dict[int, tuple[ports.Bound, int]]:
    """Socket inode -> (address, a pid to enter its namespace by) of the listening sockets in the
    namespaces of `pids` other than the daemon's. One read of the tables per namespace, not per process."""
    seen = {namespace_of(os.getpid())}
    found: dict[int, tuple[ports.Bound, int]] = {}
    for pid in sorted(pids):
        namespace = namespace_of(pid)
        if namespace in seen:
            continue
        seen.add(namespace)
        tables = (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6")
        found.update({inode: (bound, pid) for inode, bound in ports.listening_sockets_from_proc(tables).items()})
    return found


def socket_in(pid: int, address: Any) -> socket.socket:
    """A TCP socket for `address` (an addrinfo tuple) in `pid`'s network namespace.

    setns changes only the calling thread, so a thread of its own does it and ends: no thread of the
    pool is ever left in another namespace."""
    family, kind, proto = address[0], address[1], address[2]
    made: list[socket.socket | BaseException] = []

    def enter_and_make() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"cannot enter the sandbox's network: {os.strerror(code)}")
            finally:
                os.close(fd)
            made.append(socket.socket(family, kind, proto))
        except BaseException as exc:  # handed to the caller, raised there
            made.append(exc)

    thread = threading.Thread(target=enter_and_make, name="opentermd-setns", daemon=True)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]
