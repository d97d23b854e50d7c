"""The image viewer (fit, zoom, arrow keys through the folder) and the browse page's grid of thumbnails,
in a real Chromium at desktop and phone sizes, light and dark."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPage, Watched
from tests.files.test_documents import make_png

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
SIZES = [pytest.param(DESKTOP, "light", id="desktop-light"), pytest.param(PHONE, "dark", id="phone-dark")]


def photos(watched: Watched) -> None:
    """Three images (wider than any screen) and a text file in a folder."""
    folder = watched.site.home / "photos"
    folder.mkdir()
    for name, (width, height) in {"a.png": (3000, 2000), "B.png": (1200, 3000), "c.png": (800, 600)}.items():
        (folder / name).write_bytes(make_png(width, height))
    (folder / "notes.txt").write_text("not an image\n")


async def image_width(watched: Watched) -> float:
    box = await watched.page.locator("[data-testid=preview-image]").bounding_box()
    assert box is not None
    return float(box["width"])


@pytest.mark.parametrize(("viewport", "scheme"), SIZES)
async def test_the_viewer_fits_zooms_and_steps_through_the_folder(open_page: OpenPage, viewport: dict[str, int],
                                                                  scheme: str) -> None:
    watched = await open_page(viewport=viewport, color_scheme=scheme, has_touch=viewport is PHONE)
    photos(watched)
    await watched.login()
    page = watched.page
    await page.goto(watched.site.browse_url(watched.site.home / "photos" / "a.png"))
    image = page.locator("[data-testid=preview-image]")
    await page.wait_for_function("img => img.complete && img.naturalWidth === 3000", arg=await image.element_handle())
    stage = await page.locator("[data-testid=viewer-stage]").bounding_box()
    fitted = await image.bounding_box()
    assert stage is not None and fitted is not None
    assert fitted["width"] <= stage["width"] + 1 and fitted["height"] <= stage["height"] + 1, "fits the window"
    assert fitted["width"] < viewport["width"]
    await expect(page.locator("[data-testid=viewer-count]")).to_have_text("1 / 3")
    await expect(page.locator("[data-testid=zoom-level]")).to_contain_text("Fit")
    await watched.shot(f"1-fit-{scheme}")

    await page.click("[data-testid=zoom-in]")
    await expect(page.locator("[data-testid=zoom-level]")).not_to_contain_text("Fit")
    zoomed = await image_width(watched)
    assert zoomed > fitted["width"] * 1.2
    await page.keyboard.press("+")
    assert await image_width(watched) > zoomed * 1.2
    await page.keyboard.press("-")
    assert abs(await image_width(watched) - zoomed) < 2
    await watched.shot(f"2-zoomed-{scheme}", full_page=False)
    await page.keyboard.press("0")
    await expect(page.locator("[data-testid=zoom-level]")).to_contain_text("Fit")
    assert abs(await image_width(watched) - fitted["width"]) < 2

    # The next image is the folder's next by name (B.png, case-insensitively), with no page load.
    await page.evaluate("window.__samePage = true")
    await page.keyboard.press("ArrowRight")
    await expect(page).to_have_url(watched.site.browse_url(watched.site.home / "photos" / "B.png"))
    await expect(page.locator("[data-testid=viewer-count]")).to_have_text("2 / 3")
    await page.wait_for_function("img => img.complete && img.naturalWidth === 1200", arg=await image.element_handle())
    assert await page.title() == "B.png · opentermd"
    assert await page.locator("[data-testid=download]").get_attribute("download") == "B.png"
    await page.keyboard.press("ArrowRight")
    await expect(page.locator("[data-testid=viewer-count]")).to_have_text("3 / 3")
    await page.keyboard.press("ArrowRight")  # wraps around
    await expect(page.locator("[data-testid=viewer-count]")).to_have_text("1 / 3")
    await page.keyboard.press("ArrowLeft")
    await expect(page.locator("[data-testid=viewer-count]")).to_have_text("3 / 3")
    assert await page.evaluate("window.__samePage") is True
    await watched.shot(f"3-stepped-{scheme}")
    watched.assert_clean()


async def test_wheel_zooms_around_the_pointer(watched: Watched) -> None:
    photos(watched)
    await watched.login()
    page = watched.page
    await page.goto(watched.site.browse_url(watched.site.home / "photos" / "c.png"))
    image = page.locator("[data-testid=preview-image]")
    await page.wait_for_function("img => img.complete && img.naturalWidth === 800", arg=await image.element_handle())
    before = await image_width(watched)
    await image.hover()
    await page.mouse.wheel(0, -400)
    await expect(page.locator("[data-testid=zoom-level]")).not_to_contain_text("Fit")
    assert await image_width(watched) > before
    watched.assert_clean()


@pytest.mark.parametrize(("viewport", "scheme"), [*SIZES, pytest.param(DESKTOP, "dark", id="desktop-dark")])
async def test_the_grid_shows_thumbnails_and_is_remembered(open_page: OpenPage, viewport: dict[str, int],
                                                           scheme: str) -> None:
    watched = await open_page(viewport=viewport, color_scheme=scheme)
    photos(watched)
    await watched.login()
    page = watched.page
    await page.goto(watched.site.browse_url(watched.site.home / "photos"))
    thumbs = page.locator("[data-testid=thumbnail]")
    assert await thumbs.count() == 3
    assert not await thumbs.first.is_visible(), "the list view shows no thumbnails"
    await page.click("[data-testid=toggle-grid]")
    await expect(page.locator("[data-testid=listing]")).to_have_attribute("data-view", "grid")
    for index in range(3):
        await page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                     arg=await thumbs.nth(index).element_handle())
    widths = await thumbs.evaluate_all("images => images.map(image => image.naturalWidth)")
    assert max(widths) <= 320 and all(width > 0 for width in widths)
    await watched.shot(f"grid-{scheme}")
    await page.reload()
    await expect(page.locator("[data-testid=listing]")).to_have_attribute("data-view", "grid")
    await page.keyboard.press("g")
    await expect(page.locator("[data-testid=listing]")).not_to_have_attribute("data-view", "grid")
    watched.assert_clean()


async def test_a_swipe_on_a_phone_steps_to_the_next_image(open_page: OpenPage) -> None:
    watched = await open_page(viewport=PHONE, has_touch=True, is_mobile=True)
    photos(watched)
    await watched.login()
    page = watched.page
    await page.goto(watched.site.browse_url(watched.site.home / "photos" / "a.png"))
    box = await page.locator("[data-testid=viewer-stage]").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    touch = await page.context.new_cdp_session(page)
    points = [box["x"] + box["width"] * 0.8, box["x"] + box["width"] * 0.5, box["x"] + box["width"] * 0.2]
    await touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": points[0], "y": y}]})
    for x in points[1:]:
        await touch.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
    await touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    await expect(page.locator("[data-testid=viewer-count]")).to_have_text("2 / 3")
    await expect(page).to_have_url(watched.site.browse_url(watched.site.home / "photos" / "B.png"))
    watched.assert_clean()
