# ruff: noqa: F811
"""/search: every matching line grouped by file, counts, the words marked (escaped first), PDF text, an empty state."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

from daemon.pages import search_view
from daemon.pages.search_view import marked, pdf_hits
from tests.files.test_documents import PAGES, make_pdf

# The page tests' fixtures (a real server and a signed-in client), used by name as pytest does.
from tests.pages.test_views import Browser, Document, browse, browser, browser_with, home  # noqa: F401


def search_url(query: str, path: Path, page: int = 1) -> str:
    return "/search?" + urlencode({"q": query, "path": str(path), "page": page})


def test_marked_cuts_the_line_at_every_match_whatever_the_case() -> None:
    assert marked("Error: an error, ERROR!", "error") == [
        ("Error", True), (": an ", False), ("error", True), (", ", False), ("ERROR", True), ("!", False)]
    assert marked("a+b (a+b)", "a+b") == [("a+b", True), (" (", False), ("a+b", True), (")", False)]


def test_marked_trims_a_long_line_around_its_first_match() -> None:
    pieces = marked("x" * 5000 + "needle" + "y" * 5000, "needle")
    text = "".join(piece for piece, _ in pieces)
    assert len(text) <= search_view.PREVIEW_CHARS + 2 and ("needle", True) in pieces


def test_pdf_hits_number_the_extracted_lines() -> None:
    hits = pdf_hits("/d/r.pdf", "r.pdf", "Intro\nthe Budget\nnothing\nbudget again\n", "budget")
    assert hits is not None and hits.document
    assert [number for number, _ in hits.lines] == [2, 4]
    assert pdf_hits("/d/r.pdf", "r.pdf", "nothing here", "budget") is None


async def test_every_match_with_counts_and_marks(browser: Browser, home: Path) -> None:
    (home / "src").mkdir()
    (home / "src" / "a.py").write_text("".join(f"value = {n}  # TODO <b>fix</b>\n" for n in range(7)))
    (home / "src" / "b.txt").write_text("nothing\nTodo: one more\n")
    (home / "todo-list.md").write_text("no match inside\n")
    page = Document(await browser.page(search_url("todo", home)))
    files = {element.attr("data-path"): element for element in page.all(testid="search-file")}
    assert set(files) == {str(home / "src" / "a.py"), str(home / "src" / "b.txt")}
    counts = [element.text for element in page.all(testid="search-file-count")]
    assert sorted(counts) == ["1 match", "7 matches"]
    assert page.one(testid="search-summary").text.strip().split(" under ")[0] == "8 matches in 2 files, 1 name"
    lines = page.all("a", testid="search-line")
    assert len(lines) == 8
    assert browse(home / "src" / "b.txt") + "#L-2" in {line.attr("href") for line in lines}
    assert [mark.text for mark in page.all("mark")].count("TODO") == 7
    assert "Todo" in [mark.text for mark in page.all("mark")]


async def test_the_preview_is_escaped_then_marked(browser: Browser, home: Path) -> None:
    (home / "x.html").write_text('<img src=x onerror="alert(1)"> <b>bold</b>\n')
    html = await browser.page(search_url("<b>", home))
    assert "<img src=x" not in html and "&lt;img src=x" in html
    assert [mark.text for mark in Document(html).all("mark")] == ["<b>"]


async def test_no_results_says_so(browser: Browser, home: Path) -> None:
    (home / "a.txt").write_text("alpha\n")
    page = Document(await browser.page(search_url("zebra", home)))
    assert page.one(testid="search-empty").text == f"No results for “zebra” under {home}."
    assert not page.all(testid="search-file")


async def test_pdf_text_is_searched(browser: Browser, home: Path) -> None:
    (home / "report.pdf").write_bytes(make_pdf(PAGES))
    word = PAGES[1][0].split()[0]  # "Beta", on the second page
    page = Document(await browser.page(search_url(word, home)))
    (found,) = page.all(testid="search-file")
    assert found.attr("data-path") == str(home / "report.pdf")
    assert word.casefold() in [mark.text.casefold() for mark in page.all("mark")]


async def test_results_are_paged_by_file(browser: Browser, home: Path) -> None:
    for n in range(search_view.FILES_PER_PAGE + 5):
        (home / f"f{n:03}.txt").write_text("needle\n")
    first = Document(await browser.page(search_url("needle", home)))
    assert len(first.all(testid="search-file")) == search_view.FILES_PER_PAGE
    assert first.one(testid="search-next").attr("href") == search_url("needle", home, 2)
    second = Document(await browser.page(search_url("needle", home, 2)))
    assert len(second.all(testid="search-file")) == 5
    assert second.one(testid="search-summary").text.strip().startswith(f"{search_view.FILES_PER_PAGE + 5} matches")


async def test_a_blank_query_shows_the_form_only(browser: Browser, home: Path) -> None:
    page = Document(await browser.page("/search?path=" + quote(str(home))))
    assert page.one(testid="search-query").attr("value") == ""
    assert not page.all(testid="search-empty")
