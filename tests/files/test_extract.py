"""Extract archives into a new folder, against hostile archives: zip-slip names, link entries,
device entries, bombs (count, size, ratio); a failure leaves nothing behind."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from daemon.errors import ApiError
from daemon.files import extract
from daemon.files.copying import Job
from tests.conftest import Api, ApiFactory
from tests.files.test_copy import locked  # noqa: F401 (a fixture)


def make_zip(path: Path, entries: dict[str, bytes], *, links: dict[str, str] | None = None,
             modes: dict[str, int] | None = None) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = ((modes or {}).get(name, stat.S_IFREG | 0o644)) << 16
            archive.writestr(info, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", target: str = "") -> tuple[
        tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, io.BytesIO | None]], mode: str = "w:gz") -> None:
    with tarfile.open(path, mode) as archive:  # type: ignore[call-overload]
        for info, data in members:
            archive.addfile(info, data)


def tree(root: Path) -> dict[str, str]:
    found = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder, name)
            relative = str(path.relative_to(root))
            found[relative] = ("-> " + os.readlink(path) if path.is_symlink() else
                               "<dir>" if path.is_dir() else path.read_text())
    return found


async def test_a_zip_goes_into_a_new_folder_named_after_it(api: Api, home: Path) -> None:
    make_zip(home / "site.zip", {"index.html": b"<h1>hi</h1>", "css/": b"", "css/app.css": b"body{}",
                                 "bin/run": b"#!/bin/sh\n"}, modes={"bin/run": stat.S_IFREG | 0o4755})
    reply = await api.json("POST", "/files/extract", json={"path": "site.zip"})
    assert reply == {"path": str(home / "site"), "entries": 4, "size": 27, "skipped": []}
    assert tree(home / "site") == {"index.html": "<h1>hi</h1>", "css": "<dir>", "css/app.css": "body{}",
                                   "bin": "<dir>", "bin/run": "#!/bin/sh\n"}
    assert stat.S_IMODE((home / "site/bin/run").stat().st_mode) == 0o755  # never setuid from an archive
    # The folder exists now: the next extraction takes the next free name, never its files.
    (home / "site/index.html").write_text("edited")
    assert (await api.json("POST", "/files/extract", json={"path": "site.zip"}))["path"] == str(home / "site (1)")
    assert (home / "site/index.html").read_text() == "edited"


@pytest.mark.parametrize(("name", "mode"), [("a.tar", "w"), ("a.tar.gz", "w:gz"), ("a.tgz", "w:gz"),
                                            ("a.tar.bz2", "w:bz2"), ("a.tar.xz", "w:xz")])
async def test_every_tar_flavour(api: Api, home: Path, name: str, mode: str) -> None:
    make_tar(home / name, [tar_member("dir", tarfile.DIRTYPE), tar_member("dir/f.txt", data=b"text")], mode)
    reply = await api.json("POST", "/files/extract", json={"path": name})
    assert reply["path"] == str(home / "a")
    assert tree(home / "a") == {"dir": "<dir>", "dir/f.txt": "text"}


async def test_a_chosen_destination_must_be_new(api: Api, home: Path) -> None:
    make_zip(home / "a.zip", {"f": b"1"})
    (home / "taken").mkdir()
    (home / "taken/f").write_text("mine")
    reply = await api.json("POST", "/files/extract", json={"path": "a.zip", "destination": "taken"}, status=409)
    assert reply == {"detail": "File exists: taken"}
    assert tree(home / "taken") == {"f": "mine"}
    reply = await api.json("POST", "/files/extract", json={"path": "a.zip", "destination": "sub/../fresh"})
    assert reply["path"] == str(home / "fresh") and tree(home / "fresh") == {"f": "1"}


@pytest.mark.parametrize(("entry", "why"), [
    ("../evil.txt", "'..' leads out of the folder"),
    ("ok/../../evil.txt", "'..' leads out of the folder"),
    ("/tmp/evil.txt", "an absolute path"),
    ("..\\evil.txt", "a backslash (a Windows path)"),
])
async def test_zip_slip_names_are_refused_and_nothing_is_made(api: Api, home: Path, tmp_path: Path,
                                                              entry: str, why: str) -> None:
    make_zip(home / "evil.zip", {"first.txt": b"fine", entry: b"pwned"})
    reply = await api.json("POST", "/files/extract", json={"path": "evil.zip"}, status=422)
    assert reply == {"detail": f"Refusing archive entry {entry!r}: {why}"}
    assert os.listdir(home) == ["evil.zip"]
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


async def test_tar_slip_names_are_refused(api: Api, home: Path) -> None:
    for entry in ("../evil.txt", "/etc/evil"):
        make_tar(home / "evil.tar", [tar_member("ok.txt", data=b"ok"), tar_member(entry, data=b"x")], "w")
        reply = await api.json("POST", "/files/extract", json={"path": "evil.tar"}, status=422)
        assert entry in reply["detail"]
        assert os.listdir(home) == ["evil.tar"]


async def test_link_entries_are_skipped_so_nothing_is_written_through_them(api: Api, home: Path,
                                                                           tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("safe")
    make_tar(home / "links.tar", [
        tar_member("escape", tarfile.SYMTYPE, target=str(outside)),
        tar_member("escape/victim.txt", data=b"overwritten"),  # through the link, if it had been made
        tar_member("hard", tarfile.LNKTYPE, target=str(outside / "victim.txt")),
    ], "w")
    reply = await api.json("POST", "/files/extract", json={"path": "links.tar"})
    assert reply["skipped"] == ["escape", "hard"]
    assert (outside / "victim.txt").read_text() == "safe"
    assert tree(home / "links") == {"escape": "<dir>", "escape/victim.txt": "overwritten"}
    make_zip(home / "zlinks.zip", {"file.txt": b"f"}, links={"link": "/etc/passwd"})
    reply = await api.json("POST", "/files/extract", json={"path": "zlinks.zip"})
    assert reply["skipped"] == ["link"] and tree(home / "zlinks") == {"file.txt": "f"}


async def test_device_and_fifo_entries_are_refused(api: Api, home: Path) -> None:
    for kind in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
        make_tar(home / "dev.tar", [tar_member("null", kind)], "w")
        reply = await api.json("POST", "/files/extract", json={"path": "dev.tar"}, status=422)
        assert reply == {"detail": "Refusing archive entry 'null': a device or FIFO"}
    make_zip(home / "dev.zip", {"fifo": b""}, modes={"fifo": stat.S_IFIFO | 0o644})
    await api.json("POST", "/files/extract", json={"path": "dev.zip"}, status=422)
    assert sorted(os.listdir(home)) == ["dev.tar", "dev.zip"]


async def test_duplicate_entries_and_paths_through_files_are_refused(api: Api, home: Path) -> None:
    make_tar(home / "dup.tar", [tar_member("a", data=b"1"), tar_member("a", data=b"2")], "w")
    await api.json("POST", "/files/extract", json={"path": "dup.tar"}, status=422)
    make_tar(home / "through.tar", [tar_member("a", data=b"1"), tar_member("a/b", data=b"2")], "w")
    await api.json("POST", "/files/extract", json={"path": "through.tar"}, status=422)
    assert sorted(os.listdir(home)) == ["dup.tar", "through.tar"]


async def test_a_zip_bomb_is_stopped_by_its_ratio(api: Api, home: Path) -> None:
    make_zip(home / "bomb.zip", {"zeros.bin": bytes(64 * 1024 * 1024)})
    assert (home / "bomb.zip").stat().st_size < 200_000
    reply = await api.json("POST", "/files/extract", json={"path": "bomb.zip"}, status=413)
    assert "times its size" in reply["detail"]
    assert os.listdir(home) == ["bomb.zip"]


async def test_the_total_size_is_capped_by_bytes_written(api_with: ApiFactory, home: Path) -> None:
    api = await api_with(extract_max_size=1_000_000)
    data = os.urandom(600_000)
    make_tar(home / "big.tar.gz", [tar_member("a", data=data), tar_member("b", data=data)])
    reply = await api.json("POST", "/files/extract", json={"path": "big.tar.gz"}, status=413)
    assert reply == {"detail": "The archive expands past 1000000 bytes; nothing was kept"}
    assert os.listdir(home) == ["big.tar.gz"]


async def test_broken_and_unknown_archives(api: Api, home: Path) -> None:
    (home / "broken.zip").write_bytes(b"PK\3\4 not really")
    (home / "broken.tar.gz").write_bytes(b"\x1f\x8b\x08 not really gzip")
    (home / "notes.txt").write_text("x")
    assert (await api.json("POST", "/files/extract", json={"path": "broken.zip"}, status=422))["detail"].startswith(
        "Not a valid zip archive")
    await api.json("POST", "/files/extract", json={"path": "broken.tar.gz"}, status=422)
    await api.json("POST", "/files/extract", json={"path": "notes.txt"}, status=415)
    await api.json("POST", "/files/extract", json={"path": "missing.zip"}, status=404)
    assert sorted(os.listdir(home)) == ["broken.tar.gz", "broken.zip", "notes.txt"]


async def test_extraction_stays_beneath_the_root(api_with: ApiFactory, home: Path, tmp_path: Path) -> None:
    api = await api_with(file_root=home)
    make_zip(tmp_path / "outside.zip", {"f": b"1"})
    make_zip(home / "in.zip", {"f": b"1"})
    (home / "out").symlink_to(tmp_path)
    await api.json("POST", "/files/extract", json={"path": str(tmp_path / "outside.zip")}, status=403)
    await api.json("POST", "/files/extract", json={"path": "in.zip", "destination": "out/x"}, status=403)
    assert not (tmp_path / "x").exists() and not (tmp_path / "outside").exists()


# --- the plain function ---------------------------------------------------------------------------------


def test_entry_names() -> None:
    assert extract.entry_parts("./a//b/./c", zip_entry=True) == ["a", "b", "c"]
    for name in ("a\0b", "/x", "../x", "a/../../x"):
        with pytest.raises(ApiError):
            extract.entry_parts(name, zip_entry=False)
    assert extract.entry_parts("a\\b", zip_entry=False) == ["a\\b"]  # a legal Linux name in a tar
    with pytest.raises(ApiError):
        extract.entry_parts("a\\b", zip_entry=True)


def test_too_many_entries(home: Path) -> None:
    make_zip(home / "many.zip", {str(number): b"" for number in range(20)})
    with pytest.raises(ApiError) as refused:
        extract.extract(str(home / "many.zip"), None, extract.Limits(max_size=10**9, max_entries=10), Job(0))
    assert refused.value.status == 413
    make_tar(home / "many.tar", [tar_member(str(number)) for number in range(20)], "w")
    with pytest.raises(ApiError) as refused:
        extract.extract(str(home / "many.tar"), None, extract.Limits(max_size=10**9, max_entries=10), Job(0))
    assert refused.value.status == 413
    assert sorted(os.listdir(home)) == ["many.tar", "many.zip"]


async def test_odd_dates_and_deep_nesting(api: Api, home: Path) -> None:
    future = tar_member("future.txt", data=b"f")
    future[0].mtime = 2**40
    make_tar(home / "dates.tar", [future], "w")
    assert (await api.json("POST", "/files/extract", json={"path": "dates.tar"}))["entries"] == 1
    make_tar(home / "deep.tar", [tar_member("/".join(["d"] * (extract.MAX_DEPTH + 1)), data=b"x")], "w")
    reply = await api.json("POST", "/files/extract", json={"path": "deep.tar"}, status=422)
    assert reply["detail"].endswith(f"nested deeper than {extract.MAX_DEPTH} folders")
    assert sorted(os.listdir(home)) == ["dates", "dates.tar", "deep.tar"]


@pytest.mark.usefixtures("locked")
async def test_a_refused_extraction_names_the_folder_never_the_temp_one(api: Api, home: Path) -> None:
    make_zip(home / "a.zip", {"f": b"1"})
    reply = await api.json("POST", "/files/extract", json={"path": "a.zip", "destination": "locked/out"}, status=403)
    assert reply == {"detail": "Operation not permitted: out"}
    assert os.listdir(home / "locked") == []
