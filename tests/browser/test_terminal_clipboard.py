"""/terminal's clipboard in a real browser on a real shell: Ctrl+Shift+C copies the selection, Ctrl+Shift+V
pastes, copy on select (a setting), and OSC 52 from the shell writes the clipboard but may never read
it, nor write past a cap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.browser.conftest import OpenPage, Watched
from tests.browser.test_terminal_page import WAIT, finish, open_terminal, run, wait_for_line

if TYPE_CHECKING:
    from playwright.async_api import Page

CLIPBOARD = {"permissions": ["clipboard-read", "clipboard-write"]}


async def clipboard(page: Page) -> str:
    text: str = await page.evaluate("navigator.clipboard.readText()")
    return text


async def set_clipboard(page: Page, text: str) -> None:
    await page.evaluate("(text) => navigator.clipboard.writeText(text)", text)


async def wait_for_clipboard(page: Page, text: str) -> None:
    await page.wait_for_function("async (text) => (await navigator.clipboard.readText()) === text", arg=text,
                                 timeout=WAIT)


async def logged_in_terminal(open_page: OpenPage, **options: object) -> tuple[Watched, Page]:
    watched = await open_page(**CLIPBOARD, **options)
    await watched.login()
    return watched, await open_terminal(watched)


SELECT_LINE = """(text) => {
  const term = window.__opentermdTerminal;
  const buffer = term.buffer.active;
  for (let row = buffer.length - 1; row >= 0; row--) {
    const line = buffer.getLine(row).translateToString(true);
    if (line.trim() === text) { term.select(line.indexOf(text), row, text.length); return term.getSelection(); }
  }
  return null;
}"""


async def test_ctrl_shift_c_copies_the_selection_and_ctrl_shift_v_pastes(open_page: OpenPage) -> None:
    watched, page = await logged_in_terminal(open_page)
    await run(page, "echo copy-$((6*7))")
    await wait_for_line(page, "copy-42")
    assert await page.evaluate(SELECT_LINE, "copy-42") == "copy-42"
    await page.keyboard.press("Control+Shift+C")
    await wait_for_clipboard(page, "copy-42")

    await set_clipboard(page, "echo pasted-$((5*5))")
    await page.click("[data-testid=terminal]")
    await page.keyboard.press("Control+Shift+V")
    await page.keyboard.press("Enter")
    await wait_for_line(page, "pasted-25")
    # Once only, and not as ^V: the shell saw the text once.
    shown = await page.evaluate("""() => {
      const buffer = window.__opentermdTerminal.buffer.active;
      return buffer.getLine(buffer.baseY + buffer.cursorY - 2).translateToString(true);
    }""")
    assert shown.endswith("echo pasted-$((5*5))"), shown

    # Shift+Insert is still the browser's paste.
    await set_clipboard(page, "echo insert-$((2*4))")
    await page.keyboard.press("Shift+Insert")
    await page.keyboard.press("Enter")
    await wait_for_line(page, "insert-8")
    await watched.shot("copied-pasted")
    await finish(watched)


async def test_copy_on_select_is_a_remembered_setting(open_page: OpenPage) -> None:
    watched, page = await logged_in_terminal(open_page)
    await run(page, "echo selected-$((3*3))")
    await wait_for_line(page, "selected-9")
    await set_clipboard(page, "before")
    await page.evaluate(SELECT_LINE, "selected-9")
    assert await clipboard(page) == "before", "off by default"

    await page.click("[data-testid=terminal-settings] summary")
    await page.check("[data-testid=terminal-copy-on-select]")
    await watched.shot("settings")
    await page.click("[data-testid=terminal-settings] summary")
    await page.reload()
    await page.wait_for_selector("[data-state=connected]", timeout=WAIT)
    await wait_for_line(page, "selected-9")
    assert await page.evaluate("JSON.parse(localStorage.getItem('opentermd.terminal.settings')).copyOnSelect") is True
    await page.evaluate(SELECT_LINE, "selected-9")
    await wait_for_clipboard(page, "selected-9")
    await finish(watched)


ON_DATA = """() => { window.__typed = []; window.__opentermdTerminal.onData((data) => window.__typed.push(data)); }"""


async def test_osc52_writes_the_clipboard_but_never_reads_it(open_page: OpenPage) -> None:
    watched, page = await logged_in_terminal(open_page)
    await run(page, """printf '\\e]52;c;%s\\a' "$(printf hello | base64)"; echo sent""")
    await wait_for_line(page, "sent")
    await wait_for_clipboard(page, "hello")

    # A read would answer with the clipboard, typed into the shell as if the user had: refused.
    await set_clipboard(page, "secret")
    await page.evaluate(ON_DATA)
    await run(page, """printf '\\e]52;c;?\\a'; echo asked""")
    await wait_for_line(page, "asked")  # xterm parses in order: the query was handled before this.
    typed: list[str] = await page.evaluate("window.__typed")
    assert not any("52;" in data for data in typed), typed
    assert "c2VjcmV0" not in "".join(typed)
    assert await clipboard(page) == "secret"
    await finish(watched)


async def test_osc52_past_the_cap_is_ignored(open_page: OpenPage) -> None:
    watched, page = await logged_in_terminal(open_page)
    await set_clipboard(page, "kept")
    # 800,000 bytes are 1,066,668 characters of base64: past the 1 MiB cap.
    await run(page, """printf '\\e]52;c;%s\\a' "$(head -c 800000 /dev/zero | tr '\\0' a | base64 -w0)"; echo big""")
    await wait_for_line(page, "big")
    assert await clipboard(page) == "kept"
    # Just under the cap is fine.
    await run(page, """printf '\\e]52;c;%s\\a' "$(head -c 700000 /dev/zero | tr '\\0' b | base64 -w0)"; echo fits""")
    await wait_for_line(page, "fits")
    await page.wait_for_function("async () => (await navigator.clipboard.readText()).length === 700000", timeout=WAIT)
    await finish(watched)
