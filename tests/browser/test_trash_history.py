"""Review and undo in a real browser: delete then Undo, the trash page's Restore (with a new name when
the place is taken) and Empty, the editor's overwrite undone from the History panel, and the activity
page saying who did what."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPage, Watched

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1440, "height": 900}}


async def delete_from_listing(watched: Watched, name: str) -> None:
    page = watched.page
    # The selection's Delete: the same on a phone, where a row's own buttons are in its menu.
    await page.locator(f"tr[data-testid=entry][data-name='{name}'] .check input").check()
    await page.get_by_test_id("selection-delete").click()
    async with page.expect_navigation():
        await page.locator("dialog[data-testid=delete-dialog]").get_by_test_id("dialog-confirm").click()


@pytest.mark.parametrize(("options", "scheme"), [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop", "phone"])
async def test_delete_then_undo_brings_the_file_back(open_page: OpenPage, options: dict[str, object],
                                                      scheme: str) -> None:
    watched = await open_page(**options, color_scheme=scheme)
    home, page = watched.site.home, watched.page
    (home / "draft.txt").write_text("keep me")
    await watched.login()
    await delete_from_listing(watched, "draft.txt")
    assert not (home / "draft.txt").exists()
    undo = page.get_by_test_id("undo")
    await expect(undo).to_be_visible()
    await expect(page.locator("#toast")).to_contain_text("Deleted draft.txt")
    await watched.shot("1-undo-toast")
    async with page.expect_navigation():
        await undo.click()
    assert (home / "draft.txt").read_text() == "keep me"
    await expect(page.locator("tr[data-testid=entry][data-name='draft.txt']")).to_be_visible()
    watched.assert_clean()


async def test_the_trash_page_restores_under_a_new_name_and_empties(logged_in: Watched) -> None:
    home, page = logged_in.site.home, logged_in.page
    (home / "report.txt").write_text("first")
    await page.reload()
    await delete_from_listing(logged_in, "report.txt")
    (home / "report.txt").write_text("second, made meanwhile")
    (home / "old.txt").write_text("old")
    await page.reload()
    await delete_from_listing(logged_in, "old.txt")
    await page.get_by_test_id("nav-trash").click()
    rows = page.get_by_test_id("trash-row")
    await expect(rows).to_have_count(2)
    first = page.locator("tr[data-testid=trash-row][data-name='report.txt']")
    await expect(first).to_contain_text(str(home))
    await logged_in.shot("1-trash")
    await first.get_by_test_id("trash-restore").click()
    dialog = page.locator("dialog[data-testid=restore-dialog]")
    await expect(dialog).to_be_visible()
    suggested = await dialog.get_by_test_id("dialog-input").input_value()
    assert suggested != "report.txt" and suggested.endswith(".txt")
    await logged_in.shot("2-restore-clobber-dialog")
    await dialog.get_by_test_id("dialog-confirm").click()
    await expect(first).to_have_count(0)
    assert (home / suggested).read_text() == "first"
    assert (home / "report.txt").read_text() == "second, made meanwhile"
    await page.get_by_test_id("trash-empty").click()
    async with page.expect_navigation():
        await page.locator("dialog[data-testid=empty-dialog]").get_by_test_id("dialog-confirm").click()
    await expect(page.get_by_test_id("trash-nothing")).to_be_visible()
    assert not (home / "old.txt").exists()
    logged_in.expect_status(409, "/files/trash/restore")  # the first try, answered with the suggestion
    logged_in.assert_clean()


@pytest.mark.parametrize(("options", "scheme"), [(DESKTOP, "dark"), (PHONE, "light")], ids=["desktop", "phone"])
async def test_an_overwrite_in_the_editor_is_undone_from_history(open_page: OpenPage, options: dict[str, object],
                                                                  scheme: str) -> None:
    watched = await open_page(**options, color_scheme=scheme)
    home, page = watched.site.home, watched.page
    target = home / "poem.txt"
    target.write_text("roses are red\nviolets are blue\n")
    await watched.login()
    await page.goto(watched.site.browse_url(target))
    await page.click("[data-testid=edit]")
    content = page.locator("[data-testid=editor] .cm-content")
    await content.wait_for()
    await content.click()
    await page.keyboard.press("Control+a")
    await page.keyboard.type("an agent was here\n")
    await page.keyboard.press("Control+s")
    status = page.locator("[data-testid=editor-status]")
    await page.wait_for_function("el => el.textContent.startsWith('Saved at')", arg=await status.element_handle())
    assert target.read_text() == "an agent was here\n"
    async with page.expect_navigation():
        await page.click("[data-action=cancel-edit]")

    await page.get_by_test_id("history").locator("summary").click()
    versions = page.get_by_test_id("history-version")
    await expect(versions).to_have_count(1)
    await expect(versions.first).to_contain_text("editor")
    diff = page.get_by_test_id("history-diff-table")
    await expect(diff).to_contain_text("violets are blue")
    await expect(diff).to_contain_text("an agent was here")
    await watched.shot("1-history-diff")
    await versions.first.get_by_test_id("history-restore").click()
    async with page.expect_navigation():
        await page.locator("dialog[data-testid=history-restore-dialog]").get_by_test_id("dialog-confirm").click()
    assert target.read_text() == "roses are red\nviolets are blue\n"
    await expect(page.get_by_test_id("preview-source")).to_contain_text("violets are blue")
    await page.get_by_test_id("history").locator("summary").click()
    await expect(page.get_by_test_id("history-version")).to_have_count(2)  # the agent's text is a version now
    await watched.shot("2-restored")
    watched.assert_clean()


async def test_the_activity_page_lists_the_write_and_the_delete_with_who(logged_in: Watched) -> None:
    home, page = logged_in.site.home, logged_in.page
    (home / "gone.txt").write_text("x")
    await page.reload()
    await delete_from_listing(logged_in, "gone.txt")
    response = await page.request.post(logged_in.site.url("/files/write"),
                                       data={"path": str(home / "agent.txt"), "content": "by the agent"},
                                       headers={"Authorization": "Bearer " + _key(), "X-User-Id": "u-1",
                                                "X-Session-Id": "chat-9"})
    assert response.ok
    await page.get_by_test_id("nav-activity").click()
    rows = page.get_by_test_id("activity-row")
    await expect(rows).to_have_count(2)
    write, delete = rows.nth(0), rows.nth(1)
    await expect(write).to_have_attribute("data-kind", "write")
    await expect(write).to_contain_text("agent.txt")
    await expect(write.get_by_test_id("activity-who")).to_have_text("api · user u-1 · chat chat-9")
    await expect(delete).to_have_attribute("data-kind", "delete")
    await expect(delete.get_by_test_id("activity-who")).to_have_text("page")
    await logged_in.shot("1-activity")
    await page.get_by_test_id("activity-path").fill(str(home / "gone.txt"))
    async with page.expect_navigation():
        await page.get_by_test_id("activity-filter").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-kind", "delete")
    logged_in.assert_clean()


def _key() -> str:
    from tests.conftest import KEY

    return KEY
