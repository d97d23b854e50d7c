"""The file manager's login in a real browser: the key, a wrong key, the one-time link, and logout."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.browser.conftest import OpenPage, Watched
from tests.conftest import KEY


async def test_the_key_logs_in_and_the_listing_shows_the_files_on_disk(watched: Watched) -> None:
    home = watched.site.home
    (home / "hello.txt").write_text("hi\n")
    (home / "projects").mkdir()
    page = watched.page
    await page.goto(watched.site.url("/"))
    await watched.shot("1-login-page")
    await page.fill("#key", KEY)
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    assert page.url == watched.site.browse_url(home)
    names = await page.locator("tr[data-testid=entry]").evaluate_all("rows => rows.map(row => row.dataset.name)")
    assert names == ["projects", "hello.txt"], "folders first, then files"
    paths = await page.locator("tr[data-testid=entry]").evaluate_all("rows => rows.map(row => row.dataset.path)")
    assert paths == [str(home / "projects"), str(home / "hello.txt")]
    await watched.shot("2-listing")
    watched.assert_clean()


async def test_a_wrong_key_shows_an_error_and_no_listing(watched: Watched) -> None:
    page = watched.page
    await page.goto(watched.site.url("/"))
    await page.fill("#key", "not-the-key")
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    error = page.locator("[data-testid=login-error]")
    await error.wait_for()
    assert "not right" in await error.inner_text()
    assert await page.locator("tr[data-testid=entry]").count() == 0
    assert await page.context.cookies() == [], "no session cookie for a wrong key"
    await watched.shot("wrong-key")
    watched.expect_status(401, "/login")
    watched.assert_clean()


async def test_the_one_time_link_logs_in_and_leaves_the_address_bar(open_page: OpenPage) -> None:
    first = await open_page()
    site = first.site
    token = site.login_token()
    await first.page.goto(site.url(f"/?token={token}"))
    assert first.page.url == site.browse_url(site.home)
    assert "token=" not in first.page.url
    await first.page.locator("[data-testid=listing]").wait_for()
    cookie, = await first.page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert await first.page.evaluate("document.cookie") == "", "the session cookie is out of scripts' reach"
    await first.shot("1-logged-in-by-link")
    first.assert_clean()

    second = await open_page()  # Another browser: the link works once.
    await second.page.goto(site.url(f"/?token={token}"))
    await second.page.locator("[data-testid=login-error]").wait_for()
    assert urlsplit(second.page.url).path == "/"
    assert await second.page.context.cookies() == []
    await second.shot("2-link-used-twice")
    second.expect_status(401, "/")
    second.assert_clean()


async def test_logout_returns_to_login_and_the_listing_then_asks_to_log_in(logged_in: Watched) -> None:
    page, site = logged_in.page, logged_in.site
    async with page.expect_navigation():
        await page.click("[data-testid=logout]")
    assert urlsplit(page.url).path == "/login"
    await page.locator("#key").wait_for()
    await logged_in.shot("1-logged-out")
    await page.goto(site.browse_url(site.home))
    assert urlsplit(page.url).path == "/login"
    await page.locator("#key").wait_for()
    assert await page.locator("tr[data-testid=entry]").count() == 0
    await logged_in.shot("2-browse-after-logout")
    logged_in.assert_clean()
