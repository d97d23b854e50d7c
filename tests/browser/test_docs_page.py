"""/docs in a real browser: the vendored Swagger UI renders the API offline, with no console errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import Api


async def test_swagger_ui_lists_the_tools(api: Api, browser: Any, artifacts: Path) -> None:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    outside: list[str] = []
    base = str(api.client.make_url("/"))
    page.on("request", lambda request: None if request.url.startswith(base) else outside.append(request.url))
    await page.goto(str(api.client.make_url("/docs")))
    await page.wait_for_selector("text=run_command", timeout=15_000)
    for operation in ("list_processes", "get_process_status", "send_process_input", "kill_process"):
        assert await page.locator(f"text={operation}").count() >= 1
    await page.screenshot(path=str(artifacts / "docs.png"), full_page=True)
    assert errors == []
    assert outside == [], "the page works offline: nothing is fetched from elsewhere"
