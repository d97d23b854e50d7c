"""The folder page's actions in a real browser: selection bar, folder picker, drag to move, copy,
delete, upload conflicts, share, extract, downloads, symlinks and the remembered "Show hidden"."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from playwright.async_api import Locator, expect

from tests.browser.conftest import OpenPage, Watched

ROWS = "tr[data-testid=entry]"


def row(watched: Watched, name: str) -> Locator:
    return watched.page.locator(f"{ROWS}[data-name='{name}']")


async def names(watched: Watched) -> list[str]:
    found: list[str] = await watched.page.locator(ROWS).evaluate_all("rows => rows.map(row => row.dataset.name)")
    return found


async def tick(watched: Watched, *chosen: str) -> None:
    for name in chosen:
        await row(watched, name).locator(".check input").check()


async def menu(watched: Watched, name: str, action: str) -> None:
    await row(watched, name).get_by_test_id("row-menu").click()
    await watched.page.locator(f"[data-testid=row-menu-list] [data-menu-action={action}]").click()


async def test_select_several_and_move_them_with_the_folder_picker(logged_in: Watched) -> None:
    home, page = logged_in.site.home, logged_in.page
    for name in ("a.txt", "b.txt", "c.txt"):
        (home / name).write_text(name)
    (home / "archive" / "2024").mkdir(parents=True)
    await page.reload()
    bar = page.get_by_test_id("selection-bar")
    await expect(bar).to_be_hidden()
    await tick(logged_in, "a.txt", "b.txt")
    await expect(page.get_by_test_id("selection-count")).to_have_text("2 selected")
    await logged_in.shot("1-selection-bar")

    await bar.get_by_test_id("selection-move").click()
    picker = page.locator("dialog[data-testid=folder-picker]")
    await expect(picker.get_by_test_id("picker-where")).to_have_text(str(home))
    await picker.locator("[data-testid=picker-folder][data-path$='/archive']").click()
    await expect(picker.get_by_test_id("picker-where")).to_have_text(str(home / "archive"))
    await picker.locator("[data-testid=picker-folder][data-path$='/2024']").click()
    await expect(picker.get_by_test_id("picker-where")).to_have_text(str(home / "archive" / "2024"))
    await logged_in.shot("2-picker")
    async with page.expect_navigation():
        await picker.get_by_test_id("picker-choose").click()
    assert sorted(os.listdir(home / "archive" / "2024")) == ["a.txt", "b.txt"]
    assert await names(logged_in) == ["archive", "c.txt"]
    logged_in.assert_clean()


async def test_drag_a_row_onto_a_folder_and_onto_a_breadcrumb(logged_in: Watched) -> None:
    home, page = logged_in.site.home, logged_in.page
    (home / "inbox").mkdir()
    (home / "letter.txt").write_text("dear")
    await page.reload()
    async with page.expect_navigation():
        await row(logged_in, "letter.txt").drag_to(row(logged_in, "inbox"))
    assert (home / "inbox" / "letter.txt").read_text() == "dear"

    await page.goto(logged_in.site.browse_url(home / "inbox"))
    crumb = page.get_by_test_id("breadcrumbs").locator(f"a[data-path='{home}']")
    async with page.expect_navigation():
        await row(logged_in, "letter.txt").drag_to(crumb)
    assert (home / "letter.txt").read_text() == "dear"
    assert not (home / "inbox" / "letter.txt").exists()
    logged_in.assert_clean()


async def test_duplicate_and_copy_to_another_folder(logged_in: Watched) -> None:
    home, page = logged_in.site.home, logged_in.page
    (home / "report.txt").write_text("numbers")
    (home / "backup").mkdir()
    (home / "backup" / "report.txt").write_text("older numbers")
    await page.reload()
    async with page.expect_navigation():
        await menu(logged_in, "report.txt", "duplicate")
    assert (home / "report (copy).txt").read_text() == "numbers"

    await menu(logged_in, "report.txt", "copy-to")
    picker = page.locator("dialog[data-testid=folder-picker]")
    await picker.locator("[data-testid=picker-folder][data-path$='/backup']").click()
    await expect(picker.get_by_test_id("picker-where")).to_have_text(str(home / "backup"))
    async with page.expect_navigation():
        await picker.get_by_test_id("picker-choose").click()
    assert (home / "backup" / "report.txt").read_text() == "older numbers", "never clobbered"
    assert (home / "backup" / "report (1).txt").read_text() == "numbers"
    logged_in.assert_clean()


async def test_delete_the_selection_with_the_in_app_dialog(logged_in: Watched) -> None:
    home, page = logged_in.site.home, logged_in.page
    for name in ("x.log", "y.log", "keep.txt"):
        (home / name).write_text(name)
    await page.reload()
    await tick(logged_in, "x.log", "y.log")
    await page.get_by_test_id("selection-delete").click()
    dialog = page.locator("dialog[data-testid=delete-dialog]")
    await expect(dialog).to_contain_text("x.log, y.log")
    await expect(dialog).to_have_attribute("aria-labelledby", await dialog.locator("h2").get_attribute("id") or "")
    await logged_in.shot("1-delete-dialog")
    async with page.expect_navigation():
        await dialog.get_by_test_id("dialog-confirm").click()
    assert sorted(name for name in os.listdir(home) if not name.startswith(".")) == ["keep.txt"]
    logged_in.assert_clean()


async def test_a_server_refusal_is_shown_inline_in_the_dialog(logged_in: Watched) -> None:
    home, page = logged_in.site.home, logged_in.page
    (home / "taken.txt").write_text("here first")
    await page.reload()
    await page.get_by_test_id("new-file").click()
    dialog = page.locator("dialog[data-testid=new-file-dialog]")
    await dialog.get_by_label("File name").fill("taken.txt")
    await dialog.get_by_test_id("dialog-confirm").click()
    await expect(dialog.get_by_test_id("dialog-error")).to_contain_text("exists")
    assert (home / "taken.txt").read_text() == "here first"
    await dialog.get_by_label("File name").fill("..")
    await expect(dialog.get_by_test_id("dialog-error")).to_contain_text("not a file name")
    await logged_in.shot("1-inline-error")
    await dialog.get_by_label("File name").fill("fresh.md")
    async with page.expect_navigation():
        await dialog.get_by_test_id("dialog-confirm").click()
    assert (home / "fresh.md").read_text() == ""
    await expect(page.get_by_test_id("editor")).to_be_visible()  # a new file opens in the editor
    logged_in.expect_status(409, "/files/create")
    logged_in.assert_clean()


async def test_upload_conflicts_replace_keep_both_and_skip(logged_in: Watched) -> None:
    home, page = logged_in.site.home, logged_in.page
    for name in ("one.txt", "two.txt", "three.txt", "four.txt"):
        (home / name).write_text("old " + name)
    await page.reload()
    files = [{"name": name, "mimeType": "text/plain", "buffer": f"new {name}".encode()}
             for name in ("one.txt", "two.txt", "three.txt", "four.txt", "five.txt")]
    await page.set_input_files("[data-testid=upload-input]", files)  # type: ignore[arg-type]
    conflict = page.locator("dialog[data-testid=upload-conflict]")
    await expect(conflict).to_contain_text("one.txt already exists")
    await logged_in.shot("1-conflict")
    await conflict.get_by_test_id("dialog-replace").click()
    await expect(conflict).to_contain_text("two.txt already exists")
    await conflict.get_by_test_id("dialog-keep-both").click()
    await expect(conflict).to_contain_text("three.txt already exists")
    await conflict.get_by_test_id("dialog-apply-all").check()
    async with page.expect_navigation(timeout=20_000):
        await conflict.get_by_test_id("dialog-skip").click()
    assert (home / "one.txt").read_text() == "new one.txt"
    assert (home / "two.txt").read_text() == "old two.txt"
    assert (home / "two (1).txt").read_text() == "new two.txt"
    assert (home / "three.txt").read_text() == "old three.txt"
    assert (home / "four.txt").read_text() == "old four.txt", "apply to all skipped the last conflict too"
    assert (home / "five.txt").read_text() == "new five.txt"
    logged_in.assert_clean()


async def test_share_link_with_a_lifetime_and_a_copy_button(open_page: OpenPage) -> None:
    watched = await open_page(permissions=["clipboard-read", "clipboard-write"])
    (watched.site.home / "notes.txt").write_text("shared words")
    await watched.login()
    page = watched.page
    await menu(watched, "notes.txt", "share")
    dialog = page.locator("dialog[data-testid=share-dialog]")
    await dialog.get_by_test_id("share-lifetime").select_option("900")
    await dialog.get_by_test_id("share-create").click()
    url = dialog.get_by_test_id("share-url")
    await expect(url).to_have_value(re.compile(r"^http://127\.0\.0\.1:\d+/files/download/[\w-]+$"))
    await dialog.get_by_test_id("share-copy").click()
    await expect(dialog.get_by_test_id("share-copy")).to_have_text("Copied")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == await url.input_value()
    await watched.shot("1-share")
    response = await page.request.get(copied)
    assert await response.text() == "shared words"
    watched.assert_clean()


async def test_extract_an_archive_into_a_folder(logged_in: Watched) -> None:
    home, page = logged_in.site.home, logged_in.page
    with zipfile.ZipFile(home / "bundle.zip", "w") as archive:
        archive.writestr("inside/readme.txt", "unpacked")
    await page.reload()
    async with page.expect_navigation():
        await menu(logged_in, "bundle.zip", "extract")
    assert (home / "bundle" / "inside" / "readme.txt").read_text() == "unpacked"
    assert "bundle" in await names(logged_in)
    logged_in.assert_clean()


async def test_downloads_are_native_and_start_at_once(logged_in: Watched, tmp_path: Path) -> None:
    home, page = logged_in.site.home, logged_in.page
    (home / "data.bin").write_bytes(b"\x00\x01" * 1000)
    (home / "more.txt").write_text("more")
    await page.reload()
    async with page.expect_download() as waiting:
        await row(logged_in, "data.bin").locator("[data-action=download]").click()
    download = await waiting.value
    assert download.suggested_filename == "data.bin"
    assert Path(await download.path()).read_bytes() == b"\x00\x01" * 1000

    await tick(logged_in, "data.bin", "more.txt")
    async with page.expect_download() as waiting:
        await page.get_by_test_id("selection-download").click()
    download = await waiting.value
    assert download.suggested_filename.endswith(".zip")
    saved = tmp_path / "got.zip"
    await download.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        assert sorted(archive.namelist()) == ["data.bin", "more.txt"]
    logged_in.assert_clean()


async def test_symlinks_are_marked_and_a_broken_one_can_be_deleted(logged_in: Watched) -> None:
    home, page = logged_in.site.home, logged_in.page
    (home / "real.txt").write_text("real")
    (home / "alias.txt").symlink_to(home / "real.txt")
    (home / "dangling").symlink_to(home / "gone-for-good")
    await page.reload()
    alias = row(logged_in, "alias.txt")
    await expect(alias.get_by_test_id("symlink")).to_have_attribute("title", f"Link to {home / 'real.txt'}")
    dangling = row(logged_in, "dangling")
    await expect(dangling).to_have_attribute("data-broken", "true")
    broken_title = f"Broken link to {home / 'gone-for-good'}"
    await expect(dangling.get_by_test_id("symlink")).to_have_attribute("title", broken_title)
    await logged_in.shot("1-symlinks")
    await dangling.locator("[data-action=delete]").click()
    async with page.expect_navigation():
        await page.locator("dialog[data-testid=delete-dialog]").get_by_test_id("dialog-confirm").click()
    assert not os.path.lexists(home / "dangling")
    assert (home / "real.txt").exists() and (home / "alias.txt").is_symlink()
    logged_in.assert_clean()


async def test_show_hidden_is_kept_in_a_subfolder(logged_in: Watched) -> None:
    home, page = logged_in.site.home, logged_in.page
    (home / ".dotfile").write_text("x")
    (home / "sub").mkdir()
    (home / "sub" / ".inner").write_text("y")
    await page.reload()
    assert ".dotfile" not in await names(logged_in)
    async with page.expect_navigation():
        await page.get_by_test_id("toggle-hidden").click()
    assert ".dotfile" in await names(logged_in)
    async with page.expect_navigation():
        await row(logged_in, "sub").locator(".name a").click()
    assert await names(logged_in) == [".inner"]
    await page.goto(logged_in.site.browse_url(home))  # a plain address: remembered for the session
    assert ".dotfile" in await names(logged_in)
    await expect(page.get_by_test_id("toggle-hidden")).to_have_attribute("data-active", "true")
    logged_in.assert_clean()


async def test_select_all_across_pages(logged_in: Watched) -> None:
    home, page = logged_in.site.home, logged_in.page
    big = home / "many"
    big.mkdir()
    for number in range(520):
        (big / f"f{number:03d}").touch()
    await page.goto(logged_in.site.browse_url(big))
    await page.get_by_test_id("select-all").check()
    await expect(page.get_by_test_id("selection-count")).to_have_text("500 selected")
    await page.get_by_test_id("select-every").click()
    await expect(page.get_by_test_id("selection-count")).to_have_text("All 520 selected")
    await page.get_by_test_id("selection-delete").click()
    async with page.expect_navigation():
        await page.locator("dialog[data-testid=delete-dialog]").get_by_test_id("dialog-confirm").click()
    assert os.listdir(big) == []
    logged_in.assert_clean()
