"""/files/read on documents and binaries: PDF text through the worker, raw images, 415 for the rest."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from pypdf import PdfReader

from daemon.files.documents import WORKER_COMMAND
from tests.conftest import Api, ApiFactory

PAGES = [["Alpha one", "Alpha two (with parens)"], ["Beta three"]]
PDF_TEXT = "Alpha one\nAlpha two (with parens)\nBeta three"


# --- hand-made files ----------------------------------------------------------------------------------


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def make_pdf(pages: list[list[str]], *, binary_marker: bool = True) -> bytes:
    """A minimal valid PDF: one page per entry, each line drawn in Helvetica, with exact xref offsets.

    The binary comment after the header is what real PDFs carry, and it makes the file non-UTF-8
    (the server reads UTF-8 files as text before it considers documents).
    """
    page_ids = [4 + 2 * index for index in range(len(pages))]
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(f'{i} 0 R' for i in page_ids)}] /Count {len(pages)} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for page_id, lines in zip(page_ids, pages, strict=True):
        operators = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        operators += [("T* " if number else "") + _pdf_string(line) + " Tj" for number, line in enumerate(lines)]
        operators.append("ET")
        stream = "\n".join(operators).encode("latin-1")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_id + 1} 0 R >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    output = bytearray(b"%PDF-1.4\n" + (b"%\xe2\xe3\xcf\xd3\n" if binary_marker else b""))
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(output))
        output += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(output)
    output += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    output += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    output += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(output)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def make_png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG: signature, IHDR, one zlib IDAT of filtered rows, IEND."""
    rows = b"".join(
        b"\x00" + b"".join(bytes([(x * 80) % 256, (y * 120) % 256, 200]) for x in range(width))
        for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows))
            + _png_chunk(b"IEND", b""))


def make_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("blob.bin", b"\xff\xfe\x00\x80binary payload")
    return buffer.getvalue()


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_the_hand_made_files_are_valid() -> None:
    reader = PdfReader(io.BytesIO(make_pdf(PAGES)), strict=True)
    assert [page.extract_text() for page in reader.pages] == ["Alpha one\nAlpha two (with parens)", "Beta three"]
    assert _not_utf8(make_pdf(PAGES)) and not _not_utf8(make_pdf(PAGES, binary_marker=False))
    png = make_png()
    assert png.startswith(b"\x89PNG") and _not_utf8(png)
    assert zlib.decompress(png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]) == (
        b"\x00\x00\x00\xc8\x50\x00\xc8\xa0\x00\xc8" + b"\x00\x00\x78\xc8\x50\x78\xc8\xa0\x78\xc8")
    with zipfile.ZipFile(io.BytesIO(make_zip())) as archive:
        assert archive.read("blob.bin") == b"\xff\xfe\x00\x80binary payload"
    assert _not_utf8(make_zip())


# --- worker processes -----------------------------------------------------------------------------------


def _proc_fields(pid: str) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def _cmdline(pid: str) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def children() -> set[int]:
    """Processes (zombies included) whose parent is this test process (which hosts the server)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _proc_fields(entry)) is not None and fields[1] == os.getpid():
            found.add(int(entry))
    return found


def workers_for(path: Path) -> list[int]:
    """Live or zombie extraction workers for this file, whoever their parent is now."""
    marker = str(path).encode()
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()
            and WORKER_COMMAND.encode() in (cmdline := _cmdline(entry)) and marker in cmdline]


def assert_no_worker_left(path: Path, before: set[int]) -> None:
    assert workers_for(path) == []
    leftover = {pid: _cmdline(str(pid)) for pid in children() - before}
    assert leftover == {}, leftover


# --- PDF text -------------------------------------------------------------------------------------------


async def test_pdf_text_is_extracted(api: Api, scratch_environment: Path) -> None:
    pdf = scratch_environment / "report.pdf"
    pdf.write_bytes(make_pdf(PAGES))
    before = children()
    reply = await api.json("GET", "/files/read?path=report.pdf")
    assert reply == {"path": str(pdf), "content": PDF_TEXT, "total_lines": 3}
    assert_no_worker_left(pdf, before)


async def test_pdf_suffix_is_matched_without_regard_to_case(api: Api, scratch_environment: Path) -> None:
    (scratch_environment / "REPORT.PDF").write_bytes(make_pdf([["Upper case suffix"]]))
    reply = await api.json("GET", "/files/read?path=REPORT.PDF")
    assert reply["content"] == "Upper case suffix" and reply["total_lines"] == 1


@pytest.mark.parametrize(("query", "content"), [
    ("start_line=2", "Alpha two (with parens)\nBeta three"),
    ("start_line=2&end_line=2", "Alpha two (with parens)\n"),
    ("end_line=1", "Alpha one\n"),
    ("start_line=3&end_line=10", "Beta three"),
    ("start_line=4", ""),
])
async def test_pdf_line_ranges(api: Api, scratch_environment: Path, query: str, content: str) -> None:
    (scratch_environment / "report.pdf").write_bytes(make_pdf(PAGES))
    reply = await api.json("GET", f"/files/read?path=report.pdf&{query}")
    assert reply == {"path": str(scratch_environment / "report.pdf"), "content": content, "total_lines": 3}


async def test_a_pdf_without_text_gives_empty_content(api: Api, scratch_environment: Path) -> None:
    (scratch_environment / "blank.pdf").write_bytes(make_pdf([[]]))
    reply = await api.json("GET", "/files/read?path=blank.pdf")
    assert reply["content"] == "" and reply["total_lines"] == 0


async def test_a_utf8_pdf_is_returned_as_text(api: Api, scratch_environment: Path) -> None:
    """UTF-8 comes first (as in the reference): an all-ASCII PDF is read as its source text."""
    data = make_pdf(PAGES, binary_marker=False)
    (scratch_environment / "ascii.pdf").write_bytes(data)
    reply = await api.json("GET", "/files/read?path=ascii.pdf")
    assert reply["content"] == data.decode() and reply["content"].startswith("%PDF-1.4\n")


@pytest.mark.parametrize("data", [
    pytest.param(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\nthis is not a pdf at all\n", id="garbage-after-header"),
    pytest.param(make_pdf(PAGES)[:300], id="truncated"),
    pytest.param(b"\xff\xd8\xff\xe0 not a pdf", id="no-header"),
])
async def test_a_corrupt_pdf_is_422(api: Api, scratch_environment: Path, data: bytes) -> None:
    pdf = scratch_environment / "broken.pdf"
    pdf.write_bytes(data)
    before = children()
    reply = await api.json("GET", "/files/read?path=broken.pdf", status=422)
    detail = reply["detail"]
    assert isinstance(detail, str)
    assert detail.startswith("Cannot extract text from this document: ")
    assert len(detail) > len("Cannot extract text from this document: ") + 3
    assert "Traceback" not in detail and "\n" not in detail
    assert_no_worker_left(pdf, before)
    # The server is fine afterwards.
    (scratch_environment / "good.pdf").write_bytes(make_pdf(PAGES))
    assert (await api.json("GET", "/files/read?path=good.pdf"))["content"] == PDF_TEXT


async def test_a_slow_extraction_is_cut_off_and_its_worker_killed(
        api_with: ApiFactory, scratch_environment: Path) -> None:
    api: Api = await api_with(document_timeout=0.01)
    pdf = scratch_environment / "slow.pdf"
    pdf.write_bytes(make_pdf(PAGES))
    before = children()
    reply = await api.json("GET", "/files/read?path=slow.pdf", status=422)
    assert isinstance(reply["detail"], str) and "0.01 s" in reply["detail"]
    assert_no_worker_left(pdf, before)


# --- images and other binaries ----------------------------------------------------------------------------


async def assert_raw(api: Api, path: str, content_type: str, data: bytes) -> None:
    async with api.request("GET", f"/files/read?path={path}") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == content_type
        assert await response.read() == data


async def test_images_are_returned_raw(api: Api, scratch_environment: Path) -> None:
    png = make_png()
    (scratch_environment / "pixel.png").write_bytes(png)
    await assert_raw(api, "pixel.png", "image/png", png)
    async with api.request("GET", "/files/read?path=pixel.png&start_line=2&end_line=3") as response:
        assert response.status == 200 and await response.read() == png


async def test_a_zip_is_415_by_default(api: Api, scratch_environment: Path) -> None:
    data = make_zip()
    (scratch_environment / "bundle.zip").write_bytes(data)
    reply = await api.json("GET", "/files/read?path=bundle.zip", status=415)
    assert reply == {"detail": f"Unsupported binary file type: application/zip ({len(data)} bytes)"}


async def test_binary_mime_prefixes_make_a_zip_raw(api_with: ApiFactory, scratch_environment: Path) -> None:
    api: Api = await api_with(binary_mime_prefixes=("image", "application/zip"))
    data = make_zip()
    (scratch_environment / "bundle.zip").write_bytes(data)
    await assert_raw(api, "bundle.zip", "application/zip", data)
    (scratch_environment / "pixel.png").write_bytes(make_png())
    async with api.request("GET", "/files/read?path=pixel.png") as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/png"


async def test_prefixes_without_image_make_images_415(api_with: ApiFactory, scratch_environment: Path) -> None:
    api: Api = await api_with(binary_mime_prefixes=("application/zip",))
    png = make_png()
    (scratch_environment / "pixel.png").write_bytes(png)
    reply = await api.json("GET", "/files/read?path=pixel.png", status=415)
    assert reply == {"detail": f"Unsupported binary file type: image/png ({len(png)} bytes)"}


@pytest.mark.parametrize("name", ["blob.bin", "blob"])
async def test_other_binaries_are_415(api: Api, scratch_environment: Path, name: str) -> None:
    data = bytes(range(256)) * 3
    (scratch_environment / name).write_bytes(data)
    reply = await api.json("GET", f"/files/read?path={name}", status=415)
    assert reply == {"detail": f"Unsupported binary file type: application/octet-stream ({len(data)} bytes)"}
