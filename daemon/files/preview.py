"""Office documents rendered to PDF by LibreOffice, for `/files/view?preview=true` (no HTTP here).

The reference runs `soffice --convert-to pdf` on the user's path, with the user's LibreOffice profile,
as often as it is asked. Here each conversion:

- reads the file the server opened and checked (a regular file beneath `--root`): it is copied, up to
  MAX_INPUT bytes, into a private work directory under a fixed name with the right suffix (LibreOffice
  needs a path and picks its filter by suffix), so a path swapped since the check is never opened;
- gets a private profile in that work directory, seeded with settings that keep a document from
  reaching out (no link updates, no macros), so concurrent conversions and the user's own LibreOffice
  never share a profile lock;
- runs in its own process group with a time limit, memory and file-size limits, killed (the whole
  group) on every way out: done, timed out, client gone, error, daemon shutdown; children also die
  with the daemon (`PR_SET_PDEATHSIG`);
- takes one of `slots` places (LibreOffice is heavy): a request waits for one at most the time limit,
  and past `max_waiting` waiters it is refused at once (429).

The PDF is cached in `<state>/previews/cache`, keyed by the file's version (ETag plus device, inode and
ctime, so two files of equal size and mtime never share an entry), written by rename (atomic), bounded
in total size with least-recently-used eviction. A document that failed or hung is remembered for
FAILURE_MEMORY seconds, so asking again costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import resource
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from daemon.errors import ApiError
from daemon.files import ops
from daemon.files.scanning import _die_with_parent
from daemon.resources import system_environment

#: What LibreOffice's writer, calc and impress open (the reference converts only .docx and .pptx).
CONVERTIBLE_SUFFIXES = (".docx", ".doc", ".pptx", ".ppt", ".xlsx", ".xls", ".odt", ".ods", ".odp", ".rtf")
MIB = 1024 * 1024
#: A larger document is served as it is (no preview): copying and rendering it would cost too much.
MAX_INPUT = 100 * MIB
#: Largest file LibreOffice may write (RLIMIT_FSIZE): a sheet of a million rows cannot fill the disk.
MAX_OUTPUT = 512 * MIB
#: Address space per LibreOffice process (RLIMIT_AS); measured: a simple document converts in 1 GiB.
MEMORY = 4 * 1024 * MIB
#: How long a failed or timed-out conversion is remembered (answered at once, without LibreOffice).
FAILURE_MEMORY = 600.0
#: Work directories older than this (or twice the time limit) belong to a daemon that died mid-conversion.
STALE_WORK = 3600.0
#: How often a running conversion looks whether its client is still there.
POLL = 0.05
TIMED_OUT = "timeout"
BROKEN = "broken"

#: Seeded into each private profile: never update links to other files or URLs when loading (a linked
#: section would otherwise pull a file from outside --root into the PDF), never run macros.
PROFILE_SETTINGS = (
    ("/org.openoffice.Office.Writer/Content/Update", "Link", "2"),
    ("/org.openoffice.Office.Calc/Content/Update", "Link", "2"),
    ("/org.openoffice.Office.Common/Security/Scripting", "MacroSecurityLevel", "3"),
    ("/org.openoffice.Office.Common/Security/Scripting", "DisableMacrosExecution", "true"),
    ("/org.openoffice.Office.Common/Security/Scripting", "BlockUntrustedRefererLinks", "true"),
)


def convertible(name: str) -> bool:
    return name.lower().endswith(CONVERTIBLE_SUFFIXES)


def find_libreoffice(setting: str) -> str | None:
    """The LibreOffice executable: `setting` when it names one, `off` for none, empty: soffice on PATH.

    Looked up on each request, so LibreOffice installed while the daemon runs is used at once.
    """
    if setting.strip().lower() == "off":
        return None
    if setting:
        return shutil.which(setting)
    return shutil.which("soffice") or shutil.which("libreoffice")


def cache_key(info: os.stat_result) -> str:
    """One file's one version. The ETag alone (mtime, size) is shared by `cp -p` copies of equal size."""
    version = f"{info.st_dev}:{info.st_ino}:{info.st_ctime_ns}:{ops.etag(info)}"
    return hashlib.sha256(version.encode()).hexdigest()


class Previewer:
    """The conversions of one app: their places, their running process groups, and the cache."""

    def __init__(self, directory: Path, *, libreoffice: str = "", timeout: float = 60.0,
                 cache_size: int = 256 * MIB, slots: int = 2, max_waiting: int = 8,
                 max_input: int = MAX_INPUT) -> None:
        self.cache_dir = directory / "cache"
        self.work_dir = directory / "work"
        self.libreoffice = libreoffice
        self.timeout = timeout
        self.cache_size = cache_size
        self.max_waiting = max_waiting
        self.max_input = max_input
        #: LibreOffice runs started: tests count them to see a cache hit.
        self.conversions = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(slots)
        self._key_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._groups: set[int] = set()
        self._closed = False

    def available(self, name: str) -> bool:
        """Whether `/files/view?path=<name>&preview=true` would try a PDF rendering (a page may embed it)."""
        return convertible(name) and find_libreoffice(self.libreoffice) is not None

    async def render(self, file: ops.OpenFile, name: str, *,
                     gone: Callable[[], bool] = lambda: False) -> ops.OpenFile | None:
        """The PDF rendering of `file` (named `name`) opened for reading, or None: serve the original.

        None without LibreOffice, for a type it does not convert, a file over `max_input`, or a document
        it cannot convert (as the reference). 422 when the conversion passes the time limit (remembered),
        429 when too many wait for a place, 499 when `gone()` says the client left.
        """
        if not convertible(name) or file.info.st_size > self.max_input:
            return None
        soffice = find_libreoffice(self.libreoffice)
        if soffice is None:
            return None
        key = cache_key(file.info)
        async with self._one_at_a_time(key):  # a second request for the same file waits, then hits the cache
            cached = await asyncio.to_thread(self._cached, key)
            if cached is not None:
                return cached
            if await asyncio.to_thread(self._remembered_failure, key, name):
                return None
            async with self._place():
                if gone():  # left while waiting for a place
                    raise _cancelled()
                return await self._convert(soffice, file, name, key, gone)

    def close(self) -> None:
        """Kill every running conversion (the app is shutting down)."""
        self._closed = True
        for group in list(self._groups):
            _kill_group(group)

    # --- places -------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, key: str) -> AsyncIterator[None]:
        lock, users = self._key_locks.get(key, (asyncio.Lock(), 0))
        self._key_locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._key_locks[key]
            if users == 1:
                del self._key_locks[key]
            else:
                self._key_locks[key] = (lock, users - 1)

    @contextlib.asynccontextmanager
    async def _place(self) -> AsyncIterator[None]:
        if self._slots.locked() and self.waiting >= self.max_waiting:
            raise _busy()
        self.waiting += 1
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise _busy() from None
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    # --- converting ---------------------------------------------------------------------------------

    async def _convert(self, soffice: str, file: ops.OpenFile, name: str, key: str,
                       gone: Callable[[], bool]) -> ops.OpenFile | None:
        work = await asyncio.to_thread(self._new_work, file, name)
        try:
            self.conversions += 1
            await self._run(_command(soffice, work), work, name, key, gone)
            pdf = await asyncio.to_thread(self._adopt, work / "out" / "document.pdf", key)
            if pdf is None and not self._closed:  # killed at shutdown: not the document's fault
                await asyncio.to_thread(self._remember_failure, key, BROKEN)
            return pdf
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def _new_work(self, file: ops.OpenFile, name: str) -> Path:
        """A private work directory holding a copy of the checked file and a seeded profile."""
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _remove_stale(self.work_dir, max(STALE_WORK, 2 * self.timeout))
        work = Path(tempfile.mkdtemp(dir=self.work_dir))
        try:
            for part in ("in", "out", "tmp", "profile/user"):
                (work / part).mkdir(parents=True)
            (work / "profile/user/registrymodifications.xcu").write_text(_registry(PROFILE_SETTINGS))
            suffix = os.path.splitext(name)[1].lower()
            _copy(file, work / "in" / f"document{suffix}", self.max_input)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return work

    async def _run(self, command: list[str], work: Path, name: str, key: str, gone: Callable[[], bool]) -> None:
        environment = {**system_environment(), "HOME": str(work), "TMPDIR": str(work / "tmp")}
        process = await asyncio.create_subprocess_exec(
            *command, cwd=work, env=environment, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_child_limits(),
        )
        self._groups.add(process.pid)
        exited = asyncio.ensure_future(process.wait())
        try:
            deadline = time.monotonic() + self.timeout
            while not exited.done():
                await asyncio.wait({exited}, timeout=POLL)
                if exited.done():
                    break
                if gone():
                    raise _cancelled()
                if time.monotonic() >= deadline:
                    await asyncio.to_thread(self._remember_failure, key, TIMED_OUT)
                    raise _too_slow(name, self.timeout)
        finally:
            # The whole group, also after a normal exit: LibreOffice's helpers must not outlive it.
            _kill_group(process.pid)
            self._groups.discard(process.pid)
            await asyncio.shield(exited)

    # --- the cache ----------------------------------------------------------------------------------

    def _cached(self, key: str) -> ops.OpenFile | None:
        """The cached PDF, its use noted for eviction; None when there is none."""
        try:
            fd = os.open(self.cache_dir / f"{key}.pdf", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        info = os.fstat(fd)
        # Only the access time moves: the PDF's ETag (mtime, size) stays, so browsers get their 304s.
        os.utime(fd, ns=(time.time_ns(), info.st_mtime_ns))
        return ops.OpenFile(fd, info)

    def _remembered_failure(self, key: str, name: str) -> bool:
        """True when this version failed to convert lately (serve the original); raises when it timed out."""
        marker = self.cache_dir / f"{key}.failed"
        try:
            reason, age = marker.read_text(), time.time() - marker.stat().st_mtime
        except FileNotFoundError:
            return False
        if age > FAILURE_MEMORY:
            return False
        if reason == TIMED_OUT:
            raise _too_slow(name, self.timeout)
        return True

    def _remember_failure(self, key: str, reason: str) -> None:
        self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_atomically(self.cache_dir / f"{key}.failed", reason.encode())

    def _adopt(self, output: Path, key: str) -> ops.OpenFile | None:
        """LibreOffice's PDF opened, and moved into the cache when it fits; None if there is none."""
        try:
            fd = os.open(output, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or os.pread(fd, 5, 0) != b"%PDF-":
            os.close(fd)
            return None
        if info.st_size <= self.cache_size:  # a larger one is served once, from the open descriptor
            self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.replace(output, self.cache_dir / f"{key}.pdf")  # same file system: atomic
            self._evict(keep=f"{key}.pdf")
        return ops.OpenFile(fd, info)

    def _evict(self, keep: str) -> None:
        """Least recently used PDFs go until the cache fits; expired failure notes go too."""
        entries = []
        now = time.time()
        with os.scandir(self.cache_dir) as scan:
            for entry in scan:
                with contextlib.suppress(FileNotFoundError):
                    info = entry.stat(follow_symlinks=False)
                    if entry.name.endswith(".failed") and now - info.st_mtime > FAILURE_MEMORY:
                        os.unlink(entry.path)
                    elif entry.name.endswith(".pdf") and entry.name != keep:
                        entries.append((info.st_atime_ns, info.st_size, entry.path))
        try:
            total = sum(size for _, size, _ in entries) + os.stat(self.cache_dir / keep).st_size
        except FileNotFoundError:  # a concurrent eviction took it: it is served from its descriptor anyway
            total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.cache_size:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size


def _command(soffice: str, work: Path) -> list[str]:
    return [
        soffice, "--headless", "--invisible", "--norestore", "--nologo", "--nofirststartwizard",
        "--nodefault", "--nolockcheck", f"-env:UserInstallation={(work / 'profile').as_uri()}",
        "--convert-to", "pdf", "--outdir", str(work / "out"),
        *(str(path) for path in (work / "in").iterdir()),
    ]


def _registry(settings: tuple[tuple[str, str, str], ...]) -> str:
    """A LibreOffice user registry (registrymodifications.xcu) holding `settings`."""
    items = "".join(f'<item oor:path="{path}"><prop oor:name="{name}" oor:op="fuse">'
                    f"<value>{value}</value></prop></item>\n" for path, name, value in settings)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<oor:items xmlns:oor="http://openoffice.org/2001/registry" '
            f'xmlns:xs="http://www.w3.org/2001/XMLSchema">\n{items}</oor:items>\n')


def _child_limits() -> Callable[[], None]:
    die_with_daemon = _die_with_parent(os.getpid())

    def limit() -> None:
        die_with_daemon()
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
        resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_OUTPUT, MAX_OUTPUT))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return limit


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def _copy(file: ops.OpenFile, target: Path, limit: int) -> None:
    """The checked file's bytes (from its descriptor, not its path), at most `limit` of them."""
    with open(target, "xb") as out:
        offset = 0
        while offset < limit and (block := os.pread(file.fd, min(MIB, limit - offset), offset)):
            out.write(block)
            offset += len(block)


def _write_atomically(target: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _remove_stale(work_dir: Path, age: float) -> None:
    now = time.time()
    with os.scandir(work_dir) as scan:
        for entry in scan:
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat(follow_symlinks=False).st_mtime > age:
                    shutil.rmtree(entry.path, ignore_errors=True)


def _too_slow(name: str, timeout: float) -> ApiError:
    return ApiError(422, f"Rendering {os.path.basename(name)} as PDF took longer than {timeout:g} s "
                         "(OPEN_TERMINAL_PREVIEW_TIMEOUT); the document may be damaged. Download it instead.")


def _cancelled() -> ApiError:
    return ApiError(499, "Preview cancelled: the client closed the connection")


def _busy() -> ApiError:
    return ApiError(429, "Too many document previews are being rendered; try again shortly")
