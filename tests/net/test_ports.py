"""GET /ports: TCP listeners of the daemon's descendants, read from /proc; never anyone else's.

The daemon under test runs inside the test process, so servers started here with Popen are its
children, as servers started from its shells are in production.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from daemon.net import ports
from tests.conftest import Api, wait_until

SERVING = re.compile(rb"port (\d+)")


@dataclass
class Listener:
    """A server process: its pid (the one holding the socket) and its port."""

    process: subprocess.Popen[bytes]
    pid: int
    port: int

    def stop(self) -> None:
        for pid in {self.pid, self.process.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_listener(argv: list[str], cwd: Path | None = None) -> Listener:
    """Start a server that prints its port (`... port N ...`) as its first line of output."""
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    port = _read_port(process.stdout)
    return Listener(process, process.pid, port)


def _read_port(stream: IO[bytes]) -> int:
    line = stream.readline()
    match = SERVING.search(line)
    assert match, line
    return int(match.group(1))


def http_server(directory: Path) -> list[str]:
    return [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(directory)]


def serve_files(tmp_path: Path) -> Listener:
    """`python -m http.server` on a folder holding hello.txt."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "hello.txt").write_text("hello through the proxy\n")
    return start_listener(http_server(served))


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[Listener]:
    listener = serve_files(tmp_path)
    yield listener
    listener.stop()


@pytest.fixture
def grandchild_server(tmp_path: Path) -> Iterator[Listener]:
    """A server started by a shell that waits for it: the daemon's grandchild."""
    command = " ".join(http_server(tmp_path)) + " & echo pid $!; wait"
    shell = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert shell.stdout is not None
    grandchild = int(shell.stdout.readline().split()[1])
    listener = Listener(shell, grandchild, _read_port(shell.stdout))
    yield listener
    listener.stop()


@pytest.fixture
def orphan_server(tmp_path: Path) -> Iterator[int]:
    """The port of a server put in the background by a shell that then exits: it is re-parented
    away from the daemon, as with `nohup server &` from a terminal that was closed."""
    command = " ".join(http_server(tmp_path)) + " > output 2>/dev/null & echo $!"
    pid = int(subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, check=True).stdout)
    try:
        assert wait_until(lambda: SERVING.search((tmp_path / "output").read_bytes()) is not None)
        match = SERVING.search((tmp_path / "output").read_bytes())
        assert match is not None
        yield int(match.group(1))
    finally:
        os.kill(pid, signal.SIGKILL)


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


async def listed(api: Api) -> list[dict[str, Any]]:
    body = await api.json("GET", "/ports")
    assert set(body) == {"ports"}
    entries: list[dict[str, Any]] = body["ports"]
    return entries


# --- through HTTP -------------------------------------------------------------------------------------


async def test_a_child_server_is_listed_with_its_pid_and_process_name(api: Api, file_server: Listener) -> None:
    entries = await listed(api)
    assert {"port": file_server.port, "pid": file_server.pid, "process": comm(file_server.pid)} in entries
    assert comm(file_server.pid).startswith("python")
    assert [entry["port"] for entry in entries] == sorted({entry["port"] for entry in entries})


async def test_a_grandchild_is_listed_under_its_own_pid(api: Api, grandchild_server: Listener) -> None:
    listener = grandchild_server
    assert listener.pid != listener.process.pid
    entries = await listed(api)
    assert {"port": listener.port, "pid": listener.pid, "process": comm(listener.pid)} in entries


async def test_a_stopped_server_is_no_longer_listed(api: Api, file_server: Listener) -> None:
    assert file_server.port in [entry["port"] for entry in await listed(api)]
    file_server.stop()
    assert file_server.port not in [entry["port"] for entry in await listed(api)]


async def test_the_daemons_own_socket_is_not_listed(api: Api) -> None:
    assert api.client.port not in [entry["port"] for entry in await listed(api)]


async def test_a_server_that_left_the_process_tree_is_not_listed(api: Api, orphan_server: int) -> None:
    assert orphan_server in [bound.port for bound in ports.listening_sockets().values()]
    assert orphan_server not in [entry["port"] for entry in await listed(api)]


async def test_ports_needs_the_key(api: Api) -> None:
    assert await api.json("GET", "/ports", status=401, auth=False) == {"detail": "Invalid API key"}


async def test_ports_is_not_in_the_schema(api: Api) -> None:
    schema = await api.json("GET", "/openapi.json", auth=False)
    assert not [path for path in schema["paths"] if path.startswith(("/ports", "/proxy"))]


# --- the /proc readers on their own -----------------------------------------------------------------------


def test_listening_ports_lists_a_child_once_for_ipv4_and_ipv6(tmp_path: Path) -> None:
    script = tmp_path / "dual.py"
    script.write_text(
        "import socket, time\n"
        "four = socket.socket(); four.bind(('127.0.0.1', 0)); four.listen()\n"
        "port = four.getsockname()[1]\n"
        "six = socket.socket(socket.AF_INET6); six.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n"
        "six.bind(('::1', port)); six.listen()\n"
        "print('port', port, flush=True); time.sleep(60)\n"
    )
    listener = start_listener([sys.executable, str(script)])
    try:
        entries = [entry for entry in ports.listening_ports() if entry.port == listener.port]
        assert entries == [ports.ListeningPort(listener.port, listener.pid, comm(listener.pid))]
        assert ports.listening_addresses(listener.port) == ["127.0.0.1", "::1"]
        bound = [entry for entry in ports.listening_sockets().values() if entry.port == listener.port]
        assert sorted(bound) == [("127.0.0.1", listener.port), ("::1", listener.port)]
    finally:
        listener.stop()


def test_netlink_and_proc_agree(file_server: Listener) -> None:
    # Only this server's sockets: others on the machine may come and go between the two reads.
    from_netlink = {inode: bound for inode, bound in ports._diag_listening_sockets().items()
                    if bound.port == file_server.port}
    from_proc = {inode: bound for inode, bound in ports.listening_sockets_from_proc().items()
                 if bound.port == file_server.port}
    assert list(from_netlink.values()) == [("127.0.0.1", file_server.port)]
    assert from_netlink == from_proc


def test_without_netlink_the_proc_tables_are_read(file_server: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused() -> dict[int, ports.Bound]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ports, "_diag_listening_sockets", refused)
    assert file_server.port in [entry.port for entry in ports.listening_ports()]
    assert ports.listening_addresses(file_server.port) == ["127.0.0.1"]


def test_addresses_are_only_the_descendants(file_server: Listener) -> None:
    assert ports.listening_addresses(file_server.port) == ["127.0.0.1"]
    assert ports.listening_addresses(file_server.port, root=file_server.pid) == []  # not its own descendant
    assert ports.listening_addresses(file_server.port, root=os.getppid()) == ["127.0.0.1"]


def test_descendants_agree_with_the_stat_walk(file_server: Listener) -> None:
    assert file_server.pid in ports.descendants(os.getpid())
    assert ports.descendants(os.getpid()) == ports._descendants_from_stat(os.getpid())


def test_kernels_without_children_files_fall_back_to_stat(
        file_server: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_children", lambda pid: None)
    assert file_server.pid in ports.descendants(os.getpid())
    assert ports.listening_addresses(file_server.port) == ["127.0.0.1"]


def test_parse_tcp_line() -> None:
    listen = ("   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 "
              "123456 1 0000000000000000 100 0 0 10 0")
    assert ports.parse_tcp_line(listen) == (123456, ("127.0.0.1", 8080))
    assert ports.parse_tcp_line(listen.replace(" 0A ", " 01 ")) is None  # ESTABLISHED
    assert ports.parse_tcp_line("  sl  local_address rem_address   st tx_queue rx_queue") is None
    six = ("   1: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A "
           "00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 100 0 0 10 0")
    assert ports.parse_tcp_line(six) == (777, ("::1", 3000))
    anywhere = listen.replace("0100007F:1F90", "00000000:1F90").replace(" 0A ", " 0A ")
    assert ports.parse_tcp_line(anywhere) == (123456, ("0.0.0.0", 8080))
    second_loopback = listen.replace("0100007F", "0200007F")
    assert ports.parse_tcp_line(second_loopback) == (123456, ("127.0.0.2", 8080))
    assert ports.parse_tcp_line(listen.replace("0100007F", "01007F")) is None  # not an address


def test_parent_from_stat_survives_odd_process_names() -> None:
    assert ports.parent_from_stat(b"42 (my (odd) name) S 7 42 42 0 -1") == 7
    assert ports.parent_from_stat(b"42 (plain) R 1 42") == 1
    assert ports.parent_from_stat(b"garbage") is None


def test_process_name_of_a_vanished_pid_is_none() -> None:
    assert ports.process_name(2**22 + 1) is None
    assert ports.socket_owners([2**22 + 1], [1]) == {}
