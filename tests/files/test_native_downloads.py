"""Downloads the browser manages (a link or a form answered with a streamed attachment), and share
links with a chosen lifetime."""

from __future__ import annotations

import io
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from daemon.app import create_app
from daemon.config import Config
from daemon.errors import ApiError
from daemon.files.transfer import LinkStore
from tests.conftest import Api, FakeClock
from tests.files.test_transfer import rss_peak_kib
from tests.http.test_sessions import Browser

DISPOSITION = "Content-Disposition"


@pytest.fixture
async def browser(aiohttp_client: Any, config: Config) -> Browser:
    page = Browser(await aiohttp_client(create_app(config)))
    await page.log_in()
    return page


def same_origin(page: Browser) -> dict[str, str]:
    """What a browser sends with a navigation or a form from our own page."""
    return {"Origin": page.origin, "Sec-Fetch-Site": "same-origin"}


async def test_a_single_file_as_an_attachment_with_the_cookie(browser: Browser, home: Path) -> None:
    (home / "report 1.pdf").write_bytes(b"%PDF" + os.urandom(100_000))
    async with browser.client.get("/files/download?path=" + quote("report 1.pdf"),
                                  headers={"Sec-Fetch-Site": "same-origin"}) as response:
        assert response.status == 200
        assert response.headers[DISPOSITION] == 'attachment; filename="report 1.pdf"'
        assert await response.read() == (home / "report 1.pdf").read_bytes()
    async with browser.client.get("/files/download?path=x", headers={"Sec-Fetch-Site": "cross-site"}) as response:
        assert response.status == 403  # another site's link is not honoured, even with the cookie


async def test_a_folder_zip_by_get_link(browser: Browser, home: Path) -> None:
    (home / "docs").mkdir()
    (home / "docs/a.txt").write_text("a")
    async with browser.client.get("/files/archive/download?paths=docs",
                                  headers={"Sec-Fetch-Site": "same-origin"}) as response:
        assert response.status == 200
        assert response.headers[DISPOSITION] == 'attachment; filename="docs.zip"'
        assert "Content-Length" not in response.headers  # streamed while it is built
        archive = zipfile.ZipFile(io.BytesIO(await response.read()))
    assert archive.read("docs/a.txt") == b"a"


async def test_a_selection_zip_by_form_post_needs_the_csrf_token(browser: Browser, home: Path) -> None:
    for name in ("a.txt", "b.txt", "c.txt"):
        (home / name).write_text(name)
    fields = [("paths", "a.txt"), ("paths", "c.txt")]
    async with browser.client.post("/files/archive/download", data=fields, headers=same_origin(browser)) as response:
        assert response.status == 403  # no token: a page of another origin could have posted it
    async with browser.client.post("/files/archive/download", data=[("csrf_token", browser.csrf), *fields],
                                   headers=same_origin(browser)) as response:
        assert response.status == 200, await response.text()
        assert response.headers[DISPOSITION] == 'attachment; filename="download.zip"'
        archive = zipfile.ZipFile(io.BytesIO(await response.read()))
    assert sorted(archive.namelist()) == ["a.txt", "c.txt"]


async def test_native_download_errors(api: Api, home: Path) -> None:
    assert await api.json("GET", "/files/archive/download", status=400) == {"detail": "No paths provided"}
    await api.json("GET", "/files/archive/download?paths=missing", status=404)
    await api.json("GET", "/files/download?path=missing", status=404)
    os.mkfifo(home / "pipe")
    await api.json("GET", "/files/download?path=pipe", status=400)
    await api.json("POST", "/files/archive/download", json={"paths": ["a"]}, status=415)


@pytest.mark.timeout(300)
async def test_a_zip_of_a_large_file_streams_in_flat_memory(
        tmp_path: Path, daemon_process: tuple[int, str, dict[str, str]]) -> None:
    pid, url, headers = daemon_process
    with (tmp_path / "dest/sparse.img").open("wb") as sparse:
        sparse.truncate(512 * 1024 * 1024)
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{url}/health") as response:
            assert response.status == 200
        before = rss_peak_kib(pid)
        async with session.post(f"{url}/files/archive/download", data={"paths": "sparse.img"}) as response:
            assert response.status == 200
            assert "Content-Length" not in response.headers
            first = await response.content.readexactly(4)
            assert first == b"PK\3\4"  # the first entry's header, long before the archive ends
            received = 4
            async for chunk in response.content.iter_chunked(1024 * 1024):
                received += len(chunk)
    growth_mib = (rss_peak_kib(pid) - before) / 1024
    print(f"zip of a 512 MiB file: {received} bytes sent, server peak RSS growth {growth_mib:.1f} MiB")
    assert growth_mib < 32, f"server peak RSS grew by {growth_mib:.1f} MiB"


# --- share links with a lifetime ------------------------------------------------------------------------


async def test_a_share_link_says_when_it_expires(api: Api, home: Path) -> None:
    (home / "share.txt").write_text("shared")
    assert list(await api.json("GET", "/files/download/link?path=share.txt")) == ["url"]  # the reference's reply
    before = datetime.now(UTC)
    reply = await api.json("GET", "/files/download/link?path=share.txt&lifetime=86400")
    assert sorted(reply) == ["expires_at", "expires_in", "url"] and reply["expires_in"] == 86400
    expires = datetime.fromisoformat(reply["expires_at"].replace("Z", "+00:00"))
    assert 86398 <= (expires - before).total_seconds() <= 86402
    async with api.client.session.get(reply["url"]) as response:
        assert response.status == 200 and await response.read() == b"shared"


@pytest.mark.parametrize("lifetime", ["59", "604801", "0", "-5", "soon"])
async def test_a_lifetime_out_of_bounds_is_refused(api: Api, home: Path, lifetime: str) -> None:
    (home / "share.txt").write_text("shared")
    reply = await api.json("GET", f"/files/download/link?path=share.txt&lifetime={lifetime}", status=422)
    assert reply["detail"][0]["loc"] == ["query", "lifetime"]


def test_a_link_works_for_its_own_lifetime_then_not() -> None:
    clock = FakeClock()
    links = LinkStore(300, clock=clock)
    week, default = links.create("download", "/a", 7 * 24 * 3600), links.create("download", "/b")
    clock.advance(300)
    with pytest.raises(ApiError):
        links.find("download", default)
    clock.advance(7 * 24 * 3600 - 301)
    assert links.find("download", week).path == "/a"
    clock.advance(1)
    with pytest.raises(ApiError):
        links.find("download", week)
