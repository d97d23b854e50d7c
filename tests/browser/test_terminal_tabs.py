"""/terminal's tabs in a real browser on real shells: several sessions in one page, a reload re-attaches
every tab, closing a tab detaches or ends its shell as the user chooses, and the sessions list
re-attaches a detached one but never takes one attached in another browser tab."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import OpenPage, Watched
from tests.browser.test_terminal_page import CONNECTED, WAIT, finish, open_terminal, run, session_ids, wait_for_line

if TYPE_CHECKING:
    from playwright.async_api import Page

TAB = "[data-testid=terminal-tab]"
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


async def tab_count(page: Page, count: int) -> None:
    await page.wait_for_function(f"() => document.querySelectorAll('{TAB}').length === {count}", timeout=WAIT)


async def server_sessions(page: Page) -> list[dict[str, object]]:
    found: list[dict[str, object]] = await page.evaluate("opentermd.json('GET', '/api/terminals')")
    return found


async def open_sessions(page: Page) -> None:
    await page.click("[data-testid=terminal-sessions-button]")
    await page.wait_for_selector("[data-testid=terminal-sessions]", timeout=WAIT)


async def two_tabs(page: Page) -> list[str]:
    """A second tab beside the first; each shell marks itself. Returns both session ids."""
    await run(page, "echo first-$((1+1))")
    await wait_for_line(page, "first-2")
    await page.click("[data-testid=terminal-new-tab]")
    await tab_count(page, 2)
    await page.wait_for_function("() => window.__opentermdTabs.every((tab) => tab.sessionId)", timeout=WAIT)
    await page.wait_for_selector(CONNECTED, timeout=WAIT)
    await run(page, "echo second-$((2+2))")
    await wait_for_line(page, "second-4")
    ids = await session_ids(page)
    assert len(ids) == 2 and ids[0] != ids[1]
    return ids


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_tabs_hold_separate_shells_and_a_reload_reattaches_them_all(open_page: OpenPage, scheme: str) -> None:
    watched = await open_page(color_scheme=scheme)
    await watched.login()
    page = await open_terminal(watched)
    first, second = await two_tabs(page)
    await watched.shot(f"two-tabs-{scheme}")
    await page.locator(TAB).first.click()
    await wait_for_line(page, "first-2")
    assert await page.locator(TAB).first.get_attribute("aria-current") == "true"

    await page.reload()
    await tab_count(page, 2)
    await page.wait_for_selector(CONNECTED, timeout=WAIT)
    assert await session_ids(page) == [first, second]
    await wait_for_line(page, "first-2")  # The active tab was the first.
    await page.locator(TAB).nth(1).click()
    await wait_for_line(page, "second-4")
    await run(page, "echo still-$((3+3))")
    await wait_for_line(page, "still-6")
    await finish(watched)


async def test_closing_a_tab_keeps_its_shell_or_ends_it_and_the_list_reattaches(logged_in: Watched) -> None:
    page = await open_terminal(logged_in)
    first, second = await two_tabs(page)
    await run(page, "export KEPT=yes")

    # Close the second tab, keeping its shell: it runs on, detached.
    await page.locator("[data-testid=terminal-tab-close]").nth(1).click()
    await page.wait_for_selector("[data-testid=terminal-close-dialog]", timeout=WAIT)
    await logged_in.shot("close-dialog")
    await page.click("[data-testid=dialog-detach]")
    await tab_count(page, 1)
    await page.wait_for_function(f"async () => (await opentermd.json('GET', '/api/terminals'))"
                                 f".some((s) => s.id === '{second}' && !s.attached)", timeout=WAIT)
    assert await session_ids(page) == [first]

    # The sessions list offers it again; attaching opens it in a tab, with what it printed.
    await open_sessions(page)
    row = page.locator(f"[data-testid=terminal-session-row][data-session='{second}']")
    assert await row.locator("[data-testid=terminal-session-where]").text_content() == "detached"
    mine = page.locator(f"[data-testid=terminal-session-row][data-session='{first}']")
    assert await mine.locator("[data-testid=terminal-session-where]").text_content() == "in this page"
    await logged_in.shot("sessions-list")
    await row.locator("[data-testid=terminal-session-attach]").click()
    await tab_count(page, 2)
    await page.wait_for_selector(CONNECTED, timeout=WAIT)
    await wait_for_line(page, "second-4")
    await run(page, "echo $KEPT-again")
    await wait_for_line(page, "yes-again")

    # Close it again, ending the shell: the server no longer has it.
    await page.locator("[data-testid=terminal-tab-close]").nth(1).click()
    await page.click("[data-testid=dialog-end]")
    await tab_count(page, 1)
    await page.wait_for_function(f"async () => !(await opentermd.json('GET', '/api/terminals'))"
                                 f".some((s) => s.id === '{second}')", timeout=WAIT)
    assert [entry["id"] for entry in await server_sessions(page)] == [first]
    await finish(logged_in)


async def test_a_session_attached_in_another_browser_tab_is_listed_but_not_taken(logged_in: Watched) -> None:
    page = await open_terminal(logged_in)
    await run(page, "echo owner-$((7+1))")
    await wait_for_line(page, "owner-8")
    (held,) = await session_ids(page)

    other = await page.context.new_page()
    await other.goto(logged_in.site.url("/terminal"))
    await other.wait_for_selector(CONNECTED, timeout=WAIT)
    (own,) = await session_ids(other)
    assert own != held, "a second browser tab starts its own shell"
    await open_sessions(other)
    row = other.locator(f"[data-testid=terminal-session-row][data-session='{held}']")
    assert await row.locator("[data-testid=terminal-session-where]").text_content() == "attached elsewhere"
    assert await row.locator("button").count() == 0, "no attach, no end: it is in use elsewhere"
    await other.click("[data-testid=dialog-close]")

    await run(page, "echo untouched-$((4+4))")  # The first tab still has its shell.
    await wait_for_line(page, "untouched-8")
    await other.close()
    await finish(logged_in)


async def test_tabs_on_a_phone(open_page: OpenPage) -> None:
    watched = await open_page(**PHONE, color_scheme="dark")
    await watched.login()
    page = await open_terminal(watched)
    await two_tabs(page)
    width: int = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 392, f"the page scrolls sideways on a phone: {width} px wide"
    await open_sessions(page)
    await watched.shot("phone-sessions", full_page=False)
    await page.click("[data-testid=dialog-close]")
    await watched.shot("phone-tabs", full_page=False)
    await finish(watched)
