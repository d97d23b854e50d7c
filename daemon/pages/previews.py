"""Preview renderers for the file page: highlighted code and sanitized (GitHub-like) Markdown.

Plain functions of text (no HTTP, no file access), so they run in a worker thread and are tested
directly. Whatever they return as HTML is safe to insert unescaped: Pygments escapes the source and
Markdown goes through nh3 with an explicit allowlist. `CsvTable` holds plain strings that the
template escapes.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Iterator, Sequence
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

Resolver = Callable[[str], str]

MARKDOWN_TAGS = {
    "h1", "h2", "h3", "h4", "h5", "h6", "p", "ul", "ol", "li", "code", "pre", "blockquote",
    "table", "thead", "tbody", "tr", "th", "td", "a", "img", "em", "strong", "del", "s", "hr", "br",
    "input", "sup", "section", "span",
}  # fmt: skip
# `id` only where the plugins put one (headings, footnotes); nh3 prefixes every id with ID_PREFIX, so a
# document cannot clobber the page's own elements (`<h1 id="editor">`) or globals (window.csrf).
MARKDOWN_ATTRIBUTES = {
    "a": {"href", "title", "id"}, "img": {"src", "alt", "title"}, "ol": {"start"}, "li": {"id"},
    **{f"h{level}": {"id"} for level in range(1, 7)},
}  # fmt: skip
# A task list's box: a disabled checkbox, whatever the input said (nh3 sets these, it does not trust them).
CHECKBOX_ATTRIBUTES = {"input": {"type": {"checkbox"}, "checked": {"checked"}}}
FORCED_ATTRIBUTES = {"input": {"disabled": "disabled", "type": "checkbox", "aria-label": "Task"}}
ID_PREFIX = "user-content-"
URL_SCHEMES = {"http", "https", "mailto"}
# Table alignment arrives as style="text-align:..."; styles never pass, so it becomes one of these.
ALIGN_CLASSES = {"align-left", "align-center", "align-right"}
# The plugins' own classes, which the stylesheet draws (task lists, footnotes).
PLUGIN_CLASSES = {
    "li": {"task-list-item", "footnote-item"}, "ul": {"contains-task-list"}, "input": {"task-list-item-checkbox"},
    "a": {"footnote-backref"}, "sup": {"footnote-ref"}, "section": {"footnotes"},
    "ol": {"footnotes-list"}, "hr": {"footnotes-sep"}, "pre": {"code", "plain"},
}  # fmt: skip


@functools.cache
def _markdown() -> MarkdownIt:
    from markdown_it import MarkdownIt
    from mdit_py_plugins.anchors import anchors_plugin
    from mdit_py_plugins.footnote import footnote_plugin
    from mdit_py_plugins.tasklists import tasklists_plugin

    # html=False: raw HTML in the source is shown as text, never passed on (nh3 is the second fence).
    markdown = MarkdownIt("commonmark", {"html": False, "highlight": _highlight_fence})
    markdown.enable(["table", "strikethrough"]).use(tasklists_plugin).use(footnote_plugin)
    # Ids only, no "¶" link inside the heading: its text stays the heading's (notebook outlines read it).
    return markdown.use(anchors_plugin, min_level=1, max_level=6)


def _highlight_fence(code: str, language: str, attrs: str) -> str:
    """A fenced block, highlighted by its info string's language (GitHub's rule: no guessing)."""
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    if not language or len(code) > HIGHLIGHT_MAX_CHARS:
        return f'<pre class="code plain"><code>{html.escape(code)}</code></pre>'
    import pygments
    from pygments.formatters import HtmlFormatter

    try:
        lexer = get_lexer_by_name(language, stripnl=False)
    except ClassNotFound:
        return f'<pre class="code plain"><code>{html.escape(code)}</code></pre>'
    # nowrap: only the token spans; markdown-it takes a reply starting with "<pre" as the whole block.
    spans = pygments.highlight(code, lexer, HtmlFormatter(nowrap=True))
    return f'<pre class="code"><code>{spans}</code></pre>'


@functools.cache
def _token_classes() -> set[str]:
    """Pygments' short class names (`k`, `s2`, ...): the only classes a highlighted span may carry."""
    from pygments.token import STANDARD_TYPES

    return {name for name in STANDARD_TYPES.values() if name}


def highlight(text: str, filename: str, *, anchors: bool = False) -> str:
    """`text` as highlighted HTML (`<div class="code">` with a line-number table), lexer by file name."""
    if len(text) > HIGHLIGHT_MAX_CHARS:
        return f'<pre class="code plain">{html.escape(text)}</pre>'
    import pygments
    from pygments.formatters import HtmlFormatter

    # With `anchors` every line is an id (`#L-12`): a search result opens the file at its line.
    formatter = HtmlFormatter(cssclass="code", linenos="table", lineanchors="L" if anchors else "")
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


def markdown_html(text: str, resolve_image: Resolver, resolve_link: Resolver) -> str:
    """Markdown rendered to sanitized HTML.

    Relative image sources go through `resolve_image`, relative link targets through `resolve_link`;
    each gets the percent-decoded path (no query, no fragment) and returns a URL; a link's #fragment
    is put back after it. URLs with a scheme or host are kept (http, https, mailto survive nh3).
    """
    markdown = _markdown()
    env: dict[str, object] = {}
    tokens = markdown.parse(text, env)
    _rewrite(tokens, resolve_image, resolve_link)
    rendered = markdown.renderer.render(tokens, markdown.options, env)
    return sanitize(rendered)


def sanitize(rendered: str) -> str:
    """What markdown-it made, reduced to the allow-list: the second fence behind html=False."""
    import nh3

    return nh3.clean(
        rendered,
        tags=MARKDOWN_TAGS,
        attributes=MARKDOWN_ATTRIBUTES,
        tag_attribute_values=CHECKBOX_ATTRIBUTES,
        set_tag_attribute_values=FORCED_ATTRIBUTES,
        attribute_filter=_prefixed_fragment,
        allowed_classes={"th": ALIGN_CLASSES, "td": ALIGN_CLASSES, "span": _token_classes(), **PLUGIN_CLASSES},
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
        id_prefix=ID_PREFIX,
    )


def _prefixed_fragment(tag: str, attribute: str, value: str) -> str:
    """An in-page link (`#usage`) points at the prefixed id nh3 gives its target."""
    if tag == "a" and attribute == "href" and value.startswith("#") and not value.startswith("#" + ID_PREFIX):
        return "#" + ID_PREFIX + value[1:]
    return value


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
    # Another document's heading carries the same prefix as this one's (see sanitize).
    fragment = "#" + ID_PREFIX + parts.fragment if parts.fragment else ""
    # markdown-it percent-encodes destinations ("my pic.png" -> "my%20pic.png"); callers want the name.
    token.attrSet(name, resolve(unquote(parts.path)) + fragment)


def _align_class(token: Token) -> None:
    style = token.attrGet("style")
    if isinstance(style, str) and style.startswith("text-align:"):
        token.attrs.pop("style")
        token.attrSet("class", "align-" + style.removeprefix("text-align:"))
