"""`--root` holds while a folder inside it is swapped, again and again, with a symlink to an outside folder.

The issue's attack: a thread exchanges `root/dir` (a real folder) and `root/swap` (a symlink to
`outside/`) with renameat2(RENAME_EXCHANGE) in a loop, while requests read, view, write,
list and archive `dir/...`. A server that checks the path with realpath and then opens it by name again returned
the outside file and created files outside hundreds of times in 1,500 tries. Opening beneath the
root (openat2, or the O_NOFOLLOW walk) must give 0 escapes, whichever way it resolves.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import io
import os
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest

from daemon.errors import ApiError
from daemon.files import beneath
from daemon.files.beneath import DIRECTORY_FLAGS, READ_FLAGS, Beneath
from daemon.keys import SCOPE
from tests.conftest import Api, ApiFactory, eventually

SECRET = "TOPSECRET"
TRIES = 1500
PARALLEL = 6
#: What each try asks for, in turn: the issue's read, view and write, and the listing and archive walks.
KINDS = ("read", "view", "write", "list", "archive")
RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class Swapper(threading.Thread):
    """Exchanges two names as fast as it can until told to stop."""

    def __init__(self, first: Path, second: Path) -> None:
        super().__init__(daemon=True)
        self.first, self.second = os.fsencode(first), os.fsencode(second)
        self.stop = threading.Event()
        self.swaps = 0

    def run(self) -> None:
        while not self.stop.is_set():
            if _libc.renameat2(-100, self.first, -100, self.second, RENAME_EXCHANGE) != 0:
                raise OSError(ctypes.get_errno(), "renameat2 failed")
            self.swaps += 1

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=10)
        assert not self.is_alive()
        if self.swaps % 2:  # Put the tree back the way it was.
            _libc.renameat2(-100, self.first, -100, self.second, RENAME_EXCHANGE)


def make_tree(base: Path) -> tuple[Path, Path]:
    root, outside = base / "root", base / "outside"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "secret.txt").write_text("inside\n")
    outside.mkdir()
    (outside / "secret.txt").write_text(f"{SECRET}\n")
    (outside / f"{SECRET}-only-outside.txt").write_text("listed only if a listing escaped\n")
    (root / "swap").symlink_to(outside)
    return root, outside


def unzipped(archive: bytes) -> str:
    """Every entry's name and content, so an escape shows whether it was a name or the bytes."""
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        return "\n".join(f"{name}: {opened.read(name).decode(errors='replace')}" for name in opened.namelist())


@pytest.mark.parametrize("resolver", ["openat2", "walk"])
async def test_swapping_a_folder_for_an_outside_symlink_never_escapes(
        api_with: ApiFactory, tmp_path: Path, resolver: str) -> None:
    root, outside = make_tree(tmp_path.resolve())
    api: Api = await api_with(file_root=root)
    if resolver == "walk":
        if not beneath.HAVE_OPENAT2:
            pytest.skip("openat2 is missing here: the walk is what runs anyway")
        app = api.client.app
        assert app is not None
        app[SCOPE].beneath = Beneath(str(root), use_openat2=False)  # What a kernel without openat2 runs.
    outside_before = sorted(os.listdir(outside))
    statuses: Counter[str] = Counter()
    escapes: list[str] = []
    refusals: Counter[str] = Counter()

    async def attempt(number: int) -> None:
        kind = KINDS[number % len(KINDS)]
        if kind == "write":
            request = api.request("POST", "/files/write", json={"path": f"dir/new-{number}.txt", "content": "w"})
        elif kind == "list":
            request = api.request("GET", "/files/list?directory=dir")
        elif kind == "archive":
            request = api.request("POST", "/files/archive", json={"paths": ["dir"]})
        else:
            request = api.request("GET", f"/files/{kind}?path={quote('dir/secret.txt')}")
        async with request as response:
            raw = await response.read()
            body = unzipped(raw) if kind == "archive" and response.status == 200 else raw.decode(errors="replace")
            statuses[f"{kind} {response.status}"] += 1
            if response.status == 400:
                refusals[body] += 1
            if SECRET in body:
                escapes.append(f"{kind}: {body[:80]}")

    fds_before = open_fds()
    swapper = Swapper(root / "dir", root / "swap")
    started = time.monotonic()
    swapper.start()
    try:
        queue = iter(range(TRIES))

        async def worker() -> None:
            for number in queue:
                await attempt(number)

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(PARALLEL))), 300)
    finally:
        swapper.finish()
    seconds = time.monotonic() - started
    created_outside = sorted(set(os.listdir(outside)) - set(outside_before))
    print(f"\n{resolver}: {TRIES} tries, {swapper.swaps} swaps, {len(escapes)} escapes, "
          f"{len(created_outside)} files created outside, {seconds:.1f} s; {dict(sorted(statuses.items()))}; "
          f"400s: {dict(refusals)}")
    assert escapes == [] and created_outside == []
    assert sum(statuses.values()) == TRIES and swapper.swaps > 0
    # The race was really run: some requests went through, some were refused by the kernel's check.
    assert statuses["read 200"] + statuses["view 200"] + statuses["write 200"] > 0
    # Every descriptor opened on the way was closed (a few keep-alive connections may remain).
    await eventually(lambda: open_fds() <= fds_before + 2 * PARALLEL)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- the resolver itself ------------------------------------------------------------------------------


@pytest.fixture(params=["openat2", "walk"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Beneath:
    if request.param == "openat2" and not beneath.HAVE_OPENAT2:
        pytest.skip("openat2 is missing on this kernel")
    root, _ = make_tree(tmp_path.resolve())
    (root / "link-in").symlink_to(root / "dir" / "secret.txt")
    return Beneath(str(root), use_openat2=request.param == "openat2")


def test_openat2_is_there_on_this_kernel() -> None:
    """Linux >= 5.6 has it; the suite would otherwise only exercise the fallback."""
    assert beneath.HAVE_OPENAT2


def test_inside_paths_open_and_symlinks_inside_are_followed(opener: Beneath) -> None:
    assert opener.root is not None
    for path in ("dir/secret.txt", "link-in"):
        fd = opener.open(os.path.join(opener.root, path), READ_FLAGS)
        try:
            assert os.read(fd, 100) == b"inside\n"
        finally:
            os.close(fd)
    os.close(opener.directory(os.path.join(opener.root, "made/a/b"), create=True))
    assert os.path.isdir(os.path.join(opener.root, "made/a/b"))


def test_a_path_through_an_outside_symlink_is_403(opener: Beneath) -> None:
    assert opener.root is not None
    with pytest.raises(ApiError) as refused:
        opener.open(os.path.join(opener.root, "swap/secret.txt"), READ_FLAGS)
    assert refused.value.status == 403


@pytest.mark.parametrize("use_openat2", [True, False])
def test_a_component_swapped_after_resolving_is_refused_by_the_kernel_step(tmp_path: Path, use_openat2: bool) -> None:
    """The realpath said `dir` is a folder; by the time of the open it is a symlink out: 403."""
    if use_openat2 and not beneath.HAVE_OPENAT2:
        pytest.skip("openat2 is missing on this kernel")
    root, _ = make_tree(tmp_path.resolve())
    root_fd = os.open(root, DIRECTORY_FLAGS)
    try:
        os.rename(root / "dir", root / "real-dir")
        (root / "dir").symlink_to(tmp_path.resolve() / "outside")
        resolve = Beneath._openat2 if use_openat2 else Beneath._walk
        with pytest.raises(ApiError) as refused:
            resolve(root_fd, "dir/secret.txt", READ_FLAGS, 0)
        assert refused.value.status == 403
    finally:
        os.close(root_fd)
