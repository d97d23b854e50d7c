"""The folder page on a phone (390x844) and a desktop (1440x900), light and dark: the row menu,
the selection bar at the bottom, names that wrap, a toolbar in two rows; screenshots of each."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPage, Watched

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
LONG = "a-very-long-file-name-without-any-spaces-that-must-wrap-somewhere-sensible.tar.gz"


def make_home(home: Path) -> None:
    (home / "Documents").mkdir()
    (home / "photos from the summer holiday by the sea").mkdir()
    (home / LONG).write_bytes(b"x" * 2048)
    (home / "notes.md").write_text("# Notes\n")
    (home / "link-to-notes").symlink_to(home / "notes.md")
    (home / "broken-link").symlink_to(home / "missing")


async def opened(open_page: OpenPage, viewport: dict[str, int], scheme: str) -> Watched:
    watched = await open_page(viewport=viewport, color_scheme=scheme)
    make_home(watched.site.home)
    await watched.login()
    return watched


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_phone_row_menu_bottom_bar_and_two_row_toolbar(open_page: OpenPage, scheme: str) -> None:
    watched = await opened(open_page, PHONE, scheme)
    page = watched.page
    notes = page.locator("tr[data-testid=entry][data-name='notes.md']")
    assert not await notes.locator(".inline-actions").is_visible(), "no row buttons on a phone"

    toolbar = await page.locator(".toolbar").bounding_box()
    button = await page.get_by_test_id("new-file").bounding_box()
    assert toolbar and button and toolbar["height"] <= button["height"] * 2 + 24, "two rows"
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "nothing wider than the phone"
    name_cell = await page.locator(f"tr[data-testid=entry][data-name='{LONG}'] td.name").bounding_box()
    assert name_cell and name_cell["x"] + name_cell["width"] <= PHONE["width"]
    words = page.locator("tr[data-testid=entry][data-name='photos from the summer holiday by the sea'] .entry-name")
    assert "holi-" not in await words.inner_text()
    await watched.shot(f"1-phone-{scheme}")

    await notes.get_by_test_id("row-menu").click()
    listed = page.get_by_test_id("row-menu-list")
    await expect(listed).to_be_visible()
    await expect(listed.locator("[data-menu-action=open]")).to_be_focused()
    await watched.shot(f"2-phone-menu-{scheme}", full_page=False)
    await page.keyboard.press("Escape")
    await expect(listed).to_have_count(0)
    await expect(notes.get_by_test_id("row-menu")).to_be_focused()

    await notes.locator(".check input").check()
    bar = page.get_by_test_id("selection-bar")
    await expect(bar).to_be_visible()
    box = await bar.bounding_box()
    assert box and box["y"] + box["height"] >= PHONE["height"] - 24, "the selection bar sits at the bottom"
    await watched.shot(f"3-phone-selection-{scheme}", full_page=False)

    await notes.get_by_test_id("row-menu").click()
    await listed.locator("[data-menu-action=rename]").click()
    await expect(page.locator("dialog[data-testid=rename-dialog]")).to_be_visible()
    await watched.shot(f"4-phone-dialog-{scheme}", full_page=False)
    watched.assert_clean()


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_desktop_listing_with_selection_and_menu(open_page: OpenPage, scheme: str) -> None:
    watched = await opened(open_page, DESKTOP, scheme)
    page = watched.page
    await page.locator("tr[data-testid=entry][data-name='notes.md'] .check input").check()
    await page.locator("tr[data-testid=entry][data-name='Documents'] .check input").check()
    await expect(page.get_by_test_id("selection-count")).to_have_text("2 selected")
    await watched.shot(f"1-desktop-selection-{scheme}")
    await page.locator(f"tr[data-testid=entry][data-name='{LONG}']").get_by_test_id("row-menu").click()
    await expect(page.locator("[data-testid=row-menu-list] [data-menu-action=extract]")).to_be_visible()
    await watched.shot(f"2-desktop-menu-{scheme}", full_page=False)
    await page.keyboard.press("Escape")
    await page.get_by_test_id("selection-move").click()
    await expect(page.locator("dialog[data-testid=folder-picker] [data-testid=picker-folder]").first).to_be_visible()
    await watched.shot(f"3-desktop-picker-{scheme}", full_page=False)
    watched.assert_clean()
