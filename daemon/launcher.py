"""The program inside a resident sandbox (daemon/resident.py): it starts the sandbox's commands.

It is bubblewrap's pid 1 (`--as-pid-1`): the kernel drops every signal sent to it from inside the
sandbox that it has no handler for, SIGKILL included, so a command's `kill -9 -1` or `pkill python`
cannot take the user's other commands and shells down with it. It is not dumpable: the sandbox's
processes (same uid) cannot ptrace it, nor open its descriptors through /proc.

On fd 3, a SOCK_SEQPACKET socket to the daemon, each request is one JSON message (`id`, `argv`, `env`,
`cwd`) carrying the PTY slave (SCM_RIGHTS). The launcher forks; the child makes the slave its
controlling terminal in a session of its own, says `{"started": id}` to the daemon (which reads the
child's pid, as the host numbers it, from the message's SCM_CREDENTIALS), and execs. The launcher
reaps every process that ends inside (it is their init) and reports its own children's ends as
`{"exit": id, "code": n}` (negative for a signal, as `os.waitstatus_to_exitcode` says). A request it
cannot start is answered `{"failed": id, "error": ...}`. End-of-file on fd 3 (the daemon closed the
sandbox, or died) ends it, and with it, as pid 1, every process in the sandbox.

Standard library only, and started with `python -I -S`: it runs the daemon's own interpreter from
inside the sandbox, where nothing of the venv's site-packages is needed.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import selectors
import signal
import socket
import termios

CONTROL_FD = 3
#: Signals a command starts with at their default action (as daemon/processes/runner.py's children).
DEFAULT_SIGNALS = ("SIGPIPE", "SIGXFSZ", "SIGINT", "SIGQUIT", "SIGHUP", "SIGTERM", "SIGTSTP", "SIGTTIN",
                   "SIGTTOU", "SIGCHLD")
MESSAGE_LIMIT = 1 << 20
PR_SET_NAME = 15
PR_SET_DUMPABLE = 4
#: What `ps` inside the sandbox calls it.
NAME = b"opentermd-init"


def main() -> int:
    os.set_inheritable(CONTROL_FD, False)  # inherited from bwrap: a command must not get it
    control = socket.socket(fileno=CONTROL_FD)
    _set_up_process()
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # pid 1 without a handler: ignored from inside
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the selector (set_wakeup_fd)
    children: dict[int, int] = {}  # pid -> request id
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    control.sendall(b'{"ready": true}')
    while True:
        for key, _ in selector.select():
            if key.fileobj is control and not _serve(control, children):
                return 0
            if key.fd == wake_read:
                _drain(wake_read)
        _reap(control, children)


def _serve(control: socket.socket, children: dict[int, int]) -> bool:
    """One request; False at end-of-file."""
    try:
        message, fds, _, _ = socket.recv_fds(control, MESSAGE_LIMIT, 1)
    except InterruptedError:
        return True
    except OSError:
        return False
    if not message:
        for fd in fds:
            os.close(fd)
        return False
    request = json.loads(message)
    try:
        if len(fds) != 1:
            raise OSError("a request comes with one PTY")
        children[_start(control, request, fds[0])] = request["id"]
    except OSError as exc:
        control.sendall(json.dumps({"failed": request["id"], "error": exc.strerror or str(exc)}).encode())
    finally:
        for fd in fds:
            os.close(fd)
    return True


def _start(control: socket.socket, request: dict[str, object], slave: int) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            _become(control, request, slave)
        finally:
            os._exit(127)
    return pid


def _become(control: socket.socket, request: dict[str, object], slave: int) -> None:
    """In the child: the slave as controlling terminal and stdio, then the command."""
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    for name in DEFAULT_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    argv, env, cwd = request["argv"], request["env"], request["cwd"]
    assert isinstance(argv, list) and isinstance(env, dict) and isinstance(cwd, str)
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")  # the command's own `cd` says why
    # Sent by the child itself: the daemon learns its pid, translated by the kernel into its own numbering.
    control.sendall(json.dumps({"started": request["id"]}).encode())
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the socket, the slave as received, the wake-up pipe
    try:
        os.execve(argv[0], argv, env)
    except OSError as exc:
        os.write(2, f"opentermd: cannot start {argv[0]}: {exc.strerror}\r\n".encode())


def _reap(control: socket.socket, children: dict[int, int]) -> None:
    """Reap whatever has ended (orphans too: this is their init); report our children's ends."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        request = children.pop(pid, None)
        if request is not None:
            control.sendall(json.dumps({"exit": request, "code": os.waitstatus_to_exitcode(status)}).encode())


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _set_up_process() -> None:
    """Not dumpable (see the module's docstring), and named for `ps`."""
    libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's own libc: no ldconfig run to find it
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(NAME), 0, 0, 0)


if __name__ == "__main__":
    raise SystemExit(main())
