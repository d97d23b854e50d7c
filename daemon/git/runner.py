"""Run `git`: an argument list (never a shell string), a time limit, bounded output, no prompts.

Every call goes through `run_git`, so the rules are written once: `-c core.quotepath=off` (names as
bytes, not octal escapes), no colour, no pager, no credential or terminal prompts, literal pathspecs
(a file named `:(glob)*` is that file), and reads that take no optional locks (a status while the
user's own `git` works must not make theirs fail on index.lock). The child gets its own process group,
killed whole at the time limit (a hook or a credential helper may have children of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from dataclasses import dataclass

from daemon import sandbox
from daemon.errors import ApiError
from daemon.processes.runner import child_environment

#: Reads (status, diff, log) answer in well under a second on ordinary repositories.
READ_TIMEOUT = 15.0
#: A commit runs the user's hooks (linters, tests), which may take a while.
WRITE_TIMEOUT = 120.0
#: Output kept from one call; past it the child is stopped and the result marked truncated.
OUTPUT_LIMIT = 8 * 1024 * 1024
ERROR_LIMIT = 64 * 1024
CHUNK = 64 * 1024


class GitMissing(ApiError):
    def __init__(self) -> None:
        super().__init__(404, "git is not installed on this machine")


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: bytes
    stderr: bytes
    truncated: bool = False

    @property
    def error_text(self) -> str:
        return self.stderr.decode("utf-8", "replace").strip()


def git_environment(*, read: bool, ceiling: str | None = None) -> dict[str, str]:
    """The child environment processes get (no OPEN_TERMINAL_* settings), plus git's quiet switches."""
    environment = child_environment()
    environment.update({
        "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "PAGER": "cat", "GIT_LITERAL_PATHSPECS": "1",
        "GIT_ASKPASS": "", "SSH_ASKPASS": "", "GCM_INTERACTIVE": "never", "LC_ALL": "C.UTF-8",
    })
    environment.pop("GIT_DIR", None)  # the daemon's own environment must not pick the repository
    environment.pop("GIT_WORK_TREE", None)
    if read:
        environment["GIT_OPTIONAL_LOCKS"] = "0"
    if ceiling:
        # With --root set, git never looks for a repository above the root.
        environment["GIT_CEILING_DIRECTORIES"] = ceiling
    return environment


def git_binary(environment: dict[str, str] | None = None) -> str | None:
    path = (environment if environment is not None else child_environment()).get("PATH", os.defpath)
    return shutil.which("git", path=path)


def git_available() -> bool:
    return git_binary() is not None


async def run_git(folder: str, arguments: list[str], *, read: bool = True, timeout: float | None = None,
                  limit: int = OUTPUT_LIMIT, ceiling: str | None = None, stdin: bytes | None = None) -> GitResult:
    """`git -C folder <arguments>`; raises 504 at the time limit (the group is killed), GitMissing."""
    environment = git_environment(read=read, ceiling=ceiling)
    binary = git_binary(environment)
    if binary is None:
        raise GitMissing()
    argv = [binary, "-C", folder, "-c", "core.quotepath=off", "-c", "color.ui=false", "--no-pager", *arguments]
    if (box := sandbox.current()) is not None:
        # A repository's hooks and config (core.fsmonitor, diff drivers) run programs: as a command would.
        argv = box.wrap(argv, "/")
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environment, start_new_session=True)
    try:
        return await asyncio.wait_for(_collect(process, limit, stdin),
                                      timeout if timeout is not None else (READ_TIMEOUT if read else WRITE_TIMEOUT))
    except TimeoutError:
        raise ApiError(504, f"git {arguments[0]} did not finish in time") from None
    finally:
        _kill_group(process)
        await process.wait()


async def _collect(process: asyncio.subprocess.Process, limit: int, stdin: bytes | None) -> GitResult:
    assert process.stdout is not None and process.stderr is not None
    if stdin is not None and process.stdin is not None:
        process.stdin.write(stdin)
        await process.stdin.drain()
        process.stdin.close()
    errors = asyncio.ensure_future(_read_capped(process.stderr, ERROR_LIMIT))
    output, truncated = await _read_capped(process.stdout, limit)
    if truncated:
        _kill_group(process)  # the rest is not wanted: stop producing it
    error_bytes, _ = await errors
    return GitResult(await process.wait(), output, error_bytes, truncated)


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, bool]:
    kept = bytearray()
    while chunk := await stream.read(CHUNK):
        if len(kept) + len(chunk) > limit:
            kept += chunk[: limit - len(kept)]
            return bytes(kept), True
        kept += chunk
    return bytes(kept), False


def _kill_group(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
