"""Worker processes: work on untrusted input (documents, diffs) that may spin or eat memory.

A worker is this program started again with a hidden command (`opentermd __compare`). It can
only hurt itself: it gets a time limit, a memory limit and its own process group, which is killed
when the time is up or the request goes away. Every kind of worker runs through `run` below.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import resource
import signal
from collections.abc import Sequence

from daemon.errors import ApiError
from daemon.resources import self_command

EXTRACT_TEXT = "__extract-text"
COMPARE = "__compare"
THUMBNAIL = "__thumbnail"
#: Hidden command -> the module whose `worker_main(args)` runs it (imported only in the worker).
COMMANDS = {EXTRACT_TEXT: "daemon.files.documents", COMPARE: "daemon.files.compare",
            THUMBNAIL: "daemon.files.thumbnails"}
#: Exit status of a worker that refused its input with a status and a detail (JSON on stderr).
REFUSED = 3


def is_worker_command(argv: Sequence[str]) -> bool:
    return bool(argv) and argv[0] in COMMANDS


def main(argv: Sequence[str]) -> int:
    """Runs in the worker process: the hidden command's job, with its arguments."""
    module = importlib.import_module(COMMANDS[argv[0]])
    code: int = module.worker_main(list(argv[1:]))
    return code


def limit_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


async def run(command: str, args: Sequence[str], *, timeout: float, on_timeout: ApiError,
              fds: Sequence[int] = (), stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    """Run a worker to its end: its exit status, stdout and stderr; `on_timeout` after `timeout` s (0: none).

    `fds` are passed to the worker (as /dev/fd/N), so it reads the very files the server checked.
    """
    import asyncio  # here, not at the top: the worker processes import this module and never need it

    from daemon import sandbox

    argv = [*self_command(), command, *args]
    if (box := sandbox.current()) is not None:
        # A hostile document that takes over its parser is then in the commands' sandbox: it cannot
        # read the daemon's state or key, nor write outside the workspace. It reads the file the
        # server opened (`fds`, passed on by bwrap), whatever the sandbox shows at that path.
        # Multi-user as root: as the user's uid, switched inside bwrap (which reaches the daemon's own
        # interpreter where the user's account may not, as a kernel does); without bwrap not as the user,
        # whose account may not reach it: the fds are all it reads.
        inside = box.inside()
        argv = (inside if inside.switch_inside else dataclasses.replace(box, user=None)).wrap(argv, "/")
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True, pass_fds=tuple(fds),
    )
    try:
        output, errors = await asyncio.wait_for(process.communicate(stdin), timeout or None)
    except TimeoutError:
        raise on_timeout from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
    assert process.returncode is not None
    return process.returncode, output, errors


def last_line(errors: bytes, default: str = "the worker failed") -> str:
    lines = errors.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else default
