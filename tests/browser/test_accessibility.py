"""axe-core on every page, light and dark, desktop and phone: no serious or critical violation;
and the browse page by keyboard alone: Tab reaches every action, and the focus can be seen.

axe comes from npm (`axe-core`, a devDependency) and is injected into each page by Playwright. The
contexts bypass the pages' CSP for that alone: axe is one inline script the CSP rightly refuses.
"""

from __future__ import annotations

import io
import json
import os
import wave
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.browser.conftest import ARTIFACTS, OpenPage, Watched
from tests.conftest import KEY
from tests.files.test_documents import PAGES, make_pdf, make_png

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
VARIANTS: dict[str, dict[str, Any]] = {
    "desktop-light": {"viewport": {"width": 1440, "height": 900}, "color_scheme": "light"},
    "desktop-dark": {"viewport": {"width": 1440, "height": 900}, "color_scheme": "dark"},
    "phone-light": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
                    "color_scheme": "light"},
    "phone-dark": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
                   "color_scheme": "dark"},
}
BLOCKING = ("serious", "critical")
#: Moderate for axe, required here: every page names itself with an h1 (screen readers jump to it).
ALSO_BLOCKING = ("page-has-heading-one",)
#: Our own iframes are sandboxed without scripts (axe cannot enter them) and the PDF viewer is the
#: browser's: axe would wait for each of them in vain.
AXE_RUN = """async () => {
    const results = await axe.run(document, {iframes: false, resultTypes: ["violations"]});
    return results.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.slice(0, 6).map(n =>
            n.target.join(" ") + " :: " + (n.failureSummary || "").replace(/\\s+/g, " "))}));
}"""


def axe_script() -> Path:
    if not AXE.exists():
        message = f"{AXE} is missing (npm ci installs axe-core, a devDependency)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return AXE


def notebook() -> bytes:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# Sums\n", "Adding numbers."]},
             {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": ["1 + 1"],
              "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                           "data": {"text/plain": ["2"]}}]}]
    document = {"nbformat": 4, "nbformat_minor": 5, "cells": cells,
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}
    return json.dumps(document).encode()


def sound() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * 800)
    return buffer.getvalue()


#: One file of each preview kind the file page has.
FILES: dict[str, bytes] = {
    "notes.txt": b"plain words\n" * 20,
    "script.py": b"def greet(name):\n    return f'hi {name}'\n",
    "README.md": b"# Read me\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- [x] done\n\n```python\nprint(1)\n```\n",
    "data.csv": b"name,count\napple,3\npear,5\n",
    "photo.png": make_png(40, 30),
    "report.pdf": make_pdf(PAGES),
    "beep.wav": sound(),
    "page.html": b"<h1>hello</h1>",
    "blob.bin": bytes(range(256)) * 4,
    "sums.ipynb": notebook(),
}


def make_home(home: Path) -> None:
    (home / "documents").mkdir()
    for name, data in FILES.items():
        (home / name).write_bytes(data)
    os.symlink(home / "notes.txt", home / "latest.txt")
    os.symlink(home / "gone.txt", home / "dangling")


class Audit:
    """Runs axe on each page visited and keeps what it found, by page."""

    def __init__(self, watched: Watched, variant: str) -> None:
        self.watched = watched
        self.variant = variant
        self.found: dict[str, list[dict[str, Any]]] = {}

    async def check(self, name: str) -> None:
        page = self.watched.page
        await page.add_script_tag(path=str(axe_script()))
        violations: list[dict[str, Any]] = await page.evaluate(AXE_RUN)
        self.found[name] = violations
        await self.watched.shot(f"{self.variant}-{name}", full_page=False)

    async def visit(self, name: str, path: str, ready: str = "main") -> None:
        await self.watched.page.goto(self.watched.site.url(path))
        await self.watched.page.locator(ready).first.wait_for()
        await self.check(name)

    def blocking(self) -> list[str]:
        return [f"{page}: [{violation['impact']}] {violation['id']}: {violation['help']}\n      "
                + "\n      ".join(violation["nodes"])
                for page, violations in self.found.items() for violation in violations
                if violation["impact"] in BLOCKING or violation["id"] in ALSO_BLOCKING]

    def save(self) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"axe-{self.variant}.json").write_text(json.dumps(self.found, indent=1))


async def upload_link(watched: Watched) -> str:
    """A one-time public upload form into the home folder, made through the API with the key."""
    async with aiohttp.ClientSession() as client, client.post(
            watched.site.url(f"/files/upload/link?directory={quote(str(watched.site.home))}"),
            headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 200, await response.text()
        url: str = (await response.json())["url"]
    return url


async def search_page(watched: Watched) -> str | None:
    """The search results page (engineer C's, /search), when this tree has it."""
    response = await watched.page.request.get(watched.site.url(f"/search?q=plain&path={quote(str(watched.site.home))}"))
    return response.url if response.status == 200 and "text/html" in response.headers["content-type"] else None


async def tour(watched: Watched, audit: Audit) -> None:
    home, page = watched.site.home, watched.page
    await audit.visit("login", "/login", "form")
    await watched.login()
    await audit.check("browse")
    await page.keyboard.press("?")
    await page.get_by_test_id("help").wait_for()
    await audit.check("help")
    await page.keyboard.press("Escape")
    for name in FILES:
        await audit.visit(f"file-{name}", "/browse" + quote(str(home / name)))
    await audit.visit("editor", "/browse" + quote(str(home / "notes.txt")))
    await page.get_by_test_id("edit").click()
    await page.locator(".cm-editor").wait_for()
    await audit.check("editor")
    await audit.visit("compare", f"/compare?original={quote(str(home / 'notes.txt'))}&revised=script.py")
    await audit.visit("compare-form", f"/compare?original={quote(str(home / 'notes.txt'))}&revised=")
    if (search := await search_page(watched)) is not None:
        await page.goto(search)
        await audit.check("search")
    await audit.visit("terminal", "/terminal", ".xterm")
    await audit.visit("docs", "/docs", ".swagger-ui .info")
    await page.goto(watched.site.url("/no/such/page"))
    watched.expect_status(404, "/no/such/page")
    await audit.check("error")
    await page.goto(await upload_link(watched))
    await page.locator("form").first.wait_for()
    await audit.check("upload-link")


@pytest.mark.parametrize("variant", VARIANTS)
async def test_no_page_has_a_serious_accessibility_violation(open_page: OpenPage, variant: str) -> None:
    axe_script()
    watched = await open_page(bypass_csp=True, **VARIANTS[variant])
    make_home(watched.site.home)
    audit = Audit(watched, variant)
    try:
        await tour(watched, audit)
    finally:
        audit.save()
    problems = audit.blocking()
    assert not problems, f"{len(problems)} serious or critical axe violations ({variant}):\n" + "\n".join(problems)


# --- the keyboard ----------------------------------------------------------------------------------------

TAGGED = """() => {
    const visible = el => { const box = el.getBoundingClientRect(); const style = getComputedStyle(el);
        return box.width > 0 && box.height > 0 && style.visibility !== "hidden" && !el.closest("[hidden], [inert]"); };
    const actions = [...document.querySelectorAll("main a[href], main button, main input:not([type=hidden]), "
        + "main select, main textarea, main [tabindex], header a[href], header button")]
        .filter(el => !el.disabled && el.tabIndex >= 0
                && (visible(el) || (el.type === "file" && visible(el.closest("label") || el))));
    actions.forEach((el, index) => el.dataset.kb = String(index));
    const name = el => (el.getAttribute("aria-label") || el.textContent || el.name || el.type || "");
    return actions.map(el => name(el).trim().replace(/\\s+/g, " ") + " <" + el.tagName.toLowerCase() + ">");
}"""
FOCUSED = """() => {
    const el = document.activeElement;
    if (!el || el === document.body) return null;
    // A visually hidden file input shows its focus on the label around it.
    const shown = el.type === "file" && el.closest("label") ? el.closest("label") : el;
    const style = getComputedStyle(shown);
    const ring = (style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0) || style.boxShadow !== "none";
    const label = (el.getAttribute("aria-label") || el.textContent || el.type || "").trim();
    return {kb: el.dataset.kb ?? null, ring, label};
}"""


async def test_tab_reaches_every_action_of_the_browse_page_with_a_visible_focus(open_page: OpenPage) -> None:
    watched = await open_page(viewport={"width": 1440, "height": 900})
    make_home(watched.site.home)
    await watched.login()
    page = watched.page
    actions: list[str] = await page.evaluate(TAGGED)
    assert any(action.startswith("Upload") or "<input>" in action for action in actions)
    reached: set[str] = set()
    no_ring: list[str] = []
    await page.locator("body").focus()
    for _ in range(3 * len(actions) + 40):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(FOCUSED)
        if focused is None:
            continue
        if focused["kb"] is not None:
            reached.add(focused["kb"])
        if not focused["ring"]:
            no_ring.append(focused["label"])
        if len(reached) == len(actions):
            break
    missing = [actions[int(index)] for index in range(len(actions)) if str(index) not in reached]
    assert not missing, "not reachable with Tab:\n" + "\n".join(missing)
    assert not no_ring, "focused without a visible focus ring:\n" + "\n".join(no_ring)
    upload = page.locator("label", has_text="Upload").first
    await upload.locator("input[type=file]").focus()
    await watched.shot("upload-focused", full_page=False)
    watched.assert_clean()
