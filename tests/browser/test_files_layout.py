"""The file manager on a phone-sized screen and in the dark theme."""

from __future__ import annotations

import re

from tests.browser.conftest import OpenPage, Watched

LONG_NAME = "a-rather-long-file-name-without-any-spaces-that-could-push-the-layout-sideways.txt"


def make_files(watched: Watched) -> None:
    home = watched.site.home
    (home / "documents").mkdir()
    (home / LONG_NAME).write_text("long\n")
    (home / "data.csv").write_text("a,b\n1,2\n")
    (home / "README.md").write_text("# Read me\n")


def brightness(css_colour: str) -> float:
    """0 (black) to 255 (white), from `rgb(r, g, b)`."""
    red, green, blue = (int(part) for part in re.findall(r"\d+", css_colour)[:3])
    return 0.299 * red + 0.587 * green + 0.114 * blue


async def page_width(watched: Watched) -> int:
    width: int = await watched.page.evaluate("document.documentElement.scrollWidth")
    return width


async def test_the_listing_fits_a_phone_screen(open_page: OpenPage) -> None:
    watched = await open_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    make_files(watched)
    await watched.login()
    page = watched.page
    assert await page.locator("tr[data-testid=entry]").count() == 4
    await watched.shot("1-listing")
    width = await page_width(watched)
    assert width <= 392, f"the page scrolls sideways on a phone: {width} px wide in a 390 px viewport"
    name = page.locator(f"tr[data-testid=entry][data-name='{LONG_NAME}'] td.name a")
    box = await name.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 392, "the name can be read"
    async with page.expect_navigation():
        await page.locator("tr[data-testid=entry][data-name='data.csv'] td.name a").click()
    await page.locator("[data-testid=preview-table]").wait_for()
    await watched.shot("2-csv")
    assert await page_width(watched) <= 392
    watched.assert_clean()


async def test_the_dark_theme_follows_the_system(open_page: OpenPage) -> None:
    watched = await open_page(color_scheme="dark")
    make_files(watched)
    await watched.login()
    page = watched.page
    assert await page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    text = await page.evaluate("getComputedStyle(document.body).color")
    assert brightness(background) < 60, f"a dark background: {background}"
    assert brightness(text) > 180, f"light text: {text}"
    await watched.shot("1-listing-dark")
    async with page.expect_navigation():
        await page.locator("tr[data-testid=entry][data-name='README.md'] td.name a").click()
    await page.locator("[data-testid=preview-markdown] h1").wait_for()
    await watched.shot("2-markdown-dark")
    watched.assert_clean()
