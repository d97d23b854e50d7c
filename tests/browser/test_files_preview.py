"""Previews in a real browser: CSV, Markdown, PDF, images, and attempts to run scripts that must fail."""

from __future__ import annotations

from tests.browser.conftest import Watched
from tests.files.test_documents import make_pdf, make_png

XSS_MARKDOWN = """# Notes

<script>window.__xss=1</script>

<img src=x onerror="window.__xss=1">

[a](javascript:window.__xss=1)

<a href="javascript:window.__xss=1">b</a>
"""
XSS_NAME = "<img src=x onerror=window.__xss=1>.md"
SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80">
<rect width="120" height="80" fill="teal"/>
<script><![CDATA[
window.__ran = true;
try { parent.__xss = 1; window.__reached = "parent"; } catch (error) { window.__reached = "blocked"; }
]]></script>
</svg>
"""


async def open_file(watched: Watched, name: str) -> None:
    """Click the file in the home listing (as a user would) and wait for its page."""
    async with watched.page.expect_navigation():
        await watched.page.locator(f"tr[data-testid=entry][data-name='{name}'] td.name a").click()
    assert watched.page.url == watched.site.browse_url(watched.site.home / name)


async def xss_fired(watched: Watched) -> object:
    return await watched.page.evaluate("window.__xss")


async def test_a_csv_is_a_table_and_html_in_a_cell_stays_text(watched: Watched) -> None:
    (watched.site.home / "fruit.csv").write_text("name,qty\napple,3\n<b>x</b>,5\n")
    await watched.login()
    await open_file(watched, "fruit.csv")
    table = watched.page.locator("[data-testid=preview-table]")
    await table.wait_for()
    header = await table.locator("thead th").all_inner_texts()
    cells = await table.locator("tbody tr").evaluate_all(
        "rows => rows.map(row => [...row.cells].map(cell => cell.textContent))")
    assert header == ["name", "qty"]
    assert cells == [["apple", "3"], ["<b>x</b>", "5"]]
    assert await table.locator("b").count() == 0, "the cell's markup is shown, not applied"
    assert "2 of 2" in await watched.page.locator("[data-testid=table-count]").inner_text()
    await watched.shot("csv")
    watched.assert_clean()


async def test_markdown_renders_and_the_toggle_shows_the_source(watched: Watched) -> None:
    home = watched.site.home
    (home / "pics").mkdir()
    (home / "pics" / "dot.png").write_bytes(make_png(4, 4))
    (home / "README.md").write_text("# Hello heading\n\nSome *emphasis* here.\n\n![dot](pics/dot.png)\n")
    await watched.login()
    await open_file(watched, "README.md")
    page = watched.page
    rendered, source = page.locator("[data-testid=preview-markdown]"), page.locator("[data-testid=preview-source]")
    assert await rendered.locator("h1").inner_text() == "Hello heading"
    assert await rendered.locator("em").inner_text() == "emphasis"
    image = rendered.locator("img")
    await page.wait_for_function("img => img.complete", arg=await image.element_handle())
    assert await image.evaluate("img => img.naturalWidth") == 4, "the relative image resolves against the folder"
    assert not await source.is_visible()
    await watched.shot("1-markdown-rendered")
    await page.click("[data-testid=toggle-source]")
    assert await source.is_visible() and not await rendered.is_visible()
    assert "# Hello heading" in await source.inner_text()
    await watched.shot("2-markdown-source")
    await page.click("[data-testid=toggle-source]")
    assert await rendered.is_visible() and not await source.is_visible()
    watched.assert_clean()


async def test_scripts_in_markdown_and_in_a_file_name_do_not_run(watched: Watched) -> None:
    home = watched.site.home
    (home / "evil.md").write_text(XSS_MARKDOWN)
    (home / XSS_NAME).write_text("# named badly\n")
    await watched.login()
    page = watched.page
    row = page.locator("tr[data-testid=entry]").filter(has_text="onerror")
    assert await row.get_attribute("data-name") == XSS_NAME
    assert await row.locator("td.name a").inner_text() == XSS_NAME, "the name is shown as text"
    assert await page.locator("[data-testid=listing] img").count() == 0
    assert await xss_fired(watched) is None
    await watched.shot("1-listing-with-a-hostile-name")

    async with page.expect_navigation():
        await row.locator("td.name a").click()
    assert XSS_NAME in await page.title()
    assert await page.locator("main img, header img").count() == 0
    assert await xss_fired(watched) is None
    await watched.shot("2-hostile-name-page")

    await page.goto(watched.site.browse_url(home / "evil.md"))
    article = page.locator("[data-testid=preview-markdown]")
    assert await article.locator("h1").inner_text() == "Notes"
    for dangerous in ("script", "img", "[onerror]", "a[href^='javascript' i]"):
        assert await article.locator(dangerous).count() == 0, dangerous
    for link in await article.locator("a").all():
        await link.click()
    await page.wait_for_timeout(200)
    assert await xss_fired(watched) is None
    await watched.shot("3-hostile-markdown")
    watched.assert_clean()


async def test_an_svg_with_a_script_does_not_run_on_the_apps_origin(watched: Watched) -> None:
    (watched.site.home / "evil.svg").write_text(SVG)
    await watched.login()
    await open_file(watched, "evil.svg")
    page = watched.page
    frame_element = page.locator("[data-testid=preview-frame]")
    await frame_element.wait_for()
    assert await frame_element.get_attribute("sandbox") == "allow-scripts"
    assert "<script>" in await page.locator("[data-testid=preview-source]").inner_text()
    frame = await (await frame_element.element_handle()).content_frame()
    assert frame is not None
    await frame.wait_for_function("window.__ran === true")
    assert await frame.evaluate("[window.__reached, self.origin]") == ["blocked", "null"]
    assert await xss_fired(watched) is None
    await watched.shot("1-svg-in-a-sandbox")

    await page.goto(watched.site.url("/files/view?path=evil.svg"))  # Opened on its own, as "Raw" does.
    await page.wait_for_function("window.__ran === true")
    assert await page.evaluate("self.origin") == "null", "an opaque origin: no cookies, no API"
    assert await page.evaluate("(() => { try { return document.cookie; } catch (e) { return e.name; } })()") \
        == "SecurityError"
    await watched.shot("2-svg-raw", full_page=False)  # A bare SVG document has no page to measure.
    watched.assert_clean()


async def test_a_pdf_shows_its_text(watched: Watched) -> None:
    (watched.site.home / "report.pdf").write_bytes(make_pdf([["Quarterly figures", "All good"], ["Page two"]]))
    await watched.login()
    await open_file(watched, "report.pdf")
    page = watched.page
    text = await page.locator("[data-testid=pdf-text]").inner_text()
    assert text.split("\n")[:3] == ["Quarterly figures", "All good", "Page two"]
    frame = page.locator("[data-testid=preview-pdf]")
    assert await frame.is_visible()
    box = await frame.bounding_box()
    assert box is not None and box["height"] > 100
    await watched.shot("pdf")
    watched.assert_clean()


async def test_an_image_shows(watched: Watched) -> None:
    (watched.site.home / "pixel.png").write_bytes(make_png(30, 20))
    await watched.login()
    await open_file(watched, "pixel.png")
    image = watched.page.locator("[data-testid=preview-image]")
    await watched.page.wait_for_function("img => img.complete", arg=await image.element_handle())
    assert await image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [30, 20]
    await watched.shot("image")
    watched.assert_clean()
