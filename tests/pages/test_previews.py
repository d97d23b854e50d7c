"""The preview renderers as plain functions: CSV tables, sanitized Markdown, highlighted code."""

from __future__ import annotations

from html.parser import HTMLParser

from daemon.pages import previews
from daemon.pages.previews import MARKDOWN_TAGS, highlight, markdown_html, pygments_css, sanitize
from daemon.pages.tables import csv_table, sort_key, sort_rows


class _Elements(HTMLParser):
    """Every start tag of a fragment with its attributes, as a browser would see them."""

    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))


def _elements(fragment: str, tag: str) -> list[dict[str, str | None]]:
    return [attrs for name, attrs in _Elements(fragment).elements if name == tag]


def _md(text: str) -> str:
    return markdown_html(text, lambda rel: "/img?path=" + rel, lambda rel: "/browse/" + rel)


# CSV


def test_csv_semicolon_with_header() -> None:
    table = csv_table("name;age;city\nAda;36;London\nAlan;41;Wilmslow\n", "people.csv")
    assert table.delimiter == ";"
    assert table.header == ["name", "age", "city"]
    assert table.rows == [["Ada", "36", "London"], ["Alan", "41", "Wilmslow"]]
    assert (table.shown_rows, table.total_rows) == (2, 2)


def test_tsv_uses_tabs_even_with_commas_in_cells() -> None:
    table = csv_table("city\tcount\nParis, France\t3\nRome, Italy\t5\n", "places.tsv")
    assert table.delimiter == "\t"
    assert table.header == ["city", "count"]
    assert table.rows[0] == ["Paris, France", "3"]


def test_quoted_fields_keep_newlines_and_delimiters() -> None:
    text = 'id,note\r\n1,"first line\r\nsecond, with comma"\r\n2,"say ""hi"""\r\n'
    table = csv_table(text, "notes.csv")
    assert table.header == ["id", "note"]
    assert table.rows == [["1", "first line\r\nsecond, with comma"], ["2", 'say "hi"']]


def test_html_in_a_cell_stays_plain_text() -> None:
    table = csv_table("id,payload\n1,<script>alert(1)</script>\n2,<b>x</b>\n", "x.csv")
    # The template escapes; the renderer must neither escape twice nor strip.
    assert table.rows[0] == ["1", "<script>alert(1)</script>"]


def test_numbers_only_get_numbered_columns() -> None:
    table = csv_table("1,2.5,3\n4,5.5,6\n7,8.5,9\n", "n.csv")
    assert table.header == ["1", "2", "3"]
    assert table.rows[0] == ["1", "2.5", "3"]
    assert table.total_rows == 3


def test_every_row_is_reachable_page_by_page() -> None:
    text = "n,square\n" + "".join(f"{n},{n * n}\n" for n in range(5000))
    first = csv_table(text, "big.csv")
    assert (first.shown_rows, first.total_rows, first.pages, first.first_row) == (500, 5000, 10, 1)
    assert first.rows[-1] == ["499", "249001"]
    last = csv_table(text, "big.csv", page=10)
    assert (last.page, last.first_row, last.rows[-1]) == (10, 4501, ["4999", "24990001"])
    assert csv_table(text, "big.csv", page=99).page == 10  # past the end: the last page
    seen = [row for page in range(1, 11) for row in csv_table(text, "big.csv", page=page).rows]
    assert seen == [[str(n), str(n * n)] for n in range(5000)]


def test_custom_page_size() -> None:
    table = csv_table("name,n\n" + "x,1\n" * 30, "c.csv", page_rows=10, page=3)
    assert (table.shown_rows, table.total_rows, table.pages) == (10, 30, 3)


def test_sort_is_numeric_aware() -> None:
    text = "name,size\nfile10,10\nfile2,9.5\nFile1,1000\nneg,-3\nbig,200\n"
    by_size = csv_table(text, "s.csv", column=1)
    assert by_size.header == ["name", "size"]
    assert [row[1] for row in by_size.rows] == ["-3", "9.5", "10", "200", "1000"]
    assert [row[1] for row in csv_table(text, "s.csv", column=1, descending=True).rows] == \
        ["1000", "200", "10", "9.5", "-3"]
    assert [row[0] for row in csv_table(text, "s.csv", column=0).rows] == ["big", "File1", "file2", "file10", "neg"]
    assert (by_size.column, by_size.descending) == (1, False)


def test_empty_cells_sort_last_either_way() -> None:
    rows = [["b", "2"], ["a", ""], ["c", "1"], ["d"]]
    assert sort_rows(rows, 1, descending=False) == [["c", "1"], ["b", "2"], ["a", ""], ["d"]]
    assert sort_rows(rows, 1, descending=True) == [["b", "2"], ["c", "1"], ["a", ""], ["d"]]


def test_sort_key_reads_numbers_as_people_write_them() -> None:
    cells = ["1,024", "1e3", "-0.5", "n/a", "v2", "v10", "nan"]
    assert sorted(cells, key=sort_key) == ["-0.5", "1e3", "1,024", "nan", "n/a", "v2", "v10"]


def test_sort_applies_before_paging_and_bad_columns_sort_nothing() -> None:
    text = "n\n" + "".join(f"{n}\n" for n in range(1200, 0, -1))
    assert csv_table(text, "n.csv", column=0, page=1, page_rows=500).rows[0] == ["1"]
    assert csv_table(text, "n.csv", column=0, page=3, page_rows=500).rows[-1] == ["1200"]
    unsorted = csv_table(text, "n.csv", column=7)
    assert unsorted.column is None and unsorted.rows[0] == ["1200"]


def test_ragged_rows_are_padded_to_the_widest() -> None:
    table = csv_table("a,b\n1,2\n3\n4,5,6,7\n", "ragged.csv")
    assert table.header == ["a", "b", "3", "4"]
    assert table.rows == [["1", "2", "", ""], ["3", "", "", ""], ["4", "5", "6", "7"]]


def test_single_column_and_empty_input() -> None:
    assert csv_table("word\nalpha\nbeta\n", "w.csv").rows == [["word"], ["alpha"], ["beta"]]
    empty = csv_table("", "e.csv")
    assert (empty.header, empty.rows, empty.total_rows, empty.delimiter) == ([], [], 0, ",")


# Markdown


def test_markdown_raw_html_never_survives() -> None:
    html = _md(
        "# Title\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n"
        '<iframe src="https://example.com"></iframe>\n\n<p style="color:red">styled</p>\n\n'
        "inline <span onclick=alert(1)>x</span>\n"
    )
    elements = _Elements(html).elements
    assert {tag for tag, _ in elements} <= MARKDOWN_TAGS
    assert not [tag for tag, _ in elements if tag in {"script", "iframe", "img", "span"}]
    assert not [name for _, attrs in elements for name in attrs if name.startswith("on") or name == "style"]
    assert "&lt;script&gt;" in html  # shown as text, as the author wrote it


def test_markdown_javascript_links_are_dropped() -> None:
    html = _md("[x](javascript:alert(1)) [y](JAVASCRIPT:alert(1)) [z](data:text/html,<b>x</b>)")
    assert _elements(html, "a") == []
    assert "javascript:" not in "".join(str(attrs) for _, attrs in _Elements(html).elements)


def test_markdown_relative_image_goes_through_the_callback() -> None:
    html = _md("![p](img/pic.png) ![q](<img/my pic.png>)")
    assert [img["src"] for img in _elements(html, "img")] == ["/img?path=img/pic.png", "/img?path=img/my pic.png"]
    assert _elements(html, "img")[0]["alt"] == "p"


def test_markdown_absolute_image_is_kept() -> None:
    html = _md("![logo](https://example.com/logo.png)")
    assert _elements(html, "img") == [{"src": "https://example.com/logo.png", "alt": "logo"}]


def test_markdown_links_resolve_and_get_rel() -> None:
    html = _md("[other](docs/other.md#usage) [web](https://example.com) [top](#top) [mail](mailto:a@b.c)")
    links = _elements(html, "a")
    assert [a["href"] for a in links] == ["/browse/docs/other.md#user-content-usage", "https://example.com",
                                          "#user-content-top", "mailto:a@b.c"]
    assert {a["rel"] for a in links} == {"noopener noreferrer"}


def test_markdown_tables_and_strikethrough() -> None:
    html = _md("| name | n |\n|:-----|--:|\n| a    | 1 |\n\n~~gone~~ **bold** _em_ `code`\n")
    tags = [tag for tag, _ in _Elements(html).elements]
    assert {"table", "thead", "tbody", "th", "td", "s", "strong", "em", "code"} <= set(tags)
    assert _elements(html, "td")[1] == {"class": "align-right"}


def test_markdown_callback_result_is_still_sanitized() -> None:
    html = markdown_html("![p](pic.png) [l](x.md)", lambda rel: "javascript:alert(1)", lambda rel: "javascript:x")
    assert "javascript" not in html


# Highlighting


def test_highlight_python() -> None:
    html = highlight('\n\ndef f() -> str:\n    return "<b>"\n', "/srv/app/main.py")
    assert '<div class="code">' in html
    assert '<span class="k">def</span>' in html
    assert "&lt;b&gt;" in html and "<b>" not in html
    assert '<span class="normal">4</span>' in html  # leading blank lines kept: numbers match the file


def test_highlight_unknown_extension_is_escaped_text() -> None:
    html = highlight("plain <notes> & things\n", "notes.zzunknown")
    assert 'class="code"' in html
    assert "&lt;notes&gt; &amp; things" in html


def test_highlight_guesses_short_files_without_extension() -> None:
    assert '<span class="kn">import</span>' in highlight("#!/usr/bin/env python3\nimport os\n", "script")


def test_highlight_size_cap_falls_back_to_plain() -> None:
    text = "<script>alert(1)</script>\n" * (previews.HIGHLIGHT_MAX_CHARS // 26 + 1)
    html = highlight(text, "big.py")
    assert html.startswith('<pre class="code plain">&lt;script&gt;')
    assert "<span" not in html and "<script>" not in html


def test_pygments_css_light_and_dark() -> None:
    css = pygments_css()
    light, dark = css.split("@media (prefers-color-scheme: dark)")
    assert ".code .k " in light and ".code .k " in dark
    rules = [line.strip() for line in css.splitlines() if "{" in line and not line.startswith("@media")]
    assert all(rule.startswith(".code") for rule in rules)  # nothing restyles the rest of the page


# GitHub-like Markdown


def test_markdown_fenced_code_is_highlighted_by_its_language() -> None:
    html = _md("```python\nimport os  # <b>\n```\n\n```\nplain <i>\n```\n")
    assert '<pre class="code"><code><span class="kn">import</span>' in html
    assert "&lt;b&gt;" in html and "<b>" not in html
    assert '<pre class="code plain"><code>plain &lt;i&gt;' in html


def test_markdown_task_lists_are_disabled_checkboxes() -> None:
    html = _md("- [ ] todo\n- [x] done\n")
    boxes = _elements(html, "input")
    assert len(boxes) == 2
    assert all(box["type"] == "checkbox" and box["disabled"] == "disabled" for box in boxes)
    assert "checked" not in boxes[0] and boxes[1]["checked"] == "checked"


def test_markdown_headings_get_prefixed_anchors_and_in_page_links_follow() -> None:
    html = _md("# Getting started\n\nSee [usage](#usage).\n\n## Usage\n")
    ids = [attrs["id"] for attrs in _elements(html, "h1") + _elements(html, "h2")]
    assert ids == ["user-content-getting-started", "user-content-usage"]
    hrefs = [attrs["href"] for attrs in _elements(html, "a")]
    assert "#user-content-usage" in hrefs


def test_markdown_footnotes_link_both_ways() -> None:
    html = _md("Claim[^1].\n\n[^1]: Source.\n")
    anchors = {attrs.get("id"): attrs["href"] for attrs in _elements(html, "a")}
    assert anchors["user-content-fnref1"] == "#user-content-fn1"
    assert _elements(html, "li")[0]["id"] == "user-content-fn1"
    assert "#user-content-fnref1" in anchors.values()


def test_markdown_heading_ids_cannot_clobber_the_page() -> None:
    # `<h1 id="editor">` would shadow the page's own #editor (and window.editor) without the prefix.
    html = _md("# editor\n\n# csrf-token\n")
    assert [attrs["id"] for attrs in _elements(html, "h1")] == ["user-content-editor", "user-content-csrf-token"]


def test_sanitize_keeps_a_smuggled_input_inert() -> None:
    # html=False keeps raw HTML out of markdown-it's output; this is the second fence, tested alone.
    html = sanitize('<input type="text" onclick="alert(1)" onfocus="alert(2)" autofocus value="x" name="csrf">'
                    '<img src="x" onerror="alert(1)"><a href="javascript:alert(1)">x</a><script>alert(1)</script>'
                    '<span class="k evil" style="color:red">k</span><h2 id="x" onmouseover="alert(1)">t</h2>')
    (box,) = _elements(html, "input")
    assert box == {"type": "checkbox", "disabled": "disabled", "aria-label": "Task"}
    assert _elements(html, "img") == [{"src": "x"}]
    assert "href" not in _elements(html, "a")[0]
    assert "<script" not in html and "alert" not in html
    assert _elements(html, "span") == [{"class": "k"}]
    assert _elements(html, "h2") == [{"id": "user-content-x"}]
