"""GitHub-like Markdown, CSV sort and paging, the search results page, a PDF's tab title and the editor's
new-file and failed-save behaviour, in a real Chromium at desktop and phone sizes, light and dark."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPage, Watched
from tests.files.test_documents import make_pdf

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
LOOKS = [pytest.param(DESKTOP, "light", id="desktop-light"), pytest.param(DESKTOP, "dark", id="desktop-dark"),
         pytest.param(PHONE, "light", id="phone-light"), pytest.param(PHONE, "dark", id="phone-dark")]

README = """# Project title

Intro with `inline code` and a footnote[^1]. Jump to [usage](#usage).

## Usage

```python
def greet(name: str) -> str:
    return f"hello {name}"  # <not a tag>
```

| Column | Number |
|:-------|-------:|
| alpha  |      1 |
| beta   |     22 |

- [x] done task
- [ ] open task

> A quote.

[^1]: The footnote text.
"""


@pytest.mark.parametrize(("viewport", "scheme"), LOOKS)
async def test_markdown_looks_like_github(open_page: OpenPage, viewport: dict[str, int], scheme: str) -> None:
    watched = await open_page(viewport=viewport, color_scheme=scheme)
    (watched.site.home / "README.md").write_text(README)
    await watched.login()
    page = watched.page
    await page.goto(watched.site.browse_url(watched.site.home / "README.md"))
    article = page.locator("[data-testid=preview-markdown]")
    code = article.locator("pre.code")
    assert await code.evaluate("pre => getComputedStyle(pre).borderTopStyle") == "solid", "a boxed code block"
    keyword = code.locator("span.k").first
    assert await keyword.inner_text() == "def"
    assert await keyword.evaluate("span => getComputedStyle(span).color") != \
        await code.evaluate("pre => getComputedStyle(pre).color"), "keywords are coloured"
    assert "<not a tag>" in await code.inner_text()
    cell = article.locator("td").first
    assert await cell.evaluate("td => getComputedStyle(td).borderTopStyle") == "solid", "a bordered table"
    assert await article.locator("td.align-right").first.evaluate("td => getComputedStyle(td).textAlign") == "right"
    boxes = article.locator("input[type=checkbox]")
    assert await boxes.count() == 2
    assert [await box.is_disabled() for box in await boxes.all()] == [True, True]
    assert [await box.is_checked() for box in await boxes.all()] == [True, False]
    assert await article.locator("h2#user-content-usage").count() == 1
    await watched.shot(f"markdown-{scheme}")
    await article.locator("a[href='#user-content-usage']").click()
    await expect(page).to_have_url(watched.site.browse_url(watched.site.home / "README.md") + "#user-content-usage")
    await article.locator("sup a").click()
    assert await article.locator("li#user-content-fn1").is_visible()
    watched.assert_clean()


@pytest.mark.parametrize(("viewport", "scheme"), [LOOKS[0], LOOKS[3]])
async def test_csv_sorts_by_a_column_and_pages_through_every_row(open_page: OpenPage, viewport: dict[str, int],
                                                                 scheme: str) -> None:
    watched = await open_page(viewport=viewport, color_scheme=scheme)
    rows = "".join(f"{n},item {n},{(n * 37) % 1000}\n" for n in range(1, 1201))
    (watched.site.home / "data.csv").write_text("id,name,score\n" + rows)
    await watched.login()
    page = watched.page
    await page.goto(watched.site.browse_url(watched.site.home / "data.csv"))
    count = page.locator("[data-testid=table-count]")
    await expect(count).to_have_text("Rows 1\u2013500 of 1,200")
    first_column = page.locator("[data-testid=preview-table] tbody tr td:first-child")
    async with page.expect_navigation():
        await page.locator("[data-testid=sort-column]", has_text="score").click()
    scores = await page.locator("[data-testid=preview-table] tbody tr td:nth-child(3)").all_inner_texts()
    assert [int(score) for score in scores] == sorted(int(score) for score in scores), "numbers by value"
    async with page.expect_navigation():
        await page.locator("[data-testid=sort-column]", has_text="score").click()  # again: descending
    assert await page.locator("th[aria-sort=descending]").inner_text() == "score"
    assert (await page.locator("[data-testid=preview-table] tbody tr td:nth-child(3)").first.inner_text()) == "999"
    await watched.shot(f"csv-sorted-{scheme}", full_page=False)
    async with page.expect_navigation():
        await page.locator("[data-testid=sort-column]", has_text="id").click()
    for expected in ("Rows 501\u20131,000 of 1,200", "Rows 1,001\u20131,200 of 1,200"):
        async with page.expect_navigation():
            await page.click("[data-testid=table-next]")
        await expect(count).to_have_text(expected)
    assert await first_column.last.inner_text() == "1200", "every row is reachable"
    assert await page.locator("[data-testid=table-next]").count() == 0
    watched.assert_clean()


@pytest.mark.parametrize(("viewport", "scheme"), [LOOKS[0], LOOKS[3]])
async def test_search_results_page(open_page: OpenPage, viewport: dict[str, int], scheme: str) -> None:
    watched = await open_page(viewport=viewport, color_scheme=scheme)
    home = watched.site.home
    (home / "src").mkdir()
    (home / "src" / "app.py").write_text("".join(f"x{n} = 1  # TODO <b>later</b>\n" for n in range(4)))
    (home / "notes.txt").write_text("nothing\ntodo: buy milk\n")
    (home / "report.pdf").write_bytes(make_pdf([["Quarterly TODO list"], ["done"]]))
    await watched.login()
    page = watched.page
    await page.fill("[data-testid=search]", "todo")
    async with page.expect_navigation():
        await page.press("[data-testid=search]", "Enter")
    assert page.url.startswith(watched.site.url("/search?"))
    summary = page.locator("[data-testid=search-summary]")
    await expect(summary).to_contain_text("6 matches in 3 files")
    marks = await page.locator("mark").all_inner_texts()
    assert marks.count("TODO") == 5 and "todo" in marks
    assert await page.locator("[data-testid=search-line] b").count() == 0, "markup in a line is shown as text"
    assert await page.locator("[data-testid=search-file][data-path$='report.pdf'] mark").inner_text() == "TODO"
    await watched.shot(f"search-{scheme}")
    async with page.expect_navigation():
        await page.locator("[data-testid=search-file][data-path$='notes.txt'] [data-testid=search-line]").click()
    assert page.url == watched.site.browse_url(home / "notes.txt") + "#L-2"

    await page.goto(watched.site.url("/search?" + urlencode({"q": "zebra", "path": str(home)})))
    await expect(page.locator("[data-testid=search-empty]")).to_have_text(f"No results for “zebra” under {home}.")
    await watched.shot(f"search-empty-{scheme}")
    watched.assert_clean()


async def test_a_pdf_opened_raw_is_titled_by_its_name(logged_in: Watched) -> None:
    (logged_in.site.home / "Annual report.pdf").write_bytes(make_pdf([["Figures"]]))
    page = logged_in.page
    await page.goto(logged_in.site.browse_url(logged_in.site.home / "Annual report.pdf"))
    raw = page.locator("[data-testid=raw]")
    assert await raw.get_attribute("href") == "/pdf?path=" + quote(str(logged_in.site.home / "Annual report.pdf"))
    async with page.context.expect_page() as opened:
        await raw.click()
    tab = await opened.value
    await tab.wait_for_load_state()
    await expect(tab).to_have_title("Annual report.pdf")  # was "view", the bare PDF URL's last segment
    frame = tab.locator("[data-testid=pdf-full]")
    assert await frame.get_attribute("src") == "/files/serve" + quote(str(logged_in.site.home / "Annual report.pdf"))
    box = await frame.bounding_box()
    assert box is not None and box["height"] > 500, "the PDF fills the tab"
    logged_in.assert_clean()


async def test_a_new_file_opens_in_the_editor(logged_in: Watched) -> None:
    (logged_in.site.home / "empty.txt").write_text("")
    page = logged_in.page
    await page.goto(logged_in.site.browse_url(logged_in.site.home / "empty.txt"))
    await expect(page.locator("[data-testid=editor]")).to_be_visible()
    logged_in.assert_clean()


@pytest.fixture
def immutable(scratch_environment: Path) -> Iterator[Path]:
    """A real immutable file (chattr +i): even root's write of it fails, so the save does."""
    target = scratch_environment / "immutable.txt"
    target.write_text("keep\n")
    subprocess.run(["chattr", "+i", str(target)], check=True)
    yield target
    subprocess.run(["chattr", "-i", str(target)], check=True)


async def test_a_failed_save_says_why_and_keeps_saying_it(logged_in: Watched, immutable: Path) -> None:
    page = logged_in.page
    await page.goto(logged_in.site.browse_url(immutable))
    await page.click("[data-testid=edit]")
    editor = page.locator("#editor-host .cm-content")
    await editor.click()
    await page.keyboard.type("more ")
    await page.keyboard.press("Control+s")
    status = page.locator("[data-testid=editor-status]")
    await expect(status).to_have_text("Not saved: Operation not permitted: immutable.txt")
    await page.keyboard.type("and more")
    await expect(status).to_have_text("Unsaved changes (the last save failed: Operation not permitted: immutable.txt)")
    assert ".tmp" not in await page.locator("body").inner_text()
    logged_in.expect_status(403, "/files/write")
    await logged_in.shot("failed-save")
    logged_in.assert_clean()
