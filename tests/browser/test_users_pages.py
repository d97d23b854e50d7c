"""Multi-user web pages in a real browser: a user logs in with the key and their user id, and the file
manager and the terminal are that user's alone (their home, their uid); another user's files are not
reachable by URL. Real accounts (made by the daemon, removed here) on a real multi-user server."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from daemon.app import create_app
from daemon.users import USERS, Account
from tests.browser.conftest import Site, Watched
from tests.browser.test_accessibility import VARIANTS, Audit
from tests.browser.test_terminal_page import CONNECTED, WAIT, run, wait_for_line
from tests.conftest import KEY, make_config
from tests.test_users import homes  # noqa: F401  (the fixture: a homes folder and prefix, every account removed)

A, B = "alice-pages-0001", "bob-pages-0002"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="multi-user accounts need root and useradd")


class People:
    def __init__(self, a: Account, b: Account) -> None:
        self.a, self.b = a, b


@pytest.fixture
async def accounts(aiohttp_server: Any, tmp_path: Path, scratch_environment: Path,
                   homes: tuple[Path, str]) -> tuple[Site, People]:  # noqa: F811 (the imported fixture)
    folder, prefix = homes
    server = await aiohttp_server(create_app(make_config(tmp_path, multi_user=True, user_prefix=prefix,
                                                         user_homes=folder)))
    people = server.app[USERS]
    a, b = await asyncio.to_thread(people.account, A), await asyncio.to_thread(people.account, B)
    for account, name in ((a, "a-note.txt"), (b, "b-secret.txt")):
        note = Path(account.home) / name
        note.write_text(f"{name}\n")
        os.chown(note, account.uid, account.gid)
    return Site(server, Path(a.home)), People(a, b)


@pytest.fixture
def site(accounts: tuple[Site, People]) -> Site:
    return accounts[0]  # the browser fixtures' server is this multi-user one, with A's home as "home"


async def log_in_as(watched: Watched, user: str) -> None:
    page = watched.page
    await page.goto(watched.site.url("/"))
    await page.fill("#user", user)
    await page.fill("#key", KEY)
    async with page.expect_navigation():
        await page.click("button[type=submit]")


VIEWS = [({"width": 1440, "height": 900}, "light"), ({"width": 390, "height": 844}, "dark")]


@pytest.mark.parametrize(("viewport", "scheme"), VIEWS, ids=["desktop-light", "phone-dark"])
async def test_a_user_logs_in_and_sees_only_their_own_files(
        open_page: Any, accounts: tuple[Site, People], viewport: dict[str, int], scheme: str) -> None:
    site, people = accounts
    watched: Watched = await open_page(viewport=viewport, color_scheme=scheme)
    page = watched.page
    await page.goto(site.url("/"))
    await page.locator("#user").wait_for()
    await watched.shot(f"1-login-{scheme}")
    await page.fill("#key", KEY)  # the key without a user id names nobody
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    assert "user id" in await page.locator("[data-testid=login-error]").inner_text()
    watched.expect_status(400, "/login")

    await log_in_as(watched, A)
    assert page.url == site.browse_url(people.a.home)
    names = await page.locator("tr[data-testid=entry]").evaluate_all("rows => rows.map(row => row.dataset.name)")
    assert "a-note.txt" in names and "b-secret.txt" not in names
    await watched.shot(f"2-home-{scheme}")

    for path in (people.b.home, f"{people.b.home}/b-secret.txt"):  # B's files by URL: refused
        await page.goto(site.browse_url(path))
        assert "b-secret.txt\n" not in await page.content()
        watched.expect_status(403, f"/browse{path}")
    await page.locator("[data-testid=error-detail]").wait_for()
    await watched.shot(f"3-other-users-file-{scheme}")
    watched.assert_clean()


async def test_the_terminal_is_the_users_shell_in_their_home(watched: Watched, accounts: tuple[Site, People]) -> None:
    site, people = accounts
    await log_in_as(watched, A)
    page = watched.page
    await page.goto(site.url("/terminal"))
    await page.locator(CONNECTED).wait_for(timeout=WAIT)
    await run(page, 'echo "who=$(id -un) at=$(pwd)"')
    await wait_for_line(page, f"who={people.a.name} at={people.a.home}")
    await run(page, f"cat {people.b.home}/b-secret.txt || echo refused")
    await wait_for_line(page, "refused")
    await watched.shot("terminal")
    watched.assert_clean()


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_the_multi_user_login_page_has_no_serious_accessibility_violation(open_page: Any, variant: str) -> None:
    watched: Watched = await open_page(bypass_csp=True, **VARIANTS[variant])  # CSP bypassed for axe alone
    audit = Audit(watched, variant)
    await audit.visit("multi-user-login", "/login", ready="#user")
    assert not audit.blocking(), "\n".join(audit.blocking())
