"""One-time links: downloads that work without the key until they expire, uploads that work once."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest

from daemon.keys import LINKS
from tests.conftest import Api, ApiFactory, FakeClock

#: A plain quoted fallback (no quote or backslash inside) and the RFC 6266 `filename*` form.
DISPOSITION = re.compile(r"""attachment; filename="[^"\\]*"; filename\*=UTF-8''[A-Za-z0-9%._~-]+""")
WEIRD_DIRECTORY = 'inbox <b>&"quoted"'


def form(content: bytes, filename: str = "hello.txt") -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("file", content, filename=filename, content_type="text/plain")
    return data


async def fetch(api: Api, method: str, url: str, **kwargs: Any) -> tuple[int, bytes, dict[str, str]]:
    """A request without the key, to an absolute URL the server handed out."""
    async with api.client.session.request(method, url, **kwargs) as response:
        return response.status, await response.read(), dict(response.headers)


async def download_link(api: Api, path: str) -> str:
    return await _link(api, "GET", "download", f"path={quote(path)}")


async def upload_link(api: Api, directory: str) -> str:
    return await _link(api, "POST", "upload", f"directory={quote(directory)}")


async def _link(api: Api, method: str, kind: str, query: str) -> str:
    reply = await api.json(method, f"/files/{kind}/link?{query}")
    assert list(reply) == ["url"]
    url: str = reply["url"]
    assert url.startswith(str(api.client.make_url(f"/files/{kind}/")))
    return url


# --- downloads ------------------------------------------------------------------------------------------


async def test_download_link_works_without_the_key(api: Api, scratch_environment: Path) -> None:
    data = b"report body\n" * 1000
    (scratch_environment / "report.txt").write_bytes(data)
    url = await download_link(api, "report.txt")
    for _ in range(3):  # Until it expires, a download link can be used again and again.
        status, body, headers = await fetch(api, "GET", url)
        assert status == 200
        assert body == data
        assert headers["Content-Disposition"] == 'attachment; filename="report.txt"'
        assert headers["Content-Type"].startswith("text/plain")


async def test_download_link_with_an_absolute_path(api: Api, scratch_environment: Path) -> None:
    target = scratch_environment / "nested" / "data.bin"
    target.parent.mkdir()
    target.write_bytes(bytes(range(256)))
    status, body, headers = await fetch(api, "GET", await download_link(api, str(target)))
    assert (status, body) == (200, bytes(range(256)))
    assert headers["Content-Disposition"] == 'attachment; filename="data.bin"'


@pytest.mark.parametrize(("name", "encoded"), [
    pytest.param("r\u00e9sum\u00e9 2024 \u2013 \u2603.txt",
                 "r%C3%A9sum%C3%A9%202024%20%E2%80%93%20%E2%98%83.txt", id="non-ascii"),
    pytest.param('say "hi"; x=1.txt', "say%20%22hi%22%3B%20x%3D1.txt", id="quotes-cannot-break-the-header"),
])
async def test_awkward_names_use_filename_star(api: Api, scratch_environment: Path, name: str, encoded: str) -> None:
    (scratch_environment / name).write_text("cv\n")
    status, body, headers = await fetch(api, "GET", await download_link(api, name))
    assert (status, body) == (200, b"cv\n")
    disposition = headers["Content-Disposition"]
    disposition.encode("ascii")  # A header value must be plain ASCII.
    assert DISPOSITION.fullmatch(disposition), disposition
    assert disposition.endswith(f"; filename*=UTF-8''{encoded}")


def drive_links(api: Api) -> FakeClock:
    """Link expiry on the running server by a clock moved by hand (never real time: under load a
    "still valid" fetch could land after a short real lifetime)."""
    clock = FakeClock()
    api.client.app[LINKS].clock = clock
    return clock


async def test_download_link_expires(api_with: ApiFactory, scratch_environment: Path) -> None:
    api: Api = await api_with(link_ttl=60)
    clock = drive_links(api)
    (scratch_environment / "soon.txt").write_text("gone soon\n")
    url = await download_link(api, "soon.txt")
    assert (await fetch(api, "GET", url))[:2] == (200, b"gone soon\n")
    clock.advance(59.5)
    assert (await fetch(api, "GET", url))[:2] == (200, b"gone soon\n")
    clock.advance(0.5)
    status, body, _ = await fetch(api, "GET", url)
    assert status == 404, body
    assert b'"detail"' in body


async def test_a_download_link_to_a_deleted_file_is_404(api: Api, scratch_environment: Path) -> None:
    (scratch_environment / "brief.txt").write_text("x")
    url = await download_link(api, "brief.txt")
    (scratch_environment / "brief.txt").unlink()
    assert (await fetch(api, "GET", url))[0] == 404


async def test_download_link_for_a_missing_file_is_404(api: Api) -> None:
    assert await api.json("GET", "/files/download/link?path=nope.txt", status=404) == {"detail": "File not found"}


async def test_unknown_tokens_are_404(api: Api) -> None:
    for method, path in [("GET", "/files/download/not-a-token"), ("GET", "/files/upload/not-a-token"),
                         ("POST", "/files/upload/not-a-token")]:
        async with api.request(method, path, auth=False, data=form(b"x") if method == "POST" else None) as response:
            assert response.status == 404, path
            body = await response.json()
            assert isinstance(body["detail"], str) and body["detail"]


async def test_tokens_are_not_interchangeable(api: Api, scratch_environment: Path) -> None:
    (scratch_environment / "file.txt").write_text("x")
    download = await download_link(api, "file.txt")
    upload = await upload_link(api, "drop")
    download_token, upload_token = urlsplit(download).path.rsplit("/", 1)[1], urlsplit(upload).path.rsplit("/", 1)[1]
    assert download_token != upload_token and len(download_token) >= 32
    async with api.request("POST", f"/files/upload/{download_token}", auth=False, data=form(b"x")) as response:
        assert response.status == 404
    async with api.request("GET", f"/files/download/{upload_token}", auth=False) as response:
        assert response.status == 404
    assert not (scratch_environment / "hello.txt").exists()
    assert not (scratch_environment / "drop").exists()


async def test_creating_links_needs_the_key(api: Api, scratch_environment: Path) -> None:
    (scratch_environment / "file.txt").write_text("x")
    for method, path in [("GET", "/files/download/link?path=file.txt"), ("POST", "/files/upload/link?directory=.")]:
        assert await api.json(method, path, auth=False, status=401) == {"detail": "Invalid API key"}


# --- uploads --------------------------------------------------------------------------------------------


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


async def test_upload_form_escapes_the_directory(api: Api, scratch_environment: Path) -> None:
    url = await upload_link(api, WEIRD_DIRECTORY)
    status, body, headers = await fetch(api, "GET", url)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert "<b>" not in page and '&"' not in page
    parser = PageParser()
    parser.feed(page)
    forms = [attrs for tag, attrs in parser.tags if tag == "form"]
    assert len(forms) == 1
    assert (forms[0].get("method") or "").lower() == "post"
    assert forms[0].get("enctype") == "multipart/form-data"
    assert forms[0].get("action") in (None, "", urlsplit(url).path)
    file_inputs = [attrs for tag, attrs in parser.tags
                   if tag == "input" and attrs.get("type") == "file" and attrs.get("name") == "file"]
    assert len(file_inputs) == 1
    assert str(scratch_environment / WEIRD_DIRECTORY) in "".join(parser.text)


async def test_upload_link_works_once_without_the_key(api: Api, scratch_environment: Path) -> None:
    url = await upload_link(api, WEIRD_DIRECTORY)
    assert not (scratch_environment / WEIRD_DIRECTORY).exists()  # Created by the upload, not by the link.
    status, body, _ = await fetch(api, "POST", url, data=form(b"first upload\n"))
    assert status == 200, body
    target = scratch_environment / WEIRD_DIRECTORY / "hello.txt"
    assert json.loads(body) == {"path": str(target), "size": len(b"first upload\n")}
    assert target.read_bytes() == b"first upload\n"

    status, body, _ = await fetch(api, "POST", url, data=form(b"second upload\n"))
    assert status == 404, body
    assert target.read_bytes() == b"first upload\n"
    assert (await fetch(api, "GET", url))[0] == 404


async def test_an_upload_by_link_never_replaces_a_file(api: Api, scratch_environment: Path) -> None:
    folder = scratch_environment / "drop"
    folder.mkdir()
    (folder / "hello.txt").write_bytes(b"the owner's file\n")
    status, body, _ = await fetch(api, "POST", await upload_link(api, "drop"), data=form(b"a stranger's file\n"))
    assert status == 200, body
    assert json.loads(body)["path"] == str(folder / "hello (1).txt")
    assert (folder / "hello.txt").read_bytes() == b"the owner's file\n"
    assert (folder / "hello (1).txt").read_bytes() == b"a stranger's file\n"


async def test_a_failed_upload_does_not_use_up_the_link(api: Api, scratch_environment: Path) -> None:
    url = await upload_link(api, "drop")
    status, body, _ = await fetch(api, "POST", url, data=b"just bytes", headers={"Content-Type": "text/plain"})
    assert status == 422, body
    status, body, _ = await fetch(api, "POST", url, json={"file": "not multipart"})
    assert status == 422, body
    without_file = aiohttp.FormData()
    without_file.add_field("other", b"x", filename="other.txt")
    status, body, _ = await fetch(api, "POST", url, data=without_file)
    assert status == 422, body
    assert not (scratch_environment / "drop" / "other.txt").exists()
    assert (await fetch(api, "GET", url))[0] == 200
    status, body, _ = await fetch(api, "POST", url, data=form(b"finally\n", "final.txt"))
    assert status == 200, body
    assert (scratch_environment / "drop" / "final.txt").read_bytes() == b"finally\n"
    assert (await fetch(api, "POST", url, data=form(b"again")))[0] == 404


async def test_upload_link_expires(api_with: ApiFactory, scratch_environment: Path) -> None:
    api: Api = await api_with(link_ttl=60)
    clock = drive_links(api)
    url = await upload_link(api, "late")
    assert (await fetch(api, "GET", url))[0] == 200
    clock.advance(60)
    assert (await fetch(api, "GET", url))[0] == 404
    assert (await fetch(api, "POST", url, data=form(b"too late")))[0] == 404
    assert not (scratch_environment / "late").exists()


async def test_upload_link_to_a_file_is_400(api: Api, scratch_environment: Path) -> None:
    (scratch_environment / "plain.txt").write_text("x")
    reply = await api.json("POST", "/files/upload/link?directory=plain.txt", status=400)
    assert isinstance(reply["detail"], str) and reply["detail"]


async def test_a_browser_upload_keeps_a_non_ascii_file_name(api: Api, scratch_environment: Path) -> None:
    """Browsers send the file name raw (UTF-8) in the part's Content-Disposition."""
    url = await upload_link(api, "drop")
    boundary = "----opentermdLinkBoundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="résumé final.txt"\r\n'
            f"Content-Type: text/plain\r\n\r\n").encode() + b"cv\n" + f"\r\n--{boundary}--\r\n".encode()
    status, reply, _ = await fetch(api, "POST", url, data=body,
                                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, reply
    target = scratch_environment / "drop" / "résumé final.txt"
    assert json.loads(reply) == {"path": str(target), "size": 3}
    assert target.read_bytes() == b"cv\n"
