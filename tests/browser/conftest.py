"""Headless Debian Chromium driven by Playwright; in CI a missing browser fails instead of skipping."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import pytest
from aiohttp.test_utils import TestServer

from daemon.app import create_app
from daemon.keys import SESSIONS
from tests.conftest import KEY, make_config

if TYPE_CHECKING:
    from playwright.async_api import Dialog, Page

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (make test installs Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# --- the file manager: a real server, a logged-in page, and a watch on what the page does ----------


class Site:
    """A real daemon on 127.0.0.1 whose home (and working directory) is `home`."""

    def __init__(self, server: TestServer, home: Path) -> None:
        self.server = server
        self.home = home

    def url(self, path: str = "/") -> str:
        return str(self.server.make_url(path))

    def browse_url(self, path: Path | str) -> str:
        return self.url("/browse" + quote(str(path)))

    def login_token(self) -> str:
        return self.server.app[SESSIONS].login_token()


@pytest.fixture
async def site(aiohttp_server: Any, tmp_path: Path, scratch_environment: Path) -> Site:
    server = await aiohttp_server(create_app(make_config(tmp_path)))
    return Site(server, scratch_environment.resolve())


class Watched:
    """A page whose console errors, uncaught exceptions and requests elsewhere are collected.

    CSP violations, failed loads (a 404 script) and injected markup that runs all show up as console
    errors; `assert_clean()` at the end of a test says none happened.
    """

    def __init__(self, page: Page, site: Site, artifacts: Path, prefix: str) -> None:
        self.page = page
        self.site = site
        self.errors: list[str] = []
        self.outside: list[str] = []
        self._artifacts = artifacts
        self._prefix = prefix
        base = site.url("/")
        page.on("console", lambda message: self.errors.append(f"console: {message.text} at {message.location['url']}")
                if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        internal = (base, "data:", "blob:", "about:", "chrome:", "chrome-extension:")  # The PDF viewer's own files.
        page.on("request", lambda request: None if request.url.startswith(internal)
                else self.outside.append(request.url))

    async def shot(self, step: str, *, full_page: bool = True) -> None:
        await self.page.screenshot(path=str(self._artifacts / f"{self._prefix}-{step}.png"), full_page=full_page)

    async def login(self) -> None:
        """Log in through the form with the API key; lands on the home folder's listing."""
        await self.page.goto(self.site.url("/"))
        await self.page.fill("#key", KEY)
        async with self.page.expect_navigation():
            await self.page.click("button[type=submit]")
        assert self.page.url == self.site.browse_url(self.site.home)

    async def answer_next_dialog(self, text: str | None = None, *, accept: bool = True) -> list[str]:
        """Answer the next prompt/confirm with `text` (or OK); returns a list that receives its message."""
        seen: list[str] = []

        async def handle(dialog: Dialog) -> None:
            seen.append(dialog.message)
            if accept:
                await (dialog.accept(text) if text is not None else dialog.accept())
            else:
                await dialog.dismiss()

        self.page.once("dialog", handle)
        return seen

    def expect_status(self, status: int, path: str) -> None:
        """The page itself was answered with this error status on purpose: Chrome logs that as a console error."""
        logged = f"console: Failed to load resource: the server responded with a status of {status} "
        matching = [error for error in self.errors
                    if error.startswith(logged) and urlsplit(error.rsplit(" at ", 1)[1]).path == path]
        assert matching, f"the page was answered with {status}"
        for error in matching:
            self.errors.remove(error)

    def assert_clean(self) -> None:
        assert not self.errors, "console errors, uncaught exceptions or CSP violations:\n" + "\n".join(self.errors)
        assert not self.outside, "fetched from elsewhere:\n" + "\n".join(self.outside)


OpenPage = Callable[..., Awaitable[Watched]]


@pytest.fixture
async def open_page(browser: Any, site: Site, artifacts: Path, request: pytest.FixtureRequest) -> OpenPage:
    """`await open_page(viewport=..., color_scheme=...)`: a watched page in a fresh browser context."""
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    async def open_one(**context_options: Any) -> Watched:
        context = await browser.new_context(**context_options)
        return Watched(await context.new_page(), site, artifacts, prefix)

    return open_one


@pytest.fixture
async def watched(open_page: OpenPage) -> Watched:
    return await open_page()


@pytest.fixture
async def logged_in(watched: Watched) -> Watched:
    await watched.login()
    return watched
