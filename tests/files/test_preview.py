"""/files/view?preview=true: office documents rendered to PDF by the real LibreOffice, cached by version.

Only the tests of our own time limit, disconnect handling, concurrency bound and cache bookkeeping
run a fake `soffice` (a shell script): they test what the daemon does to a converter, not LibreOffice.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from pypdf import PdfReader

from daemon.files import ops
from daemon.files.preview import Previewer
from daemon.keys import PREVIEWS
from tests.conftest import Api, ApiFactory, eventually, process_group_members, process_stats

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
WORDS = "Quarterly zebra preview"

needs_libreoffice = pytest.mark.skipif(shutil.which("soffice") is None,
                                       reason="LibreOffice (soffice) is not installed: make debian-packages")


def make_docx(path: Path, words: str = WORDS) -> bytes:
    from docx import Document

    document = Document()
    document.add_heading("Preview test", level=1)
    document.add_paragraph(words)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "cell one", "cell two"
    document.save(str(path))
    return path.read_bytes()


ODT_MANIFEST = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
    '<manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.text"/>'
    '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>')


ODT_NAMESPACES = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in (
    ("office", "urn:oasis:names:tc:opendocument:xmlns:office:1.0"),
    ("text", "urn:oasis:names:tc:opendocument:xmlns:text:1.0"),
    ("draw", "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"),
    ("svg", "urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0"),
    ("xlink", "http://www.w3.org/1999/xlink")))


def make_odt(path: Path, body: str) -> None:
    """An OpenDocument text whose body is the given XML (zipfile by hand: the links are the point)."""
    content = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ODT_NAMESPACES} '
               f'office:version="1.2"><office:body><office:text>{body}</office:text></office:body>'
               '</office:document-content>')
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text", compress_type=zipfile.ZIP_STORED)
        archive.writestr("content.xml", content)
        archive.writestr("META-INF/manifest.xml", ODT_MANIFEST)


def make_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def view(path: Path | str, preview: bool = True) -> str:
    return f"/files/view?path={quote(str(path))}&preview={'true' if preview else 'false'}"


def previewer(api: Api) -> Previewer:
    app: web.Application = api.client.app
    return app[PREVIEWS]


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line names `text` (our work directory): leftovers of a conversion."""
    found = []
    for pid, fields in process_stats().items():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if fields[0] != "Z" and text in command:
            found.append(pid)
    return found


def fake_soffice(tmp_path: Path, body: str) -> Path:
    """An executable standing in for soffice: records its pid in started/, then runs `body` with
    $input (the document) and $outdir set, as LibreOffice's command line gives them."""
    started = tmp_path / "started"
    started.mkdir(exist_ok=True)
    script = tmp_path / "fake-soffice"
    script.write_text(
        "#!/bin/bash\n"
        f"echo $$ > {started}/$$\n"
        'outdir=""; previous=""\n'
        'for argument in "$@"; do [ "$previous" = --outdir ] && outdir=$argument; previous=$argument; done\n'
        'input=$previous; name=$(basename "${input%.*}")\n'
        + body + "\n")
    script.chmod(0o755)
    return script


#: The fake's PDF: a PDF header, then the document's own bytes (so two documents give two PDFs).
WRITE_PDF = '{ printf "%%PDF-1.4\\n"; cat "$input"; } > "$outdir/$name.pdf"'


def started_pids(tmp_path: Path) -> list[int]:
    return [int(entry.name) for entry in (tmp_path / "started").iterdir()]


# --- the real LibreOffice -----------------------------------------------------------------------------


@needs_libreoffice
async def test_docx_preview_is_a_pdf_of_its_words_then_served_from_the_cache(api: Api, home: Path,
                                                                             tmp_path: Path) -> None:
    original = make_docx(home / "report.docx")
    async with api.request("GET", view(home / "report.docx")) as reply:
        assert reply.status == 200, await reply.text()
        assert reply.content_type == "application/pdf"
        pdf = await reply.read()
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert WORDS in text and "cell one" in text and "cell two" in text
    assert previewer(api).conversions == 1
    assert [entry.suffix for entry in (tmp_path / "state/previews/cache").iterdir()] == [".pdf"]
    assert processes_mentioning(str(tmp_path / "state")) == []  # LibreOffice left nothing running
    assert list((tmp_path / "state/previews/work").iterdir()) == []  # the copy and profile are gone

    async with api.request("GET", view("report.docx")) as again:  # relative to home: the same file
        assert again.status == 200 and again.content_type == "application/pdf"
        assert await again.read() == pdf
    assert previewer(api).conversions == 1  # no new LibreOffice run

    async with api.request("GET", view(home / "report.docx", preview=False)) as plain:
        assert plain.status == 200 and plain.content_type == DOCX_TYPE
        assert await plain.read() == original


@needs_libreoffice
async def test_a_broken_document_gets_its_original_bytes_and_is_not_converted_twice(api: Api, home: Path) -> None:
    broken = b"PK\x03\x04 not really a zip"
    (home / "broken.docx").write_bytes(broken)
    for _ in range(2):
        async with api.request("GET", view(home / "broken.docx")) as reply:
            assert reply.status == 200 and reply.content_type == DOCX_TYPE
            assert await reply.read() == broken
    assert previewer(api).conversions == 1  # the failure is remembered for this version of the file


@needs_libreoffice
async def test_files_and_urls_linked_from_a_document_are_not_pulled_into_the_pdf(
        api_with: ApiFactory, aiohttp_server: Any, tmp_path: Path) -> None:
    """A document inside --root may link an image or a text file anywhere, or a URL; LibreOffice loads
    linked images into the PDF with a default profile (it did here: this test failed without the seeded
    one), which would show what --root hides, or make the daemon fetch a URL of the author's choosing."""
    root = tmp_path / "home" / "root"
    root.mkdir()
    secret, picture = tmp_path / "secret.txt", tmp_path / "secret.png"
    secret.write_text("OUTSIDE-SECRET-TEXT\n")
    picture.write_bytes(make_png(40, 40))
    fetched: list[str] = []

    async def image(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.Response(body=make_png(40, 40), content_type="image/png")

    internal = web.Application()
    internal.router.add_get("/internal.png", image)
    server = await aiohttp_server(internal)
    links = (picture.as_uri(), str(server.make_url("/internal.png")))
    body = (
        "<text:p>Visible words"
        + "".join(f'<draw:frame draw:name="i{index}" svg:width="2cm" svg:height="2cm" text:anchor-type="as-char">'
                  f'<draw:image xlink:href="{url}" xlink:type="simple" xlink:show="embed" xlink:actuate="onLoad"/>'
                  "</draw:frame>" for index, url in enumerate(links))
        + "</text:p>"
        f'<text:section text:name="S1"><text:section-source xlink:href="{secret.as_uri()}" xlink:type="simple" '
        'text:filter-name="Text"/><text:p>stale copy</text:p></text:section>')
    make_odt(root / "linked.odt", body)
    api = await api_with(file_root=root)
    async with api.request("GET", view(root / "linked.odt")) as reply:
        assert reply.status == 200 and reply.content_type == "application/pdf"
        page = PdfReader(io.BytesIO(await reply.read())).pages[0]
    assert "Visible words" in page.extract_text() and "OUTSIDE-SECRET-TEXT" not in page.extract_text()
    assert list(page.images) == []
    assert fetched == []


# --- what is never converted --------------------------------------------------------------------------


async def test_without_libreoffice_the_original_bytes(api_with: ApiFactory, home: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    original = make_docx(home / "report.docx")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    if shutil.which("bwrap"):  # the daemon's sandbox (OPEN_TERMINAL_TEST_SANDBOX), not a converter
        (empty / "bwrap").symlink_to(shutil.which("bwrap") or "")
    monkeypatch.setenv("PATH", str(empty))  # no soffice, no libreoffice
    for api in (await api_with(), await api_with(libreoffice="off")):
        async with api.request("GET", view(home / "report.docx")) as reply:
            assert reply.status == 200 and reply.content_type == DOCX_TYPE
            assert await reply.read() == original
        assert previewer(api).conversions == 0
        assert not previewer(api).available(str(home / "report.docx"))


async def test_types_libreoffice_does_not_render_are_served_as_they_are(api_with: ApiFactory, home: Path,
                                                                         tmp_path: Path) -> None:
    api = await api_with(libreoffice=str(fake_soffice(tmp_path, WRITE_PDF)))
    (home / "notes.txt").write_text("plain words\n")
    (home / "page.html").write_text("<p>hi</p>")
    for name, body in (("notes.txt", b"plain words\n"), ("page.html", b"<p>hi</p>")):
        async with api.request("GET", view(home / name)) as reply:
            assert reply.status == 200 and await reply.read() == body
    assert previewer(api).conversions == 0
    assert previewer(api).available(str(home / "deck.PPTX")) and not previewer(api).available("notes.txt")


async def test_a_fifo_or_device_named_docx_is_refused_without_hanging(api_with: ApiFactory, home: Path,
                                                                       tmp_path: Path) -> None:
    api = await api_with(libreoffice=str(fake_soffice(tmp_path, WRITE_PDF)))
    os.mkfifo(home / "x.docx")  # nobody writes to it: reading it would wait forever
    os.mknod(home / "zero.docx", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: endless
    for name in ("x.docx", "zero.docx"):
        assert await api.json("GET", view(home / name), status=400) == {"detail": "Path is not a regular file"}
    assert previewer(api).conversions == 0


async def test_a_document_outside_the_root_is_403(api_with: ApiFactory, home: Path, tmp_path: Path) -> None:
    root = home / "root"
    root.mkdir()
    make_docx(home / "outside.docx")
    api = await api_with(file_root=root, libreoffice=str(fake_soffice(tmp_path, WRITE_PDF)))
    async with api.request("GET", view(home / "outside.docx")) as reply:
        assert reply.status == 403
    async with api.request("GET", view("../outside.docx")) as reply:
        assert reply.status == 403
    assert previewer(api).conversions == 0


# --- what the daemon does to a converter (a fake soffice) ---------------------------------------------


async def test_a_hanging_conversion_is_killed_at_the_time_limit_with_its_whole_group(
        api_with: ApiFactory, home: Path, tmp_path: Path) -> None:
    fake = fake_soffice(tmp_path, "sleep 1000 & exec sleep 1000")  # a helper child and a stuck parent
    api = await api_with(libreoffice=str(fake), preview_timeout=1.0)
    make_docx(home / "stuck.docx")
    detail = ("Rendering stuck.docx as PDF took longer than 1 s (OPEN_TERMINAL_PREVIEW_TIMEOUT); "
              "the document may be damaged. Download it instead.")
    assert await api.json("GET", view(home / "stuck.docx"), status=422) == {"detail": detail}
    [group] = started_pids(tmp_path)
    assert process_group_members(group) == []
    # Asked again, the hang is remembered: the same answer at once, no second conversion.
    assert await api.json("GET", view(home / "stuck.docx"), status=422) == {"detail": detail}
    assert previewer(api).conversions == 1


async def test_a_client_that_leaves_ends_its_conversion(api_with: ApiFactory, home: Path, tmp_path: Path) -> None:
    api = await api_with(libreoffice=str(fake_soffice(tmp_path, "sleep 1000 & exec sleep 1000")))
    make_docx(home / "slow.docx")

    async def ask() -> None:
        async with api.request("GET", view(home / "slow.docx")) as reply:
            await reply.read()

    request = asyncio.ensure_future(ask())
    [group] = await eventually(lambda: started_pids(tmp_path))
    request.cancel()  # the client closes its connection mid-conversion
    await eventually(lambda: process_group_members(group) == [])
    await eventually(lambda: list((tmp_path / "state/previews/work").iterdir()) == [])


async def test_two_conversions_at_a_time_the_rest_wait_for_a_place(api_with: ApiFactory, home: Path,
                                                                   tmp_path: Path) -> None:
    release = tmp_path / "release"
    gate = f"while [ ! -e {release} ]; do sleep 0.02; done\n{WRITE_PDF}"
    api = await api_with(libreoffice=str(fake_soffice(tmp_path, gate)))
    names = [f"doc{index}.docx" for index in range(3)]
    for name in names:
        make_docx(home / name, words=name)

    async def ask(name: str) -> tuple[int, str, bytes]:
        async with api.request("GET", view(home / name)) as reply:
            return reply.status, reply.content_type, await reply.read()

    requests = [asyncio.ensure_future(ask(name)) for name in names]
    await eventually(lambda: len(started_pids(tmp_path)) == 2 and previewer(api).waiting == 1)
    assert len(started_pids(tmp_path)) == 2  # the third waits for a place, LibreOffice not started
    release.touch()
    replies = await asyncio.gather(*requests)
    for name, (status, content_type, body) in zip(names, replies, strict=True):
        assert (status, content_type) == (200, "application/pdf")
        assert body == b"%PDF-1.4\n" + (home / name).read_bytes()
    assert previewer(api).conversions == 3


async def test_past_the_waiting_line_a_request_is_429(home: Path, tmp_path: Path) -> None:
    release = tmp_path / "release"
    fake = fake_soffice(tmp_path, f"while [ ! -e {release} ]; do sleep 0.02; done\n{WRITE_PDF}")
    previews = Previewer(tmp_path / "previews", libreoffice=str(fake), slots=1, max_waiting=1)
    for index in range(3):
        make_docx(home / f"doc{index}.docx", words=f"doc {index}")

    async def render(index: int) -> ops.OpenFile | None:
        with ops.open_file(str(home / f"doc{index}.docx")) as file:
            return await previews.render(file, f"doc{index}.docx")

    first, second = asyncio.ensure_future(render(0)), asyncio.ensure_future(render(1))
    await eventually(lambda: len(started_pids(tmp_path)) == 1 and previews.waiting == 1)
    with pytest.raises(Exception) as refused:
        await render(2)
    assert (refused.value.status, refused.value.detail) == (  # type: ignore[attr-defined]
        429, "Too many document previews are being rendered; try again shortly")
    release.touch()
    for done in await asyncio.gather(first, second):
        assert done is not None
        done.close()


# --- the cache ----------------------------------------------------------------------------------------


async def render_one(previews: Previewer, path: Path) -> bytes:
    with ops.open_file(str(path)) as file:
        pdf = await previews.render(file, path.name)
    assert pdf is not None
    with pdf:
        return os.pread(pdf.fd, pdf.info.st_size, 0)


async def test_copies_with_the_same_size_and_mtime_do_not_share_a_cached_pdf(home: Path, tmp_path: Path) -> None:
    previews = Previewer(tmp_path / "previews", libreoffice=str(fake_soffice(tmp_path, WRITE_PDF)))
    (home / "a.docx").write_bytes(b"AAAA")
    (home / "b.docx").write_bytes(b"BBBB")
    moment = os.stat(home / "a.docx").st_mtime_ns
    os.utime(home / "b.docx", ns=(moment, moment))  # as `cp -p` leaves them: same ETag
    assert ops.etag(os.stat(home / "a.docx")) == ops.etag(os.stat(home / "b.docx"))
    assert await render_one(previews, home / "a.docx") == b"%PDF-1.4\nAAAA"
    assert await render_one(previews, home / "b.docx") == b"%PDF-1.4\nBBBB"
    (home / "a.docx").write_bytes(b"CCCC")  # a new version of a: converted again
    assert await render_one(previews, home / "a.docx") == b"%PDF-1.4\nCCCC"
    assert previews.conversions == 3


async def test_the_cache_keeps_its_size_dropping_the_least_recently_used(home: Path, tmp_path: Path) -> None:
    pdf_size = len(b"%PDF-1.4\n") + 1000
    previews = Previewer(tmp_path / "previews", libreoffice=str(fake_soffice(tmp_path, WRITE_PDF)),
                         cache_size=2 * pdf_size)
    for name in "abc":
        (home / f"{name}.docx").write_bytes(name.encode() * 1000)
    await render_one(previews, home / "a.docx")
    await render_one(previews, home / "b.docx")
    await render_one(previews, home / "a.docx")  # a hit: now b is the least recently used
    assert previews.conversions == 2
    await render_one(previews, home / "c.docx")  # over the size: b goes
    cache = tmp_path / "previews" / "cache"
    assert sum(entry.stat().st_size for entry in cache.iterdir()) == 2 * pdf_size
    await render_one(previews, home / "a.docx")
    await render_one(previews, home / "c.docx")
    assert previews.conversions == 3
    await render_one(previews, home / "b.docx")
    assert previews.conversions == 4


async def test_a_work_directory_left_by_a_dead_daemon_is_swept(home: Path, tmp_path: Path) -> None:
    previews = Previewer(tmp_path / "previews", libreoffice=str(fake_soffice(tmp_path, WRITE_PDF)))
    left = tmp_path / "previews" / "work" / "tmp-crashed"
    (left / "in").mkdir(parents=True)
    (left / "in" / "document.docx").write_bytes(b"old copy")
    two_hours_ago = os.stat(left).st_mtime - 7200
    os.utime(left, (two_hours_ago, two_hours_ago))
    (home / "a.docx").write_bytes(b"AAAA")
    await render_one(previews, home / "a.docx")
    assert list((tmp_path / "previews" / "work").iterdir()) == []


async def test_stopping_the_server_kills_a_running_conversion(api_with: ApiFactory, home: Path,
                                                             tmp_path: Path) -> None:
    api = await api_with(libreoffice=str(fake_soffice(tmp_path, "sleep 1000 & exec sleep 1000")))
    make_docx(home / "slow.docx")
    request = asyncio.ensure_future(api.request("GET", view(home / "slow.docx")))
    [group] = await eventually(lambda: started_pids(tmp_path))
    await api.client.close()  # the server shuts down mid-conversion
    await eventually(lambda: process_group_members(group) == [])
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
