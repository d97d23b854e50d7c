"""The trash: DELETE /files/delete moves items into a freedesktop.org trash; the hidden /files/trash
routes list, restore, remove and empty it. Real files, real server, a real tmpfs for another mount."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from daemon.app import create_app
from daemon.files.trash import Limits
from daemon.files.trash_endpoints import TRASH
from tests.conftest import Api, ApiFactory, FakeClock, make_config, needs_host_view

UID = os.getuid()
DATE = re.compile(r"^DeletionDate=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$", re.M)


def q(path: str | Path) -> str:
    return quote(str(path), safe="")


@pytest.fixture
def trash(home: Path) -> Path:
    """The home trash of the tests' scratch HOME (~/.local/share/Trash)."""
    return home / ".local/share/Trash"


async def entries(api: Api) -> list[dict[str, Any]]:
    return list((await api.json("GET", "/files/trash"))["entries"])


def info_of(trash: Path, name: str) -> str:
    return (trash / "info" / f"{name}.trashinfo").read_text()


async def test_a_file_goes_to_the_trash_in_the_spec_layout_and_comes_back(api: Api, home: Path, trash: Path) -> None:
    (home / "notes one%.txt").write_text("precious")
    reply = await api.json("DELETE", f"/files/delete?path={q('notes one%.txt')}")
    assert reply == {"path": str(home / "notes one%.txt"), "type": "file"}
    assert not (home / "notes one%.txt").exists()
    assert (trash / "files" / "notes one%.txt").read_text() == "precious"
    info = info_of(trash, "notes one%.txt")
    assert info.startswith("[Trash Info]\n")
    assert f"\nPath={quote(str(home))}/notes%20one%25.txt\n" in info
    assert DATE.search(info)
    [entry] = await entries(api)
    assert entry["name"] == "notes one%.txt" and entry["original_path"] == str(home / "notes one%.txt")
    assert entry["size"] == 8 and entry["type"] == "file"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", entry["deleted_at"])
    restored = await api.json("POST", "/files/trash/restore", json={"id": entry["id"]})
    assert restored == {"path": str(home / "notes one%.txt"), "type": "file"}
    assert (home / "notes one%.txt").read_text() == "precious"
    assert not list((trash / "files").iterdir()) and not list((trash / "info").iterdir())
    assert await entries(api) == []


async def test_a_folder_goes_whole_and_restores_into_recreated_parents(api: Api, home: Path, trash: Path) -> None:
    (home / "a/b/tree/sub").mkdir(parents=True)
    (home / "a/b/tree/sub/x.txt").write_text("12345")
    (home / "a/b/tree/y.txt").write_text("123")
    assert await api.json("DELETE", "/files/delete?path=a/b/tree") == {"path": str(home / "a/b/tree"),
                                                                         "type": "directory"}
    assert (trash / "files/tree/sub/x.txt").read_text() == "12345"
    [entry] = await entries(api)
    assert entry["type"] == "directory" and entry["size"] == 8
    await api.json("DELETE", "/files/delete?path=a")  # the parents are gone too
    tree_id = next(e["id"] for e in await entries(api) if e["name"] == "tree")
    await api.json("POST", "/files/trash/restore", json={"id": tree_id})
    assert (home / "a/b/tree/sub/x.txt").read_text() == "12345"


async def test_same_names_in_the_trash_are_kept_apart(api: Api, home: Path, trash: Path) -> None:
    for text in ("first", "second", "third"):
        (home / "same.txt").write_text(text)
        await api.json("DELETE", "/files/delete?path=same.txt")
    assert sorted(os.listdir(trash / "files")) == ["same (1).txt", "same (2).txt", "same.txt"]
    assert sorted(os.listdir(trash / "info")) == [f"{n}.trashinfo" for n in ("same (1).txt", "same (2).txt",
                                                                             "same.txt")]
    assert {(trash / "files" / n).read_text() for n in os.listdir(trash / "files")} == {"first", "second", "third"}
    listed = await entries(api)
    assert [e["name"] for e in listed] == ["same.txt"] * 3
    assert all(e["original_path"] == str(home / "same.txt") for e in listed)


async def test_deletes_at_once_of_the_same_name_each_get_their_own_trash_name(api: Api, home: Path,
                                                                             trash: Path) -> None:
    for index in range(8):
        (home / f"d{index}").mkdir()
        (home / f"d{index}/same.txt").write_text(str(index))
    await asyncio.gather(*(api.json("DELETE", f"/files/delete?path=d{index}/same.txt") for index in range(8)))
    assert sorted((trash / "files" / name).read_text() for name in os.listdir(trash / "files")) == [
        str(index) for index in range(8)]
    assert len(os.listdir(trash / "info")) == 8


async def test_restore_refuses_to_clobber_and_suggests_a_free_name(api: Api, home: Path) -> None:
    (home / "r.txt").write_text("old")
    await api.json("DELETE", "/files/delete?path=r.txt")
    (home / "r.txt").write_text("new")
    (home / "r (1).txt").write_text("taken too")
    [entry] = await entries(api)
    reply = await api.json("POST", "/files/trash/restore", json={"id": entry["id"]}, status=409)
    assert reply["suggestion"] == "r (2).txt" and str(home / "r.txt") in reply["detail"]
    assert (home / "r.txt").read_text() == "new"
    restored = await api.json("POST", "/files/trash/restore", json={"id": entry["id"], "name": reply["suggestion"]})
    assert restored["path"] == str(home / "r (2).txt") and (home / "r (2).txt").read_text() == "old"
    assert await entries(api) == []


async def test_restore_with_a_bad_name_or_an_unknown_id_is_refused(api: Api, home: Path) -> None:
    (home / "n.txt").write_text("x")
    await api.json("DELETE", "/files/delete?path=n.txt")
    [entry] = await entries(api)
    for name in ("../escape", "a/b", ".."):
        await api.json("POST", "/files/trash/restore", json={"id": entry["id"], "name": name}, status=400)
    await api.json("POST", "/files/trash/restore", json={"id": "nope-n.txt"}, status=404)
    await api.json("DELETE", "/files/trash?id=nope", status=404)
    await api.json("DELETE", "/files/trash?id=", status=404)
    await api.json("DELETE", f"/files/trash?id={q(entry['id'] + '/../x')}", status=404)
    await api.json("POST", "/files/trash/restore", json={"id": "a\u0000b"}, status=404)
    for body in ({}, {"id": 5}, {"id": entry["id"], "name": 7}):
        await api.json("POST", "/files/trash/restore", json=body, status=422)
    assert len(await entries(api)) == 1


@needs_host_view("the link's target is tmp_path beside the workspace")
async def test_a_symlink_is_trashed_as_a_link_never_followed(api: Api, home: Path, tmp_path: Path,
                                                             trash: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (home / "link").symlink_to(outside)
    assert await api.json("DELETE", "/files/delete?path=link") == {"path": str(home / "link"), "type": "directory"}
    assert (trash / "files/link").is_symlink() and os.readlink(trash / "files/link") == str(outside)
    assert (outside / "keep.txt").read_text() == "keep"
    [entry] = await entries(api)
    assert entry["type"] == "symlink"
    await api.json("DELETE", f"/files/trash?id={q(entry['id'])}")
    assert (outside / "keep.txt").read_text() == "keep" and not (trash / "files/link").exists()


async def test_with_a_root_the_trash_is_inside_it_and_nothing_outside_is_touched(
        api_with: ApiFactory, tmp_path: Path, home: Path) -> None:
    root = tmp_path.resolve() / "root"
    (root / "work").mkdir(parents=True)
    (root / "work/f.txt").write_text("in the root")
    api = await api_with(file_root=root)
    await api.json("DELETE", "/files/delete?path=" + q(root / "work"))
    assert (root / f".Trash-{UID}/files/work/f.txt").read_text() == "in the root"
    assert "\nPath=" + quote(str(root / "work")) + "\n" in (root / f".Trash-{UID}/info/work.trashinfo").read_text()
    assert not (home / ".local").exists()
    [entry] = await entries(api)
    # A restore under a name cannot leave the root: the name is one component.
    await api.json("POST", "/files/trash/restore", json={"id": entry["id"], "name": "../../out"}, status=400)
    await api.json("POST", "/files/trash/restore", json={"id": entry["id"]})
    assert (root / "work/f.txt").read_text() == "in the root"


async def test_a_link_planted_as_the_roots_trash_never_leads_out(api_with: ApiFactory, tmp_path: Path) -> None:
    root = tmp_path.resolve() / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "f.txt").write_text("stays")
    (root / f".Trash-{UID}").symlink_to(outside)
    api = await api_with(file_root=root)
    detail = (await api.json("DELETE", "/files/delete?path=" + q(root / "f.txt"), status=403))["detail"]
    assert "nothing was deleted" in detail
    assert (root / "f.txt").read_text() == "stays" and os.listdir(outside) == []


async def test_the_trash_root_is_refused_and_what_is_in_a_trash_goes_for_good(
        api: Api, home: Path, trash: Path) -> None:
    (home / "x.txt").write_text("x")
    await api.json("DELETE", "/files/delete?path=x.txt")
    for path in (trash, trash / "files", trash / "info"):
        for permanent in ("", "&permanent=true"):
            detail = (await api.json("DELETE", f"/files/delete?path={q(path)}{permanent}", status=400))["detail"]
            assert "trash folder itself" in detail
    # A folder holding the trash would have to go into itself: refused, nothing deleted.
    assert "holds the trash" in (await api.json("DELETE", "/files/delete?path=.local", status=409))["detail"]
    assert (home / ".local").is_dir()
    await api.json("DELETE", f"/files/delete?path={q(trash / 'files/x.txt')}")
    assert os.listdir(trash / "files") == [] and os.listdir(trash / "info") == []  # its record went too


async def test_a_file_on_another_mount_goes_to_that_mounts_trash(api: Api, home: Path, small_disk: Path,
                                                                 trash: Path) -> None:
    (small_disk / "far.txt").write_text("on the tmpfs")
    await api.json("DELETE", "/files/delete?path=small/far.txt")
    top_trash = small_disk / f".Trash-{UID}"
    assert (top_trash / "files/far.txt").read_text() == "on the tmpfs"
    assert oct(top_trash.stat().st_mode & 0o777) == "0o700"
    # Path= is relative to the mount's top, as the spec allows for a $topdir trash.
    assert "\nPath=far.txt\n" in (top_trash / "info/far.txt.trashinfo").read_text()
    assert not (trash / "files").exists()  # never copied across file systems
    [entry] = await entries(api)
    assert entry["original_path"] == str(small_disk / "far.txt")
    await api.json("POST", "/files/trash/restore", json={"id": entry["id"]})
    assert (small_disk / "far.txt").read_text() == "on the tmpfs"


@pytest.fixture
def far_disks(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two real tmpfs mounts outside the daemon's home."""
    disks = (tmp_path / "used", tmp_path / "unrelated")
    for disk in disks:
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], check=True)
    yield disks
    for disk in disks:
        subprocess.run(["umount", "-l", str(disk)], check=True)


@needs_host_view("files on tmpfs disks mounted beside the workspace")
async def test_only_the_mount_trashes_the_daemon_used_or_that_lie_in_home_are_listed_and_emptied(
        aiohttp_client: Any, tmp_path: Path, far_disks: tuple[Path, Path]) -> None:
    used, unrelated = far_disks
    (unrelated / f".Trash-{UID}/files").mkdir(parents=True)
    (unrelated / f".Trash-{UID}/info").mkdir()
    (unrelated / f".Trash-{UID}/files/desktop.txt").write_text("not ours to purge")
    (unrelated / f".Trash-{UID}/info/desktop.txt.trashinfo").write_text(
        "[Trash Info]\nPath=desktop.txt\nDeletionDate=2001-01-01T00:00:00\n")
    (used / "far.txt").write_text("far")
    api = Api(await aiohttp_client(create_app(make_config(tmp_path))))
    await api.json("DELETE", "/files/delete?path=" + q(used / "far.txt"))
    app = create_app(make_config(tmp_path))
    again = Api(await aiohttp_client(app))  # a restart: still listed
    assert [e["original_path"] for e in await entries(again)] == [str(used / "far.txt")]
    assert app[TRASH].sweep() == 0  # the 2001 item on the unrelated mount is past 30 days, and not ours
    assert await again.json("DELETE", "/files/trash") == {"removed": 1}
    assert (unrelated / f".Trash-{UID}/files/desktop.txt").exists()


async def test_a_mount_trash_owned_by_someone_else_or_a_link_is_never_used(
        api: Api, small_disk: Path, tmp_path: Path) -> None:
    (small_disk / "far.txt").write_text("stays")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (small_disk / f".Trash-{UID}").symlink_to(elsewhere)
    detail = (await api.json("DELETE", "/files/delete?path=small/far.txt", status=400))["detail"]
    assert "nothing was deleted" in detail
    assert (small_disk / "far.txt").read_text() == "stays" and not list(elsewhere.iterdir())
    (small_disk / f".Trash-{UID}").unlink()
    (small_disk / f".Trash-{UID}").mkdir(mode=0o700)
    os.chown(small_disk / f".Trash-{UID}", 12345, 12345)
    detail = (await api.json("DELETE", "/files/delete?path=small/far.txt", status=403))["detail"]
    assert "belongs to someone else" in detail and (small_disk / "far.txt").exists()


def chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True)


async def test_a_read_only_trash_fails_the_delete_clearly_and_deletes_nothing(
        api: Api, home: Path, trash: Path) -> None:
    (home / "first.txt").write_text("1")
    await api.json("DELETE", "/files/delete?path=first.txt")  # files/ and info/ now exist
    (home / "doc.txt").write_text("keep me")
    (home / "tree").mkdir()
    (home / "tree/inner.txt").write_text("and me")
    for frozen in (trash / "files", trash / "info"):
        chattr("+i", frozen)
        try:
            for name in ("doc.txt", "tree"):
                detail = (await api.json("DELETE", f"/files/delete?path={name}", status=403))["detail"]
                assert detail.startswith(f"Cannot move {home / name} to the trash ({trash})")
                assert detail.endswith("nothing was deleted (DELETE /files/delete?permanent=true deletes it "
                                       "for good)")
        finally:
            chattr("-i", frozen)
        assert (home / "doc.txt").read_text() == "keep me" and (home / "tree/inner.txt").read_text() == "and me"
        assert sorted(os.listdir(trash / "info")) == ["first.txt.trashinfo"]  # no stray record left
        assert sorted(os.listdir(trash / "files")) == ["first.txt"]
    # What a file manager offers then: delete it for good, on request.
    chattr("+i", trash / "files")
    try:
        assert await api.json("DELETE", "/files/delete?path=doc.txt&permanent=true") == {
            "path": str(home / "doc.txt"), "type": "file"}
    finally:
        chattr("-i", trash / "files")
    assert not (home / "doc.txt").exists() and sorted(os.listdir(trash / "files")) == ["first.txt"]


async def test_trash_off_deletes_for_good(api_with: ApiFactory, home: Path, trash: Path) -> None:
    api = await api_with(trash=False)
    (home / "gone.txt").write_text("x")
    assert await api.json("DELETE", "/files/delete?path=gone.txt") == {"path": str(home / "gone.txt"),
                                                                         "type": "file"}
    assert not (home / "gone.txt").exists() and not trash.exists()


async def test_empty_removes_everything_and_one_can_be_removed_by_id(api: Api, home: Path, trash: Path) -> None:
    for name in ("a.txt", "b.txt", "c"):
        (home / name).write_text(name)
        await api.json("DELETE", f"/files/delete?path={name}")
    first = next(e for e in await entries(api) if e["name"] == "a.txt")
    assert await api.json("DELETE", f"/files/trash?id={q(first['id'])}") == {"removed": 1}
    assert sorted(e["name"] for e in await entries(api)) == ["b.txt", "c"]
    assert await api.json("DELETE", "/files/trash") == {"removed": 2}
    assert os.listdir(trash / "files") == [] and os.listdir(trash / "info") == []


async def test_the_caps_purge_the_oldest_first(aiohttp_client: Any, tmp_path: Path, home: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    app = create_app(make_config(tmp_path, trash_max_age=0.0, trash_max_size=0))  # the start sweep keeps all
    app[TRASH].clock = clock
    api = Api(await aiohttp_client(app))
    for name in ("old.txt", "middle.txt", "new.txt", "newest.txt"):
        (home / name).write_text("0123456789")  # 10 bytes each
        await api.json("DELETE", f"/files/delete?path={name}")
        clock.advance(1000)
    trash = app[TRASH]
    trash.limits = Limits(max_age=3600.0, max_size=25)
    assert trash.sweep() == 2  # `old.txt` is past the hour; then 30 bytes > 25: `middle.txt` goes
    assert [e["name"] for e in await entries(api)] == ["newest.txt", "new.txt"]
    clock.advance(3600 - 2000 + 1)  # `new.txt` is now past the hour, `newest.txt` not yet
    assert trash.sweep() == 1
    assert [e["name"] for e in await entries(api)] == ["newest.txt"]
