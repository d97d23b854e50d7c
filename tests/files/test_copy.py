"""Copy and duplicate: streamed in the kernel, placed atomically, never over anything, confined,
folders with bounds; symlinks copied as symlinks, special files skipped; partial copies removed."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from daemon.errors import ApiError
from daemon.files import copying
from daemon.files.copying import Budget, Job
from daemon.files.manage_endpoints import run_job
from daemon.files.naming import Conflict
from tests.conftest import Api, ApiFactory, FakeClock, eventually
from tests.files.test_upload_conflicts import form


def tree(root: Path) -> dict[str, str]:
    """Every entry under root: a file's content, a link's target, `<dir>` for folders."""
    found = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder, name)
            relative = str(path.relative_to(root))
            if path.is_symlink():
                found[relative] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[relative] = "<dir>"
            elif path.is_file():
                found[relative] = path.read_text()
    return found


async def test_copy_a_file_keeping_its_mode_and_time(api: Api, home: Path) -> None:
    source = home / "run.sh"
    source.write_text("#!/bin/sh\necho hi\n" * 10_000)
    source.chmod(0o750)
    os.utime(source, (1_000_000_000, 1_000_000_000))
    reply = await api.json("POST", "/files/copy", json={"source": "run.sh", "destination": "sub/../copy.sh"})
    assert reply == {"source": str(source), "destination": str(home / "copy.sh"), "entries": 1,
                     "size": source.stat().st_size, "skipped": []}
    copied = home / "copy.sh"
    assert copied.read_text() == source.read_text()
    assert stat.S_IMODE(copied.stat().st_mode) == 0o750
    assert copied.stat().st_mtime == 1_000_000_000
    assert copied.stat().st_ino != source.stat().st_ino


async def test_copy_never_replaces_an_existing_entry(api: Api, home: Path) -> None:
    (home / "a.txt").write_text("new")
    (home / "b.txt").write_text("precious")
    reply = await api.json("POST", "/files/copy", json={"source": "a.txt", "destination": "b.txt"}, status=409)
    assert reply == {"detail": "File exists: b.txt"}
    assert (home / "b.txt").read_text() == "precious"
    reply = await api.json("POST", "/files/copy", json={"source": "a.txt", "destination": "b.txt",
                                                        "conflict": "keep-both"})
    assert reply["destination"] == str(home / "b (1).txt")
    assert sorted(os.listdir(home)) == ["a.txt", "b (1).txt", "b.txt"]


async def test_duplicate_takes_the_copy_name_then_the_next(api: Api, home: Path) -> None:
    (home / "report.tar.gz").write_text("r")
    (home / "folder").mkdir()
    (home / "folder/x").write_text("x")
    names = [(await api.json("POST", "/files/copy", json={"source": "report.tar.gz"}))["destination"]
             for _ in range(3)]
    assert names == [str(home / n) for n in ("report (copy).tar.gz", "report (copy 2).tar.gz",
                                             "report (copy 3).tar.gz")]
    reply = await api.json("POST", "/files/copy", json={"source": "folder"})
    assert reply["destination"] == str(home / "folder (copy)")
    assert tree(home / "folder (copy)") == {"x": "x"}


async def test_a_folder_is_copied_whole_links_as_links_specials_skipped(api: Api, home: Path, tmp_path: Path) -> None:
    source = home / "project"
    (source / "src/deep").mkdir(parents=True)
    (source / "src/main.py").write_text("print(1)")
    (source / "src/deep/data.bin").write_bytes(b"\0\1" * 1000)
    (source / "readonly").mkdir()
    (source / "readonly/kept.txt").write_text("kept")
    (tmp_path / "secret.txt").write_text("outside")
    (source / "outside-link").symlink_to(tmp_path / "secret.txt")
    (source / "dir-link").symlink_to(tmp_path)
    os.mkfifo(source / "pipe")
    os.mknod(source / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    (source / "readonly").chmod(0o555)
    reply = await api.json("POST", "/files/copy", json={"source": "project", "destination": "backup"})
    assert sorted(reply["skipped"]) == ["pipe", "zero"]
    copied = home / "backup"
    assert tree(copied) == {
        "src": "<dir>", "src/main.py": "print(1)", "src/deep": "<dir>", "src/deep/data.bin": "\0\1" * 1000,
        "readonly": "<dir>", "readonly/kept.txt": "kept",
        "outside-link": f"-> {tmp_path / 'secret.txt'}", "dir-link": f"-> {tmp_path}"}
    assert stat.S_IMODE((copied / "readonly").stat().st_mode) == 0o555
    assert not [name for name in os.listdir(home) if name.startswith(".")]


async def test_a_folder_cannot_be_copied_into_itself(api: Api, home: Path) -> None:
    (home / "a/b").mkdir(parents=True)
    for destination in ("a/inside", "a/b/deeper"):
        reply = await api.json("POST", "/files/copy", json={"source": "a", "destination": destination}, status=400)
        assert reply == {"detail": "Cannot copy a folder into itself"}
    assert tree(home / "a") == {"b": "<dir>"}


async def test_devices_and_fifos_are_refused_by_name(api: Api, home: Path) -> None:
    os.mkfifo(home / "pipe")
    os.mknod(home / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    for name in ("pipe", "zero"):
        await api.json("POST", "/files/copy", json={"source": name, "destination": name + "2"}, status=400)
    assert sorted(os.listdir(home)) == ["pipe", "zero"]


async def test_copy_is_confined_beneath_the_root(api_with: ApiFactory, home: Path, tmp_path: Path) -> None:
    api = await api_with(file_root=home)
    (tmp_path / "secret.txt").write_text("outside")
    (home / "link-out").symlink_to(tmp_path)
    (home / "a.txt").write_text("a")
    await api.json("POST", "/files/copy", json={"source": str(tmp_path / "secret.txt"), "destination": "s"},
                   status=403)
    await api.json("POST", "/files/copy", json={"source": "link-out/secret.txt", "destination": "s"}, status=403)
    await api.json("POST", "/files/copy", json={"source": "a.txt", "destination": "link-out/a.txt"}, status=403)
    await api.json("POST", "/files/copy", json={"source": "a.txt", "destination": "../a.txt"}, status=403)
    assert sorted(os.listdir(tmp_path / "home")) == ["a.txt", "link-out"]
    assert not (tmp_path / "a.txt").exists()


async def test_past_the_size_limit_nothing_is_kept(api_with: ApiFactory, home: Path) -> None:
    api = await api_with(copy_max_size=10_000)
    (home / "tree").mkdir()
    for number in range(4):
        (home / "tree" / f"{number}.bin").write_bytes(b"x" * 3_000)
    reply = await api.json("POST", "/files/copy", json={"source": "tree", "destination": "copy"}, status=413)
    assert reply == {"detail": "More than 10000 bytes to copy; nothing was kept"}
    assert sorted(os.listdir(home)) == ["tree"]


async def test_bad_requests(api: Api, home: Path) -> None:
    (home / "a.txt").write_text("a")
    await api.json("POST", "/files/copy", json={"source": "missing", "destination": "x"}, status=404)
    await api.json("POST", "/files/copy", json={"source": "a.txt", "destination": "nowhere/x"}, status=404)
    await api.json("POST", "/files/copy", json={"source": "a.txt", "destination": "a\0b"}, status=400)
    await api.json("POST", "/files/copy", json={"source": "a.txt"[:0]}, status=400)
    await api.json("POST", "/files/copy", json={"destination": "x"}, status=422)


# --- the plain function: limits, deadline, cancel ------------------------------------------------------


def test_too_many_entries_or_too_deep_leave_nothing(home: Path) -> None:
    (home / "many").mkdir()
    for number in range(20):
        (home / "many" / str(number)).write_text("")
    with pytest.raises(ApiError) as refused:
        copying.copy(str(home / "many"), str(home / "copy"), Budget(10**9, max_entries=10), Job(0))
    assert refused.value.status == 413
    deep = home / "deep"
    deep.joinpath(*["d"] * (copying.MAX_DEPTH + 1)).mkdir(parents=True)
    with pytest.raises(ApiError) as refused:
        copying.copy(str(deep), str(home / "deep-copy"), Budget(10**9), Job(0))
    assert refused.value.status == 413
    assert sorted(os.listdir(home)) == ["deep", "many"]


def test_past_the_deadline_the_partial_copy_is_removed(home: Path) -> None:
    (home / "tree").mkdir()
    for number in range(5):
        (home / "tree" / str(number)).write_text("x")
    clock = FakeClock()
    job = Job(10, clock=clock)
    budget = Budget(10**9)

    class Late(Budget):
        def entry(self) -> None:  # The deadline passes while the copy is under way.
            super().entry()
            if self.entries == 3:
                clock.advance(10)

    with pytest.raises(ApiError) as stopped:
        copying.copy(str(home / "tree"), str(home / "copy"), Late(budget.max_bytes), job)
    assert stopped.value.status == 408
    assert sorted(os.listdir(home)) == ["tree"]


def test_a_cancelled_copy_stops_and_removes_what_it_made(home: Path) -> None:
    """What the endpoint does when its client disconnects: the flag is set from another thread."""
    (home / "big.bin").write_bytes(os.urandom(1024) * 1024 * 40)  # five copy blocks
    job = Job(0)

    class Cancelling(Budget):
        def take(self, size: int) -> None:
            super().take(size)
            threading.Thread(target=job.cancel).start()

    with pytest.raises(copying.Cancelled):
        copying.copy(str(home / "big.bin"), str(home / "copy.bin"), Cancelling(10**10), job)
    assert os.listdir(home) == ["big.bin"]


def test_conflict_rules_of_the_plain_function(home: Path) -> None:
    (home / "a").write_text("a")
    (home / "b").write_text("b")
    with pytest.raises(ApiError):
        copying.copy(str(home / "a"), str(home / "b"), Budget(100), Job(0), conflict=Conflict.REFUSE)
    assert copying.copy(str(home / "a"), str(home / "b"), Budget(100), Job(0),
                        conflict=Conflict.KEEP_BOTH) == str(home / "b (1)")


async def test_a_client_that_leaves_cancels_the_running_job(aiohttp_client: Any) -> None:
    """The endpoints' wiring: run_job sees the connection close and sets the Job's cancel flag,
    which the copy and the extraction check between blocks (tested above on the plain function)."""
    started, seen = threading.Event(), threading.Event()

    def work(job: Job) -> str:
        started.set()
        if job.cancelled.wait(timeout=60):
            seen.set()
        job.check()  # raises Cancelled, as a copy does at its next block
        return "finished"

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=await run_job(request, work, timeout=120))

    app = web.Application()
    app.router.add_post("/work", handler)
    client = await aiohttp_client(app)
    request = asyncio.ensure_future(client.post("/work"))
    await eventually(started.is_set)
    request.cancel()  # the client goes away mid-request: its connection is closed
    with pytest.raises(asyncio.CancelledError):
        await request
    await eventually(seen.is_set)


def test_a_job_past_its_deadline_refuses_to_go_on() -> None:
    clock = FakeClock()
    job = Job(5, clock=clock)
    job.check()
    clock.advance(5)
    with pytest.raises(ApiError) as late:
        job.check()
    assert late.value.status == 408


@pytest.fixture
def locked(home: Path) -> Iterator[Path]:
    """A real immutable folder (chattr +i: even root can make nothing in it)."""
    folder = home / "locked"
    folder.mkdir()
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


async def test_a_refused_copy_names_the_users_file_never_the_temp_one(api: Api, home: Path, locked: Path) -> None:
    (home / "a.txt").write_text("a")
    (home / "tree").mkdir()
    for source in ("a.txt", "tree"):
        reply = await api.json("POST", "/files/copy", json={"source": source, "destination": f"locked/{source}"},
                               status=403)
        assert reply == {"detail": f"Operation not permitted: {source}"}
    reply = await api.json("POST", "/files/upload?directory=locked&conflict=keep-both", status=403,
                           data=form(b"x", "up.txt"))
    assert reply == {"detail": "Operation not permitted: up.txt"}
    assert os.listdir(locked) == []
