"""Text from documents, one function a format; they run only in the document worker.

Each extractor reads a seekable binary file and writes parts to an `Output`, which joins them with
newlines (as the reference does) and bounds them: the text as a whole, the rows of a sheet, the rows of
a workbook and the columns of a row. Past a bound, `read_file` gets a note saying what was left out;
`/files/compare` (strict) gets an error instead, since a diff of half a document would mislead.

Beyond the reference: sheets are labelled `--- Sheet: <name> ---`; table rows (Word, Writer, slides)
come out as tab-separated cells on one line; grouped shapes and tables on slides are read; ODF spaces,
tabs and line breaks are kept; EPUB and HTML mail keep their paragraphs; mail lists its attachments.
"""

from __future__ import annotations

import contextlib
import email
import io
import posixpath
import warnings
from collections.abc import Callable, Iterator, Sequence
from email import policy
from email.message import EmailMessage
from typing import IO, Any
from urllib.parse import unquote

from lxml import etree

from daemon.files import containers

#: Characters of text in all (`read_file`); a longer document is cut with a note.
MAX_TEXT = 32 * 1024 * 1024
MAX_ROWS = 100_000
MAX_WORKBOOK_ROWS = 1_000_000
MAX_COLUMNS = 512
#: `<text:s text:c="N"/>` is N spaces: a hostile N must not allocate gigabytes.
MAX_SPACES = 1024
_ONE_LINE = str.maketrans({"\t": " ", "\n": " ", "\r": " ", "\v": " ", "\f": " "})


class Cut(Exception):
    """The text limit was reached: what was written stands, with its note."""


class Output:
    """Parts joined by a separator, at most `limit` characters; `strict` refuses to leave anything out."""

    def __init__(self, write: Callable[[str], object], *, limit: int = MAX_TEXT, strict: bool = False) -> None:
        self._write = write
        self.limit = limit
        self.strict = strict
        self.written = 0
        self.parts = 0
        self.workbook_rows = 0

    def part(self, text: str, separator: str = "\n") -> None:
        if self.parts:
            text = separator + text
        self.parts += 1
        if self.written + len(text) > self.limit:
            self._write(text[: max(0, self.limit - self.written)])
            self.written = self.limit
            self.cut(f"the text is longer than {self.limit:,} characters; the rest is not shown")
            raise Cut
        self.written += len(text)
        self._write(text)

    def cut(self, what: str) -> None:
        """Say what was left out, or (strict) refuse: a comparison must never be of a truncated text."""
        if self.strict:
            raise ValueError("Extracted text exceeds the comparison limit (2 million characters / 50,000 lines). "
                             "Nothing was truncated.")
        note = f"[... {what}]"
        self._write(("\n" if self.parts else "") + note)
        self.parts += 1


def cell_text(value: object) -> str:
    return "" if value is None else str(value).translate(_ONE_LINE)


class Sheet:
    """Rows of one sheet or table: trailing empty cells and rows dropped, inner gaps kept, bounded."""

    def __init__(self, output: Output, label: str | None) -> None:
        self.output = output
        self.rows = 0
        self.blank = 0
        self.full = False
        self.columns_noted = False
        if label is not None:
            output.part(label)

    def row(self, cells: Sequence[str], repeat: int = 1) -> bool:
        """Add a row (`repeat` times); False once the sheet is full (the caller stops reading it)."""
        if self.full:
            return False
        cells = list(cells)
        if len(cells) > MAX_COLUMNS:
            if any(cells[MAX_COLUMNS:]) and not self.columns_noted:
                self.columns_noted = True
                self.output.cut(f"only the first {MAX_COLUMNS} columns of this sheet are shown")
            cells = cells[:MAX_COLUMNS]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            self.blank += repeat
            return True
        for _ in range(self.blank):
            if not self._emit(""):
                return False
        self.blank = 0
        line = "\t".join(cells)
        return all(self._emit(line) for _ in range(repeat))

    def _emit(self, line: str) -> bool:
        output = self.output
        if self.rows >= MAX_ROWS or output.workbook_rows >= MAX_WORKBOOK_ROWS:
            output.cut(f"only the first {self.rows:,} rows of this sheet are shown"
                       if self.rows >= MAX_ROWS else f"only the first {MAX_WORKBOOK_ROWS:,} rows are shown")
            self.full = True
            return False
        self.rows += 1
        output.workbook_rows += 1
        output.part(line)
        return True


# --- PDF ----------------------------------------------------------------------------------------------


def pdf(source: IO[bytes], output: Output) -> None:
    from pypdf import PdfReader

    reader = PdfReader(source)
    if output.strict and reader.is_encrypted:
        raise ValueError("Encrypted PDF. Provide an unencrypted copy.")
    missing = []
    for number, page in enumerate(reader.pages, 1):
        text = page.extract_text() or ""
        if output.strict and not text.strip():
            missing.append(str(number))
        output.part(text)
    if missing:
        raise ValueError(f"No extractable text on PDF pages {', '.join(missing)}. OCR is required before comparison.")


# --- Word (python-docx) ---------------------------------------------------------------------------------


def docx(source: IO[bytes], output: Output) -> None:
    """Body paragraphs and tables in order (content controls opened), with tracked insertions and
    without tracked deletions, as the reference reads them; a table row is one line of cells."""
    from docx import Document
    from docx.oxml.ns import qn
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    containers.open_zip(source).close()
    source.seek(0)
    document = Document(source)
    body = document.element.body
    _accept_tracked_changes(body, qn)
    pending = list(body.iterchildren())
    pending.reverse()
    while pending:
        child = pending.pop()
        if child.tag == qn("w:p"):
            output.part(Paragraph(child, document).text)
        elif child.tag == qn("w:tbl"):
            table = Sheet(output, None)
            for row in Table(child, document).rows:
                if not table.row([cell_text(cell.text) for cell in row.cells]):
                    break
        elif child.tag == qn("w:sdt"):
            content = child.find(qn("w:sdtContent"))
            if content is not None:
                pending.extend(reversed(list(content.iterchildren())))


def _accept_tracked_changes(body: Any, qn: Callable[[str], str]) -> None:
    """The text as it reads with every tracked change accepted."""
    for node in list(body.iter()):
        if isinstance(node.tag, str) and node.tag.startswith(qn("w:")) and node.tag.endswith("Change"):
            node.getparent().remove(node)
    for node in body.xpath(".//w:tr[w:trPr/w:del] | .//w:tc[w:tcPr/w:cellDel]"):
        node.getparent().remove(node)
    joined = body.xpath(".//w:p[w:pPr/w:rPr/w:del]")
    etree.strip_elements(body, qn("w:del"), qn("w:moveFrom"), with_tail=False)
    etree.strip_tags(body, qn("w:ins"), qn("w:moveTo"))
    # A deleted paragraph mark joins the paragraph to the one after it.
    for paragraph in reversed(joined):
        following = paragraph.getnext()
        if following is not None and following.tag == qn("w:p"):
            for child in list(following):
                if child.tag != qn("w:pPr"):
                    paragraph.append(child)
            following.getparent().remove(following)


# --- spreadsheets (openpyxl, xlrd) ----------------------------------------------------------------------


def xlsx(source: IO[bytes], output: Output) -> None:
    from openpyxl import load_workbook

    containers.open_zip(source).close()
    source.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openpyxl warns about extensions it does not read
        workbook = load_workbook(source, read_only=True, data_only=True, keep_links=False)
    try:
        for worksheet in workbook.worksheets:
            sheet = Sheet(output, f"--- Sheet: {worksheet.title} ---")
            # The stored dimension may claim a million rows: read the rows that are there, and one
            # column past the bound to know whether any were cut.
            worksheet.reset_dimensions()
            for values in worksheet.iter_rows(values_only=True, max_col=MAX_COLUMNS + 1):
                if not sheet.row([cell_text(value) for value in values]):
                    break
    finally:
        workbook.close()


def xls(source: IO[bytes], output: Output) -> None:
    import xlrd

    # xlrd prints its warnings to stdout by default, which is where our text goes.
    workbook = xlrd.open_workbook(file_contents=source.read(), on_demand=True, logfile=io.StringIO())
    try:
        for index in range(workbook.nsheets):
            worksheet = workbook.sheet_by_index(index)
            sheet = Sheet(output, f"--- Sheet: {worksheet.name} ---")
            for row in range(worksheet.nrows):
                cells = worksheet.row_slice(row, 0, min(worksheet.ncols, MAX_COLUMNS + 1))
                if not sheet.row([_xls_value(cell, workbook.datemode) for cell in cells]):
                    break
            workbook.unload_sheet(index)
    finally:
        workbook.release_resources()


def _xls_value(cell: Any, datemode: int) -> str:
    """Numbers as Excel shows them (BIFF stores 3 as 3.0), dates as dates, booleans as TRUE/FALSE."""
    import xlrd

    if cell.ctype == xlrd.XL_CELL_NUMBER and float(cell.value).is_integer() and abs(cell.value) < 2**53:
        return str(int(cell.value))
    if cell.ctype == xlrd.XL_CELL_DATE:
        try:
            return str(xlrd.xldate_as_datetime(cell.value, datemode))
        except (ValueError, OverflowError, xlrd.xldate.XLDateError):
            return str(cell.value)
    if cell.ctype == xlrd.XL_CELL_BOOLEAN:
        return "TRUE" if cell.value else "FALSE"
    if cell.ctype == xlrd.XL_CELL_ERROR:
        return str(xlrd.error_text_from_code.get(cell.value, "#ERROR"))
    return cell_text(cell.value)


# --- PowerPoint (lxml: python-pptx would bring Pillow, 22 MB, for images we never look at) --------------

_P = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"


def pptx(source: IO[bytes], output: Output) -> None:
    """`--- Slide N ---`, then each shape's paragraphs (groups included) and each table's rows."""
    with containers.open_zip(source) as archive:
        presentation = _related(archive, "", "officeDocument")
        if presentation is None:
            raise ValueError("not a presentation: no officeDocument relationship")
        root = containers.parse_member(archive, presentation)
        targets = _relationships(archive, presentation)
        slides = root.find(f"{_P}sldIdLst")
        for number, slide_id in enumerate(slides.iterchildren(f"{_P}sldId") if slides is not None else (), 1):
            output.part(f"--- Slide {number} ---")
            target = targets.get(slide_id.get(f"{_R}id", ""))
            if target is not None:
                _slide_text(containers.parse_member(archive, target), output)


def _slide_text(slide: Any, output: Output) -> None:
    for element in slide.iter(f"{_P}txBody", f"{_A}tbl"):
        if element.tag == f"{_A}tbl":
            table = Sheet(output, None)
            for row in element.iter(f"{_A}tr"):
                cells = [" ".join(_drawing_paragraphs(cell)) for cell in row.iterchildren(f"{_A}tc")]
                if not table.row([cell_text(cell) for cell in cells]):
                    break
        else:
            for paragraph in _drawing_paragraphs(element):
                if paragraph.strip():
                    output.part(paragraph)


def _drawing_paragraphs(element: Any) -> Iterator[str]:
    for paragraph in element.iter(f"{_A}p"):
        yield "".join("\n" if node.tag == f"{_A}br" else node.text or ""
                      for node in paragraph.iter(f"{_A}t", f"{_A}br"))


def _relationships(archive: Any, part: str) -> dict[str, str]:
    """A part's internal relationships: id -> the member they point at."""
    folder, name = posixpath.split(part)
    try:
        rels = containers.parse_member(archive, posixpath.join(folder, "_rels", name + ".rels"))
    except KeyError:
        return {}
    found = {}
    for relation in rels.iter(f"{_REL}Relationship"):
        target = relation.get("Target", "")
        if relation.get("TargetMode") != "External" and target:
            resolved = target.lstrip("/") if target.startswith("/") else posixpath.join(folder, target)
            found[relation.get("Id", "")] = posixpath.normpath(unquote(resolved))
    return found


def _related(archive: Any, part: str, kind: str) -> str | None:
    folder, name = posixpath.split(part)
    rels = containers.parse_member(archive, posixpath.join(folder, "_rels", name + ".rels"))
    for relation in rels.iter(f"{_REL}Relationship"):
        if relation.get("Type", "").endswith("/" + kind):
            return posixpath.normpath(posixpath.join(folder, relation.get("Target", "").lstrip("/")))
    return None


# --- OpenDocument (lxml) --------------------------------------------------------------------------------

_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_DRAW = "{urn:oasis:names:tc:opendocument:xmlns:drawing:1.0}"
_PRESENTATION = "{urn:oasis:names:tc:opendocument:xmlns:presentation:1.0}"
#: Not part of the text as it reads: notes, comments, deleted text kept for change tracking.
_ODF_ASIDE = {f"{_TEXT}note", f"{_OFFICE}annotation", f"{_TEXT}tracked-changes", f"{_PRESENTATION}notes",
              f"{_TEXT}sequence-decls", f"{_OFFICE}forms"}
_ODF_PARAGRAPHS = (f"{_TEXT}p", f"{_TEXT}h")


def _odf_body(source: IO[bytes], kind: str) -> Any:
    with containers.open_zip(source) as archive:
        root = containers.parse_member(archive, "content.xml")
    body = root.find(f"{_OFFICE}body/{_OFFICE}{kind}")
    if body is None:
        raise ValueError(f"content.xml has no office:{kind} body")
    return body


def odt(source: IO[bytes], output: Output) -> None:
    _odf_flow(_odf_body(source, "text"), output)


def ods(source: IO[bytes], output: Output) -> None:
    for table in _odf_body(source, "spreadsheet").iterchildren(f"{_TABLE}table"):
        _odf_table(table, Sheet(output, f"--- Sheet: {table.get(f'{_TABLE}name', 'Sheet')} ---"))


def odp(source: IO[bytes], output: Output) -> None:
    for number, page in enumerate(_odf_body(source, "presentation").iterchildren(f"{_DRAW}page"), 1):
        output.part(f"--- Slide {number} ---")
        _odf_flow(page, output, skip_empty=True)


def _odf_flow(container: Any, output: Output, *, skip_empty: bool = False) -> None:
    """Headings and paragraphs in document order, tables as rows, asides left out."""
    walker = etree.iterwalk(container, events=("start",))
    for _, element in walker:
        if element.tag in _ODF_ASIDE:
            walker.skip_subtree()
        elif element.tag in _ODF_PARAGRAPHS:
            text = _odf_text(element)
            if text.strip() or not skip_empty:
                output.part(text)
            walker.skip_subtree()
        elif element.tag == f"{_TABLE}table":
            _odf_table(element, Sheet(output, None))
            walker.skip_subtree()


def _odf_table(table: Any, sheet: Sheet) -> None:
    for row in table.iter(f"{_TABLE}table-row"):
        cells: list[str] = []
        for cell in row.iterchildren(f"{_TABLE}table-cell", f"{_TABLE}covered-table-cell"):
            text = " ".join(_odf_text(paragraph) for paragraph in cell.iter(*_ODF_PARAGRAPHS))
            cells.extend([cell_text(text)] * min(_repeat(cell, "columns"), MAX_COLUMNS + 1 - len(cells)))
            if len(cells) > MAX_COLUMNS:
                break
        if not sheet.row(cells, _repeat(row, "rows")):
            return


def _repeat(element: Any, what: str) -> int:
    try:
        return max(1, int(element.get(f"{_TABLE}number-{what}-repeated", "1")))
    except ValueError:
        return 1


def _odf_text(paragraph: Any) -> str:
    """A paragraph's text with its `text:s` spaces, tabs and line breaks, without notes and comments."""
    parts: list[str] = []
    walker = etree.iterwalk(paragraph, events=("start", "end"))
    for event, element in walker:
        tag = element.tag
        if event == "start":
            if tag in _ODF_ASIDE:
                walker.skip_subtree()
                continue
            if tag == f"{_TEXT}s":
                parts.append(" " * min(_count(element), MAX_SPACES))
            elif tag == f"{_TEXT}tab":
                parts.append("\t")
            elif tag == f"{_TEXT}line-break":
                parts.append("\n")
            if element.text:
                parts.append(element.text)
        elif element is not paragraph and element.tail:
            parts.append(element.tail)
    return "".join(parts)


def _count(element: Any) -> int:
    try:
        return max(1, int(element.get(f"{_TEXT}c", "1")))
    except ValueError:
        return 1


# --- EPUB (zipfile + lxml) ------------------------------------------------------------------------------

_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_BLOCKS = frozenset({"p", "div", "br", "li", "tr", "table", "ul", "ol", "dl", "dt", "dd", "blockquote", "pre",
                     "section", "article", "header", "footer", "aside", "nav", "figure", "figcaption", "caption",
                     "hr", "h1", "h2", "h3", "h4", "h5", "h6", "address"})
_HIDDEN = frozenset({"script", "style", "head", "title", "template"})


def epub(source: IO[bytes], output: Output) -> None:
    """The spine's chapters in reading order, each as paragraphs, chapters apart by a blank line."""
    with containers.open_zip(source) as archive:
        for name in _spine(archive):
            try:
                root = containers.parse_member(archive, name, html=True)
            except (KeyError, etree.XMLSyntaxError, etree.ParserError, ValueError):
                if output.strict:
                    raise ValueError(f"Could not extract EPUB chapter: {name}") from None
                continue
            if root is not None:
                output.part(html_text(root), "\n\n")


def _spine(archive: Any) -> list[str]:
    container = containers.parse_member(archive, "META-INF/container.xml")
    rootfile = container.find(f".//{_CONTAINER}rootfile")
    if rootfile is None:
        return [name for name in archive.namelist() if name.lower().endswith((".html", ".xhtml", ".htm"))]
    package = rootfile.get("full-path", "")
    folder = posixpath.dirname(package)
    opf = containers.parse_member(archive, package)
    manifest = {item.get("id"): item.get("href", "") for item in opf.xpath("//*[local-name()='item']")}
    chapters = []
    for reference in opf.xpath("//*[local-name()='itemref']"):
        href = unquote(manifest.get(reference.get("idref"), "").split("#")[0])
        if href:
            chapters.append(href.lstrip("/") if href.startswith("/") else posixpath.normpath(
                posixpath.join(folder, href)))
    return chapters


def html_text(root: Any) -> str:
    """An HTML tree as text: one line a block (paragraph, heading, list item), table cells tab-separated,
    spaces collapsed outside <pre>, empty lines, scripts and styles left out."""
    body = root.find(".//body")
    body = root if body is None else body
    parts: list[str] = []
    preformatted = 0
    walker = etree.iterwalk(body, events=("start", "end"))
    for event, element in walker:
        tag = element.tag.lower() if isinstance(element.tag, str) else ""
        if event == "start":
            if tag in _HIDDEN:
                walker.skip_subtree()
            else:
                preformatted += tag == "pre"
                if tag in ("td", "th") and element.getprevious() is not None:
                    parts.append("\t")
                parts.append("\n" if tag in _BLOCKS else "")
                parts.append(_spaces(element.text, preformatted))
            continue
        if tag in _BLOCKS:
            parts.append("\n")
        preformatted -= tag == "pre"
        if element is not body:
            parts.append(_spaces(element.tail, preformatted))
    return "\n".join(line for line in (line.strip(" ") for line in "".join(parts).split("\n")) if line)


def _spaces(text: str | None, preformatted: int) -> str:
    """Runs of white space as one space (outside <pre>), keeping that there was some at either end."""
    if not text or preformatted:
        return text or ""
    collapsed = " ".join(text.split())
    if not collapsed:
        return " "
    return (" " if text[0].isspace() else "") + collapsed + (" " if text[-1].isspace() else "")


# --- e-mail (the standard library) ----------------------------------------------------------------------

_HEADERS = ("From", "To", "Cc", "Date", "Subject")
_HTML_BYTES = etree.HTMLParser(encoding="utf-8", no_network=True, huge_tree=False, remove_comments=True,
                               remove_pis=True)


def eml(source: IO[bytes], output: Output) -> None:
    """The reference's headers, a blank line and the body (plain, else HTML as text); then the
    attachments' names, which the reference leaves out."""
    message = email.message_from_binary_file(source, policy=policy.default)
    assert isinstance(message, EmailMessage)
    for header in _HEADERS:
        value = message.get(header)
        if value:
            output.part(f"{header}: {str(value).translate(_ONE_LINE)}")
    output.part("")
    body = message.get_body(preferencelist=("plain", "html"))
    if body is not None:
        content = _content(body)
        if body.get_content_type() == "text/html":
            root = etree.fromstring(content.encode("utf-8", "replace"), _HTML_BYTES)
            content = html_text(root) if root is not None else ""
        output.part(content)
    names = [part.get_filename() or part.get_content_type() for part in message.iter_attachments()]
    if names:
        output.part("")
        output.part("Attachments: " + ", ".join(str(name).translate(_ONE_LINE) for name in names))


def _content(part: Any) -> str:
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, ValueError):  # An unknown or lying charset: still show the text.
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
    return content if isinstance(content, str) else content.decode("utf-8", "replace")


# --- RTF (striprtf) --------------------------------------------------------------------------------------


def rtf(source: IO[bytes], output: Output) -> None:
    from striprtf.striprtf import rtf_to_text

    convert: Any = rtf_to_text  # untyped
    output.part(convert(source.read().decode("utf-8", "replace"), errors="replace"))


EXTRACTORS: dict[str, Callable[[IO[bytes], Output], None]] = {
    "pdf": pdf, "docx": docx, "xlsx": xlsx, "pptx": pptx, "rtf": rtf, "xls": xls,
    "odt": odt, "ods": ods, "odp": odp, "epub": epub, "eml": eml,
}


def extract(kind: str, source: IO[bytes], write: Callable[[str], object], *, limit: int = MAX_TEXT,
            strict: bool = False) -> None:
    """Write the document's text through `write`; a text past `limit` is cut with a note (or refused)."""
    output = Output(write, limit=limit, strict=strict)
    with contextlib.suppress(Cut):
        EXTRACTORS[kind](source, output)
