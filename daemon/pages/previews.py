"""Preview renderers for the file page: highlighted code, CSV/TSV tables and sanitized Markdown.

Plain functions of text (no HTTP, no file access), so they run in a worker thread and are tested
directly. Whatever they return as HTML is safe to insert unescaped: Pygments escapes the source and
Markdown goes through nh3 with an explicit allowlist. `CsvTable` holds plain strings that the
template escapes.
"""

from __future__ import annotations

import csv
import functools
import html
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

# Pygments, markdown-it and nh3 are imported where used, so they stay off the daemon's start path.
if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token
    from pygments.lexer import Lexer

# Past this many characters highlighting costs seconds and megabytes of spans; plain text is enough.
HIGHLIGHT_MAX_CHARS = 512 * 1024
# guess_lexer runs every lexer's heuristics over the text: only worth it (and cheap) on short files.
GUESS_MAX_CHARS = 8 * 1024
LIGHT_STYLE = "default"
DARK_STYLE = "github-dark"
CSS_SCOPE = ".code"

# The sniffer needs a few rows, not the file; a bigger sample only slows it down.
SNIFF_CHARS = 16 * 1024
SNIFF_DELIMITERS = ",;\t|"
TSV_SUFFIXES = (".tsv", ".tab")

Resolver = Callable[[str], str]

MARKDOWN_TAGS = {
    "h1", "h2", "h3", "h4", "h5", "h6", "p", "ul", "ol", "li", "code", "pre", "blockquote",
    "table", "thead", "tbody", "tr", "th", "td", "a", "img", "em", "strong", "del", "s", "hr", "br",
}  # fmt: skip
MARKDOWN_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "ol": {"start"}}
URL_SCHEMES = {"http", "https", "mailto"}
# Table alignment arrives as style="text-align:..."; styles never pass, so it becomes one of these.
ALIGN_CLASSES = {"align-left", "align-center", "align-right"}


@functools.cache
def _markdown() -> MarkdownIt:
    from markdown_it import MarkdownIt

    # html=False: raw HTML in the source is shown as text, never passed on (nh3 is the second fence).
    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def highlight(text: str, filename: str) -> str:
    """`text` as highlighted HTML (`<div class="code">` with a line-number table), lexer by file name."""
    if len(text) > HIGHLIGHT_MAX_CHARS:
        return f'<pre class="code plain">{html.escape(text)}</pre>'
    import pygments
    from pygments.formatters import HtmlFormatter

    formatter = HtmlFormatter(cssclass="code", linenos="table")
    return pygments.highlight(text, _lexer_for(text, filename), formatter)


def _lexer_for(text: str, filename: str) -> Lexer:
    from pygments.lexers import get_lexer_for_filename, guess_lexer
    from pygments.lexers.special import TextLexer
    from pygments.util import ClassNotFound

    # stripnl=False: lexers drop leading blank lines by default, which would shift every line number.
    try:
        return get_lexer_for_filename(filename, text, stripnl=False)
    except ClassNotFound:
        pass
    if len(text) <= GUESS_MAX_CHARS:
        try:
            return guess_lexer(text, stripnl=False)
        except ClassNotFound:
            pass
    return TextLexer(stripnl=False)


@functools.cache
def pygments_css() -> str:
    """The stylesheet for `highlight`: a light theme, and a dark one when the system prefers dark."""
    dark = _scoped_css(DARK_STYLE).replace("\n", "\n  ")
    return f"{_scoped_css(LIGHT_STYLE)}\n@media (prefers-color-scheme: dark) {{\n  {dark}\n}}\n"


def _scoped_css(style: str) -> str:
    # get_style_defs() also emits unscoped `pre {...}` and `td.linenos ...` rules that would
    # restyle the whole page; built from the parts instead, every rule stays under CSS_SCOPE.
    from pygments.formatters import HtmlFormatter

    # Any: types-Pygments leaves these three methods unannotated, which strict mypy refuses to call.
    formatter: Any = HtmlFormatter(style=style, cssclass=CSS_SCOPE[1:])
    rules: list[str] = [f"{CSS_SCOPE} {rule}" for rule in formatter.get_linenos_style_defs()]
    rules += formatter.get_background_style_defs(CSS_SCOPE) + formatter.get_token_style_defs(CSS_SCOPE)
    return "\n".join(rules)


@dataclass(frozen=True)
class CsvTable:
    """A CSV/TSV file as a table: every row as wide as the header; `rows` capped, `total_rows` not."""

    header: list[str]
    rows: list[list[str]]
    total_rows: int  # data rows in the file (the header excluded)
    shown_rows: int  # len(rows)
    delimiter: str


def csv_table(text: str, filename: str, max_rows: int = 1000) -> CsvTable:
    """The table in `text`; raises `csv.Error` on input the csv module cannot read (e.g. a huge field)."""
    sample = _sample(text)
    delimiter = _delimiter(sample, filename)
    records = (row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if row)
    header = next(records, []) if _has_header(sample, delimiter) else []
    # range first: zip stops on it without pulling (and losing) one more record.
    rows = [row for _, row in zip(range(max_rows), records, strict=False)]
    # The rest is only counted, so a million-row file costs time but not memory.
    total = len(rows) + sum(1 for _ in records)
    width = max([len(header), *map(len, rows)])
    header = header + [str(n) for n in range(len(header) + 1, width + 1)]
    rows = [row + [""] * (width - len(row)) for row in rows]
    return CsvTable(header=header, rows=rows, total_rows=total, shown_rows=len(rows), delimiter=delimiter)


def _sample(text: str) -> str:
    if len(text) <= SNIFF_CHARS:
        return text
    # A row cut in half would look like a different column count and mislead the sniffer.
    cut = text.rfind("\n", 0, SNIFF_CHARS)
    return text[: cut if cut > 0 else SNIFF_CHARS]


def _delimiter(sample: str, filename: str) -> str:
    # A .tsv names its delimiter; sniffing it could still prefer a comma that appears once per row.
    if filename.lower().endswith(TSV_SUFFIXES):
        return "\t"
    try:
        return csv.Sniffer().sniff(sample, delimiters=SNIFF_DELIMITERS).delimiter
    except csv.Error:  # one column, or nothing consistent: the common case wins
        return ","


def _has_header(sample: str, delimiter: str) -> bool:
    try:
        return _ChosenDelimiter(delimiter).has_header(sample)
    except (csv.Error, StopIteration):  # StopIteration: an empty sample has no first row
        return False


class _ChosenDelimiter(csv.Sniffer):
    """A sniffer whose `has_header` reads the sample with the delimiter already chosen.

    `Sniffer.has_header` sniffs the sample again, without our candidate list or the .tsv rule, and
    would then judge the header on columns split differently from the table shown.
    """

    def __init__(self, delimiter: str) -> None:
        super().__init__()
        self.delimiter = delimiter

    def sniff(self, sample: str, delimiters: str | None = None) -> type[csv.Dialect]:
        chosen = self.delimiter

        class Chosen(csv.excel):
            delimiter = chosen

        return Chosen


def markdown_html(text: str, resolve_image: Resolver, resolve_link: Resolver) -> str:
    """Markdown rendered to sanitized HTML.

    Relative image sources go through `resolve_image`, relative link targets through `resolve_link`;
    each gets the percent-decoded path (no query, no fragment) and returns a URL; a link's #fragment
    is put back after it. URLs with a scheme or host are kept (http, https, mailto survive nh3).
    """
    import nh3

    markdown = _markdown()
    env: dict[str, object] = {}
    tokens = markdown.parse(text, env)
    _rewrite(tokens, resolve_image, resolve_link)
    rendered = markdown.renderer.render(tokens, markdown.options, env)
    return nh3.clean(
        rendered,
        tags=MARKDOWN_TAGS,
        attributes=MARKDOWN_ATTRIBUTES,
        allowed_classes={"th": ALIGN_CLASSES, "td": ALIGN_CLASSES},
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
    )


def _rewrite(tokens: Sequence[Token], resolve_image: Resolver, resolve_link: Resolver) -> None:
    for token in _walk(tokens):
        if token.type == "image":
            _resolve_attr(token, "src", resolve_image)
        elif token.type == "link_open":
            _resolve_attr(token, "href", resolve_link)
        elif token.type in ("th_open", "td_open"):
            _align_class(token)


def _walk(tokens: Sequence[Token]) -> Iterator[Token]:
    # Links and images live in the children of inline tokens (and images nest inside links).
    for token in tokens:
        yield token
        if token.children:
            yield from _walk(token.children)


def _resolve_attr(token: Token, name: str, resolve: Resolver) -> None:
    url = token.attrGet(name)
    if not isinstance(url, str):
        return
    parts = urlsplit(url)
    # Only paths are the file's neighbours; "#section" alone stays an in-page anchor.
    if parts.scheme or parts.netloc or not parts.path:
        return
    fragment = "#" + parts.fragment if parts.fragment else ""
    # markdown-it percent-encodes destinations ("my pic.png" -> "my%20pic.png"); callers want the name.
    token.attrSet(name, resolve(unquote(parts.path)) + fragment)


def _align_class(token: Token) -> None:
    style = token.attrGet("style")
    if isinstance(style, str) and style.startswith("text-align:"):
        token.attrs.pop("style")
        token.attrSet("class", "align-" + style.removeprefix("text-align:"))
