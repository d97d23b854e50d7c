"""Browsing in a real browser: sorting, hidden files, filter, search, help, a huge folder, and the actions."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from playwright.async_api import expect

from tests.browser.conftest import Watched

ROWS = "tr[data-testid=entry]"


async def names(watched: Watched, selector: str = ROWS) -> list[str]:
    found: list[str] = await watched.page.locator(selector).evaluate_all("rows => rows.map(row => row.dataset.name)")
    return found


async def visible_names(watched: Watched) -> list[str]:
    found: list[str] = await watched.page.locator(ROWS).evaluate_all(
        "rows => rows.filter(row => row.checkVisibility()).map(row => row.dataset.name)")
    return found


def make_files(home: Path) -> None:
    (home / "apple.txt").write_bytes(b"a" * 300)
    (home / "banana.txt").write_bytes(b"b" * 10)
    (home / "cherry.txt").write_bytes(b"c" * 5000)
    (home / "zeta").mkdir()
    (home / ".secret").write_text("hidden\n")
    deep = home / "notes" / "deep"
    deep.mkdir(parents=True)
    (deep / "todo.txt").write_text("buy milk\nthe needle-4242 is here\n")


async def test_sorting_by_size_changes_the_order(watched: Watched) -> None:
    make_files(watched.site.home)
    await watched.login()
    page = watched.page
    assert await names(watched) == ["notes", "zeta", "apple.txt", "banana.txt", "cherry.txt"]
    async with page.expect_navigation():
        await page.click("[data-testid=sort-size]")
    assert parse_qs(urlsplit(page.url).query)["sort"] == ["size"]
    assert await names(watched) == ["notes", "zeta", "banana.txt", "apple.txt", "cherry.txt"]
    assert await page.locator(f"{ROWS}[data-name='cherry.txt'] td.num").inner_text() == "4.9 KB"
    await watched.shot("1-size-ascending")
    async with page.expect_navigation():
        await page.click("[data-testid=sort-size]")
    assert parse_qs(urlsplit(page.url).query)["order"] == ["desc"]
    assert (await names(watched))[-3:] == ["cherry.txt", "apple.txt", "banana.txt"]
    await watched.shot("2-size-descending")
    watched.assert_clean()


async def test_hidden_files_toggle(watched: Watched) -> None:
    make_files(watched.site.home)
    await watched.login()
    page = watched.page
    assert ".secret" not in await names(watched)
    async with page.expect_navigation():
        await page.click("[data-testid=toggle-hidden]")
    assert ".secret" in await names(watched)
    await watched.shot("1-hidden-shown")
    async with page.expect_navigation():
        await page.click("[data-testid=toggle-hidden]")
    assert ".secret" not in await names(watched)
    watched.assert_clean()


async def test_the_filter_narrows_the_rows(watched: Watched) -> None:
    make_files(watched.site.home)
    await watched.login()
    page = watched.page
    await page.fill("[data-testid=filter]", "an")
    assert await visible_names(watched) == ["banana.txt"], "as you type, on this page"
    await watched.shot("1-filter-typed")
    async with page.expect_navigation():
        await page.press("[data-testid=filter]", "Enter")
    assert await names(watched) == ["banana.txt"], "Enter asks the server"
    assert await page.input_value("[data-testid=filter]") == "an"
    await watched.shot("2-filter-submitted")
    await page.fill("[data-testid=filter]", "nothing-like-this")
    assert await visible_names(watched) == []
    watched.assert_clean()


async def test_search_finds_a_file_by_its_content(watched: Watched) -> None:
    make_files(watched.site.home)
    await watched.login()
    page = watched.page
    await page.fill("[data-testid=search]", "needle-4242")
    results = page.locator("[data-testid=search-results]")
    await results.locator("a").first.wait_for()
    assert await results.is_visible()
    links = results.locator("a")
    assert await links.count() == 1
    assert await links.inner_text() == "notes/deep/todo.txt"
    assert "needle-4242" in await results.inner_text(), "the matching line is shown"
    await watched.shot("1-search-results")
    async with page.expect_navigation():
        await links.click()
    assert page.url == watched.site.browse_url(watched.site.home / "notes" / "deep" / "todo.txt")
    assert "needle-4242" in await page.locator("[data-testid=preview-source]").inner_text()
    watched.assert_clean()


async def test_question_mark_opens_the_help(logged_in: Watched) -> None:
    page = logged_in.page
    help_dialog = page.locator("#help")
    assert not await help_dialog.is_visible()
    await page.keyboard.press("?")
    await help_dialog.wait_for(state="visible")
    assert await page.evaluate("document.getElementById('help').open")
    assert "Keyboard shortcuts" in await help_dialog.inner_text()
    await logged_in.shot("help")
    await page.keyboard.press("Escape")
    await help_dialog.wait_for(state="hidden")
    logged_in.assert_clean()


async def test_a_folder_of_ten_thousand_entries_is_paginated(logged_in: Watched) -> None:
    big = logged_in.site.home / "big"
    big.mkdir()
    for number in range(10_000):
        (big / f"file-{number:05d}.txt").touch()
    page = logged_in.page
    # Its speed is bench/pages.py's to measure: a timed assertion here would fail on a busy machine.
    await page.goto(logged_in.site.browse_url(big))
    assert await page.locator(ROWS).count() == 500
    assert (await names(logged_in))[:2] == ["file-00000.txt", "file-00001.txt"]
    assert "10000 entries" in await page.locator("[data-testid=pages]").inner_text()
    next_page = page.locator("[data-testid=next-page]")
    assert await next_page.is_visible()
    await logged_in.shot("1-first-page")
    async with page.expect_navigation():
        await next_page.click()
    assert await page.locator(ROWS).count() == 500
    assert (await names(logged_in))[0] == "file-00500.txt"
    await page.locator("[data-testid=prev-page]").wait_for()
    logged_in.assert_clean()


# --- actions ------------------------------------------------------------------------------------------


async def test_new_folder_rename_and_delete_change_the_disk(logged_in: Watched) -> None:
    home, page = logged_in.site.home, logged_in.page
    (home / "draft.txt").write_text("draft\n")
    (home / "old.txt").write_text("going away\n")
    await page.reload()

    await page.click("[data-testid=new-folder]")
    dialog = page.locator("dialog[data-testid=new-folder-dialog]")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_label("Folder name")).to_be_focused()
    await dialog.get_by_label("Folder name").fill("reports")
    async with page.expect_navigation():
        await dialog.get_by_label("Folder name").press("Enter")
    assert (home / "reports").is_dir()
    assert "reports" in await names(logged_in)
    await logged_in.shot("1-new-folder")

    await page.click(f"{ROWS}[data-name='draft.txt'] [data-action=rename]")
    dialog = page.locator("dialog[data-testid=rename-dialog]")
    field = dialog.get_by_label("New name")
    await expect(field).to_have_value("draft.txt")
    assert await field.evaluate("input => input.value.slice(input.selectionStart, input.selectionEnd)") == "draft"
    await field.fill("../escape.txt")
    await expect(dialog.get_by_test_id("dialog-error")).to_contain_text('cannot contain "/"')
    await field.fill("final.txt")
    async with page.expect_navigation():
        await dialog.get_by_test_id("dialog-confirm").click()
    assert not (home / "draft.txt").exists()
    assert (home / "final.txt").read_text() == "draft\n"
    assert "final.txt" in await names(logged_in) and "draft.txt" not in await names(logged_in)
    await logged_in.shot("2-renamed")

    await page.click(f"{ROWS}[data-name='old.txt'] [data-action=delete]")
    dialog = page.locator("dialog[data-testid=delete-dialog]")
    await expect(dialog).to_contain_text("old.txt")
    await page.keyboard.press("Escape")
    await expect(dialog).to_have_count(0)
    assert (home / "old.txt").exists(), "dismissing the confirmation deletes nothing"

    await page.click(f"{ROWS}[data-name='old.txt'] [data-action=delete]")
    async with page.expect_navigation():
        await page.locator("dialog[data-testid=delete-dialog]").get_by_test_id("dialog-confirm").click()
    assert not (home / "old.txt").exists()
    assert "old.txt" not in await names(logged_in)
    await logged_in.shot("3-deleted")
    logged_in.assert_clean()
