"""Uploads onto a taken name: replaced by default (the reference's way), refused (409) or kept
both (`name (1).ext`) when asked, decided by the placement itself (RENAME_NOREPLACE), not a check."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.conftest import Api, eventually

BOUNDARY = "conflictboundary"


def form(data: bytes, filename: str) -> aiohttp.FormData:
    payload = aiohttp.FormData(quote_fields=False)
    payload.add_field("file", data, filename=filename)
    return payload


async def upload(api: Api, query: str, data: bytes, filename: str, status: int = 200) -> dict[str, object]:
    reply: dict[str, object] = await api.json("POST", f"/files/upload?directory=.&{query}",
                                              data=form(data, filename), status=status)
    return reply


async def test_by_default_an_upload_replaces_as_the_reference_does(api: Api, home: Path) -> None:
    (home / "a.txt").write_bytes(b"old")
    assert await upload(api, "", b"new", "a.txt") == {"path": str(home / "a.txt"), "size": 3}
    assert (home / "a.txt").read_bytes() == b"new"


async def test_refuse_keeps_the_existing_file_and_leaves_no_temp(api: Api, home: Path) -> None:
    (home / "a.txt").write_bytes(b"old")
    for query in ("conflict=refuse", "overwrite=false"):
        assert await upload(api, query, b"new", "a.txt", status=409) == {"detail": "File exists: a.txt"}
    assert (home / "a.txt").read_bytes() == b"old"
    assert os.listdir(home) == ["a.txt"]
    # A free name is simply saved.
    assert await upload(api, "conflict=refuse", b"b", "b.txt") == {"path": str(home / "b.txt"), "size": 1}


async def test_refuse_also_holds_for_a_folder_or_a_symlink_of_that_name(api: Api, home: Path) -> None:
    (home / "folder").mkdir()
    (home / "outside.txt").write_bytes(b"target")
    (home / "link").symlink_to(home / "outside.txt")
    await upload(api, "conflict=refuse", b"x", "folder", status=409)
    await upload(api, "conflict=refuse", b"x", "link", status=409)
    assert (home / "outside.txt").read_bytes() == b"target"


async def test_keep_both_takes_the_next_free_number(api: Api, home: Path) -> None:
    (home / "a.txt").write_bytes(b"0")
    (home / "logs.tar.gz").write_bytes(b"0")
    (home / ".bashrc").write_bytes(b"0")
    for number in (1, 2):
        reply = await upload(api, "conflict=keep-both", str(number).encode(), "a.txt")
        assert reply["path"] == str(home / f"a ({number}).txt")
    assert (await upload(api, "conflict=keep-both", b"z", "logs.tar.gz"))["path"] == str(home / "logs (1).tar.gz")
    assert (await upload(api, "conflict=keep-both", b"z", ".bashrc"))["path"] == str(home / ".bashrc (1)")
    assert (home / "a.txt").read_bytes() == b"0"
    assert (home / "a (2).txt").read_bytes() == b"2"


async def test_concurrent_keep_both_uploads_never_share_a_file(api: Api, home: Path) -> None:
    (home / "same.bin").write_bytes(b"first")
    bodies = [f"upload {n}".encode() * 1000 for n in range(12)]
    replies = await asyncio.gather(*(upload(api, "conflict=keep-both", body, "same.bin") for body in bodies))
    paths = [str(reply["path"]) for reply in replies]
    assert len(set(paths)) == len(bodies)
    assert sorted(Path(path).read_bytes() for path in paths) == sorted(bodies)
    assert (home / "same.bin").read_bytes() == b"first"


async def test_a_file_created_while_the_upload_streams_is_never_clobbered(api: Api, home: Path) -> None:
    """The race a check-then-write loses: the name is free when the upload starts and taken before it ends."""
    for query, expected in (("conflict=refuse", 409), ("conflict=keep-both", 200)):
        name = f"race-{expected}.txt"
        release = asyncio.Event()

        async def body(name: str = name, release: asyncio.Event = release) -> AsyncIterator[bytes]:
            yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                   "\r\n").encode()
            yield b"uploaded " * 10_000
            await release.wait()
            yield f"\r\n--{BOUNDARY}--\r\n".encode()

        async def send(query: str = query) -> tuple[int, dict[str, object]]:
            async with api.request("POST", f"/files/upload?directory=.&{query}", data=body(),
                                   headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}) as reply:
                return reply.status, await reply.json()

        sending = asyncio.ensure_future(send())
        # The server has looked at the name and is writing its temp file.
        def writing(name: str = name) -> bool:
            return any(entry.startswith(f".{name}.") for entry in os.listdir(home))

        await eventually(writing)
        (home / name).write_bytes(b"made meanwhile")
        release.set()
        status, reply = await sending
        assert status == expected, reply
        assert (home / name).read_bytes() == b"made meanwhile"
        if expected == 409:
            assert reply == {"detail": f"File exists: {name}"}
        else:
            assert reply["path"] == str(home / "race-200 (1).txt")
    assert not [entry for entry in os.listdir(home) if entry.endswith(".tmp")]


async def test_an_unknown_conflict_rule_is_422(api: Api, home: Path) -> None:
    reply = await upload(api, "conflict=merge", b"x", "a.txt", status=422)
    assert reply["detail"][0]["loc"] == ["query", "conflict"]  # type: ignore[index]
