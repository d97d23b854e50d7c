"""read_file and compare on office documents, e-books and mail: real files made by the libraries that
write them (python-docx, openpyxl, python-pptx), by hand (RTF, BIFF2 .xls, ODF, EPUB) or by the standard
library (e-mail); and the attacks: zip bombs, entity expansion, deep nesting, a FIFO named like a document."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import zipfile
from email.message import EmailMessage
from pathlib import Path

import docx
import openpyxl
import pptx
import pytest
from pptx.util import Inches

from tests.conftest import Api

# --- documents made for the tests ---------------------------------------------------------------------


def make_docx() -> bytes:
    document = docx.Document()
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Sales grew in every region.")
    table = document.add_table(rows=2, cols=3)
    for row, values in zip(table.rows, [("Region", "Q1", "Q2"), ("North", "10", "12")], strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    document.add_paragraph("End of report.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def make_xlsx() -> bytes:
    workbook = openpyxl.Workbook()
    first = workbook.active
    first.title = "Fruit"
    first.append(["Name", "Qty"])
    first.append(["Apple", 3])
    first.append([None, None])
    first.append(["Pear", 2.5])
    second = workbook.create_sheet("Notes")
    second["B2"] = "two\tcells?"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def make_pptx() -> bytes:
    presentation = pptx.Presentation()
    title_slide = presentation.slides.add_slide(presentation.slide_layouts[0])
    title_slide.shapes.title.text = "Launch plan"
    title_slide.placeholders[1].text = "Spring release"
    blank = presentation.slides.add_slide(presentation.slide_layouts[6])
    table = blank.shapes.add_table(2, 2, Inches(1), Inches(1), Inches(4), Inches(2)).table
    for (row, column), value in {(0, 0): "Task", (0, 1): "Owner", (1, 0): "Ship", (1, 1): "Ada"}.items():
        table.cell(row, column).text = value
    group = blank.shapes.add_group_shape()
    group.shapes.add_textbox(Inches(1), Inches(4), Inches(3), Inches(1)).text_frame.text = "Grouped note"
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()


def make_xls() -> bytes:
    """A BIFF2 worksheet stream, the simplest real .xls (Excel 2.x), written record by record: BOF,
    LABEL and NUMBER cells, EOF. xlrd reads it as Excel does; no writer of the format is installed. Its
    latin-1 "ê" makes it non-UTF-8, as real workbooks are (their binary records are)."""

    def record(kind: int, data: bytes) -> bytes:
        return struct.pack("<HH", kind, len(data)) + data

    def label(row: int, column: int, text: str) -> bytes:
        raw = text.encode("latin-1")
        return record(0x0004, struct.pack("<HH3sB", row, column, b"\0\0\0", len(raw)) + raw)

    def number(row: int, column: int, value: float) -> bytes:
        return record(0x0003, struct.pack("<HH3sd", row, column, b"\0\0\0", value))

    return (record(0x0009, struct.pack("<HH", 2, 0x10)) + label(0, 0, "Name") + label(0, 1, "Qty")
            + label(1, 0, "Apple") + number(1, 1, 3.0) + label(2, 0, "Pêche") + number(2, 1, 2.5) + record(0x000A, b""))


#: A non-UTF-8 byte in an ignored destination makes the file binary, as real RTF with a picture is.
RTF = (b"{\\rtf1\\ansi{\\*\\generator \xff}{\\fonttbl{\\f0 Arial;}}\\f0 Dear caf\\'e9 owner,\\par "
       b"{\\b Thanks} for the order.\\par}")

_ODF = {"office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
        "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
        "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
        "draw": "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0",
        "presentation": "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0"}


def make_odf(kind: str, body: str) -> bytes:
    """An OpenDocument package as LibreOffice writes it: mimetype first and stored, then content.xml."""
    mimetype = f"application/vnd.oasis.opendocument.{kind}"
    namespaces = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in _ODF.items())
    content = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {namespaces} office:version="1.3">'
               f"<office:body>{body}</office:body></office:document-content>")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), mimetype, zipfile.ZIP_STORED)
        archive.writestr("content.xml", content)
        archive.writestr("META-INF/manifest.xml", '<?xml version="1.0"?><manifest/>')
    return buffer.getvalue()


ODT = make_odf("text", "<office:text><text:h>Minutes</text:h><text:p>Present:<text:s text:c=\"2\"/>Ada"
                       "<text:note><text:note-body><text:p>a footnote</text:p></text:note-body></text:note></text:p>"
                       "<table:table><table:table-row><table:table-cell><text:p>Item</text:p></table:table-cell>"
                       "<table:table-cell><text:p>Done</text:p></table:table-cell></table:table-row>"
                       "</table:table><text:p>Adjourned.</text:p></office:text>")
ODS = make_odf("spreadsheet", "<office:spreadsheet><table:table table:name=\"Budget\"><table:table-row>"
                              "<table:table-cell><text:p>Rent</text:p></table:table-cell>"
                              "<table:table-cell table:number-columns-repeated=\"2\"><text:p>900</text:p>"
                              "</table:table-cell><table:table-cell table:number-columns-repeated=\"16000\"/>"
                              "</table:table-row><table:table-row table:number-rows-repeated=\"1048000\">"
                              "<table:table-cell table:number-columns-repeated=\"1024\"/></table:table-row>"
                              "</table:table></office:spreadsheet>")
ODP = make_odf("presentation", "<office:presentation><draw:page><draw:frame><draw:text-box><text:p>Welcome</text:p>"
                               "</draw:text-box></draw:frame><presentation:notes><draw:frame><draw:text-box>"
                               "<text:p>speaker secret</text:p></draw:text-box></draw:frame></presentation:notes>"
                               "</draw:page><draw:page><draw:frame><draw:text-box><text:p>Questions?</text:p>"
                               "</draw:text-box></draw:frame></draw:page></office:presentation>")


def make_epub() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip", zipfile.ZIP_STORED)
        archive.writestr("META-INF/container.xml", '<?xml version="1.0"?><container version="1.0" '
                         'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile '
                         'full-path="OEBPS/book.opf" media-type="application/oebps-package+xml"/></rootfiles>'
                         "</container>")
        archive.writestr("OEBPS/book.opf", '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf">'
                         '<manifest><item id="c2" href="two.xhtml"/><item id="c1" href="one%20a.xhtml"/></manifest>'
                         '<spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>')
        archive.writestr("OEBPS/one a.xhtml", "<!DOCTYPE html><html><head><title>T</title><style>p{}</style></head>"
                         "<body><h1>Chapter 1</h1><p>It was a   dark\nnight.</p><p>The end&nbsp;came.</p>"
                         "</body></html>")
        archive.writestr("OEBPS/two.xhtml", "<html><body><p>Chapter 2 text.</p></body></html>")
    return buffer.getvalue()


def make_eml() -> bytes:
    message = EmailMessage()
    message["From"] = "Ada <ada@example.com>"
    message["To"] = "bob@example.com"
    message["Subject"] = "Café menu"
    message.set_content("<p>Hello <b>Bob</b>,</p><p>see the café menu.</p>", subtype="html", charset="latin-1",
                        cte="8bit")
    message.add_attachment(b"\x00\x01", maintype="application", subtype="octet-stream", filename="menu.bin")
    return message.as_bytes()


# --- read_file ----------------------------------------------------------------------------------------


async def read(api: Api, folder: Path, name: str, data: bytes, status: int = 200) -> dict[str, object]:
    (folder / name).write_bytes(data)
    reply: dict[str, object] = await api.json("GET", f"/files/read?path={name}", status)
    return reply


CASES = [
    ("report.docx", make_docx, "Quarterly report\nSales grew in every region.\nRegion\tQ1\tQ2\nNorth\t10\t12\n"
                               "End of report."),
    ("fruit.xlsx", make_xlsx, "--- Sheet: Fruit ---\nName\tQty\nApple\t3\n\nPear\t2.5\n--- Sheet: Notes ---\n"
                              "\n\ttwo cells?"),
    ("deck.pptx", make_pptx, "--- Slide 1 ---\nLaunch plan\nSpring release\n--- Slide 2 ---\nTask\tOwner\n"
                             "Ship\tAda\nGrouped note"),
    ("old.xls", make_xls, "--- Sheet: Sheet 1 ---\nName\tQty\nApple\t3\nPêche\t2.5"),
    ("letter.rtf", lambda: RTF, "Dear café owner,\nThanks for the order.\n"),
    ("minutes.odt", lambda: ODT, "Minutes\nPresent:  Ada\nItem\tDone\nAdjourned."),
    ("talk.odp", lambda: ODP, "--- Slide 1 ---\nWelcome\n--- Slide 2 ---\nQuestions?"),
    ("book.epub", make_epub, "Chapter 1\nIt was a dark night.\nThe end came.\n\nChapter 2 text."),
    ("menu.eml", make_eml, "From: Ada <ada@example.com>\nTo: bob@example.com\nSubject: Café menu\n\n"
                           "Hello Bob,\nsee the café menu.\n\nAttachments: menu.bin"),
]


@pytest.mark.parametrize(("name", "make", "text"), CASES, ids=[case[0] for case in CASES])
async def test_documents_read_as_text(api: Api, scratch_environment: Path, name: str, make: object,
                                      text: str) -> None:
    assert callable(make)
    reply = await read(api, scratch_environment, name, make())
    assert reply == {"path": str(scratch_environment / name), "content": text, "total_lines": len(text.splitlines())}


async def test_a_sheet_with_a_million_repeated_rows_is_bounded(api: Api, scratch_environment: Path) -> None:
    """16,000 repeated empty columns and 1,048,000 empty rows (what LibreOffice writes to fill a sheet)
    cost nothing: trailing empties are dropped without being spelled out."""
    reply = await read(api, scratch_environment, "budget.ods", ODS)
    assert reply["content"] == "--- Sheet: Budget ---\nRent\t900\t900"


async def test_line_ranges_apply_to_document_text(api: Api, scratch_environment: Path) -> None:
    (scratch_environment / "report.docx").write_bytes(make_docx())
    reply = await api.json("GET", "/files/read?path=report.docx&start_line=3&end_line=4")
    assert reply["content"] == "Region\tQ1\tQ2\nNorth\t10\t12\n" and reply["total_lines"] == 5


async def test_a_docx_that_is_text_reads_as_text(api: Api, scratch_environment: Path) -> None:
    reply = await read(api, scratch_environment, "notes.docx", b"# Just markdown\n")
    assert reply["content"] == "# Just markdown\n"


async def test_a_damaged_docx_is_422_with_the_reason(api: Api, scratch_environment: Path) -> None:
    reply = await read(api, scratch_environment, "broken.docx", b"PK\x03\x04\xff\xfe garbage", 422)
    assert str(reply["detail"]).startswith("Cannot extract text from this document: ")


# --- attacks --------------------------------------------------------------------------------------------


def zip_bomb() -> bytes:
    """A .docx whose document.xml inflates to 4 GiB from a few MB: 4 GiB of one repeated byte, deflated
    in 1 MiB steps (the archive is written without ever holding the inflated part)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            block = b"<" + b"a" * (1024 * 1024 - 1)
            for _ in range(4 * 1024):
                member.write(block)
    return buffer.getvalue()


BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + "".join(f'<!ENTITY lol{n} "{("&lol" + str(n - 1) + ";") * 10 if n > 1 else "&lol;" * 10}">'
                            for n in range(1, 10))
                  + ']><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
                  "<w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>")


def docx_with(part: str, xml: str) -> bytes:
    """A real .docx with one part replaced."""
    source = zipfile.ZipFile(io.BytesIO(make_docx()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            archive.writestr(info.filename, xml if info.filename == part else source.read(info))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return zip_bomb()


async def test_a_zip_bomb_is_422_and_the_server_keeps_serving(api: Api, scratch_environment: Path,
                                                             bomb: bytes) -> None:
    assert len(bomb) < 8 * 1024 * 1024
    reply = await read(api, scratch_environment, "bomb.docx", bomb, 422)
    assert "word/document.xml would inflate to 4,294,967,296 bytes" in str(reply["detail"])
    assert await api.json("GET", "/health") == {"status": "ok"}


@pytest.mark.parametrize("name", ["laughs.docx", "laughs.xlsx"])
async def test_billion_laughs_is_422(api: Api, scratch_environment: Path, name: str) -> None:
    data = docx_with("word/document.xml", BILLION_LAUGHS) if name.endswith("docx") else \
        _xlsx_with_sheet(BILLION_LAUGHS)
    reply = await read(api, scratch_environment, name, data, 422)
    assert "declares XML entities" in str(reply["detail"])


def _xlsx_with_sheet(xml: str) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(make_xlsx()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            archive.writestr(info.filename, xml if info.filename == "xl/worksheets/sheet1.xml" else source.read(info))
    return buffer.getvalue()


async def test_an_entity_hidden_behind_a_long_prolog_is_refused(api: Api, scratch_environment: Path) -> None:
    """A DOCTYPE pushed past the bytes the prolog check reads does not slip through."""
    xml = '<?xml version="1.0"?><!--' + "x" * 100_000 + "-->" + BILLION_LAUGHS.split("?>", 1)[1]
    reply = await read(api, scratch_environment, "long.docx", docx_with("word/document.xml", xml), 422)
    assert "prolog is longer" in str(reply["detail"])


async def test_deeply_nested_xml_is_422(api: Api, scratch_environment: Path) -> None:
    depth = 100_000
    body = "<text:span>" * depth + "deep" + "</text:span>" * depth
    data = make_odf("text", f"<office:text><text:p>{body}</text:p></office:text>")
    reply = await read(api, scratch_environment, "deep.odt", data, 422)
    assert "depth" in str(reply["detail"]).lower()
    assert await api.json("GET", "/health") == {"status": "ok"}


async def test_a_fifo_named_like_a_document_is_refused_without_hanging(api: Api, scratch_environment: Path) -> None:
    os.mkfifo(scratch_environment / "pipe.docx")
    reply = await asyncio.wait_for(api.json("GET", "/files/read?path=pipe.docx", 400), 30)
    assert reply == {"detail": "Path is not a regular file"}


# --- compare ---------------------------------------------------------------------------------------------


def docx_of(paragraphs: list[str]) -> bytes:
    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


async def test_compare_two_docx_versions(api: Api, scratch_environment: Path) -> None:
    (scratch_environment / "v1.docx").write_bytes(docx_of(["Title", "The fee is 10 euros.", "Thanks."]))
    (scratch_environment / "v2.docx").write_bytes(docx_of(["Title", "The fee is 12 euros.", "Thanks."]))
    reply = await api.json("POST", "/files/compare", json={"original": "v1.docx", "revised": "v2.docx"})
    assert reply["original"]["notices"] == [
        "Text only; formatting, images and layout are not compared.",
        "Headers, footers, comments, footnotes and text boxes are excluded. "
        "Tracked insertions are included; tracked deletions are excluded."]
    assert (reply["additions"], reply["deletions"]) == (1, 1)
    [hunk] = reply["hunks"]
    assert [(line["type"], line["content"]) for line in hunk["lines"]] == [
        ("context", "Title"), ("removed", "The fee is 10 euros."), ("added", "The fee is 12 euros."),
        ("context", "Thanks.")]
    assert {"text": "12", "changed": True} in hunk["lines"][2]["segments"]


async def test_compare_sheets_and_refusals(api: Api, scratch_environment: Path, bomb: bytes) -> None:
    (scratch_environment / "a.xlsx").write_bytes(make_xlsx())
    (scratch_environment / "b.xls").write_bytes(make_xls())
    reply = await api.json("POST", "/files/compare", json={"original": "a.xlsx", "revised": "b.xls"})
    assert reply["revised"]["notices"][1] == "Compares extracted cell values; formulas and formatting are not compared."
    (scratch_environment / "bomb.docx").write_bytes(bomb)
    refused = await api.json("POST", "/files/compare", 422, json={"original": "a.xlsx", "revised": "bomb.docx"})
    assert str(refused["detail"]).startswith("bomb.docx: word/document.xml would inflate")
    (scratch_environment / "empty.docx").write_bytes(docx_of([]))
    empty = await api.json("POST", "/files/compare", 422, json={"original": "empty.docx", "revised": "a.xlsx"})
    assert empty == {"detail": "empty.docx: No extractable text. This document cannot be compared."}
