"""Uploads (form and URL), downloads with Range/ETag, streamed zip archives."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import stat
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import Api, ApiFactory, eventually


def form(data: bytes | io.IOBase, filename: str = "up.bin", field: str = "file") -> aiohttp.FormData:
    payload = aiohttp.FormData(quote_fields=False)  # as browsers send names: raw UTF-8
    payload.add_field("note", "ignored")
    payload.add_field(field, data, filename=filename)
    return payload


# --- form uploads -----------------------------------------------------------------------------------


async def test_upload_streams_the_file_into_the_directory(api: Api, home: Path) -> None:
    body = os.urandom(300_000)
    reply = await api.json("POST", "/files/upload?directory=in/box", data=form(body, "../../evil name.bin"))
    assert reply == {"path": str(home / "in/box/evil name.bin"), "size": len(body)}
    assert (home / "in/box/evil name.bin").read_bytes() == body
    assert os.listdir(home / "in/box") == ["evil name.bin"]


async def test_upload_overwrites_keeping_the_mode(api: Api, home: Path) -> None:
    target = home / "tool.sh"
    target.write_text("old")
    target.chmod(0o700)
    await api.json("POST", f"/files/upload?directory={home}", data=form(b"new", "tool.sh"))
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o700


async def test_upload_of_an_empty_file_without_a_name(api: Api, home: Path) -> None:
    reply = await api.json("POST", "/files/upload?directory=.", data=form(b"", ""))
    assert reply == {"path": str(home / "upload"), "size": 0}


async def test_upload_input_errors(api: Api, home: Path) -> None:
    missing = await api.json("POST", "/files/upload?directory=.", status=422, data=form(b"x", field="other"))
    assert missing["detail"][0]["loc"] == ["body", "file"]
    assert await api.json("POST", "/files/upload?directory=.", status=422, json={"file": "x"})
    no_directory = await api.json("POST", "/files/upload", status=422, data=form(b"x"))
    assert no_directory["detail"][0]["loc"] == ["query", "directory"]
    broken = await api.json("POST", "/files/upload?directory=.", status=400, data=b"--xyz\r\nnonsense",
                            headers={"Content-Type": "multipart/form-data; boundary=zzz"})
    assert "multipart" in broken["detail"].lower()
    (home / "taken").write_text("")
    clash = await api.json("POST", "/files/upload?directory=taken", status=409, data=form(b"x"))
    assert clash["detail"]
    assert await api.json("POST", "/files/upload?directory=.", status=400, data=form(b"x", ".."))


async def test_upload_over_the_cap_is_413_by_header_and_while_streaming(api_with: ApiFactory, home: Path) -> None:
    api = await api_with(max_upload_size=1000)
    declared = await api.json("POST", "/files/upload?directory=.", status=413, data=form(b"x" * 5000))
    assert "limit of 1000 bytes" in declared["detail"]

    async def chunked() -> AsyncIterator[bytes]:
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big\"\r\n\r\n"
        for _ in range(10):
            yield b"y" * 500
        yield b"\r\n--b--\r\n"

    streamed = await api.json("POST", "/files/upload?directory=.", status=413, data=chunked(),
                              headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert "limit" in streamed["detail"]
    assert os.listdir(home) == []


async def test_an_interrupted_upload_leaves_no_partial_file(api: Api, home: Path) -> None:
    (home / "keep.bin").write_bytes(b"original")
    gate = asyncio.Event()

    async def dying() -> AsyncIterator[bytes]:
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"keep.bin\"\r\n\r\n"
        yield b"partial" * 100_000
        gate.set()
        raise ConnectionResetError("client died")

    with pytest.raises(aiohttp.ClientError):
        async with api.request("POST", "/files/upload?directory=.", data=dying(),
                               headers={"Content-Type": "multipart/form-data; boundary=b"}):
            pass
    await gate.wait()
    await eventually(lambda: os.listdir(home) == ["keep.bin"])
    assert (home / "keep.bin").read_bytes() == b"original"


# --- URL uploads ------------------------------------------------------------------------------------


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    """A real HTTP server on loopback to fetch from."""

    async def data(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"d" * int(request.query.get("n", "10")))

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(body=b"late")

    async def missing(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/files/report final.csv", data)
    app.router.add_get("/slow", slow)
    app.router.add_get("/missing", missing)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_upload_from_a_url(api: Api, home: Path, origin: str) -> None:
    url = f"{origin}/files/report%20final.csv?n=12345"
    reply = await api.json("POST", "/files/upload", params={"directory": "dl", "url": url})
    assert reply == {"path": str(home / "dl/report final.csv"), "size": 12345}
    assert (home / "dl/report final.csv").read_bytes() == b"d" * 12345


async def test_url_upload_errors(api_with: ApiFactory, origin: str, home: Path) -> None:
    api = await api_with(upload_url_timeout=0.5, max_upload_size=100)
    too_big = await api.json("POST", "/files/upload", status=413,
                             params={"directory": ".", "url": f"{origin}/files/report%20final.csv?n=500"})
    assert "limit" in too_big["detail"]
    gone = await api.json("POST", "/files/upload", status=502, params={"directory": ".", "url": f"{origin}/missing"})
    assert "HTTP 404" in gone["detail"]
    late = await api.json("POST", "/files/upload", status=504, params={"directory": ".", "url": f"{origin}/slow"})
    assert "longer than 0.5 s" in late["detail"]
    scheme = await api.json("POST", "/files/upload", status=400, params={"directory": ".", "url": "file:///etc/passwd"})
    assert "http" in scheme["detail"]
    refused = await api.json("POST", "/files/upload", status=502, params={"directory": ".", "url": "http://127.0.0.1:1/"})
    assert "failed" in refused["detail"]
    assert os.listdir(home) == []


# --- view, serve, Range, ETag -----------------------------------------------------------------------


async def test_view_serves_raw_bytes_with_their_type(api: Api, home: Path) -> None:
    (home / "data.json").write_bytes(b'{"a": 1}')
    async with api.request("GET", "/files/view?path=data.json") as response:
        assert response.status == 200 and await response.read() == b'{"a": 1}'
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    async with api.request("GET", "/files/view?path=data.json&preview=true") as response:
        assert response.status == 200 and await response.read() == b'{"a": 1}'
    assert await api.json("GET", "/files/view?path=nope", status=404) == {"detail": "File not found"}
    assert await api.json("GET", "/files/view?path=data.json", auth=False, status=401)


async def test_html_and_svg_are_sandboxed(api: Api, home: Path) -> None:
    for name in ("page.html", "pic.svg"):
        (home / name).write_text("<script>alert(1)</script>")
        async with api.request("GET", f"/files/view?path={name}") as response:
            assert response.headers["Content-Security-Policy"].startswith("sandbox")
    (home / "plain.txt").write_text("x")
    async with api.request("GET", "/files/view?path=plain.txt") as response:
        assert "Content-Security-Policy" not in response.headers


async def test_serve_takes_the_path_in_the_url(api: Api, home: Path) -> None:
    (home / "site").mkdir()
    (home / "site/index.html").write_text("<h1>hi</h1>")
    async with api.request("GET", f"/files/serve{home}/site/index.html") as response:
        assert response.status == 200 and await response.text() == "<h1>hi</h1>"
        assert response.headers["Content-Type"].startswith("text/html")
    assert await api.json("GET", f"/files/serve{home}/site/none.css", status=404)


async def test_ranges_and_etags(api: Api, home: Path) -> None:
    body = bytes(range(256)) * 100
    (home / "r.bin").write_bytes(body)
    async with api.request("GET", "/files/view?path=r.bin", headers={"Range": "bytes=100-199"}) as response:
        assert response.status == 206 and await response.read() == body[100:200]
        assert response.headers["Content-Range"] == f"bytes 100-199/{len(body)}"
    async with api.request("GET", "/files/view?path=r.bin", headers={"Range": "bytes=-10"}) as response:
        assert response.status == 206 and await response.read() == body[-10:]
    async with api.request("GET", "/files/view?path=r.bin", headers={"Range": f"bytes={len(body)}-"}) as response:
        assert response.status == 416
    async with api.request("GET", "/files/view?path=r.bin") as response:
        etag = response.headers["ETag"]
        assert response.headers["Accept-Ranges"] == "bytes"
    async with api.request("GET", "/files/view?path=r.bin", headers={"If-None-Match": etag}) as response:
        assert response.status == 304 and await response.read() == b""
    os.utime(home / "r.bin", (1, 1))
    async with api.request("GET", "/files/view?path=r.bin", headers={"If-None-Match": etag}) as response:
        assert response.status == 200


# --- archives ---------------------------------------------------------------------------------------


async def fetch_zip(api: Api, paths: list[str]) -> tuple[zipfile.ZipFile, str]:
    async with api.request("POST", "/files/archive", json={"paths": paths}) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "application/zip"
        return zipfile.ZipFile(io.BytesIO(await response.read())), response.headers["Content-Disposition"]


async def test_archive_of_a_directory_and_a_file(api: Api, home: Path) -> None:
    (home / "proj/src").mkdir(parents=True)
    (home / "proj/src/a.py").write_text("print(1)")
    (home / "proj/README").write_text("readme")
    (home / "proj/back\\slash").write_text("b")
    (home / "notes.txt").write_text("n")
    archive, disposition = await fetch_zip(api, ["proj", "notes.txt"])
    assert disposition == 'attachment; filename="download.zip"'
    assert sorted(archive.namelist()) == ["notes.txt", "proj/README", "proj/back_slash", "proj/src/a.py"]
    assert archive.read("proj/src/a.py") == b"print(1)"
    assert archive.testzip() is None
    single, disposition = await fetch_zip(api, [str(home / "proj")])
    assert disposition == 'attachment; filename="proj.zip"'
    assert all(not name.startswith(("/", "..")) and ".." not in name.split("/") for name in single.namelist())


async def test_archive_names_and_errors(api: Api, home: Path) -> None:
    (home / "résumé.txt").write_text("r")
    _, disposition = await fetch_zip(api, ["résumé.txt"])
    assert disposition == "attachment; filename=\"r?sum?.txt.zip\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt.zip"
    assert await api.json("POST", "/files/archive", json={"paths": []}, status=400) == {"detail": "No paths provided"}
    assert await api.json("POST", "/files/archive", json={"paths": ["nope"]}, status=404) == {
        "detail": "Path not found: nope"}


async def test_archive_streams_a_large_tree(api: Api, home: Path) -> None:
    """Bigger than one block: the archive arrives in pieces and is still a valid zip."""
    (home / "many").mkdir()
    blobs = {f"f{index}.bin": os.urandom(200_000) for index in range(12)}
    for name, blob in blobs.items():
        (home / "many" / name).write_bytes(blob)
    archive, _ = await fetch_zip(api, ["many"])
    assert {name: archive.read(name) for name in archive.namelist()} == {f"many/{n}": b for n, b in blobs.items()}


# --- a gigabyte each way, with the server's memory watched ------------------------------------------


def rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(300)
async def test_one_gigabyte_up_and_down_in_little_memory(
        tmp_path: Path, daemon_process: tuple[int, str, dict[str, str]]) -> None:
    pid, url, headers = daemon_process
    block = os.urandom(1024 * 1024)
    source = tmp_path / "source.bin"
    digest = hashlib.sha256()
    with source.open("wb") as out:
        for _ in range(1024):
            out.write(block)
            digest.update(block)
    expected = digest.hexdigest()
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{url}/health") as response:
            assert response.status == 200
        before = rss_peak_kib(pid)
        with source.open("rb") as upload:
            async with session.post(f"{url}/files/upload?directory=.", data=form(upload, "big.bin")) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["size"] == 1024**3
        assert _sha256(tmp_path / "dest/big.bin") == expected
        downloaded = hashlib.sha256()
        async with session.get(f"{url}/files/view?path=big.bin") as response:
            assert response.status == 200
            async for chunk in response.content.iter_chunked(1024 * 1024):
                downloaded.update(chunk)
        assert downloaded.hexdigest() == expected
    growth_mib = (rss_peak_kib(pid) - before) / 1024
    print(f"server peak RSS growth over 1 GiB up and down: {growth_mib:.1f} MiB")
    assert growth_mib < 32, f"server peak RSS grew by {growth_mib:.1f} MiB"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


async def test_upload_onto_a_full_disk_is_507_and_keeps_the_old_file(api: Api, small_disk: Path) -> None:
    (small_disk / "keep.bin").write_bytes(b"original")
    reply = await api.json("POST", f"/files/upload?directory={small_disk}", status=507,
                           data=form(io.BytesIO(b"z" * 800_000), "keep.bin"))
    assert "space" in reply["detail"]
    assert (small_disk / "keep.bin").read_bytes() == b"original"
    assert os.listdir(small_disk) == ["keep.bin"]
