"""A notebook as the file page renders it: cells, outputs, sanitizing, and the caps on a huge one."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from daemon.pages import notebook_view
from daemon.pages.notebook_view import NotebookError, render
from tests.files.test_documents import make_png
from tests.pages.test_views import (  # noqa: F401  (browser, browser_with, home: fixtures)
    Browser,
    BrowserFactory,
    Document,
    assert_nothing_active,
    browser,
    browser_with,
    home,
)

SCRIPT_MARKDOWN = "# Title\n\n<script>window.__xss=1</script>\n\n[a](javascript:window.__xss=1) *fine*"
HTML_OUTPUT = '<b id="inside">bold</b><script>try { parent.__xss = 1 } catch (e) {}</script>'
TRACEBACK = ["\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
             "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"]


def same(path: str) -> str:
    return "/resolved/" + path


def markdown(source: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "metadata": {}, "source": source}


def code(source: str | list[str], outputs: list[dict[str, Any]] | None = None,
         count: int | None = None) -> dict[str, Any]:
    return {"cell_type": "code", "metadata": {}, "source": source, "execution_count": count, "outputs": outputs or []}


def stream(text: str | list[str], name: str = "stdout") -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def display(data: dict[str, Any]) -> dict[str, Any]:
    return {"output_type": "display_data", "data": data, "metadata": {}}


def error(ename: str, evalue: str, traceback: list[str]) -> dict[str, Any]:
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": traceback}


def make_notebook(cells: list[dict[str, Any]], language: str = "python", extension: str = ".py") -> bytes:
    """An nbformat 4.5 notebook as Jupyter writes it (built by hand: the page must not need nbformat)."""
    for number, cell in enumerate(cells):
        cell.setdefault("id", f"cell-{number}")
    return orjson.dumps({
        "cells": cells, "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": language},
                     "language_info": {"name": language, "file_extension": extension}},
    }, option=orjson.OPT_INDENT_2)


def sample_notebook() -> bytes:
    """Markdown with a script, code, an image, an HTML output and an error: what the browser test opens too."""
    png = base64.b64encode(make_png(3, 2)).decode()
    return make_notebook([
        markdown(SCRIPT_MARKDOWN),
        code("print('hello')\nx = 1", [stream("hello\n")], count=1),
        code("plot()", [display({"image/png": png, "text/plain": "<Figure>"})], count=2),
        code("show_html()", [display({"text/html": HTML_OUTPUT, "text/plain": "<HTML>"})], count=3),
        code("1/0", [error("ZeroDivisionError", "division by zero", TRACEBACK)], count=4),
        {"cell_type": "raw", "metadata": {}, "source": "<raw & kept as text>"},
    ])


def test_cells_render_with_their_outputs() -> None:
    notebook = render(sample_notebook(), same, same)
    assert [cell.kind for cell in notebook.cells] == ["markdown", "code", "code", "code", "code", "raw"]
    assert [cell.index for cell in notebook.cells] == [0, 1, 2, 3, 4, 5]
    assert notebook.language == "python" and notebook.total_cells == 6 and notebook.notes == []
    _, printed, plotted, html, failed, raw = notebook.cells
    assert printed.execution_count == 1
    assert [(output.kind, output.name, output.text) for output in printed.outputs] == [("stream", "stdout", "hello\n")]
    assert plotted.outputs[0].kind == "image"
    assert plotted.outputs[0].src.startswith("data:image/png;base64,iVBOR")
    assert html.outputs[0].kind == "html" and html.outputs[0].html == HTML_OUTPUT
    assert failed.outputs[0].kind == "error"
    assert failed.outputs[0].text == "-" * 75 + "\nZeroDivisionError: division by zero", "ANSI colours stripped"
    assert raw.source == "<raw & kept as text>" and raw.html == ""


def test_markdown_cells_are_sanitized_like_markdown_previews() -> None:
    cell = render(make_notebook([markdown(SCRIPT_MARKDOWN + "\n\n![p](pics/a.png)")]), same, same).cells[0]
    page = Document(cell.html)
    assert page.one("h1").text == "Title"
    assert not page.all("script"), "raw HTML in markdown is text, never an element"
    assert "<script>window.__xss=1</script>" in [paragraph.text for paragraph in page.all("p")]
    assert all(not link.attr("href").startswith("javascript:") for link in page.all("a"))
    assert page.one("img").attr("src") == "/resolved/pics/a.png"


def test_code_is_highlighted_in_the_notebook_language() -> None:
    python = render(make_notebook([code("def f():\n    return '<b>'")]), same, same).cells[0]
    page = Document(python.html)
    assert "def" in [span.text for span in page.all("span") if span.attr("class") == "k"]
    assert not page.all("b"), "the source is escaped"
    # Without a file extension the language name picks the lexer.
    notebook = orjson.loads(make_notebook([code("fn main() {}")], language="rust"))
    del notebook["metadata"]["language_info"]["file_extension"]
    rust = render(orjson.dumps(notebook), same, same).cells[0]
    assert "fn" in [span.text for span in Document(rust.html).all("span") if span.attr("class") == "k"]


def test_sources_and_text_as_lists_of_lines_are_joined() -> None:
    cell = code(["a = 1\n", "b = 2"], [stream(["one\n", "two\n"]), display({"text/plain": ["x\n", "y"]})])
    shown = render(make_notebook([cell]), same, same).cells[0]
    assert shown.source == "a = 1\nb = 2"
    assert [output.text for output in shown.outputs] == ["one\ntwo\n", "x\ny"]


@pytest.mark.parametrize(("data", "expected"), [
    (b"{not json", "This is not valid JSON"),
    (b"[1, 2]", "not a Jupyter notebook"),
    (b'{"cells": []}', "not a Jupyter notebook"),
    (b'{"nbformat": 4, "cells": "nope"}', "no list of cells"),
    (b"[" * 100_000 + b"]" * 100_000, "This is not valid JSON"),  # deep nesting: refused, no RecursionError
])
def test_a_broken_notebook_says_why(data: bytes, expected: str) -> None:
    with pytest.raises(NotebookError, match=expected):
        render(data, same, same)


def test_broken_cells_and_outputs_are_skipped_not_fatal() -> None:
    cells: list[Any] = [7, {"cell_type": "code", "source": 5, "outputs": [3, {"output_type": "nope"},
                                                                          display({"image/png": "not base64!"})]}]
    notebook = render(orjson.dumps({"nbformat": 4, "cells": cells, "metadata": []}), same, same)
    assert [(cell.index, cell.kind, cell.source, cell.outputs) for cell in notebook.cells] == [(1, "code", "", [])]


def test_an_html_output_over_its_cap_falls_back_to_text() -> None:
    big = "<p>" + "x" * notebook_view.MAX_HTML_CHARS + "</p>"
    shown = render(make_notebook([code("", [display({"text/html": big, "text/plain": "small"})])]), same, same)
    assert [(output.kind, output.text) for output in shown.cells[0].outputs] == [("text", "small")]


def test_a_huge_notebook_makes_a_bounded_page_and_says_what_was_cut() -> None:
    png = base64.b64encode(b"\x89PNG" + bytes(notebook_view.MAX_IMAGE_BYTES)).decode()
    long_text = "y" * (notebook_view.MAX_TEXT_CHARS + 10)
    many_outputs = [stream("line\n")] * (notebook_view.MAX_OUTPUTS_PER_CELL + 5)
    cells = [code("big()", [display({"image/png": png}), stream(long_text), *many_outputs])]
    cells += [code("z", [stream("z" * 60_000)]) for _ in range(notebook_view.MAX_CELLS + 20)]
    notebook = render(make_notebook(cells), same, same)
    assert len(notebook.cells) == notebook_view.MAX_CELLS and notebook.total_cells == notebook_view.MAX_CELLS + 21
    assert f"Showing the first {notebook_view.MAX_CELLS:,} of {notebook_view.MAX_CELLS + 21:,} cells." in notebook.notes
    assert "Cells and outputs past 8 MiB in all are not shown." in notebook.notes
    first = notebook.cells[0]
    assert first.outputs[0].kind == "cut" and "is not shown (the limit is 4 MiB)" in first.outputs[0].text
    assert first.outputs[1].text.endswith("… 10 more characters not shown")
    assert len(first.outputs) == notebook_view.MAX_OUTPUTS_PER_CELL
    assert f"Showing the first 50 of {notebook_view.MAX_OUTPUTS_PER_CELL + 7} outputs." in first.notes
    shown = sum(len(cell.source) + sum(len(output.text) + len(output.src) for output in cell.outputs)
                for cell in notebook.cells)
    assert shown <= notebook_view.PAGE_BUDGET + 1000 * notebook_view.MAX_CELLS
    assert [(output.kind, output.text) for output in notebook.cells[-1].outputs] == [("cut", notebook_view.CUT)]


def test_an_nbformat_3_notebook_is_upgraded_by_nbformat() -> None:
    old = {"nbformat": 3, "nbformat_minor": 0, "metadata": {"name": ""}, "worksheets": [{"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Old"]},
        {"cell_type": "code", "input": ["print(1)"], "language": "python", "metadata": {}, "prompt_number": 1,
         "outputs": [{"output_type": "stream", "stream": "stdout", "text": ["1\n"]},
                     {"output_type": "pyout", "prompt_number": 1, "text": ["2"], "metadata": {}}]}]}]}
    cells = render(orjson.dumps(old), same, same).cells
    assert [(cell.kind, cell.source, [(output.kind, output.text) for output in cell.outputs]) for cell in cells] == [
        ("markdown", "# Old", []), ("code", "print(1)", [("stream", "1\n"), ("text", "2")])]


def test_a_notebook_past_the_byte_cap_is_not_parsed() -> None:
    with pytest.raises(NotebookError, match="larger than 50 MiB"):
        render(b" " * (notebook_view.MAX_NOTEBOOK_BYTES + 1), same, same)


def test_ansi_escapes_are_stripped() -> None:
    assert notebook_view.strip_ansi("\x1b[1;32mok\x1b[0m \x1b]0;title\x07done\x1b(B") == "ok done"


# --- the file page, over a real server ------------------------------------------------------------------


async def test_the_file_page_shows_the_notebook_and_frames_its_html(browser_with: BrowserFactory,  # noqa: F811
                                                                    home: Path) -> None:  # noqa: F811
    (home / "a.ipynb").write_bytes(sample_notebook())
    off = await browser_with(enable_notebooks=False)
    # off.page() would refuse any frame not of /files/view: the checks are done here instead.
    async with off.client.get("/browse" + quote(str(home / "a.ipynb"))) as response:
        assert response.status == 200
        html = await response.text()
    page = Document(html)
    [frame] = page.all("iframe")
    assert frame.attrs["sandbox"] == "" and "src" not in frame.attrs
    assert frame.attr("srcdoc") == HTML_OUTPUT
    # Apart from that frame (whose srcdoc never runs in this page), nothing on the page is active.
    assert_nothing_active(re.sub(r"<iframe [^>]*srcdoc=[^>]*></iframe>", "", html))
    assert len(page.all("div", testid="cell")) == 6
    assert page.all("img", testid="output-image")[0].attr("src").startswith("data:image/png;base64,")
    assert not page.all("button", testid="run-cell"), "no Run buttons while notebooks are off"
    assert not [script for script in page.all("script") if "notebook" in script.attr("src")]


async def test_run_buttons_come_with_the_notebook_api(browser_with: BrowserFactory, home: Path) -> None:  # noqa: F811
    (home / "run.ipynb").write_bytes(make_notebook([markdown("# x"), code("1"), code("2")]))
    page = Document(await (await browser_with(enable_notebooks=True)).page("/browse" + quote(str(home / "run.ipynb"))))
    assert len(page.all("button", testid="run-cell")) == 2
    assert page.one("button", testid="run-all").text == "Run all"
    assert [cell.attr("data-index") for cell in page.all("div", testid="cell")] == ["0", "1", "2"]
    assert "/static/js/notebook.js" in [script.attr("src") for script in page.all("script")]


async def test_a_broken_notebook_says_so_and_shows_its_text(browser: Browser, home: Path) -> None:  # noqa: F811
    (home / "broken.ipynb").write_text('{"cells": [ <b>oops')
    page = Document(await browser.page("/browse" + quote(str(home / "broken.ipynb"))))
    message = page.one("p", testid="notebook-error").text
    assert message.startswith("This notebook cannot be shown: This is not valid JSON")
    assert '{"cells": [ <b>oops' in page.one("div", testid="preview-source").text
    assert not page.all("b")
    (home / "huge.ipynb").write_bytes(b"")
    os.truncate(home / "huge.ipynb", notebook_view.MAX_NOTEBOOK_BYTES + 1)  # sparse: never read
    page = Document(await browser.page("/browse" + quote(str(home / "huge.ipynb"))))
    assert page.one("p", testid="notebook-error").text == ("This notebook cannot be shown: The notebook is larger "
                                                             "than 50 MiB: too large to show here. Download it or "
                                                             "open its raw text.")
    assert page.one("p", testid="preview-binary"), "offered for download, not put into the page"
