"""/terminal in a real browser: xterm.js on a real shell, re-attached after a reload, reconnected after a
drop, and the frameable /terminal/embed#token=... variant. Every page ends with no console errors, so
no CSP violations either (xterm's run-time styles go through the CSSOM)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import quote

from tests.browser.conftest import OpenPage, Watched
from tests.conftest import KEY

if TYPE_CHECKING:
    from playwright.async_api import Page, WebSocket, WebSocketRoute

STATUS = "[data-testid=terminal-status]"
CONNECTED = f"{STATUS}[data-state=connected]"
WAIT = 20_000

#: Every line of the xterm buffer (scrollback included), without trailing blanks.
LINES = """() => {
  const buffer = window.__opentermdTerminal.buffer.active;
  const lines = [];
  for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
  return lines;
}"""
HAS_LINE = f"""([text, suffix]) => ({LINES})()
  .some((line) => suffix ? line.trimEnd().endsWith(text) : line.trim() === text)"""
PROMPT = f"""() => ({LINES})().some((line) => /[$#] ?$/.test(line))"""


async def wait_for_line(page: Page, text: str, *, suffix: bool = False) -> None:
    """Until the terminal shows a line that is `text` (or ends with it)."""
    await page.wait_for_function(HAS_LINE, arg=[text, suffix], timeout=WAIT)


async def lines(page: Page) -> list[str]:
    found: list[str] = await page.evaluate(LINES)
    return found


async def run(page: Page, command: str) -> None:
    """Type a command into the shell (once it shows a prompt) and press Enter."""
    await page.wait_for_function(PROMPT, timeout=WAIT)
    await page.click("[data-testid=terminal]")
    await page.keyboard.type(command)
    await page.keyboard.press("Enter")


UNDERLINED = """() => [...document.querySelectorAll('.xterm-rows span')].some((span) =>
  getComputedStyle(span).textDecorationLine.includes('underline'))"""


async def hover_until_underlined(page: Page, text: str) -> None:
    """Hover the row showing the link `text` until xterm underlines it.

    The row can move between measuring it and moving the mouse there (the next prompt may scroll the
    screen), and xterm looks for links only on a mouse move: so measure again and move again, each
    try bounded, until the link shows.
    """
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    for _ in range(10):
        await page.wait_for_function(PROMPT, timeout=WAIT)
        box = await page.locator(".xterm-rows > div", has_text=text).last.bounding_box()
        assert box is not None
        await page.mouse.move(0, 0)
        await page.mouse.move(box["x"] + 30, box["y"] + box["height"] / 2)
        try:
            await page.wait_for_function(UNDERLINED, timeout=2_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"the link {text!r} was never underlined on hover")


async def session_ids(page: Page) -> list[str]:
    """The sessions of this browser tab's terminal tabs, as the page keeps them for a reload."""
    found: list[str] = await page.evaluate("JSON.parse(sessionStorage.getItem('opentermd.terminal') || '[]')")
    return found


async def session_id(page: Page) -> str | None:
    """The one tab's session (None once its shell has ended)."""
    ids = await session_ids(page)
    assert len(ids) <= 1, ids
    return ids[0] if ids else None


async def finish(watched: Watched) -> None:
    """No console errors; then the browser lets go of the shell (its socket closes before the server stops)."""
    watched.assert_clean()
    await watched.page.context.close()


async def open_terminal(watched: Watched) -> Page:
    """From a logged-in page, through the top bar's link, until the terminal is connected."""
    page = watched.page
    async with page.expect_navigation():
        await page.click("[data-testid=nav-terminal]")
    assert page.url == watched.site.url("/terminal")
    await page.wait_for_selector(CONNECTED, timeout=WAIT)
    return page


async def test_a_command_runs_and_its_output_comes_back_after_a_reload(logged_in: Watched) -> None:
    page = await open_terminal(logged_in)
    await run(page, "echo hi")
    await wait_for_line(page, "hi")
    # 24-bit colour: xterm styles those cells from script, which the page's CSP must not block.
    await run(page, r"printf '\033[38;2;255;0;0mred\033[0m\n'")
    await wait_for_line(page, "red")
    red = page.locator(".xterm-rows span", has_text=re.compile(r"^red$"))
    assert await red.evaluate("(span) => getComputedStyle(span).color") == "rgb(255, 0, 0)"
    await logged_in.shot("1-typed")
    first = await session_id(page)
    assert first and await page.text_content("[data-testid=terminal-session]") == first

    await page.reload()
    await page.wait_for_selector(CONNECTED, timeout=WAIT)
    await wait_for_line(page, "hi")
    await wait_for_line(page, "echo hi", suffix=True)
    assert await session_id(page) == first, "the reload re-attached to the same session"
    await run(page, "echo again")
    await wait_for_line(page, "again")
    shown = await lines(page)
    assert shown.index("hi") < shown.index("again"), "the replay comes before the new output"
    await logged_in.shot("2-reattached")

    await run(page, "echo https://example.com/docs")
    await wait_for_line(page, "https://example.com/docs")
    await hover_until_underlined(page, "https://example.com/docs")

    await page.keyboard.press("Control+Shift+F")
    search = page.locator("[data-testid=terminal-search-input]")
    await search.wait_for()
    await search.fill("again")
    await page.wait_for_function(
        "() => /^\\d+ of \\d+$/.test(document.getElementById('terminal-search-count').textContent)", timeout=WAIT)
    await logged_in.shot("3-search")
    await search.press("Escape")
    await page.locator("[data-testid=terminal-search]").wait_for(state="hidden")
    await page.keyboard.press("Escape")  # The shell's (vim's) key: the terminal keeps the keyboard.
    assert await page.evaluate("document.activeElement.classList.contains('xterm-helper-textarea')")
    await finish(logged_in)


async def test_after_a_dropped_connection_the_page_reconnects_to_the_same_shell(logged_in: Watched) -> None:
    page = logged_in.page
    sockets: list[WebSocketRoute] = []

    def through(route: WebSocketRoute) -> None:
        route.connect_to_server()
        sockets.append(route)

    await page.route_web_socket(re.compile(r"/api/terminals/"), through)
    page = await open_terminal(logged_in)
    await run(page, "export MARK=kept")
    await run(page, "echo before")
    await wait_for_line(page, "before")
    first = await session_id(page)

    await sockets[-1].close(code=4000, reason="network drop")  # Any code but 1000/4001/4004/4009.
    await page.wait_for_selector(f"{STATUS}[data-state=reconnecting]", timeout=WAIT)
    assert re.fullmatch(r"Reconnecting in \d+ s", (await page.text_content(f"{STATUS} .label")) or "")
    await page.wait_for_selector(CONNECTED, timeout=WAIT)
    assert len(sockets) == 2 and await session_id(page) == first
    await wait_for_line(page, "before")
    await run(page, "echo $MARK")
    await wait_for_line(page, "kept")
    await finish(logged_in)


async def test_when_the_shell_exits_the_page_offers_a_new_session(logged_in: Watched) -> None:
    page = await open_terminal(logged_in)
    first = await session_id(page)
    await run(page, "exit")
    await page.wait_for_selector(f"{STATUS}[data-state=disconnected]", timeout=WAIT)
    await wait_for_line(page, "[Process exited]")
    assert await session_id(page) is None
    await logged_in.shot("1-exited")
    await page.click("[data-testid=terminal-new]")
    await page.wait_for_selector(CONNECTED, timeout=WAIT)
    second = await session_id(page)
    assert second and second != first
    await page.locator("[data-testid=terminal-notice]").wait_for(state="hidden")
    await run(page, "echo fresh")
    await wait_for_line(page, "fresh")
    await finish(logged_in)


async def test_a_session_open_in_another_tab_is_not_taken_over(logged_in: Watched) -> None:
    page = await open_terminal(logged_in)
    await run(page, "echo first tab")
    await wait_for_line(page, "first tab")
    taken = await session_id(page)
    other = await page.context.new_page()
    other_errors: list[str] = []
    other.on("console", lambda message: other_errors.append(message.text) if message.type == "error" else None)
    await other.add_init_script(f"sessionStorage.setItem('opentermd.terminal', {taken!r})")  # As a duplicated tab.
    await other.goto(logged_in.site.url("/terminal"))
    await other.wait_for_selector(f"{STATUS}[data-state=disconnected]", timeout=WAIT)
    assert await other.text_content(f"{STATUS} .label") == "Open elsewhere"
    assert await other.locator("[data-testid=terminal-retry]").is_visible()
    assert await other.locator("[data-testid=terminal-new]").is_visible()

    await page.close()  # The first tab lets go; now the retry attaches, with the output so far.
    await other.click("[data-testid=terminal-retry]")
    await other.wait_for_selector(CONNECTED, timeout=WAIT)
    await wait_for_line(other, "first tab")
    assert await session_id(other) == taken
    assert other_errors == []
    await finish(logged_in)


async def test_the_terminal_page_needs_a_login(watched: Watched) -> None:
    await watched.page.goto(watched.site.url("/terminal"))
    assert watched.page.url == watched.site.url("/login?next=/terminal")
    await finish(watched)


async def test_the_embed_page_connects_with_the_token_from_the_fragment(open_page: OpenPage) -> None:
    watched = await open_page()
    page = watched.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    sockets: list[WebSocket] = []
    page.on("websocket", lambda socket: sockets.append(socket))
    response = await page.goto(watched.site.url(f"/terminal/embed#token={KEY}"))
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors *" in policy and "script-src 'self'" in policy, policy
    assert "x-frame-options" not in response.headers
    await page.wait_for_selector(CONNECTED, timeout=WAIT)
    assert not await page.locator(".topbar").is_visible(), "the embed page is all terminal"
    await run(page, "echo embedded")
    await wait_for_line(page, "embedded")
    await watched.shot("embed")
    urls = requested + [socket.url for socket in sockets]
    assert all(KEY not in url for url in urls), "the key stays in the fragment, never in a URL sent"
    await finish(watched)


async def test_the_embed_page_without_a_good_token_says_so(open_page: OpenPage) -> None:
    watched = await open_page()
    page = watched.page
    await page.goto(watched.site.url("/terminal/embed"))
    await page.wait_for_selector(f"{STATUS}[data-state=disconnected]", timeout=WAIT)
    assert "token" in ((await page.text_content("[data-testid=terminal-notice]")) or "")

    await page.goto(watched.site.url("/terminal/embed#token=not-the-key"))
    await page.reload()  # Only the fragment changed: the page would not load again by itself.
    await page.wait_for_selector(f"{STATUS}[data-state=disconnected]", timeout=WAIT)
    assert await page.text_content(f"{STATUS} .label") == "Not authorized"
    watched.expect_status(401, "/api/terminals")
    await finish(watched)


async def test_the_terminal_fits_a_phone_in_the_dark(open_page: OpenPage) -> None:
    watched = await open_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                              color_scheme="dark")
    await watched.login()
    page = await open_terminal(watched)
    await run(page, "echo small")
    await wait_for_line(page, "small")
    width: int = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 392, f"the page scrolls sideways on a phone: {width} px wide"
    columns: int = await page.evaluate("window.__opentermdTerminal.cols")
    assert 30 <= columns <= 60, f"the terminal follows the screen's width: {columns} columns"
    await page.wait_for_function("() => window.__opentermdTerminal.options.theme.background === '#0d1117'")
    keys = page.locator(".terminal-keys")
    assert await keys.is_visible(), "the keys a phone keyboard lacks"
    await page.locator("[data-key=up]").tap()  # History: the last command again.
    await page.keyboard.press("Enter")
    await page.wait_for_function("() => (" + LINES + ")().filter((line) => line.trim() === 'small').length === 2",
                                 timeout=WAIT)
    await watched.shot("phone-dark", full_page=False)
    await finish(watched)


# --- issue 13: wide characters, font size and theme, a session in a folder -------------------------------

#: Where each character of the line that shows `text` starts, in cells, and xterm's width for it.
CELLS = """(text) => {
  const buffer = window.__opentermdTerminal.buffer.active;
  for (let row = buffer.length - 1; row >= 0; row--) {
    const line = buffer.getLine(row);
    if (!line.translateToString(true).includes(text)) continue;
    const cells = [];
    for (let x = 0; x < line.length; x++) {
      const cell = line.getCell(x);
      if (cell.getWidth() > 0 && cell.getChars()) cells.push([x, cell.getChars(), cell.getWidth()]);
    }
    return cells;
  }
  return null;
}"""

#: The left edge, in pixels, of the first '|' drawn on the screen row that shows `text`.
BAR_X = """(text) => {
  for (const row of document.querySelectorAll('.terminal-pane:not([hidden]) .xterm-rows > div')) {
    if (!row.textContent.includes(text)) continue;
    const walker = document.createTreeWalker(row, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const at = node.data.indexOf('|');
      if (at < 0) continue;
      const range = document.createRange();
      range.setStart(node, at);
      range.setEnd(node, at + 1);
      return range.getBoundingClientRect().left;
    }
  }
  return null;
}"""


async def test_emoji_and_cjk_take_two_cells_and_what_follows_lines_up(logged_in: Watched) -> None:
    """xterm's old Unicode 6 tables made an emoji one cell wide, so everything after it was drawn (and
    edited) one cell off from where the shell put it; the unicode11 add-on makes it two."""
    page = await open_terminal(logged_in)
    await run(page, r"printf '\360\237\230\200\346\274\242\345\255\227|emoji\n123456|ascii\n'")
    await wait_for_line(page, "123456|ascii")
    cells = await page.evaluate(CELLS, "|emoji")
    assert cells[:4] == [[0, "😀", 2], [2, "漢", 2], [4, "字", 2], [6, "|", 1]], cells
    assert await page.evaluate("window.__opentermdTerminal.unicode.activeVersion") == "11"
    assert await page.evaluate(CELLS, "|ascii") == [[i, c, 1] for i, c in enumerate("123456|ascii")]
    # Drawn where the buffer says: the bars of both lines are one above the other.
    emoji_x, ascii_x = await page.evaluate(BAR_X, "emoji"), await page.evaluate(BAR_X, "ascii")
    assert emoji_x is not None and abs(emoji_x - ascii_x) < 1.5, (emoji_x, ascii_x)
    await logged_in.shot("wide-characters")
    await finish(logged_in)


async def font_size(page: Page) -> int:
    size: int = await page.evaluate("window.__opentermdTerminal.options.fontSize")
    return size


async def test_font_size_keys_and_setting_are_remembered_and_the_terminal_refits(logged_in: Watched) -> None:
    page = await open_terminal(logged_in)
    await run(page, "echo sized")
    await wait_for_line(page, "sized")
    assert await font_size(page) == 14
    columns: int = await page.evaluate("window.__opentermdTerminal.cols")
    await page.keyboard.press("Control+Equal")
    await page.keyboard.press("Control+Equal")
    assert await font_size(page) == 16
    await page.wait_for_function(f"() => window.__opentermdTerminal.cols < {columns}", timeout=WAIT)
    # The shell is told the new size (the PTY's, as `stty size` reads it).
    await run(page, "stty size | tr ' ' x")
    rows, cols = await page.evaluate("[window.__opentermdTerminal.rows, window.__opentermdTerminal.cols]")
    await wait_for_line(page, f"{rows}x{cols}")
    await logged_in.shot("font-16")

    await page.reload()
    await page.wait_for_selector(CONNECTED, timeout=WAIT)
    assert await font_size(page) == 16, "remembered"
    await page.click("[data-testid=terminal]")
    await page.keyboard.press("Control+Minus")
    assert await font_size(page) == 15
    await page.click("[data-testid=terminal-settings] summary")
    assert await page.input_value("[data-testid=terminal-font-size]") == "15"
    await page.fill("[data-testid=terminal-font-size]", "20")
    await page.wait_for_function("() => window.__opentermdTerminal.options.fontSize === 20", timeout=WAIT)
    await page.fill("[data-testid=terminal-font-size]", "99")
    await page.wait_for_function("() => window.__opentermdTerminal.options.fontSize === 32", timeout=WAIT)
    saved = await page.evaluate("JSON.parse(localStorage.getItem('opentermd.terminal.settings'))")
    assert saved["fontSize"] == 32
    await page.click("[data-testid=terminal]")
    await page.keyboard.press("Control+0")
    assert await font_size(page) == 14
    await finish(logged_in)


async def test_the_theme_setting_overrides_the_system_and_is_remembered(open_page: OpenPage) -> None:
    for system, chosen, background in (("light", "dark", "#0d1117"), ("dark", "light", "#ffffff")):
        watched = await open_page(color_scheme=system)
        await watched.login()
        page = await open_terminal(watched)
        await run(page, "ls -d / && echo themed")
        await wait_for_line(page, "themed")
        await page.click("[data-testid=terminal-settings] summary")
        await page.select_option("[data-testid=terminal-theme]", chosen)
        await watched.shot(f"theme-{chosen}-settings")
        await page.click("[data-testid=terminal-settings] summary")
        await page.wait_for_function(f"() => window.__opentermdTerminal.options.theme.background === '{background}'")
        assert await page.evaluate("document.documentElement.dataset.theme") == chosen
        assert await page.evaluate("getComputedStyle(document.body).backgroundColor") == \
            ("rgb(13, 17, 23)" if chosen == "dark" else "rgb(255, 255, 255)")
        await page.reload()
        await page.wait_for_selector(CONNECTED, timeout=WAIT)
        await page.wait_for_function(f"() => window.__opentermdTerminal.options.theme.background === '{background}'")
        await wait_for_line(page, "themed")
        await watched.shot(f"theme-{chosen}-on-{system}", full_page=False)
        await page.click("[data-testid=terminal-settings] summary")
        await page.select_option("[data-testid=terminal-theme]", "system")
        assert await page.evaluate("document.documentElement.dataset.theme") is None
        await finish(watched)


async def test_a_terminal_opened_in_a_folder_starts_there(logged_in: Watched) -> None:
    folder = logged_in.site.home / "my project"
    folder.mkdir()
    page = await open_terminal(logged_in)  # One tab already; the link adds another.
    await page.goto(logged_in.site.url(f"/terminal?cwd={quote(str(folder))}"))
    await page.wait_for_selector(CONNECTED, timeout=WAIT)
    assert page.url == logged_in.site.url("/terminal"), "a reload re-attaches instead of opening another"
    await page.wait_for_function("() => document.querySelectorAll('[data-testid=terminal-tab]').length === 2")
    await run(page, "pwd")
    await wait_for_line(page, str(folder))
    await page.reload()
    await page.wait_for_selector(CONNECTED, timeout=WAIT)
    assert await page.locator("[data-testid=terminal-tab]").count() == 2

    await page.goto(logged_in.site.url(f"/terminal?cwd={quote(str(folder / 'missing'))}"))
    assert (await page.locator("h1").first.text_content() or "").startswith("404")
    logged_in.expect_status(404, "/terminal")
    await finish(logged_in)
