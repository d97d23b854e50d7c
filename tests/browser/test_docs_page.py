"""/docs in a real browser: the vendored Swagger UI renders the API offline, with no console errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import KEY, Api


async def test_swagger_ui_lists_the_tools(api: Api, browser: Any, artifacts: Path) -> None:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    outside: list[str] = []
    base = str(api.client.make_url("/"))
    page.on("request", lambda request: None if request.url.startswith(base) else outside.append(request.url))
    response = await page.goto(str(api.client.make_url("/docs")))
    assert response is not None
    assert "frame-ancestors 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    await page.wait_for_selector("text=run_command", timeout=15_000)
    for operation in ("list_processes", "get_process_status", "send_process_input", "kill_process"):
        assert await page.locator(f"text={operation}").count() >= 1
    await page.screenshot(path=str(artifacts / "docs.png"), full_page=True)
    assert errors == []
    assert outside == [], "the page works offline: nothing is fetched from elsewhere"


async def test_the_key_entered_in_swagger_ui_is_not_kept_in_local_storage(api: Api, browser: Any) -> None:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    await page.goto(str(api.client.make_url("/docs")))
    await page.click("button.authorize")
    await page.fill("#auth-bearer-value", KEY)
    await page.click(".auth-btn-wrapper button.authorize")
    await page.wait_for_selector(".auth-btn-wrapper >> text=Logout", timeout=15_000)
    await page.click("button.close-modal")
    await page.click("text=run_command")  # an operation unfolds: more of Swagger UI's own rendering
    await page.wait_for_selector("text=Try it out", timeout=15_000)
    assert await page.evaluate("() => Object.keys(window.localStorage)") == []
    assert KEY not in await page.evaluate("() => JSON.stringify(window.localStorage)")
    assert errors == [], "no Content-Security-Policy violation either"
