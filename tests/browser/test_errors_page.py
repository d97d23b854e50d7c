"""The styled error page as Chromium shows it: an unreadable file, an unknown URL, and JSON for fetch()."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import OpenPage, Watched

VARIANTS: dict[str, dict[str, Any]] = {
    "desktop-light": {"viewport": {"width": 1440, "height": 900}, "color_scheme": "light"},
    "phone-dark": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
                   "color_scheme": "dark"},
}


async def icon_drawn(watched: Watched) -> bool:
    """The first icon on the page has a size and its sprite symbol resolved (an SVG <use> to a missing
    symbol draws nothing and logs nothing, so ask the sprite itself)."""
    box = await watched.page.locator("svg.icon").first.bounding_box()
    href: str = await watched.page.locator("svg.icon use").first.get_attribute("href") or ""
    sprite, _, symbol = href.partition("#")
    found: bool = await watched.page.evaluate(
        """async ([sprite, symbol]) => {
            const text = await (await fetch(sprite)).text();
            return new DOMParser().parseFromString(text, "image/svg+xml").getElementById(symbol) !== null;
        }""", [sprite, symbol])
    return box is not None and box["width"] > 8 and found


@pytest.mark.parametrize("variant", VARIANTS)
async def test_an_unreadable_file_and_an_unknown_url_show_the_styled_page(open_page: OpenPage, variant: str) -> None:
    watched = await open_page(**VARIANTS[variant])
    await watched.login()
    page = watched.page
    response = await page.goto(watched.site.url("/browse/proc/1/mem"))
    assert response is not None and response.status == 403
    watched.expect_status(403, "/browse/proc/1/mem")
    assert (await page.locator("h1").inner_text()).startswith("403")
    assert await page.get_by_test_id("error-detail").inner_text()
    assert await icon_drawn(watched)
    await watched.shot(f"{variant}-403")

    response = await page.goto(watched.site.url("/no/such/page"))
    assert response is not None and response.status == 404
    watched.expect_status(404, "/no/such/page")
    assert "Nothing here" in await page.locator("h1").inner_text()
    await watched.shot(f"{variant}-404")
    async with page.expect_navigation():
        await page.get_by_test_id("error-home").click()
    assert page.url == watched.site.browse_url(watched.site.home)
    watched.assert_clean()


async def test_the_pages_own_fetches_still_get_json(logged_in: Watched) -> None:
    reply: dict[str, Any] = await logged_in.page.evaluate(
        """async () => {
            const response = await fetch("/no/such/page");
            return {status: response.status, type: response.headers.get("content-type"), body: await response.text()};
        }""")
    assert reply == {"status": 404, "type": "application/json", "body": '{"detail":"Not Found"}'}
    logged_in.expect_status(404, "/no/such/page")
    logged_in.assert_clean()
