"""Compare with…: from a file's page to the side-by-side diff, in a real browser."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import Watched


async def test_compare_two_files_side_by_side_with_the_changed_words_marked(logged_in: Watched) -> None:
    home = logged_in.site.home
    (home / "draft.txt").write_text("title\nthe quick brown fox\n  indented\nsame\n")
    (home / "final.txt").write_text("title\nthe quick red fox\nindented\nsame\n<b>new</b>\n")
    page = logged_in.page
    await page.goto(logged_in.site.browse_url(home / "draft.txt"))
    async with page.expect_navigation():
        await page.locator("[data-testid=compare]").click()
    await expect(page.locator("[data-testid=compare-hint]")).to_contain_text("draft.txt")
    await page.locator("[data-testid=compare-revised]").fill("final.txt")  # beside the original
    async with page.expect_navigation():
        await page.locator("[data-testid=compare-submit]").click()
    rows = page.locator("[data-testid=diff-row]")
    await expect(rows).to_have_count(5)
    await expect(page.locator("[data-testid=compare-summary]")).to_contain_text("+3 \u22122")
    await expect(rows.nth(2).locator("td.line.removed")).to_have_text("  indented")
    changed = rows.nth(1)
    await expect(changed.locator("td.line.removed")).to_have_text("the quick brown fox")
    await expect(changed.locator("td.line.added")).to_have_text("the quick red fox")
    await expect(changed.locator("td.removed mark")).to_have_text("brown")
    await expect(changed.locator("td.added mark")).to_have_text("red")
    await expect(rows.nth(4).locator("td.line.added")).to_have_text("<b>new</b>")
    await expect(page.locator("[data-testid=diff] b")).to_have_count(0)
    # The marks are coloured apart from their line: a reader sees the words, not only the line.
    line, mark = await changed.locator("td.line.removed").evaluate(
        "cell => [cell, cell.querySelector('mark')].map(element => getComputedStyle(element).backgroundColor)")
    assert line != mark
    await logged_in.shot("1-diff")
    async with page.expect_navigation():
        await page.locator("[data-testid=ignore-whitespace]").check()  # compares again at once
    await expect(page.locator("[data-testid=ignore-whitespace]")).to_be_checked()
    await expect(page.locator("[data-testid=compare-summary]")).to_contain_text("+2 \u22121")
    await expect(rows.nth(2).locator("td.line.context")).to_have_count(2)  # "  indented" now equals "indented"
    await logged_in.shot("2-ignore-whitespace")
    logged_in.assert_clean()


async def test_a_missing_side_is_named_on_the_page(logged_in: Watched) -> None:
    home = logged_in.site.home
    (home / "here.txt").write_text("x\n")
    page = logged_in.page
    await page.goto(logged_in.site.url(f"/compare?original={home / 'here.txt'}&revised=nowhere.txt"))
    await expect(page.locator("[data-testid=compare-error]")).to_have_text("nowhere.txt: File not found.")
    await expect(page.locator("[data-testid=compare-revised]")).to_have_value("nowhere.txt")
    logged_in.expect_status(404, "/compare")
    logged_in.assert_clean()
