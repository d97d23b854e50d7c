"""The program inside a resident sandbox (daemon/resident.py): it starts the sandbox's commands.

It is bubblewrap's pid 1 (`--as-pid-1`): the kernel drops every signal sent to it from inside the
sandbox that it has no handler for, SIGKILL included, so a command's `kill -9 -1` or `pkill` cannot
take the user's other commands and shells down with it. It is not dumpable: the sandbox's processes
(same uid) cannot ptrace it, nor open its descriptors or read its environment through /proc.

On fd 3, a SOCK_SEQPACKET socket to the daemon, each request is one JSON message (`id`, `argv`, `env`)
carrying the PTY slave (SCM_RIGHTS). The launcher starts it with posix_spawn (vfork-fast; a fork of
this interpreter cost a millisecond more): in a session of its own, where opening the slave again
(through /proc/self/fd: the host's /dev/pts is not mounted here) makes it the controlling terminal,
then as stdin, stdout and stderr, with the signals at their default actions. It answers
`{"started": id, "pid": n}` (n as numbered inside), or `{"failed": id, "error": ...}`.

The daemon finds the host's number for n among this process's children and says `{"known": id}`;
until then the child is not reaped, even once it has ended (a zombie keeps its number), so that a
command ending at once is still found. The launcher reaps every process that ends inside (it is
their init) and reports its own children's ends as `{"exit": id, "code": n}` (negative for a
signal, as `os.waitstatus_to_exitcode` says). End-of-file on fd 3 (the daemon closed the sandbox, or
died) ends it, and with it, as pid 1, every process in the sandbox.

Standard library only, and started with `python -I -S`: it runs the daemon's own interpreter from
inside the sandbox, where nothing of the venv's site-packages is needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket

CONTROL_FD = 3
#: The argument that makes the frozen binary this program (daemon/__main__.py, daemon/resident.py).
ARGUMENT = "__sandbox-launcher"
#: Back to their default action in every command and shell, the daemon's own (daemon/processes/runner.py)
#: and the launcher's, as subprocess's restore_signals does and a login shell has them. An ignored signal
#: stays ignored across exec: Python ignores SIGPIPE and SIGXFSZ (so `yes | head -1` printed "Broken pipe",
#: and a file size limit was a silent EFBIG), and a daemon started in the background of a script ignores
#: SIGINT and SIGQUIT (so Ctrl-C reached no command or shell).
DEFAULT_SIGNALS = tuple(getattr(signal, name) for name in (
    "SIGPIPE", "SIGXFSZ", "SIGINT", "SIGQUIT", "SIGHUP", "SIGTERM", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGCHLD"))
MESSAGE_LIMIT = 1 << 20
PR_SET_NAME = 15
PR_SET_DUMPABLE = 4
#: What `ps` inside the sandbox calls it.
NAME = b"opentermd-init"


class Launcher:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        #: Our children by pid (as numbered inside): the request each answers.
        self.children: dict[int, int] = {}
        #: Children whose host pid the daemon has not found yet: not reaped until it has.
        self.unknown: set[int] = set()

    def serve(self) -> bool:
        """One message from the daemon; False at end-of-file."""
        try:
            message, fds, _, _ = socket.recv_fds(self.control, MESSAGE_LIMIT, 1)
        except InterruptedError:
            return True
        except OSError:
            return False
        try:
            if not message:
                return False
            said = json.loads(message)
            if "known" in said:
                self.unknown.difference_update(self.pids_of(said["known"]))
            elif "signal" in said:  # a command whose host pid the daemon could not find
                for pid in self.pids_of(said["signal"]):
                    with contextlib.suppress(OSError):
                        os.killpg(pid, int(said["number"]))
            elif len(fds) == 1:
                self.start(said, fds[0])
            return True
        finally:
            for fd in fds:
                os.close(fd)

    def pids_of(self, request: object) -> list[int]:
        return [pid for pid, answers in self.children.items() if answers == request]

    def start(self, request: dict[str, object], slave: int) -> None:
        argv, env = request["argv"], request["env"]
        assert isinstance(argv, list) and isinstance(env, dict)
        actions = [(os.POSIX_SPAWN_OPEN, 0, f"/proc/self/fd/{slave}", os.O_RDWR, 0),
                   (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2), (os.POSIX_SPAWN_CLOSE, slave)]
        try:
            pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True, setsigdef=DEFAULT_SIGNALS)
        except OSError as exc:
            self.say({"failed": request["id"], "error": exc.strerror or str(exc)})
            return
        self.children[pid] = int(str(request["id"]))
        self.unknown.add(pid)
        self.say({"started": request["id"], "pid": pid})

    def reap(self) -> None:
        """Reap whatever has ended (orphans too: this is their init); report our children's ends. A
        child the daemon has not found yet waits (and so, for that moment, do the others)."""
        while True:
            try:
                ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if ended is None or ended.si_pid in self.unknown:
                return
            pid, status = os.waitpid(ended.si_pid, 0)
            request = self.children.pop(pid, None)
            if request is not None:
                self.say({"exit": request, "code": os.waitstatus_to_exitcode(status)})

    def say(self, message: dict[str, object]) -> None:
        self.control.sendall(json.dumps(message).encode())


def main() -> int:
    # Whatever else the daemon was started with (a shell's or a CI runner's descriptors) and bwrap passed
    # on: no command may inherit it.
    os.closerange(CONTROL_FD + 1, os.sysconf("SC_OPEN_MAX"))
    os.set_inheritable(CONTROL_FD, False)  # inherited from bwrap: a command must not get it
    launcher = Launcher(socket.socket(fileno=CONTROL_FD))
    _set_up_process()
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # pid 1 without a handler: ignored from inside
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the selector (set_wakeup_fd)
    selector = selectors.DefaultSelector()
    selector.register(launcher.control, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    launcher.say({"ready": True})
    while True:
        for key, _ in selector.select():
            if key.fileobj is launcher.control and not launcher.serve():
                return 0
            if key.fd == wake_read:
                _drain(wake_read)
        launcher.reap()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _set_up_process() -> None:
    """Not dumpable (see the module's docstring), and named for `ps`."""
    import ctypes  # here: daemon/__main__.py imports this module on every worker's start

    libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's own libc: no ldconfig run to find it
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(NAME), 0, 0, 0)


if __name__ == "__main__":
    raise SystemExit(main())
