"""Installable: the web app manifest is linked, served as JSON that Chromium parses without errors, its
icons load at their stated sizes, and nothing caches private data (no service worker)."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image

from tests.browser.conftest import Watched

MANIFEST = "/static/manifest.webmanifest"


async def test_the_manifest_is_served_valid_and_its_icons_load(logged_in: Watched) -> None:
    page = logged_in.page
    assert await page.locator("link[rel=manifest]").get_attribute("href") == MANIFEST
    assert await page.locator("link[rel=apple-touch-icon]").count() == 1
    assert await page.locator("meta[name=theme-color]").count() >= 1
    # Fetched the way a browser fetches a manifest: without credentials, so it must be public.
    response = await page.request.get(logged_in.site.url(MANIFEST), headers={"Cookie": ""})
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/manifest+json")
    manifest: dict[str, Any] = json.loads(await response.body())
    assert manifest["display"] == "standalone" and manifest["start_url"] == "/" and manifest["scope"] == "/"
    assert manifest["name"] and manifest["theme_color"] and manifest["background_color"]
    sizes = set()
    for icon in manifest["icons"]:
        reply = await page.request.get(logged_in.site.url(icon["src"]))
        assert reply.status == 200, icon
        assert reply.headers["content-type"] == icon["type"], icon
        if icon["type"] == "image/png":
            with Image.open(io.BytesIO(await reply.body())) as image:
                assert f"{image.width}x{image.height}" == icon["sizes"], icon
            sizes.add(icon["sizes"])
    assert {"192x192", "512x512"} <= sizes

    # Chromium's own reading of it: no parse errors, and the installability icons present.
    cdp = await page.context.new_cdp_session(page)
    reading = await cdp.send("Page.getAppManifest")
    assert reading["url"].endswith(MANIFEST)
    assert reading["errors"] == [], reading["errors"]
    assert json.loads(reading["data"]) == manifest
    assert await page.evaluate("navigator.serviceWorker.getRegistrations().then(r => r.length)") == 0
    logged_in.assert_clean()


async def test_the_login_page_links_the_manifest_under_the_csp(watched: Watched) -> None:
    """Before logging in too (a phone adds the app from wherever it is), and the CSP allows it."""
    response = await watched.page.goto(watched.site.url("/login"))
    assert response is not None
    assert "manifest-src 'self'" in response.headers["content-security-policy"]
    cdp = await watched.page.context.new_cdp_session(watched.page)
    reading = await cdp.send("Page.getAppManifest")
    assert reading["url"].endswith(MANIFEST) and reading["errors"] == []
    watched.assert_clean()
