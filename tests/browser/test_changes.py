"""The changes page in a real browser: the listing's marks, the diff, stage, commit, discard."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPage, Watched
from tests.browser.test_accessibility import VARIANTS, Audit


def make_repository(home: Path) -> Path:
    project = home / "project"
    project.mkdir()

    def git(*arguments: str) -> None:
        subprocess.run(["git", "-C", str(project), "-c", "user.name=Tester", "-c", "user.email=t@example.com",
                        *arguments], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.name", "Repo Person")
    git("config", "user.email", "repo@example.com")
    (project / "a.txt").write_text("one\ntwo\nthree\n")
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    (project / "a.txt").write_text("one\nTWO <b>bold</b>\nthree\n")
    (project / "scratch.txt").write_text("an agent's notes\n")
    return project


async def logged_in_at(open_page: OpenPage, **options: object) -> Watched:
    watched = await open_page(**options)
    await watched.login()
    return watched


async def test_changes_page_shows_the_diff_stages_and_commits(open_page: OpenPage) -> None:
    watched = await logged_in_at(open_page, viewport={"width": 1440, "height": 900})
    page, project = watched.page, make_repository(watched.site.home)
    await page.goto(watched.site.browse_url(project))
    row = page.locator("[data-testid=entry][data-name='a.txt']")
    await expect(row.locator("[data-testid=git-mark]")).to_have_text("M")
    await expect(page.locator("[data-testid=entry][data-name='scratch.txt'] [data-testid=git-mark]")).to_have_text("?")
    await watched.shot("1-listing")
    async with page.expect_navigation():
        await page.locator("[data-testid=open-changes]").click()
    changes = page.locator("[data-testid=change]")
    await expect(changes).to_have_count(2)
    a = page.locator("[data-testid=change][data-file='a.txt']")
    added = a.locator("[data-testid=unstaged-diff] .diff-line.added")
    await expect(added).to_have_text("+TWO <b>bold</b>")  # escaped: shown as text, not markup
    await expect(a.locator("[data-testid=unstaged-diff] .diff-line.removed")).to_have_text("-two")
    await expect(page.locator("[data-testid=unstaged-diff] b")).to_have_count(0)
    context = a.locator("[data-testid=unstaged-diff] .diff-line.context").first
    colours = {await line.evaluate("element => getComputedStyle(element).backgroundColor")
               for line in (added, context, a.locator(".diff-line.removed"))}
    assert len(colours) == 3  # added, removed and unchanged lines are told apart by colour
    await watched.shot("2-changes")

    async with page.expect_navigation():
        await a.locator("[data-testid=stage]").click()
    await expect(a.locator("[data-testid=staged-diff] .diff-line.added")).to_have_text("+TWO <b>bold</b>")
    await expect(a.locator("[data-testid=unstaged-diff]")).to_have_count(0)
    await page.locator("[data-testid=commit-message]").fill("Bold two")
    async with page.expect_navigation():
        await page.locator("[data-testid=commit-submit]").click()
    await expect(page.locator("[data-testid=log-entry]").first).to_contain_text("Bold two")
    await expect(changes).to_have_count(1)  # scratch.txt, still untracked
    async with page.expect_navigation():
        await page.locator("[data-testid=log-entry]").first.locator("a").click()
    await expect(page.locator("[data-testid=commit-diff] .diff-line.added")).to_have_text("+TWO <b>bold</b>")
    await watched.shot("3-committed")

    scratch = page.locator("[data-testid=change][data-file='scratch.txt']")
    await scratch.locator("[data-testid=discard]").click()
    dialog = page.locator("[data-testid=confirm-dialog]")
    await expect(dialog).to_contain_text("trash")
    async with page.expect_navigation():
        await dialog.locator("[data-testid=dialog-confirm]").click()
    await expect(page.locator("[data-testid=no-changes]")).to_be_visible()
    assert not (project / "scratch.txt").exists()
    watched.assert_clean()


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_changes_page_layout_and_accessibility(open_page: OpenPage, variant: str) -> None:
    # The CSP is bypassed for axe alone (one inline script the CSP rightly refuses), as test_accessibility does.
    watched = await logged_in_at(open_page, bypass_csp=True, **VARIANTS[variant])
    page, project = watched.page, make_repository(watched.site.home)
    (project / "long.txt").write_text("x" * 400 + "\n")
    audit = Audit(watched, variant)
    await audit.visit("changes", f"/changes?path={project}", "[data-testid=change]")
    await expect(page.locator("[data-testid=change]")).to_have_count(3)
    # Long lines scroll inside the diff; the page itself never scrolls sideways.
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert not audit.blocking(), "\n".join(audit.blocking())
    await watched.shot(variant)
    watched.assert_clean()
