"""The compare page: rows laid out side by side from the API's own diff, and each way a side can fail."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, urlencode

from daemon.files.compare import Side, diff
from daemon.pages.compare_view import MAX_ROWS, Half, hunk_rows, side_by_side
from tests.pages.test_views import (  # noqa: F401  (browser, browser_with, home: fixtures)
    Browser,
    BrowserFactory,
    Document,
    assert_nothing_active,
    browser,
    browser_with,
    home,
)

OLD = "alpha\nthe quick brown fox\ngamma\ndelta\nkept\n"
NEW = "alpha\nthe quick red fox\ngamma\ninserted\nkept\n"


def sides(old: str, new: str) -> tuple[Side, Side]:
    return Side("/a", "a", old.splitlines()), Side("/b", "b", new.splitlines())


def cells(half: Half | None) -> tuple[int, str, str] | None:
    if half is None:
        return None
    return half.number, half.kind, "".join(f"[{s['text']}]" if s["changed"] else s["text"] for s in half.segments)


def test_rows_pair_each_removed_line_with_the_added_line_that_replaced_it() -> None:
    laid_out = side_by_side(diff(*sides(OLD, NEW)))
    assert (laid_out.additions, laid_out.deletions, laid_out.shown_rows, laid_out.total_rows) == (2, 2, 5, 5)
    [hunk] = laid_out.hunks
    assert hunk.header == "@@ -1,5 +1,5 @@"
    assert [(cells(left), cells(right)) for left, right in hunk.rows] == [
        ((1, "context", "alpha"), (1, "context", "alpha")),
        ((2, "removed", "the quick [brown] fox"), (2, "added", "the quick [red] fox")),
        ((3, "context", "gamma"), (3, "context", "gamma")),
        ((4, "removed", "[delta]"), (4, "added", "[inserted]")),
        ((5, "context", "kept"), (5, "context", "kept")),
    ]


def test_unequal_runs_leave_the_other_side_empty() -> None:
    rows = side_by_side(diff(*sides("a\nb\nc\nz\n", "a\nB\nz\nnew1\nnew2\n"))).hunks[0].rows
    shape = [(left and (left.number, left.kind), right and (right.number, right.kind)) for left, right in rows]
    assert shape == [((1, "context"), (1, "context")), ((2, "removed"), (2, "added")), ((3, "removed"), None),
                     ((4, "context"), (3, "context")), (None, (4, "added")), (None, (5, "added"))]


def test_a_removal_after_additions_starts_a_new_pair() -> None:
    line = {"segments": [{"text": "x", "changed": False}]}
    lines = [{"type": "added", "oldNumber": None, "newNumber": 1, **line},
             {"type": "removed", "oldNumber": 1, "newNumber": None, **line}]
    assert [(cells(left), cells(right)) for left, right in hunk_rows(lines)] == [
        (None, (1, "added", "x")), ((1, "removed", "x"), None)]


def test_rows_are_capped_and_the_count_says_so() -> None:
    old = "".join(f"old {n}\n" for n in range(MAX_ROWS + 100))
    new = "".join(f"new {n}\n" for n in range(MAX_ROWS + 100))
    laid_out = side_by_side(diff(*sides(old, new)))
    assert (laid_out.shown_rows, laid_out.total_rows) == (MAX_ROWS, MAX_ROWS + 100)
    assert sum(len(hunk.rows) for hunk in laid_out.hunks) == MAX_ROWS


# --- the page, over a real server -----------------------------------------------------------------------


def compare_url(original: Path | str, revised: Path | str, **extra: str) -> str:
    return "/compare?" + urlencode({"original": str(original), "revised": str(revised), **extra})


def rows_text(html: str) -> list[list[str]]:
    return [[cell.text for cell in row.children] for row in Document(html).all("tr", testid="diff-row")]


async def test_the_page_shows_both_files_side_by_side(browser: Browser, home: Path) -> None:  # noqa: F811
    (home / "old.txt").write_text(OLD)
    (home / "new.txt").write_text(NEW)
    html = await browser.page(compare_url(home / "old.txt", "new.txt"))  # relative: beside the original
    assert rows_text(html)[1] == ["2", "the quick brown fox", "2", "the quick red fox"]
    marks = [mark.text for mark in Document(html).all("mark")]
    assert marks == ["brown", "red", "delta", "inserted"]
    assert "+2" in Document(html).one("p", testid="compare-summary").text
    assert Document(html).one("th", testid="compare-right").text == str(home / "new.txt")


async def test_ignore_whitespace_is_passed_to_the_diff(browser: Browser, home: Path) -> None:  # noqa: F811
    (home / "a.py").write_text("if x:\n    y()\n")
    (home / "b.py").write_text("if x:\n  y()  \n")
    assert len(rows_text(await browser.page(compare_url(home / "a.py", home / "b.py")))) == 2
    html = await browser.page(compare_url(home / "a.py", home / "b.py", ignore_whitespace="true"))
    assert rows_text(html) == []
    assert "identical apart from whitespace" in Document(html).one("p", testid="compare-summary").text


async def test_markup_in_the_files_stays_text(browser: Browser, home: Path) -> None:  # noqa: F811
    (home / "x.html").write_text("<p>one</p>\n")
    (home / "y.html").write_text('<script>alert(1)</script><img src=x onerror="alert(2)">\n')
    html = await browser.page(compare_url(home / "x.html", home / "y.html"))
    assert_nothing_active(html)
    assert rows_text(html)[0][3] == '<script>alert(1)</script><img src=x onerror="alert(2)">'


async def error_of(browser: Browser, url: str, status: int) -> str:  # noqa: F811
    html = await browser.page(url, status)
    return Document(html).one("p", testid="compare-error").text


async def test_each_side_that_cannot_be_compared_is_named(browser: Browser, home: Path) -> None:  # noqa: F811
    (home / "ok.txt").write_text("fine\n")
    (home / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    (home / "huge.txt").write_bytes(b"")
    os.truncate(home / "huge.txt", 50 * 1024 * 1024 + 1)  # sparse: refused by its size before a byte is read
    os.mkfifo(home / "pipe.txt")
    assert await error_of(browser, compare_url(home / "gone.txt", home / "ok.txt"), 404) == "gone.txt: File not found."
    assert await error_of(browser, compare_url(home / "ok.txt", "missing.txt"), 404) == "missing.txt: File not found."
    assert await error_of(browser, compare_url(home / "ok.txt", home / "pipe.txt"), 404) == "pipe.txt: File not found."
    binary = await error_of(browser, compare_url(home / "ok.txt", home / "blob.bin"), 422)
    assert binary == "blob.bin: Unsupported binary file."
    large = await error_of(browser, compare_url(home / "huge.txt", home / "ok.txt"), 413)
    assert large == "huge.txt: The file is larger than 50 MiB. Try smaller files."


async def test_a_missing_side_asks_for_it(browser: Browser, home: Path) -> None:  # noqa: F811
    (home / "ok.txt").write_text("fine\n")
    html = await browser.page("/compare?" + urlencode({"original": str(home / "ok.txt")}))
    page = Document(html)
    assert page.one("input", testid="compare-original").attr("value") == str(home / "ok.txt")
    assert not page.all("p", testid="compare-error") and not page.all("table", testid="diff")
    assert page.one("p", testid="compare-hint").text == f"Choose the file to compare {home / 'ok.txt'} with."


async def test_outside_the_root_is_refused(browser_with: BrowserFactory, home: Path,  # noqa: F811
                                           tmp_path: Path) -> None:
    inside = home / "inside"
    inside.mkdir()
    (inside / "a.txt").write_text("a\n")
    (tmp_path / "secret.txt").write_text("launch codes\n")
    confined = await browser_with(file_root=inside)
    message = await error_of(confined, compare_url(inside / "a.txt", tmp_path / "secret.txt"), 403)
    assert message == "secret.txt: Path is outside the allowed file root"
    assert await error_of(confined, compare_url(inside / "a.txt", "../../secret.txt"), 403) == message
    assert "launch codes" not in await confined.page(compare_url(inside / "a.txt", "../../secret.txt"), 403)


async def test_the_file_page_links_to_compare(browser: Browser, home: Path) -> None:  # noqa: F811
    (home / "a b&c.txt").write_text("x\n")
    page = Document(await browser.page("/browse" + quote(str(home / "a b&c.txt"))))
    link = page.one("a", testid="compare").attr("href")
    assert link == "/compare?original=" + quote(str(home / "a b&c.txt"))
