"""/terminal?cwd=<folder> (the browse page's "Open terminal here"): the folder is checked on the server,
an existing directory within the file root, before the page offers it to the browser."""

from __future__ import annotations

import os
from pathlib import Path

from tests.pages.test_views import Browser, BrowserFactory, Document, browser, browser_with, home

__all__ = ["browser", "browser_with", "home"]  # Fixtures, shared with the file pages' tests.


def app_cwd(html: str) -> str:
    return Document(html).one(testid="terminal-app").attr("data-cwd")


async def test_an_existing_folder_is_handed_to_the_page(browser: Browser, home: Path) -> None:
    (home / "project").mkdir()
    assert app_cwd(await browser.page(f"/terminal?cwd={home / 'project'}")) == str(home / "project")
    assert app_cwd(await browser.page("/terminal?cwd=project")) == str(home / "project"), "relative to home"
    assert app_cwd(await browser.page("/terminal")) == ""


async def test_a_missing_folder_or_a_file_is_a_404_page(browser: Browser, home: Path) -> None:
    (home / "notes.txt").write_text("x")
    for target in (home / "missing", home / "notes.txt"):
        page = Document(await browser.page(f"/terminal?cwd={target}", status=404))
        assert page.one("h1").text.startswith("404 ")


async def test_a_folder_outside_the_root_is_a_403_page(browser_with: BrowserFactory, home: Path) -> None:
    """The attack: a link that opens a shell in a folder the file manager may not reach."""
    inside = home / "inside"
    inside.mkdir()
    os.symlink(home, inside / "escape")
    confined = await browser_with(file_root=inside)
    assert app_cwd(await confined.page(f"/terminal?cwd={inside}")) == str(inside)
    for target in (home, Path("/etc"), inside / "escape", f"{inside}/../"):
        html = await confined.page(f"/terminal?cwd={target}", status=403)
        assert Document(html).one("h1").text.startswith("403 ")
        assert 'data-testid="terminal-app"' not in html
