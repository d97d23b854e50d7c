"""Which TCP ports the daemon's descendants listen on, read straight from /proc (Linux).

A port is visible when a LISTEN socket in `/proc/net/tcp` or `/proc/net/tcp6` is held open by a
process descended from the daemon: the servers the user (or the AI) started from its shells. The
daemon's own socket is not its descendant and is never listed, like the reference.

Only the descendants' file descriptors are read, never the whole machine's, and the descendants
are found through `/proc/<pid>/task/<tid>/children` when the kernel offers it, so the cost follows
the size of the daemon's process tree rather than the number of processes on the host.
Everything here blocks on /proc: call it from a worker thread.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

PROC = "/proc"
TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
LISTEN = "0A"
TCP_LISTEN = 10
#: From <linux/netlink.h> and <linux/sock_diag.h>.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3


class Bound(NamedTuple):
    """The local address a listening socket is bound to: `0.0.0.0` and `::` mean every address."""

    host: str
    port: int


@dataclass(frozen=True)
class ListeningPort:
    port: int
    pid: int
    process: str | None

    def as_json(self) -> dict[str, object]:
        return {"port": self.port, "pid": self.pid, "process": self.process}


def listening_ports(root: int | None = None) -> list[ListeningPort]:
    """The ports that descendants of `root` (default: this process) listen on, sorted, one entry per port."""
    pids = descendants(os.getpid() if root is None else root)
    sockets, _ = _listening_sockets_of(pids)
    if not sockets:
        return []
    owners = socket_owners(pids, sockets)
    found: dict[int, ListeningPort] = {}
    for inode, pid in owners.items():
        port = sockets[inode].port
        # The same port on IPv4 and IPv6 (or SO_REUSEPORT workers) is one entry: the lowest pid,
        # usually the parent that the others were forked from.
        if port not in found or pid < found[port].pid:
            found[port] = ListeningPort(port, pid, process_name(pid))
    return [found[port] for port in sorted(found)]


def listening_addresses(port: int, root: int | None = None) -> list[str]:
    """The addresses descendants of `root` listen on at `port` (IPv4 first); empty if none does.

    The proxy connects to exactly these, never to "localhost": another program may listen on
    127.0.0.1 at the same port as a child bound to 127.0.0.2 or ::1.
    """
    return listening_target(port, root)[0]


def listening_target(port: int, root: int | None = None) -> tuple[list[str], int]:
    """`listening_addresses`, and the network namespace they are in: 0 for the daemon's own (tried
    first), else a pid inside the first sandbox (with the network off) whose process listens there."""
    pids = descendants(os.getpid() if root is None else root)
    every, namespaces = _listening_sockets_of(pids)
    sockets = {inode: bound for inode, bound in every.items() if bound.port == port}
    owned = socket_owners(pids, sockets) if sockets else {}
    if not owned:
        return [], 0
    namespace = min(namespaces.get(inode, 0) for inode in owned)
    hosts = {sockets[inode].host for inode in owned if namespaces.get(inode, 0) == namespace}
    return sorted(hosts, key=lambda host: (":" in host, host)), namespace


def _listening_sockets_of(pids: set[int]) -> tuple[dict[int, Bound], dict[int, int]]:
    """The listening sockets of the daemon's namespace and of the sandboxes `pids` are in; and for
    the latter, socket inode -> a pid to enter its namespace by."""
    from daemon.net import namespaces  # here: it imports this module

    elsewhere = namespaces.listening_elsewhere(pids)
    sockets = {**listening_sockets(), **{inode: bound for inode, (bound, _) in elsewhere.items()}}
    return sockets, {inode: pid for inode, (_, pid) in elsewhere.items()}


# --- listening sockets ---------------------------------------------------------------------------------


def listening_sockets() -> dict[int, Bound]:
    """Socket inode -> bound address of every TCP socket in the LISTEN state, in this network namespace.

    Asked of the kernel over netlink (sock_diag, as `ss -lt` does), which filters by state before
    answering: /proc/net/tcp lists every socket, TIME_WAIT included, and the proxy's own short
    connections leave hundreds of those behind, making a read cost 10 ms or more. The /proc
    tables remain for kernels or sandboxes without sock_diag.
    """
    try:
        return _diag_listening_sockets()
    except (OSError, AttributeError, struct.error):  # AttributeError: no AF_NETLINK off Linux
        return listening_sockets_from_proc()


def _diag_listening_sockets() -> dict[int, Bound]:
    sockets: dict[int, Bound] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as channel:
        channel.settimeout(5)
        for sequence, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            request = struct.pack("=BBBxI48x", family, socket.IPPROTO_TCP, 0, 1 << TCP_LISTEN)
            channel.sendto(struct.pack("=IHHII", 16 + len(request), SOCK_DIAG_BY_FAMILY,
                                       NLM_F_REQUEST | NLM_F_DUMP, sequence, 0) + request, (0, 0))
            sockets.update(_diag_replies(channel, sequence))
    return sockets


def _diag_replies(channel: socket.socket, sequence: int) -> dict[int, Bound]:
    """Read one dump's `inet_diag_msg` records: the family at 0, the port (big-endian) at 4, the
    source address at 8 (4 or 16 bytes), the inode at 68."""
    sockets: dict[int, Bound] = {}
    while True:
        data = channel.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _, reply_sequence, _ = struct.unpack_from("=IHHII", data, offset)
            if length < 16:
                raise OSError("malformed netlink reply")
            if reply_sequence == sequence:
                if kind == NLMSG_DONE:
                    return sockets
                if kind == NLMSG_ERROR:
                    error = -struct.unpack_from("=i", data, offset + 16)[0]
                    raise OSError(error, os.strerror(error))
                if kind == SOCK_DIAG_BY_FAMILY and length >= 16 + 72:
                    message = offset + 16
                    family = data[message]
                    port = struct.unpack_from("!H", data, message + 4)[0]
                    size = 16 if family == socket.AF_INET6 else 4
                    host = socket.inet_ntop(family, data[message + 8:message + 8 + size])
                    inode = struct.unpack_from("=I", data, message + 68)[0]
                    if port and inode:
                        sockets[inode] = Bound(host, port)
            offset += (length + 3) & ~3


def listening_sockets_from_proc(tables: Iterable[str] = TCP_TABLES) -> dict[int, Bound]:
    """listening_sockets() read from /proc/net/tcp and /proc/net/tcp6."""
    sockets: dict[int, Bound] = {}
    for table in tables:
        try:
            with open(table, encoding="ascii", errors="replace") as lines:
                next(lines, None)  # the column titles
                for line in lines:
                    entry = parse_tcp_line(line)
                    if entry is not None:
                        sockets[entry[0]] = entry[1]
        except OSError:
            continue  # no IPv6, or no /proc at all
    return sockets


def parse_tcp_line(line: str) -> tuple[int, Bound] | None:
    """`(inode, address)` of one /proc/net/tcp row in the LISTEN state, else None.

    A row reads `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout
    inode ...`, with the local address as `HEXADDR:HEXPORT`.
    """
    fields = line.split()
    if len(fields) < 10 or fields[3] != LISTEN:
        return None
    try:
        hex_host, _, hex_port = fields[1].rpartition(":")
        host, port = _proc_address(hex_host), int(hex_port, 16)
        inode = int(fields[9])
    except ValueError:
        return None
    if port == 0 or inode == 0:
        return None
    return inode, Bound(host, port)


def _proc_address(hex_host: str) -> str:
    """/proc prints an address as 32-bit words, each in the host's byte order."""
    raw = bytes.fromhex(hex_host)
    if len(raw) not in (4, 16):
        raise ValueError(hex_host)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw))


# --- the process tree ---------------------------------------------------------------------------------


def descendants(root: int) -> set[int]:
    """Every process descended from `root`, `root` excluded."""
    found: set[int] = set()
    pending = [root]
    while pending:
        pid = pending.pop()
        children = _children(pid)
        if children is None:
            return _descendants_from_stat(root)
        for child in children:
            if child not in found and child != root:
                found.add(child)
                pending.append(child)
    return found


def _children(pid: int) -> list[int] | None:
    """The children of every thread of `pid`; None when the kernel has no `children` files."""
    task_dir = f"{PROC}/{pid}/task"
    try:
        threads = os.listdir(task_dir)
    except OSError:
        return []  # it has exited
    children: list[int] = []
    for tid in threads:
        try:
            with open(f"{task_dir}/{tid}/children", "rb") as file:
                children.extend(int(child) for child in file.read().split())
        except FileNotFoundError:
            if os.path.isdir(f"{task_dir}/{tid}"):
                return None  # the thread is there but the file is not: CONFIG_PROC_CHILDREN is off
        except (OSError, ValueError):
            continue
    return children


def _descendants_from_stat(root: int) -> set[int]:
    """The slow way, for kernels without `children` files: every process's parent from its stat."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    pending = list(children.get(root, ()))
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, ()))
    return found


def _parents() -> Iterator[tuple[int, int]]:
    for entry in os.listdir(PROC):
        if not entry.isdigit():
            continue
        try:
            with open(f"{PROC}/{entry}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        parent = parent_from_stat(stat)
        if parent is not None:
            yield int(entry), parent


def parent_from_stat(stat: bytes) -> int | None:
    """The ppid in a /proc/<pid>/stat line; the command name may hold spaces and parentheses."""
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


# --- sockets held by processes -------------------------------------------------------------------------


def socket_owners(pids: Iterable[int], inodes: Iterable[int]) -> dict[int, int]:
    """Socket inode -> the lowest pid among `pids` holding it open, for the inodes asked about."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    owners: dict[int, int] = {}
    for pid in sorted(pids):
        fd_dir = f"{PROC}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # exited, or not ours to look at
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None and inode not in owners:
                owners[inode] = pid
        if len(owners) == len(wanted):
            break
    return owners


def process_name(pid: int) -> str | None:
    try:
        with open(f"{PROC}/{pid}/comm", encoding="utf-8", errors="replace") as file:
            return file.read().rstrip("\n")
    except OSError:
        return None
