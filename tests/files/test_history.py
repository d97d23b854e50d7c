"""File history over a real server: every overwrite keeps the bytes it replaced, bounded, oldest first."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.files.history import HISTORY, History, Limits, history_key
from tests.conftest import Api, ApiFactory, FakeClock


def form(data: bytes, filename: str) -> aiohttp.FormData:
    payload = aiohttp.FormData(quote_fields=False)
    payload.add_field("file", data, filename=filename)
    return payload


async def write(api: Api, path: Path | str, content: str, **kwargs: Any) -> Any:
    return await api.json("POST", "/files/write", json={"path": str(path), "content": content}, **kwargs)


async def versions(api: Api, path: Path | str, status: int = 200) -> list[dict[str, Any]]:
    reply = await api.json("GET", "/files/history", params={"path": str(path)}, status=status)
    return reply.get("versions", [])  # type: ignore[no-any-return]


async def version_text(api: Api, path: Path, version_id: str) -> bytes:
    async with api.request("GET", "/files/history/version", params={"path": str(path), "id": version_id}) as reply:
        assert reply.status == 200, await reply.text()
        data: bytes = await reply.read()
        return data


def history_of(api: Api) -> History:
    return api.client.app[HISTORY]  # type: ignore[no-any-return]


# --- every route keeps a version ------------------------------------------------------------------


async def test_write_file_keeps_the_replaced_bytes(api: Api, home: Path) -> None:
    target = home / "notes.txt"
    await write(api, target, "first\n")
    assert await versions(api, target) == []  # nothing was replaced: a new file keeps nothing
    await write(api, target, "second\n")
    [kept] = await versions(api, target)
    assert kept["route"] == "write_file"
    assert kept["size"] == 6
    assert kept["sha256"] == hashlib.sha256(b"first\n").hexdigest()
    assert await version_text(api, target, kept["id"]) == b"first\n"
    assert target.read_text() == "second\n"


async def test_replace_upload_and_editor_each_keep_a_version(api: Api, home: Path) -> None:
    target = home / "page.md"
    target.write_text("one two\n")
    await api.json("POST", "/files/replace", json={"path": str(target),
                                                   "replacements": [{"target": "two", "replacement": "2"}]})
    await api.json("POST", "/files/upload?directory=.", data=form(b"uploaded\n", "page.md"))
    async with api.request("GET", "/files/view", params={"path": str(target)}) as opened:
        etag = opened.headers["ETag"]
    await write(api, target, "saved in the editor\n", headers={"If-Match": etag})
    listed = await versions(api, target)
    assert [version["route"] for version in listed] == ["editor", "upload", "replace_file_content"]
    contents = [await version_text(api, target, version["id"]) for version in listed]
    assert contents == [b"uploaded\n", b"one 2\n", b"one two\n"]


async def test_binary_files_keep_versions_without_a_text_diff(api: Api, home: Path) -> None:
    target = home / "blob.bin"
    old = bytes(range(256)) * 8
    target.write_bytes(old)
    await api.json("POST", "/files/upload?directory=.", data=form(b"\x00new", "blob.bin"))
    [kept] = await versions(api, target)
    assert await version_text(api, target, kept["id"]) == old
    refused = await api.json("GET", "/files/history/diff", params={"path": str(target), "id": kept["id"]},
                             status=422)
    assert "binary" in refused["detail"]


async def test_diff_is_the_compare_document_against_the_current_text(api: Api, home: Path) -> None:
    target = home / "code.py"
    target.write_text("a = 1\nb = 2\n")
    await write(api, target, "a = 1\nb = 3\n")
    [kept] = await versions(api, target)
    document = await api.json("GET", "/files/history/diff", params={"path": str(target), "id": kept["id"]})
    assert (document["additions"], document["deletions"]) == (1, 1)
    assert document["revised"]["path"] == str(target)
    kinds = [(line["type"], line.get("content")) for hunk in document["hunks"] for line in hunk["lines"]]
    assert any("b = 2" in str(line) for line in kinds) and any("b = 3" in str(line) for line in kinds)


async def test_restore_writes_the_version_back_and_keeps_what_was_there(api: Api, home: Path) -> None:
    target = home / "story.txt"
    target.write_text("the original\n")
    await write(api, target, "the agent's rewrite\n")
    [kept] = await versions(api, target)
    reply = await api.json("POST", "/files/history/restore", json={"path": str(target), "id": kept["id"]})
    assert reply == {"path": str(target), "size": len(b"the original\n"), "restored": kept["id"]}
    assert target.read_text() == "the original\n"
    newest, oldest = await versions(api, target)
    assert newest["route"] == "restore"
    assert await version_text(api, target, newest["id"]) == b"the agent's rewrite\n"
    assert oldest["id"] == kept["id"]


async def test_unknown_or_malformed_version_ids_are_404(api: Api, home: Path) -> None:
    target = home / "x.txt"
    target.write_text("x")
    for bad in ("../../etc/passwd", "00000000000000000001-deadbeef", "index.json"):
        await api.json("GET", "/files/history/version", params={"path": str(target), "id": bad}, status=404)
        await api.json("POST", "/files/history/restore", json={"path": str(target), "id": bad}, status=404)
    assert target.read_text() == "x"


# --- bounds ---------------------------------------------------------------------------------------


async def test_versions_per_file_are_capped_oldest_first(api_with: ApiFactory, home: Path) -> None:
    api = await api_with(history_max_versions=3)
    target = home / "often.txt"
    for number in range(6):
        await write(api, target, f"version {number}\n")
    listed = await versions(api, target)
    assert [await version_text(api, target, version["id"]) for version in listed] == [
        b"version 4\n", b"version 3\n", b"version 2\n"]
    folder = history_of(api).directory / history_key(str(target))
    assert len([name for name in folder.iterdir() if name.name != "index.json"]) == 3


async def test_bytes_per_file_are_capped_and_a_too_large_file_is_not_kept(api_with: ApiFactory, home: Path) -> None:
    api = await api_with(history_max_file_size=250)
    target = home / "sized.txt"
    for fill in "abc":
        await write(api, target, fill * 100)
    await write(api, target, "d" * 300)
    assert [version["size"] for version in await versions(api, target)] == [100, 100]  # "c", "b": 200 <= 250
    await write(api, target, "e")  # replaces 300 bytes: more than the cap, so not kept
    listed = await versions(api, target)
    assert [(await version_text(api, target, version["id"]))[:1] for version in listed] == [b"c", b"b"]


async def test_total_bytes_are_capped_across_files_oldest_first(api_with: ApiFactory, home: Path) -> None:
    api = await api_with(history_max_size=250)
    first, second = home / "first.txt", home / "second.txt"
    for target in (first, second):
        target.write_text("o" * 100)
    await write(api, first, "1" * 100)  # keeps 100 (first's original)
    await write(api, second, "2" * 100)  # keeps 100 (second's original): 200 in all
    await write(api, second, "3" * 100)  # keeps 100 more: 300 > 250, so first's version goes
    assert await versions(api, first) == []
    assert len(await versions(api, second)) == 2
    assert history_of(api).total_bytes() == 200


async def test_versions_older_than_the_age_cap_go(aiohttp_client: Any, tmp_path: Path, home: Path) -> None:
    from daemon.app import create_app
    from tests.conftest import make_config

    app = create_app(make_config(tmp_path, history_max_age=3600.0))
    clock = FakeClock(1_000_000.0)
    app[HISTORY].clock = clock
    api = Api(await aiohttp_client(app))
    target = home / "aging.txt"
    target.write_text("old")
    await write(api, target, "newer")
    clock.advance(1800)
    await write(api, target, "newest")
    assert len(await versions(api, target)) == 2
    clock.advance(1801)  # the first version is now 3601 s old, the second 1801 s
    [left] = await versions(api, target)
    assert await version_text(api, target, left["id"]) == b"newer"
    clock.advance(3600)
    await asyncio.to_thread(app[HISTORY].sweep)  # the periodic sweep, for files nobody asks about
    assert not (app[HISTORY].directory / history_key(str(target))).exists()


# --- where the history lives ------------------------------------------------------------------------


async def test_history_outside_the_root_is_403(api_with: ApiFactory, tmp_path: Path, home: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    api = await api_with(file_root=home)
    for method, path, options in (
        ("GET", "/files/history", {"params": {"path": str(outside)}}),
        ("GET", "/files/history/version", {"params": {"path": str(outside), "id": "0" * 19 + "-00000000"}}),
        ("GET", "/files/history/diff", {"params": {"path": str(outside), "id": "0" * 19 + "-00000000"}}),
        ("POST", "/files/history/restore", {"json": {"path": str(outside), "id": "0" * 19 + "-00000000"}}),
        ("GET", "/files/history", {"params": {"path": "../outside.txt"}}),
    ):
        await api.json(method, path, status=403, **options)
    assert outside.read_text() == "secret"


async def test_writing_through_a_symlink_keeps_the_targets_history(api: Api, home: Path) -> None:
    real = home / "real"
    real.mkdir()
    target = real / "target.txt"
    target.write_text("through the link\n")
    (home / "link.txt").symlink_to(target)
    await write(api, home / "link.txt", "changed\n")
    assert target.read_text() == "changed\n" and (home / "link.txt").is_symlink()
    [kept] = await versions(api, target)
    assert await versions(api, home / "link.txt") == [kept]
    assert (history_of(api).directory / history_key(str(target))).is_dir()


async def test_concurrent_writers_keep_every_replaced_version(api: Api, home: Path) -> None:
    target = home / "contended.txt"
    target.write_text("initial")
    contents = [f"writer {number}" for number in range(20)]
    await asyncio.gather(*(write(api, target, content) for content in contents))
    listed = await versions(api, target)
    assert len(listed) == 20
    kept = {await version_text(api, target, version["id"]) for version in listed}
    # Each rename replaced what the one before it wrote: the initial text and every write but the last.
    assert kept == {b"initial", *(content.encode() for content in contents)} - {target.read_bytes()}
    folder = history_of(api).directory / history_key(str(target))
    index = json.loads((folder / "index.json").read_bytes())
    assert len(index["versions"]) == 20 and index["path"] == str(target)


async def test_history_off_keeps_nothing(api_with: ApiFactory, home: Path, tmp_path: Path) -> None:
    api = await api_with(history=False)
    target = home / "plain.txt"
    target.write_text("before")
    await write(api, target, "after")
    await api.json("POST", "/files/upload?directory=.", data=form(b"uploaded", "plain.txt"))
    assert await versions(api, target) == []
    assert not (tmp_path / "state" / "history").exists()


def test_keep_is_callable_directly_for_other_parts(tmp_path: Path) -> None:
    """What the git engineer calls before a discard: the file's bytes now, without a write."""
    history = History(tmp_path / "history", Limits(versions=2))
    target = tmp_path / "tracked.txt"
    target.write_text("work in progress")
    version = history.keep(str(target), "git_discard")
    assert version is not None and version.route == "git_discard"
    assert [kept.id for kept in history.versions(str(target))] == [version.id]
    assert history.keep(str(tmp_path / "missing.txt"), "git_discard") is None
    assert History(tmp_path / "off", enabled=False).keep(str(target), "git_discard") is None


@pytest.mark.parametrize("size", [0, 1, 5 * 1024 * 1024 + 3])
def test_copies_are_exact_whatever_the_size(tmp_path: Path, size: int) -> None:
    history = History(tmp_path / "history")
    target = tmp_path / "data.bin"
    data = bytes(index % 251 for index in range(size))
    target.write_bytes(data)
    version = history.keep(str(target), "test")
    assert version is not None and version.sha256 == hashlib.sha256(data).hexdigest()
    opened = history.open_version(str(target), version.id)
    assert opened is not None
    with open(opened[0], "rb") as kept:
        assert kept.read() == data
