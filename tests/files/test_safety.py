"""Nothing is removed or replaced that was not named; special files are never written, read or archived.

Every test drives a real server against real files, real FIFOs, real sockets and real device nodes
(made with mknod in tmp_path: the suite runs as root), and checks the disk afterwards.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from daemon.errors import ApiError
from daemon.files import mounts, ops, transfer
from tests.conftest import Api, ApiFactory, needs_host_view

CHAT = {"X-Session-Id": "chat-safety"}
#: Generous: only bounds a test that would otherwise hang on a blocking open.
NO_HANG = 30


def q(value: str) -> str:
    return quote(value, safe="")


# --- special files, made for real -------------------------------------------------------------------


def make_full(path: Path) -> Path:
    """A character device like /dev/full (1, 7): writes fail, reads give zeros."""
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    return path


def make_zero(path: Path) -> Path:
    """A character device like /dev/zero (1, 5): reads never end."""
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 5))
    return path


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.fixture
def unix_socket(home: Path) -> Iterator[Path]:
    path = home / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        yield path


SPECIALS = {"chardev": make_full, "fifo": make_fifo}


def kind_of(path: Path) -> str:
    mode = os.lstat(path).st_mode
    return {stat.S_IFCHR: "chardev", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket",
            stat.S_IFREG: "file"}.get(stat.S_IFMT(mode), "other")


def form(data: bytes, filename: str) -> aiohttp.FormData:
    payload = aiohttp.FormData(quote_fields=False)
    payload.add_field("file", data, filename=filename)
    return payload


# --- 1. nothing removed that was not named ------------------------------------------------------------


async def test_an_empty_delete_path_no_longer_deletes_home(api: Api, home: Path) -> None:
    """The issue's reproduction: `DELETE /files/delete?path=` answered 200 and removed all of home."""
    (home / "precious.txt").write_text("keep me")
    reply = await api.json("DELETE", "/files/delete?path=", status=400)
    assert "empty path" in reply["detail"]
    assert (home / "precious.txt").read_text() == "keep me"


def protected_paths(home: Path) -> list[str]:
    return ["", ".", "   ", "./", str(home), str(home) + "/", "~", "/", str(home.parent), str(home.parent.parent),
            "..", "work/..", str(home / "work")]


@needs_host_view("the ancestors of the home lie outside the workspace, refused by the sandbox before this check")
async def test_delete_refuses_home_cwd_root_and_their_ancestors(api: Api, home: Path) -> None:
    (home / "work").mkdir()
    (home / "work" / "f.txt").write_text("x")
    await api.json("POST", "/files/cwd", json={"path": "work"}, headers=CHAT)
    for path in protected_paths(home):
        reply = await api.json("DELETE", f"/files/delete?path={q(path)}", status=400, headers=CHAT)
        assert isinstance(reply["detail"], str), path
    assert (home / "work" / "f.txt").read_text() == "x"
    # Without that chat's header its folder is an ordinary one again.
    assert await api.json("DELETE", "/files/delete?path=work") == {"path": str(home / "work"), "type": "directory"}


@needs_host_view("the ancestors of the home lie outside the workspace, refused by the sandbox before this check")
async def test_move_refuses_the_same_sources(api: Api, home: Path) -> None:
    (home / "work").mkdir()
    (home / "work" / "f.txt").write_text("x")
    await api.json("POST", "/files/cwd", json={"path": "work"}, headers=CHAT)
    for path in protected_paths(home):
        body = {"source": path, "destination": str(home / "moved-away")}
        assert (await api.json("POST", "/files/move", json=body, status=400, headers=CHAT))["detail"], path
    assert (home / "work" / "f.txt").read_text() == "x" and not (home / "moved-away").exists()


@needs_host_view("about the host's /sys and /proc, which the sandbox refuses as a whole")
async def test_the_machines_device_and_kernel_files_are_never_removed(api: Api, home: Path) -> None:
    """Found in this session: a DELETE of /dev/zero removed the machine's zero device (and one of /dev
    would have emptied devtmpfs). /sys and /proc stand in for /dev here: if this check ever regresses,
    the kernel refuses those removals by itself, where /dev's would succeed."""
    for path in ("/sys/kernel", "/proc/1/environ", "/proc"):
        reply = await api.json("DELETE", f"/files/delete?path={q(path)}", status=400)
        assert reply["detail"] == f"Refusing to remove the system's device and kernel files: {path}"
        body = {"source": path, "destination": str(home / "taken")}
        assert "device and kernel files" in (await api.json("POST", "/files/move", json=body, status=400))["detail"]


def test_a_file_in_a_devtmpfs_is_refused_wherever_it_is_mounted(tmp_path: Path) -> None:
    devices = tmp_path / "devices"
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"22 1 0:5 / {devices} rw,nosuid - devtmpfs udev rw\n"
                         "1 0 8:1 / / rw - ext4 /dev/vda rw\n")
    with pytest.raises(ApiError, match="device and kernel files"):
        mounts.refuse_removing(str(devices / "zero"), str(mountinfo))
    mounts.refuse_removing(str(tmp_path / "elsewhere"), str(mountinfo))


async def test_a_mount_point_or_a_folder_holding_one_is_never_removed(
        api: Api, home: Path, small_disk: Path) -> None:
    """A tree removal would go on into the mounted file system and empty it."""
    (small_disk / "kept.txt").write_text("on the other file system")
    for path in ("small", str(small_disk)):
        detail = (await api.json("DELETE", f"/files/delete?path={q(path)}", status=400))["detail"]
        assert detail.startswith(f"Refusing to remove a mount point or a folder that holds one ({small_disk})")
    (home / "outer").mkdir()
    body = {"source": str(home), "destination": str(home / "outer" / "all")}
    assert (await api.json("POST", "/files/move", json=body, status=400))["detail"]
    assert (small_disk / "kept.txt").exists()
    # What is on the mounted file system stays the user's to delete.
    assert await api.json("DELETE", "/files/delete?path=small/kept.txt") == {
        "path": str(small_disk / "kept.txt"), "type": "file"}


async def test_a_symlink_to_home_is_removed_as_a_link(api: Api, home: Path) -> None:
    (home / "f.txt").write_text("x")
    (home / "alias").symlink_to(home)
    assert await api.json("DELETE", "/files/delete?path=alias") == {"path": str(home / "alias"), "type": "directory"}
    assert not (home / "alias").is_symlink() and (home / "f.txt").exists()


async def test_the_root_is_refused_however_it_is_named(api_with: ApiFactory, tmp_path: Path) -> None:
    root = tmp_path.resolve() / "root"
    (root / "sub").mkdir(parents=True)
    api = await api_with(file_root=root)
    for path in ["", ".", str(root), "sub/..", str(root) + "/."]:
        await api.json("DELETE", f"/files/delete?path={q(path)}", status=400)
        await api.json("POST", "/files/move", json={"source": path, "destination": "sub/x"}, status=400)
    assert (root / "sub").is_dir()


async def test_mkdir_and_write_of_an_empty_path_are_400(api: Api, home: Path) -> None:
    before = sorted(os.listdir(home))
    for path in ["", " ", "."]:
        assert "empty path" in (await api.json("POST", "/files/mkdir", json={"path": path}, status=400))["detail"]
        await api.json("POST", "/files/write", json={"path": path, "content": "x"}, status=400)
    assert sorted(os.listdir(home)) == before


# --- 2. writers never replace a special file ------------------------------------------------------------


@pytest.mark.parametrize("kind", SPECIALS)
async def test_write_and_replace_refuse_a_device_or_fifo(api: Api, home: Path, kind: str) -> None:
    """The issue's reproduction: writing `/dev/full` turned the host's device into a regular file."""
    node = SPECIALS[kind](home / "node")
    (home / "via-link").symlink_to(node)
    for path in ("node", "via-link", str(node)):
        reply = await api.json("POST", "/files/write", json={"path": path, "content": "x"}, status=400)
        assert "not a regular file" in reply["detail"]
        body = {"path": path, "replacements": [{"target": "a", "replacement": "b"}]}
        await api.json("POST", "/files/replace", json=body, status=400)
    assert kind_of(node) == kind
    assert [name for name in os.listdir(home) if name.endswith(".tmp")] == []


async def test_write_refuses_a_socket(api: Api, unix_socket: Path) -> None:
    await api.json("POST", "/files/write", json={"path": str(unix_socket), "content": "x"}, status=400)
    assert kind_of(unix_socket) == "socket"


@pytest.mark.parametrize("kind", SPECIALS)
async def test_uploads_refuse_a_special_target(api: Api, home: Path, kind: str) -> None:
    node = SPECIALS[kind](home / "up.bin")
    await api.json("POST", "/files/upload?directory=.", data=form(b"data", "up.bin"), status=400)
    link = await api.json("POST", "/files/upload/link?directory=.")
    # A link's upload never replaces anything: it lands beside the special file, which stays as it was.
    async with api.request("POST", URL(link["url"]).path, auth=False, data=form(b"data", "up.bin")) as response:
        assert response.status == 200, await response.text()
    assert kind_of(node) == kind and (home / "up (1).bin").read_bytes() == b"data"


async def test_a_fifo_as_upload_directory_is_400(api: Api, home: Path) -> None:
    make_fifo(home / "pipe")
    await api.json("POST", "/files/upload?directory=pipe", data=form(b"data", "x.bin"), status=400)
    await api.json("POST", "/files/upload/link?directory=pipe", status=400)
    assert kind_of(home / "pipe") == "fifo"


async def test_a_symlink_to_a_regular_file_is_still_written_through(api: Api, home: Path) -> None:
    (home / "real.txt").write_text("old")
    (home / "link.txt").symlink_to(home / "real.txt")
    await api.json("POST", "/files/write", json={"path": "link.txt", "content": "new"})
    assert (home / "link.txt").is_symlink() and (home / "real.txt").read_text() == "new"


async def test_moving_a_fifo_across_file_systems_makes_a_fifo(api: Api, home: Path, small_disk: Path) -> None:
    """A cross-device move copies; a FIFO or device is made anew (mknod), never opened and read."""
    make_fifo(home / "pipe")
    make_zero(home / "zero")
    for name in ("pipe", "zero"):
        body = {"source": name, "destination": str(small_disk / name)}
        await asyncio.wait_for(api.json("POST", "/files/move", json=body), NO_HANG)
        assert not os.path.lexists(home / name)
    assert kind_of(small_disk / "pipe") == "fifo" and kind_of(small_disk / "zero") == "chardev"


# --- 3. only regular files are read, served or archived -----------------------------------------------


READERS = [
    ("GET", "/files/read?path={}"),
    ("GET", "/files/view?path={}"),
    ("GET", "/files/serve{}"),
    ("GET", "/files/download/link?path={}"),
]


@pytest.mark.parametrize("kind", ["fifo", "zero", "full"])
async def test_reading_a_special_file_is_400_never_a_hang(api: Api, home: Path, kind: str) -> None:
    node = {"fifo": make_fifo, "zero": make_zero, "full": make_full}[kind](home / f"node-{kind}")
    for method, template in READERS:
        reply = await asyncio.wait_for(api.json(method, template.format(node), status=400), NO_HANG)
        assert reply["detail"] == "Path is not a regular file", template
    body = {"paths": [str(node)]}
    reply = await asyncio.wait_for(api.json("POST", "/files/archive", json=body, status=400), NO_HANG)
    assert "not a regular file" in reply["detail"]


async def test_reading_a_socket_is_400(api: Api, unix_socket: Path) -> None:
    for method, template in READERS:
        await api.json(method, template.format(unix_socket), status=400)
    await api.json("POST", "/files/archive", json={"paths": [str(unix_socket)]}, status=400)


async def test_a_folder_archive_skips_special_files_inside(api: Api, home: Path) -> None:
    folder = home / "mixed"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha")
    make_fifo(folder / "pipe")
    make_zero(folder / "zero")
    (folder / "link.txt").symlink_to(folder / "a.txt")
    (folder / "link-zero").symlink_to(folder / "zero")
    async with api.request("POST", "/files/archive", json={"paths": ["mixed"]}) as response:
        assert response.status == 200
        data = await asyncio.wait_for(response.read(), NO_HANG)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["mixed/a.txt", "mixed/link.txt"]
        assert archive.read("mixed/link.txt") == b"alpha"


async def test_six_blocked_opens_cannot_exhaust_the_workers(api: Api, home: Path) -> None:
    """The issue: six FIFO reads or archives held every worker thread forever; now each is a quick 400."""
    pipes = [make_fifo(home / f"pipe{index}") for index in range(6)]

    async def one(index: int) -> int:
        if index % 2:
            request = api.request("POST", "/files/archive", json={"paths": [str(pipes[index])]})
        else:
            request = api.request("GET", f"/files/read?path={q(str(pipes[index]))}")
        async with request as response:
            return int(response.status)

    statuses = await asyncio.wait_for(asyncio.gather(*(one(index) for index in range(6))), NO_HANG)
    assert statuses == [400] * 6
    listing = await asyncio.wait_for(api.json("GET", "/files/list?directory=."), NO_HANG)
    assert {entry["name"] for entry in listing["entries"]} >= {"pipe0", "pipe5"}


@needs_host_view("reads the host's /proc, which the sandbox's view does not show")
async def test_proc_files_are_read_with_a_cap(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """procfs files report size 0 and some never end: they are read up to PSEUDO_FILE_CAP."""
    reply = await api.json("GET", "/files/read?path=/proc/self/status")
    assert reply["content"].startswith("Name:")
    monkeypatch.setattr(ops, "PSEUDO_FILE_CAP", 5)
    assert (await api.json("GET", "/files/read?path=/proc/self/status"))["content"] == "Name:"


async def test_large_entries_get_zip64_headers(api: Api, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A streamed zip cannot go back and widen its headers: big entries are written as zip64 up front
    (shown here on a small file by lowering the threshold; the 4 GiB case is the same branch)."""
    (home / "f.bin").write_bytes(b"z" * 1000)
    monkeypatch.setattr(transfer, "ZIP64_THRESHOLD", 100)
    async with api.request("POST", "/files/archive", json={"paths": ["f.bin"]}) as response:
        data = await response.read()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("f.bin") == b"z" * 1000
    # The local header's extra field starts with the zip64 tag (0x0001).
    header = data[:30]
    name_length, extra_length = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    assert extra_length and data[30 + name_length:32 + name_length] == b"\x01\x00"


async def test_a_fifo_named_skill_md_does_not_block_the_skill_list(api: Api, home: Path) -> None:
    (home / ".agents/skills/stuck").mkdir(parents=True)
    make_fifo(home / ".agents/skills/stuck/SKILL.md")
    (home / ".agents/skills/fine").mkdir()
    (home / ".agents/skills/fine/SKILL.md").write_text("---\nname: fine\ndescription: works\n---\nbody\n")
    listed = await asyncio.wait_for(api.json("GET", "/skills"), NO_HANG)
    assert [skill["name"] for skill in listed] == ["fine"]


@needs_host_view("archives the host's /proc, which the sandbox's view does not show")
async def test_proc_files_are_archived_with_the_same_cap(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "PSEUDO_FILE_CAP", 5)
    async with api.request("POST", "/files/archive", json={"paths": ["/proc/self/status"]}) as response:
        assert response.status == 200
        data = await asyncio.wait_for(response.read(), NO_HANG)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("status") == b"Name:"
