"""One Jupyter kernel: started with jupyter_client, spoken to over its channels, killed as a group.

jupyter_client starts every kernel in a session of its own (`start_new_session`), so the kernel
and whatever its cells start share one process group, whose id is the kernel's pid. Stopping
kills that whole group: a `subprocess.Popen("sleep 1000", shell=True)` in a cell does not outlive
its notebook. Loaded with the first notebook (jupyter_client and pyzmq cost ~0.1 s to import).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import deque
from dataclasses import dataclass
from hmac import compare_digest
from typing import Any

import orjson
from jupyter_client.adapter import adapt
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.session import Session

from daemon.limits import LimitGroup
from daemon.notebooks.outputs import CellOutputs
from daemon.sandbox import Sandbox, command_pid

DEFAULT_KERNEL = "python3"
#: How long a start waits for IOPub to carry its kernel_info's status once the shell has answered. The
#: status is published before the reply, so this only waits on a busy machine; 0.2 s was too short
#: there, and each retry went back to waiting for a new reply.
IOPUB_JOINED_WAIT = 2.0
#: How often a cell that prints nothing checks that its kernel is still alive.
LIVENESS_POLL = 1.0
#: After an interrupt (the time limit, or a lost kernel reply), how long the kernel gets to go idle
#: before it is restarted.
INTERRUPT_GRACE = 5.0
#: At most this long an interrupt waits for the running cell's code to begin before it signals anyway.
CELL_START_WAIT = 5.0
#: The last bytes a kernel wrote to stderr, quoted when it fails to start.
STDERR_TAIL = 2048
#: For IPython kernels: no history database. Each cell's sqlite commit was 40% of a `1+1` round trip
#: (bench/notebooks.py), and kernels sharing ~/.ipython's database lock each other out; In/Out and
#: execution counts still work (in memory).
IPYTHON_ARGUMENTS = ["--HistoryManager.enabled=False"]


class LeanSession(Session):
    """jupyter_client's Session, reading messages with less work: orjson, and dates left as the
    strings they are (the stock `extract_dates` parses every header's date with dateutil, a fifth of
    the daemon's work in a `1+1` round trip; nothing here reads them). The signature is still checked.
    The replay history is not kept: the sockets are private to this daemon and its kernel."""

    @classmethod
    def like(cls, session: Session) -> LeanSession:
        return cls(key=session.key, signature_scheme=session.signature_scheme, username=session.username,
                   session=session.session)

    def deserialize(self, msg_list: Any, content: bool = True, copy: bool = True) -> dict[str, Any]:
        if not (content and copy) or len(msg_list) < 5:
            return super().deserialize(msg_list, content, copy)
        if self.auth is not None and not compare_digest(msg_list[0], self.sign(msg_list[1:5])):
            raise ValueError(f"Invalid Signature: {msg_list[0]!r}")
        header = orjson.loads(msg_list[1])
        message = {"header": header, "msg_id": header["msg_id"], "msg_type": header["msg_type"],
                   "parent_header": orjson.loads(msg_list[2]), "metadata": orjson.loads(msg_list[3]),
                   "content": orjson.loads(msg_list[4]), "buffers": [memoryview(part) for part in msg_list[5:]]}
        # Messages of an older protocol are brought up to date as jupyter_client does.
        return message if str(header.get("version", "")).startswith("5.") else adapt(message)


class HandingManager(AsyncKernelManager):
    """Gives the connection file to `owner` (uid, gid) as soon as it is written: jupyter_client writes it
    just before the launch, once it holds everything (ports, keys), so it cannot be written earlier."""

    owner: tuple[int, int] | None = None

    def write_connection_file(self, **kwargs: Any) -> None:
        super().write_connection_file(**kwargs)
        if self.owner is not None:
            os.chown(self.connection_file, *self.owner)


class KernelStartError(Exception):
    """No kernel could be started: the message says which and why."""


@dataclass
class CellResult:
    status: str
    execution_count: int | None
    outputs: CellOutputs


def choose_kernel(wanted: str | None) -> str:
    """The notebook's kernel if it is installed, else python3 (which jupyter_client also finds in
    this very interpreter when it has ipykernel: the venv's `sys.executable -m ipykernel_launcher`)."""
    installed = KernelSpecManager().find_kernel_specs()  # reads the folders anew: a kernel installed since counts
    if wanted and wanted in installed:
        return wanted
    if DEFAULT_KERNEL in installed:
        return DEFAULT_KERNEL
    raise KernelStartError(
        f"No Jupyter kernel is installed (the notebook asks for {wanted or DEFAULT_KERNEL!r}): "
        "install one on this machine, e.g. `pip install ipykernel && python -m ipykernel install --user`")


class Kernel:
    def __init__(self, name: str, cwd: str, env: dict[str, str], box: Sandbox | None = None,
                 group: LimitGroup | None = None) -> None:
        self.name = name
        # Unix sockets in a private folder (0700) instead of loopback TCP ports: no other local user can
        # reach the kernel at all (over TCP only its HMAC key stops them), and a round trip is faster.
        self._sockets = tempfile.mkdtemp(prefix="opentermd-kernel-")
        self._manager = HandingManager(kernel_name=name, transport="ipc", ip=os.path.join(self._sockets, "k"))
        #: In the commands' sandbox, with the socket folder (and the connection file in it) bound in; as
        #: a user's uid, with the uid switched inside bwrap, which (as root) reaches the daemon's interpreter.
        self._sandbox = box.inside() if box is not None else None
        if box is not None:
            self._manager.connection_file = os.path.join(self._sockets, "kernel.json")
        #: The user's limit group (Part L's): the kernel and its cells are one tree under the user's.
        self.group = group
        self._wrapped = False
        self._client: Any = None
        #: Set once the running cell's code has begun (IOPub's execute_input): only then does the kernel
        #: turn a SIGINT into a KeyboardInterrupt in the cell; before, the signal is lost.
        self._cell_started = asyncio.Event()
        self._env = env
        self._cwd = cwd
        self._stderr = deque[bytes]()
        self._stderr_read = -1
        self._stderr_write = -1
        self.pgid: int | None = None

    # --- lifetime -------------------------------------------------------------------------------

    async def start(self, timeout: float) -> None:
        """Start and wait until the kernel answers, within `timeout` seconds; on any failure the
        kernel's group is killed and KernelStartError says why (with the kernel's last stderr)."""
        try:
            await asyncio.wait_for(self._start(), timeout)
        except BaseException as exc:
            reason = _reason(exc, timeout)
            await self.stop()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise KernelStartError(f"Failed to start kernel '{self.name}': {reason}{self._stderr_text()}") from None

    async def _start(self) -> None:
        spec = self._manager.kernel_spec
        if spec is None:
            raise KernelStartError("no kernelspec")
        if getattr(sys, "frozen", False) and spec.argv:
            # jupyter_client swaps `python`/`python3` for sys.executable, which here is this binary.
            spec.argv[0] = shutil.which(spec.argv[0], path=self._env.get("PATH")) or spec.argv[0]
        if not self._wrapped and spec.argv:  # once: a restart reuses the spec
            spec.argv = self._confined(spec.argv)
            self._wrapped = True
        self._hand_over()
        self._stderr_read, self._stderr_write = os.pipe()
        os.set_blocking(self._stderr_read, False)
        asyncio.get_running_loop().add_reader(self._stderr_read, self._read_stderr)
        ipython = any("ipykernel" in argument for argument in spec.argv)
        await self._manager.start_kernel(env=self._env, cwd=self._cwd, stdout=subprocess.DEVNULL,
                                         stderr=self._stderr_write, stdin=subprocess.DEVNULL,
                                         extra_arguments=IPYTHON_ARGUMENTS if ipython else [])
        provisioner = self._manager.provisioner
        self.pgid = getattr(provisioner, "pgid", None)
        self._client = self._manager.client(session=LeanSession.like(self._manager.session))
        self._client.start_channels()
        await self._until_ready()

    def _confined(self, argv: list[str]) -> list[str]:
        """The kernel's argv inside its limit group (outermost) and its sandbox."""
        if self._sandbox is not None:
            # JPY_PARENT_PID names the daemon, which the kernel cannot see from its pid namespace: it would
            # take its parent for gone and quit (bwrap's --die-with-parent does that job instead).
            argv = self._sandbox.wrap(_python_swapped(argv), self._cwd, binds=[self._sockets],
                                      unset=["JPY_PARENT_PID"])
        elif self.group is not None:
            argv = _python_swapped(argv)
        return self.group.wrap(argv) if self.group is not None else argv

    def _hand_over(self) -> None:
        """As another user's uid the kernel must read its connection file (written 0600 by the daemon) and
        make its sockets: both become that user's, in a folder only they (and root) can enter."""
        switch = self._sandbox.user if self._sandbox is not None else None
        if switch is None or os.geteuid() != 0:
            return
        os.chown(self._sockets, switch.uid, switch.gid)
        os.chmod(self._sockets, 0o700)
        self._manager.owner = (switch.uid, switch.gid)

    async def _until_ready(self) -> None:
        """jupyter_client's `wait_for_ready` without its last step, which waits until IOPub has been quiet
        for 0.2 s: half of a kernel's start here. Messages left over are harmless: a cell only takes
        those whose parent is its own request. The caller bounds the wait (`start`'s timeout)."""
        sent: set[str] = set()
        while True:
            sent.add(self._client.kernel_info())
            reply = await self._kernel_info_reply(sent)
            if reply is not None:
                with contextlib.suppress(queue.Empty):
                    # A SUB socket misses what was published before it joined: IOPub works once it carries
                    # the status messages of this very request.
                    await self._client.get_iopub_msg(timeout=IOPUB_JOINED_WAIT)
                    self._client._handle_kernel_info_reply(reply)  # the protocol version, as wait_for_ready does
                    return
            if not await self.alive():
                raise KernelStartError("the kernel exited before it answered")

    async def _kernel_info_reply(self, sent: set[str]) -> dict[str, Any] | None:
        """The first reply to any kernel_info sent so far, or None once a second passes without one.

        Any of them counts: a kernel slow to start (a busy machine) answers the requests queued
        meanwhile in order, and waiting for the newest only, one request sent per reply read, never
        caught up (a start then failed after its whole timeout)."""
        while True:
            try:
                reply: dict[str, Any] = await self._client.get_shell_msg(timeout=1.0)
            except queue.Empty:
                return None
            if reply["msg_type"] == "kernel_info_reply" and reply["parent_header"].get("msg_id") in sent:
                return reply

    def _read_stderr(self) -> None:
        try:
            data = os.read(self._stderr_read, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._stderr_read)
            return
        self._stderr.append(data)
        while sum(map(len, self._stderr)) > STDERR_TAIL and len(self._stderr) > 1:
            self._stderr.popleft()

    def _stderr_text(self) -> str:
        text = b"".join(self._stderr)[-STDERR_TAIL:].decode("utf-8", "replace").strip()
        return f"\n{text}" if text else ""

    async def alive(self) -> bool:
        return bool(await self._manager.is_alive())

    async def stop(self) -> None:
        """Kill the kernel's whole group, reap it, remove its connection file. Idempotent."""
        if self._client is not None:
            self._client.stop_channels()
        with contextlib.suppress(Exception):
            await self._manager.shutdown_kernel(now=True)  # SIGKILL to the group while its leader is unreaped
        if self.pgid is not None:
            # Cell children that outlived a kernel which died on its own (nobody signalled its group).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)
        if self._stderr_read >= 0:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._stderr_read)
            os.close(self._stderr_read)
            self._stderr_read = -1
        if self._stderr_write >= 0:
            os.close(self._stderr_write)
            self._stderr_write = -1
        shutil.rmtree(self._sockets, ignore_errors=True)

    async def interrupt(self) -> None:
        """A KeyboardInterrupt in the running cell: SIGINT once its code has begun (waited for, a few
        seconds at most: an interrupt that came right after the request, on a busy machine, was lost)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._cell_started.wait(), CELL_START_WAIT)
        await self._signal_interrupt()

    async def _signal_interrupt(self) -> None:
        """SIGINT to the kernel's group."""
        with contextlib.suppress(ProcessLookupError, RuntimeError):
            if self._sandbox is not None and self.pgid is not None:
                # The group holds bwrap too, which a SIGINT would end (and the kernel with it).
                os.kill(command_pid(self.pgid), signal.SIGINT)
                return
            await self._manager.interrupt_kernel()

    async def restart(self, timeout: float) -> None:
        """A fresh kernel in the same group slot (jupyter_client kills the old group first)."""
        await asyncio.wait_for(self._restart(), timeout)

    async def _restart(self) -> None:
        await self._manager.restart_kernel(now=True)
        self.pgid = getattr(self._manager.provisioner, "pgid", None)
        await self._until_ready()

    # --- cells ----------------------------------------------------------------------------------

    async def execute(self, code: str, *, limit: float | None, output_limit: int, restart_timeout: float
                      ) -> CellResult:
        """Run `code`; collect its outputs until the kernel goes idle. At `limit` seconds the kernel is
        interrupted; a kernel that then stays busy, or dies, is restarted, and the cell says so."""
        outputs = CellOutputs(output_limit)
        self._cell_started.clear()
        msg_id = self._client.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
        problem = await self._collect(msg_id, outputs, limit)
        if problem is not None:
            name, text = problem
            if name != "CellTimeoutError" or not await self._went_idle(msg_id, outputs):
                text += await self._try_restart(restart_timeout)
            outputs.add_error(name, text)
            return CellResult("error", outputs.execution_count, outputs)
        reply = await self._reply(msg_id)
        status = "ok" if reply.get("status", "ok") == "ok" else "error"
        if any(output.output_type == "error" for output in outputs.outputs):
            status = "error"
        return CellResult(status, reply.get("execution_count", outputs.execution_count), outputs)

    async def _collect(self, msg_id: str, outputs: CellOutputs, limit: float | None) -> tuple[str, str] | None:
        """Until idle: None. Else (error name, message): the time limit struck, or the kernel died."""
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit
        while True:
            wait = LIVENESS_POLL if deadline is None else max(0.0, min(LIVENESS_POLL, deadline - loop.time()))
            try:
                msg = await self._client.get_iopub_msg(timeout=wait)
            except queue.Empty:
                if not await self.alive():
                    return "DeadKernelError", "The kernel died while running this cell"
                if deadline is not None and loop.time() >= deadline:
                    await self._signal_interrupt()
                    return "CellTimeoutError", f"The cell ran past the {limit:g} s limit and was interrupted"
                continue
            if _is_idle(msg, msg_id):
                return None
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                if msg["header"]["msg_type"] == "execute_input":
                    self._cell_started.set()
                outputs.add(msg)

    async def _went_idle(self, msg_id: str, outputs: CellOutputs) -> bool:
        """After an interrupt: collect the KeyboardInterrupt and the idle, for a short grace."""
        try:
            result = await asyncio.wait_for(self._collect(msg_id, outputs, None), INTERRUPT_GRACE)
        except TimeoutError:
            return False
        return result is None

    async def _try_restart(self, timeout: float) -> str:
        try:
            await self.restart(timeout)
        except Exception as exc:
            return f"; restarting the kernel failed: {exc}"
        return "; the kernel was restarted (its variables are gone)"

    async def _reply(self, msg_id: str) -> dict[str, Any]:
        """The execute_reply's content (status, execution_count); {} if it never comes."""
        with contextlib.suppress(queue.Empty):
            while True:
                msg = await self._client.get_shell_msg(timeout=INTERRUPT_GRACE)
                if msg.get("parent_header", {}).get("msg_id") == msg_id:
                    content: dict[str, Any] = msg["content"]
                    return content
        return {}


def _is_idle(msg: dict[str, Any], msg_id: str) -> bool:
    return bool(msg["header"]["msg_type"] == "status" and msg["content"].get("execution_state") == "idle"
                and msg.get("parent_header", {}).get("msg_id") == msg_id)


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"it did not answer within {timeout:g} s"
    if isinstance(exc, FileNotFoundError | PermissionError) and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


def _python_swapped(argv: list[str]) -> list[str]:
    """What jupyter_client does to a kernel's argv when it starts it directly: `python3` is this Python
    (whose ipykernel it is). Behind bwrap's argv it would not see that `python3`, so it is done here."""
    pythons = ("python", "python3", f"python{sys.version_info.major}.{sys.version_info.minor}")
    if argv[0] in pythons and not getattr(sys, "frozen", False):
        return [sys.executable, *argv[1:]]
    if shutil.which(argv[0]) is None:  # said as Popen would say it, not as bwrap's execvp does
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    return list(argv)
