"""One error renderer (daemon/http/errors.py): a browser navigation gets the styled page, API clients JSON.

The headers are what the clients really send: Chromium's navigation (`Sec-Fetch-Dest: document` and an
Accept that ranks text/html first), `fetch()` from a page (`Sec-Fetch-Dest: empty`, `*/*`), curl (`*/*`)
and an API client asking for JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from daemon.app import create_app
from daemon.http.endpoints import Access
from daemon.keys import ACCESS
from tests.conftest import AUTH, KEY, make_config
from tests.pages.test_views import Document, assert_nothing_active, assert_page_headers

NAVIGATION = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
              "Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "none"}
FETCH = {"Accept": "*/*", "Sec-Fetch-Dest": "empty", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin"}
CURL = {"Accept": "*/*"}
JSON = {"Accept": "application/json"}


async def broken_page(request: web.Request) -> web.Response:
    raise RuntimeError("secret internals /tmp/.immutable.txt.ivkttig_.tmp")


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> TestClient[Any, Any]:
    app = create_app(make_config(tmp_path))
    # A page whose handler fails unexpectedly: the real middleware must turn it into the styled 500.
    app[ACCESS][app.router.add_get("/test-broken-page", broken_page)] = Access.PAGE
    client: TestClient[Any, Any] = await aiohttp_client(app)
    async with client.post("/login", data={"key": KEY}, allow_redirects=False) as response:
        assert response.status == 303
    return client


async def styled(client: TestClient[Any, Any], url: str, status: int, headers: dict[str, str]) -> Document:
    async with client.get(url, headers=headers, allow_redirects=False) as response:
        html = await response.text()
        assert response.status == status, html[:500]
        assert response.content_type == "text/html"
        assert_page_headers(response.headers)
    assert_nothing_active(html)
    page = Document(html)
    assert page.one("h1").text.startswith(f"{status} ")
    assert page.one(testid="error-detail").text.strip()
    assert page.one("a", testid="error-home").attr("href") in ("/", "/login")
    return page


async def json_error(client: TestClient[Any, Any], url: str, status: int, headers: dict[str, str]) -> Any:
    async with client.get(url, headers=headers, allow_redirects=False) as response:
        assert response.status == status
        assert response.content_type == "application/json"
        return await response.json()


async def test_an_unreadable_file_is_the_styled_403_for_a_navigation(client: TestClient[Any, Any]) -> None:
    """/proc/1/mem opens (we are root) but its first read fails with EIO: the page says so, styled."""
    page = await styled(client, "/browse/proc/1/mem", 403, NAVIGATION)
    assert page.one(testid="error-page")
    assert page.one("a", testid="error-home").attr("href") == "/"


@pytest.mark.parametrize("url", ["/no/such/page", "/files/nope", "/api/nope/deeper", "/favicon.ico"])
async def test_an_unknown_url_is_the_styled_404_for_a_navigation_and_json_for_clients(
        client: TestClient[Any, Any], url: str) -> None:
    await styled(client, url, 404, NAVIGATION)
    for headers in (FETCH, CURL, JSON):
        assert await json_error(client, url, 404, headers) == {"detail": "Not Found"}


async def test_an_accept_that_prefers_json_keeps_json_outside_the_api(client: TestClient[Any, Any]) -> None:
    await styled(client, "/no/such/page", 404, {"Accept": "text/html,application/xhtml+xml"})
    assert await json_error(client, "/no/such/page", 404,
                            {"Accept": "application/json, text/html;q=0.5"}) == {"detail": "Not Found"}
    # Without Fetch Metadata, an API path stays JSON even for text/html (an old client of the API).
    assert await json_error(client, "/files/nope", 404, {"Accept": "text/html"}) == {"detail": "Not Found"}


async def test_an_api_url_opened_in_a_tab_fails_with_the_page_but_json_for_its_clients(
        client: TestClient[Any, Any]) -> None:
    page = await styled(client, "/files/view?path=/no/such/file", 404, NAVIGATION)
    assert page.one(testid="error-detail").text == "File not found"
    assert (await json_error(client, "/files/view?path=/no/such/file", 404, {**FETCH, **AUTH}))["detail"] == \
        "File not found"


async def test_an_unexpected_failure_is_the_styled_500_without_internals(client: TestClient[Any, Any]) -> None:
    page = await styled(client, "/test-broken-page", 500, NAVIGATION)
    assert "ivkttig" not in "".join(element.text for element in page.all()) and "secret" not in page.one("main").text
    # A page route renders its errors as the page whoever asks (the browse page's own fetches never load it).
    await styled(client, "/test-broken-page", 500, CURL)


async def test_a_stranger_navigating_to_the_api_is_offered_the_sign_in(
        aiohttp_client: Any, tmp_path: Path) -> None:
    stranger: TestClient[Any, Any] = await aiohttp_client(create_app(make_config(tmp_path)))
    page = await styled(stranger, "/files/list?directory=/", 401, NAVIGATION)
    assert page.one("a", testid="error-home").attr("href") == "/login"
    assert (await json_error(stranger, "/files/list?directory=/", 401, CURL))["detail"]
    await styled(stranger, "/no/such/page", 404, NAVIGATION)


async def test_a_post_is_never_answered_with_the_page(client: TestClient[Any, Any]) -> None:
    async with client.post("/no/such/page", headers=NAVIGATION) as response:
        assert response.status in (403, 404, 405)
        assert response.content_type == "application/json"
