"""Notebooks and office documents on the file page, in a real browser."""

from __future__ import annotations

import base64
import contextlib
import io
import os

import pytest
from playwright.async_api import expect

from daemon.files import preview
from daemon.keys import CONFIG, NOTEBOOKS
from tests.browser.conftest import Watched
from tests.conftest import eventually
from tests.files.test_documents import make_png
from tests.pages.test_notebook_view import code, make_notebook, markdown, sample_notebook


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
    await logged_in.shot("notebook")
    sandboxed = "console: Blocked script execution in 'about:srcdoc' because the document's frame is sandboxed"
    blocked = [error for error in logged_in.errors if error.startswith(sandboxed)]
    assert len(blocked) == 1, "the output's own script was stopped by the sandbox"
    logged_in.errors.remove(blocked[0])
    logged_in.assert_clean()


async def test_run_shows_the_output_in_place_and_the_kernel_stops_with_the_page(logged_in: Watched) -> None:
    home = logged_in.site.home
    (home / "sums.ipynb").write_bytes(make_notebook([markdown("# Sums"), code("print(1+1)"), code("3 * 7")]))
    await open_file(logged_in, "sums.ipynb")
    page = logged_in.page
    cell = page.locator("[data-testid=cell][data-index='1']")
    await cell.locator("[data-testid=run-cell]").click()
    await expect(cell.locator("[data-testid=output-stream]")).to_have_text("2\n", timeout=60_000)
    await expect(cell.locator("[data-testid=prompt]")).to_have_text("[1]")
    await expect(page.locator("[data-testid=interrupt]")).to_be_hidden()
    table = logged_in.site.server.app[NOTEBOOKS]
    assert len(table._sessions) == 1
    await page.locator("[data-testid=run-all]").click()
    last = page.locator("[data-testid=cell][data-index='2']")
    await expect(last.locator("[data-testid=output-text]")).to_have_text("21", timeout=60_000)
    await expect(last.locator("[data-testid=prompt]")).to_have_text("[3]")
    assert len(table._sessions) == 1, "one kernel for the page, however many runs"
    await logged_in.shot("ran")
    await page.goto(logged_in.site.browse_url(home))  # leaving the page stops its kernel
    await eventually(lambda: not table._sessions)
    logged_in.assert_clean()


async def test_run_all_stops_at_an_error_and_interrupt_ends_a_long_cell(logged_in: Watched) -> None:
    home = logged_in.site.home
    cells = [code("import time"), code("1/0"), code("print('never')"), code("time.sleep(600)")]
    (home / "stops.ipynb").write_bytes(make_notebook(cells))
    await open_file(logged_in, "stops.ipynb")
    page = logged_in.page
    await page.locator("[data-testid=run-all]").click()
    failed = page.locator("[data-testid=cell][data-index='1']")
    await expect(failed.locator("[data-testid=output-error]")).to_contain_text("ZeroDivisionError", timeout=60_000)
    await expect(failed).to_have_attribute("data-state", "failed")
    await expect(page.locator("[data-testid=run-all]")).to_be_enabled()
    await expect(page.locator("[data-testid=cell][data-index='2'] [data-testid=output-stream]")).to_have_count(0)
    sleeper = page.locator("[data-testid=cell][data-index='3']")
    await sleeper.locator("[data-testid=run-cell]").click()
    await expect(sleeper).to_have_attribute("data-state", "running")
    await expect(page.locator("[data-testid=run-all]")).to_be_disabled()
    await page.locator("[data-testid=interrupt]").click()
    await expect(sleeper.locator("[data-testid=output-error]")).to_contain_text("KeyboardInterrupt", timeout=60_000)
    await expect(page.locator("[data-testid=interrupt]")).to_be_hidden()
    logged_in.assert_clean()


def make_docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Revenue grew <b>nicely</b>.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "Region", "North"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


async def test_an_office_document_shows_its_text_and_its_pdf(logged_in: Watched) -> None:
    home = logged_in.site.home
    (home / "report.docx").write_bytes(make_docx())
    page = logged_in.page
    libreoffice = preview.find_libreoffice(logged_in.site.server.app[CONFIG].libreoffice)
    if libreoffice is None and os.environ.get("CI"):
        pytest.fail("LibreOffice is missing (make test installs it)")
    async with page.expect_response(lambda response: "preview=true" in response.url,
                                    timeout=120_000) if libreoffice else contextlib.nullcontext() as converted:
        await open_file(logged_in, "report.docx")
        text = page.locator("[data-testid=document-text]")
        await expect(text).to_contain_text("Quarterly report")
        await expect(text).to_contain_text("Revenue grew <b>nicely</b>.")
        await expect(text).to_contain_text("Region")
    await expect(page.locator("[data-testid=preview-document-pdf]")).to_have_count(1 if libreoffice else 0)
    if libreoffice:
        assert converted is not None
        response = await converted.value
        assert response.status == 200 and response.headers["content-type"] == "application/pdf"
    await logged_in.shot("docx")
    logged_in.assert_clean()


async def test_outputs_of_a_run_follow_the_page_rules(logged_in: Watched) -> None:
    png = base64.b64encode(make_png(3, 2)).decode()
    source = ("import base64, sys\nfrom IPython.display import HTML, Image, display\n"
              "display(HTML('<b id=\"made\">made</b><script>parent.__xss = 1</script>'))\n"
              f"display(Image(data=base64.b64decode('{png}')))\n"
              "print('<i>not markup</i>', file=sys.stderr)\n")
    (logged_in.site.home / "rich.ipynb").write_bytes(make_notebook([code(source)]))
    await open_file(logged_in, "rich.ipynb")
    page = logged_in.page
    await page.locator("[data-testid=run-cell]").click()
    frame = page.locator("iframe[data-testid=output-html]")
    await expect(frame).to_have_attribute("sandbox", "", timeout=60_000)
    await expect(page.frame_locator("[data-testid=output-html]").locator("#made")).to_have_text("made")
    await expect(page.locator("[data-testid=output-image]")).to_have_js_property("naturalWidth", 3)
    stderr = page.locator("[data-testid=output-stream].stderr")
    await expect(stderr).to_have_text("<i>not markup</i>\n")
    await expect(stderr.locator("i")).to_have_count(0)
    assert await page.evaluate("window.__xss") is None
    await expect(page.locator("[data-testid=cell]")).to_have_attribute("data-state", "done")
    sandboxed = "console: Blocked script execution in 'about:srcdoc' because the document's frame is sandboxed"
    await eventually(lambda: any(error.startswith(sandboxed) for error in logged_in.errors))
    logged_in.errors[:] = [error for error in logged_in.errors if not error.startswith(sandboxed)]
    logged_in.assert_clean()
