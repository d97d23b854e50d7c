"""Editing and uploading in a real browser: CodeMirror with Ctrl+S, the upload button, and a drop."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from playwright.async_api import expect

from tests.browser.conftest import Watched

if TYPE_CHECKING:
    from playwright.async_api import FilePayload

NEW_TEXT = "fresh words\nsecond line"
PAYLOAD_JS = "new Uint8Array(3000).map((_, index) => (index * 7) % 256)"
PAYLOAD = bytes((index * 7) % 256 for index in range(3000))


async def test_edit_and_save_with_ctrl_s(watched: Watched) -> None:
    target = watched.site.home / "notes.txt"
    target.write_text("old content\nto be replaced\n")
    await watched.login()
    page = watched.page
    async with page.expect_navigation():
        await page.locator("tr[data-testid=entry][data-name='notes.txt'] td.name a").click()
    assert not await page.locator("[data-testid=editor]").is_visible()
    await page.click("[data-testid=edit]")
    content = page.locator("[data-testid=editor] .cm-content")
    await content.wait_for()
    assert "old content" in await content.inner_text()
    await watched.shot("1-editor-open")

    await content.click()
    await page.keyboard.press("Control+a")
    await page.keyboard.type(NEW_TEXT)
    await page.keyboard.press("Control+s")
    status = page.locator("[data-testid=editor-status]")
    await page.wait_for_function("el => el.textContent.startsWith('Saved at')", arg=await status.element_handle())
    assert target.read_text() == NEW_TEXT
    await watched.shot("2-saved")

    async with page.expect_navigation():  # Closing after a save shows the new contents.
        await page.click("[data-action=cancel-edit]")
    shown = await page.locator("[data-testid=preview-source]").inner_text()
    assert "fresh words" in shown and "second line" in shown and "old content" not in shown
    await watched.shot("3-preview-after-save")
    watched.assert_clean()


async def test_closing_with_unsaved_changes_asks_in_an_in_app_dialog(watched: Watched) -> None:
    target = watched.site.home / "draft.txt"
    target.write_text("kept words\n")
    await watched.login()
    page = watched.page
    async with page.expect_navigation():
        await page.locator("tr[data-testid=entry][data-name='draft.txt'] td.name a").click()
    await page.click("[data-testid=edit]")
    content = page.locator("[data-testid=editor] .cm-content")
    await content.click()
    await page.keyboard.type("unsaved ")
    dialog = page.get_by_test_id("discard-dialog")
    await page.click("[data-action=cancel-edit]")
    await expect(dialog).to_be_visible()
    await watched.shot("discard-dialog")
    await page.keyboard.press("Escape")  # Cancel: still editing, the typing kept
    await expect(dialog).to_be_hidden()
    await expect(content).to_contain_text("unsaved")
    await page.click("[data-action=cancel-edit]")
    await dialog.get_by_test_id("dialog-confirm").click()
    await expect(page.locator("[data-testid=editor]")).to_be_hidden()
    assert target.read_text() == "kept words\n"
    watched.assert_clean()


async def test_the_upload_button_uploads_two_files(watched: Watched) -> None:
    home = watched.site.home
    await watched.login()
    page = watched.page
    files: list[FilePayload] = [{"name": "first.bin", "mimeType": "application/octet-stream", "buffer": PAYLOAD},
             {"name": "second copy.txt", "mimeType": "text/plain", "buffer": "héllo, wörld\n".encode()}]
    async with page.expect_navigation(timeout=20_000):  # The page reloads once every upload has finished.
        await page.set_input_files("[data-testid=upload-input]", files)
    rows = page.locator("tr[data-testid=entry]")
    assert await rows.evaluate_all("rows => rows.map(row => row.dataset.name)") == ["first.bin", "second copy.txt"]
    assert (home / "first.bin").read_bytes() == PAYLOAD
    assert (home / "second copy.txt").read_bytes() == "héllo, wörld\n".encode()
    await watched.shot("uploaded")
    watched.assert_clean()


async def test_a_dropped_file_is_uploaded(watched: Watched) -> None:
    home = watched.site.home
    await watched.login()
    page = watched.page
    transfer = await page.evaluate_handle(f"""() => {{
        const transfer = new DataTransfer();
        transfer.items.add(new File([{PAYLOAD_JS}], "dropped.bin", {{ type: "application/octet-stream" }}));
        return transfer;
    }}""")
    await page.dispatch_event("#browser", "dragenter", {"dataTransfer": transfer})
    await page.locator("#dropzone").wait_for(state="visible")
    await watched.shot("1-dragging")
    async with page.expect_navigation(timeout=20_000):
        await page.dispatch_event("#browser", "drop", {"dataTransfer": transfer})
    assert await page.locator("tr[data-testid=entry][data-name='dropped.bin']").count() == 1
    assert (home / "dropped.bin").read_bytes() == PAYLOAD
    assert not await page.locator("#dropzone").is_visible()
    size = await page.locator("tr[data-testid=entry][data-name='dropped.bin'] td.num").inner_text()
    assert re.fullmatch(r"2\.9 KB", size)
    await watched.shot("2-dropped-and-listed")
    watched.assert_clean()
