"""A Jupyter notebook (.ipynb) as the file page shows it: read-only cells with their saved outputs.

Plain functions of the file's bytes (no HTTP, no file access), run in a worker thread and tested
directly. What they return as HTML is safe to insert unescaped: markdown goes through
`previews.markdown_html` (markdown-it + nh3, exactly as a Markdown file's preview) and code through
`previews.highlight` (Pygments escapes it). Everything else (stream text, tracebacks, image data,
HTML outputs) is plain strings that the template escapes; an HTML output only ever becomes the
`srcdoc` of a sandboxed frame without `allow-same-origin`, so it cannot reach this site.

A notebook is untrusted and can be enormous (images are base64 inside the JSON): every count and
size has a cap, and whatever is cut is said on the page.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from daemon.pages import previews

#: Larger notebooks are not parsed for the page (their raw text and download stay available).
MAX_NOTEBOOK_BYTES = 50 * 1024 * 1024
TOO_LARGE = (f"The notebook is larger than {MAX_NOTEBOOK_BYTES // 1024**2} MiB: too large to show here. "
             "Download it or open its raw text.")
MAX_CELLS = 500
MAX_OUTPUTS_PER_CELL = 50
#: Characters of one cell's source, one text output or one traceback put into the page.
MAX_TEXT_CHARS = 100_000
#: Bytes of one image (decoded) and characters of one HTML output.
MAX_IMAGE_BYTES = 4 * 1024 * 1024
MAX_HTML_CHARS = 1024 * 1024
#: What all cells and outputs together may add to the page (characters of rendered HTML or text; an
#: image counts its base64 length): a browser stays responsive, and a few dozen plots fit.
PAGE_BUDGET = 8 * 1024 * 1024
CUT = "Not shown: the page has enough already (open the raw file or download it)."
#: The sandbox of the frames HTML outputs are shown in: every permission off, so an opaque origin (no
#: allow-same-origin: this page, its cookies and the API are out of reach), no scripts, forms or popups.
#: allow-scripts would buy nothing: a srcdoc frame inherits the page's CSP, which forbids inline scripts.
HTML_SANDBOX = ""
IMAGE_TYPES = ("image/png", "image/jpeg")
#: The first of these a rich output carries is the one shown (Jupyter's own order, minus scripts).
DISPLAY_ORDER = ("text/html", "text/markdown", *IMAGE_TYPES, "text/plain")
#: ANSI escape sequences (colours in tracebacks and progress bars): CSI, OSC, then the short ones
#: (ESC, optional intermediates, a final byte: `ESC ( B`, `ESC M`...).
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]")

Resolver = Callable[[str], str]


class NotebookError(ValueError):
    """The file is not a notebook this page can show; the message says why."""


@dataclass
class Output:
    """One output. `kind`: stream, text, markdown, image, html, error or cut."""

    kind: str
    text: str = ""
    #: stream: stdout or stderr; image: its data: URL; html: the frame's srcdoc; markdown: safe HTML.
    name: str = ""
    src: str = ""
    html: str = ""


@dataclass
class Cell:
    index: int  # the cell's index in the notebook: what POST /notebooks/{id}/execute takes
    kind: str  # markdown, code or raw
    source: str
    html: str = ""  # rendered markdown or highlighted code (safe)
    execution_count: int | None = None
    outputs: list[Output] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was cut from this cell


@dataclass
class Notebook:
    cells: list[Cell]
    language: str
    total_cells: int
    notes: list[str] = field(default_factory=list)  # what was cut from the notebook


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _joined(value: Any) -> str:
    """nbformat keeps multi-line strings as a list of lines or as one string."""
    if isinstance(value, list):
        return "".join(item for item in value if isinstance(item, str))
    return value if isinstance(value, str) else ""


def _capped(text: str, limit: int = MAX_TEXT_CHARS) -> tuple[str, str | None]:
    if len(text) <= limit:
        return text, None
    return text[:limit], f"{len(text) - limit:,} more characters not shown"


def parse(data: bytes) -> dict[str, Any]:
    """The notebook as an nbformat 4 dict, or NotebookError saying what is wrong with the file."""
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise NotebookError(TOO_LARGE)
    try:
        # orjson: linear time and a fixed nesting limit, so a hostile file cannot recurse us down.
        document: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise NotebookError(f"This is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("nbformat"), int):
        raise NotebookError("This JSON file is not a Jupyter notebook (no nbformat version).")
    if document["nbformat"] < 4:
        document = _upgrade(document)
    if not isinstance(document.get("cells"), list):
        raise NotebookError("This notebook has no list of cells.")
    notebook: dict[str, Any] = document
    return notebook


def _upgrade(document: dict[str, Any]) -> dict[str, Any]:
    """An nbformat 3 notebook converted to 4 by nbformat itself, when it is installed."""
    try:
        import nbformat
    except ImportError:
        raise NotebookError(f"This notebook uses nbformat {document['nbformat']}; only version 4 can be "
                            "shown here.") from None
    try:
        converted: dict[str, Any] = nbformat.convert(nbformat.from_dict(document), 4)
    except Exception as exc:  # nbformat raises many kinds on a malformed old notebook.
        raise NotebookError(f"This nbformat {document['nbformat']} notebook cannot be converted: {exc}") from None
    return converted


def language_of(document: dict[str, Any]) -> str:
    metadata = document.get("metadata")
    if not isinstance(metadata, dict):
        return "python"
    for key, inner in (("language_info", "name"), ("kernelspec", "language")):
        value = metadata.get(key)
        if isinstance(value, dict) and isinstance(value.get(inner), str) and value[inner]:
            return str(value[inner])
    return "python"


def code_filename(document: dict[str, Any]) -> str:
    """A file name whose suffix picks the notebook language's lexer in `previews.highlight`."""
    info = document.get("metadata", {}).get("language_info") if isinstance(document.get("metadata"), dict) else None
    extension = info.get("file_extension") if isinstance(info, dict) else None
    if isinstance(extension, str) and re.fullmatch(r"\.[A-Za-z0-9_+-]{1,16}", extension):
        return "cell" + extension
    from pygments.lexers import find_lexer_class_by_name
    from pygments.util import ClassNotFound

    try:
        patterns = find_lexer_class_by_name(language_of(document)).filenames
    except ClassNotFound:
        return "cell.txt"
    suffix = next((pattern[1:] for pattern in patterns if re.fullmatch(r"\*\.[A-Za-z0-9_+-]+", pattern)), ".txt")
    return "cell" + suffix


class _Budget:
    """What the outputs may still add to the page."""

    def __init__(self, left: int = PAGE_BUDGET) -> None:
        self.left = left
        self.exhausted = False

    def take(self, size: int) -> bool:
        if size > self.left:
            self.exhausted = True
            return False
        self.left -= size
        return True


def render(data: bytes, resolve_image: Resolver, resolve_link: Resolver) -> Notebook:
    """The notebook in `data`, ready for the template; NotebookError when it cannot be shown."""
    document = parse(data)
    raw_cells: list[Any] = document["cells"]
    filename = code_filename(document)
    budget = _Budget()
    cells = [_cell(index, raw, filename, budget, resolve_image, resolve_link)
             for index, raw in enumerate(raw_cells[:MAX_CELLS])]
    notebook = Notebook([cell for cell in cells if cell is not None], language_of(document), len(raw_cells))
    if len(raw_cells) > MAX_CELLS:
        notebook.notes.append(f"Showing the first {MAX_CELLS:,} of {len(raw_cells):,} cells.")
    if budget.exhausted:
        notebook.notes.append(f"Cells and outputs past {PAGE_BUDGET // 1024**2} MiB in all are not shown.")
    return notebook


def _cell(index: int, raw: Any, filename: str, budget: _Budget,
          resolve_image: Resolver, resolve_link: Resolver) -> Cell | None:
    if not isinstance(raw, dict):
        return None
    kind = raw.get("cell_type") if raw.get("cell_type") in ("markdown", "code", "raw") else "raw"
    source, cut = _capped(_joined(raw.get("source")))
    cell = Cell(index, str(kind), source, notes=[cut] if cut else [])
    if not budget.take(len(source)):
        cell.source, cell.notes = "", [CUT]
        return cell
    if kind == "markdown":
        cell.html = previews.markdown_html(source, resolve_image, resolve_link)
    elif kind == "code":
        cell.html = previews.highlight(source, filename)
        count = raw.get("execution_count")
        cell.execution_count = count if isinstance(count, int) and not isinstance(count, bool) else None
        cell.outputs = outputs(raw.get("outputs"), budget, resolve_image, resolve_link, cell.notes)
    return cell


def outputs(raw: Any, budget: _Budget, resolve_image: Resolver, resolve_link: Resolver,
            notes: list[str]) -> list[Output]:
    if not isinstance(raw, list):
        return []
    if len(raw) > MAX_OUTPUTS_PER_CELL:
        notes.append(f"Showing the first {MAX_OUTPUTS_PER_CELL} of {len(raw):,} outputs.")
    shown = []
    for item in raw[:MAX_OUTPUTS_PER_CELL]:
        output = _output(item, resolve_image, resolve_link) if isinstance(item, dict) else None
        if output is None:
            continue
        if not budget.take(len(output.text) + len(output.src) + len(output.html)):
            shown.append(Output("cut", CUT))
            continue
        shown.append(output)
    return shown


def _output(item: dict[str, Any], resolve_image: Resolver, resolve_link: Resolver) -> Output | None:
    kind = item.get("output_type")
    if kind == "stream":
        name = "stderr" if item.get("name") == "stderr" else "stdout"
        return _text_output("stream", strip_ansi(_joined(item.get("text"))), name)
    if kind == "error":
        traceback = item.get("traceback")
        lines = [line for line in traceback if isinstance(line, str)] if isinstance(traceback, list) else []
        text = "\n".join(lines) or f"{_joined(item.get('ename'))}: {_joined(item.get('evalue'))}"
        return _text_output("error", strip_ansi(text))
    if kind in ("execute_result", "display_data"):
        data = item.get("data")
        return _rich(data, resolve_image, resolve_link) if isinstance(data, dict) else None
    return None


def _text_output(kind: str, text: str, name: str = "") -> Output:
    shown, cut = _capped(text)
    return Output(kind, shown + (f"\n… {cut}" if cut else ""), name=name)


def _rich(data: dict[str, Any], resolve_image: Resolver, resolve_link: Resolver) -> Output | None:
    """The richest representation this page may show of a display_data / execute_result."""
    for mime in DISPLAY_ORDER:
        if mime not in data:
            continue
        value = _joined(data[mime])
        if mime in IMAGE_TYPES:
            image = image_output(mime, value)
            if image is not None:
                return image
        elif mime == "text/html":
            if len(value) <= MAX_HTML_CHARS:
                return Output("html", html=value)
        elif mime == "text/markdown":
            if len(value) <= MAX_TEXT_CHARS:
                return Output("markdown", html=previews.markdown_html(value, resolve_image, resolve_link))
        else:
            return _text_output("text", strip_ansi(value))
    return None


def image_output(mime: str, encoded: str) -> Output | None:
    """A data: URL for base64 image data, or a note when it is too large or not base64 at all."""
    compact = "".join(encoded.split())
    if len(compact) * 3 // 4 > MAX_IMAGE_BYTES:
        return Output("cut", f"An image of {len(compact) * 3 // 4:,} bytes is not shown "
                             f"(the limit is {MAX_IMAGE_BYTES // 1024**2} MiB).")
    # Only base64 may go into the URL: anything else could end the data: URL and start another.
    try:
        base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    return Output("image", src=f"data:{mime};base64,{compact}")
