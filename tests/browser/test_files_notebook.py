"""Notebooks and office documents on the file page, in a real browser."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import Watched
from tests.pages.test_notebook_view import sample_notebook


async def open_file(watched: Watched, name: str) -> None:
    await watched.page.goto(watched.site.browse_url(watched.site.home / name))


async def test_a_notebook_renders_read_only_and_nothing_in_it_reaches_the_page(logged_in: Watched) -> None:
    (logged_in.site.home / "analysis.ipynb").write_bytes(sample_notebook())
    await open_file(logged_in, "analysis.ipynb")
    page = logged_in.page
    cells = page.locator("[data-testid=cell]")
    await expect(cells).to_have_count(6)
    await expect(cells.nth(0).locator("h1")).to_have_text("Title")
    await expect(cells.nth(0).locator("script")).to_have_count(0)
    await expect(cells.nth(1).locator("[data-testid=output-stream]")).to_have_text("hello")
    await expect(cells.nth(1).locator("[data-testid=prompt]")).to_have_text("[1]")
    image = cells.nth(2).locator("[data-testid=output-image]")
    await expect(image).to_have_js_property("naturalWidth", 3)
    await expect(cells.nth(4).locator("[data-testid=output-error]")).to_contain_text(
        "ZeroDivisionError: division by zero")
    frame_element = cells.nth(3).locator("iframe[data-testid=output-html]")
    assert await frame_element.get_attribute("sandbox") == "", "no permission at all: not even allow-same-origin"
    frame = page.frame_locator("[data-testid=output-html]")
    await expect(frame.locator("#inside")).to_have_text("bold")
    # Code running inside the frame (as the output's own script would) cannot reach this page.
    inner = await (await frame_element.element_handle()).content_frame()
    assert inner is not None
    reached = await inner.evaluate("() => { try { return parent.document.title } catch (e) { return e.name } }")
    assert reached == "SecurityError"
    assert await page.evaluate("window.__xss") is None
    await expect(page.locator("[data-testid=run-cell]")).to_have_count(0)  # the notebook API is off here
    await logged_in.shot("notebook")
    sandboxed = "console: Blocked script execution in 'about:srcdoc' because the document's frame is sandboxed"
    blocked = [error for error in logged_in.errors if error.startswith(sandboxed)]
    assert len(blocked) == 1, "the output's own script was stopped by the sandbox"
    logged_in.errors.remove(blocked[0])
    logged_in.assert_clean()
