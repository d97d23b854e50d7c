"""Web-page sessions: login (key and one-time link), the cookie, expiry, logout, restart, and CSRF.

A session is a random id in an HttpOnly, SameSite=Strict cookie, kept on the server only as its
SHA-256. A request carrying the cookie must come from this origin (Sec-Fetch-Site, Origin) and,
unless it is a GET/HEAD/OPTIONS, carry the session's CSRF token; bearer-key calls are untouched.
"""

from __future__ import annotations

import hashlib
import os
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient

from daemon.app import create_app
from daemon.config import Config
from daemon.http import sessions as sessions_module
from daemon.http.sessions import COOKIE, CSRF_HEADER, PageSessions
from daemon.keys import SESSIONS
from tests.conftest import KEY, Api, FakeClock, eventually

# --- helpers ------------------------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(sessions_module, "time", fake)
    return fake


class _Inputs(HTMLParser):
    """The csrf-token meta tag and the hidden inputs of a page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self.inputs: dict[str, str] = {}
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "meta" and "name" in values:
            self.meta[values["name"]] = values.get("content", "")
        if tag == "input" and "name" in values:
            self.inputs[values["name"]] = values.get("value", "")


def set_cookies(response: Any) -> list[str]:
    return list(response.headers.getall("Set-Cookie", []))


def session_cookie_header(response: Any) -> str:
    cookies = [value for value in set_cookies(response) if value.startswith(COOKIE + "=")]
    assert len(cookies) == 1, set_cookies(response)
    return cookies[0]


def cookie_value(response: Any) -> str:
    value = session_cookie_header(response).split(";", 1)[0].split("=", 1)[1]
    assert value
    return value


def cookie_attributes(header: str) -> dict[str, str]:
    parts = [part.strip() for part in header.split(";")[1:]]
    return {name.lower(): value for name, _, value in (part.partition("=") for part in parts)}


class Browser:
    """A TestClient used the way a browser uses the pages: a cookie jar, forms, the CSRF token."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client
        self.cookie = ""
        self.csrf = ""

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    async def log_in(self, key: str = KEY, next_path: str = "/") -> None:
        async with self.client.post("/login", data={"key": key, "next": next_path},
                                    allow_redirects=False) as response:
            assert response.status == 303, await response.text()
            self.cookie = cookie_value(response)
        self.csrf = await self.csrf_from_page()

    async def csrf_from_page(self) -> str:
        # GET / sends a logged-in browser to its folder; that page carries the token.
        async with self.client.get("/") as response:
            assert response.status == 200
            token = _Inputs(await response.text()).meta["csrf-token"]
        assert token
        return token


@pytest.fixture
def home(config: Config) -> Path:
    """The workspace the file calls act in (with OPEN_TERMINAL_TEST_SANDBOX=bwrap, the only one writable)."""
    return Path(config.home)


@pytest.fixture
async def browser(aiohttp_client: Any, config: Config) -> Browser:
    client = await aiohttp_client(create_app(config))
    page = Browser(client)
    await page.log_in()
    return page


async def new_browser(aiohttp_client: Any, config: Config) -> Browser:
    return Browser(await aiohttp_client(create_app(config)))


# --- PageSessions on its own --------------------------------------------------------------------------


def test_a_created_session_is_found_by_its_cookie_only() -> None:
    sessions = PageSessions()
    cookie, session = sessions.create()
    other_cookie, other = sessions.create()
    assert len(cookie) >= 40 and cookie != other_cookie
    assert session.csrf and session.csrf != other.csrf and session.csrf != cookie
    assert sessions.find(cookie) is session
    assert sessions.find(other_cookie) is other
    for wrong in (None, "", cookie + "x", cookie[:-1], session.csrf):
        assert sessions.find(wrong) is None


def test_revoke_ends_one_session() -> None:
    sessions = PageSessions()
    cookie, _ = sessions.create()
    other_cookie, other = sessions.create()
    sessions.revoke(cookie)
    assert sessions.find(cookie) is None
    assert sessions.find(other_cookie) is other
    sessions.revoke(cookie)  # twice, None, unknown: all harmless
    sessions.revoke(None)
    sessions.revoke("unknown")
    assert sessions.find(other_cookie) is other


async def test_a_tied_socket_is_closed_when_its_session_ends_and_only_then() -> None:
    sessions = PageSessions()
    cookie, session = sessions.create()
    other_cookie, other = sessions.create()
    reasons: list[str] = []

    async def close(reason: str) -> None:
        reasons.append(reason)

    with sessions.tied(session, close) as live, sessions.tied(other, close) as other_live:
        assert live and other_live
        sessions.revoke(cookie)
        await eventually(lambda: reasons == ["Logged out"])
    sessions.revoke(other_cookie)  # let go of when its socket closed: nothing more to close
    with sessions.tied(session, close) as live:
        assert live is False  # an ended session takes no new sockets
    with sessions.tied(None, close) as live:
        assert live is True  # a socket opened with the key is tied to nothing
    assert reasons == ["Logged out"]


def test_only_digests_of_cookies_and_login_tokens_are_stored() -> None:
    sessions = PageSessions()
    cookie, session = sessions.create()
    token = sessions.login_token()
    stored = sessions._sessions
    assert cookie not in stored
    assert list(stored) == [hashlib.sha256(cookie.encode()).hexdigest()]
    assert stored[hashlib.sha256(cookie.encode()).hexdigest()] is session
    assert token not in sessions._login_tokens
    assert list(sessions._login_tokens) == [hashlib.sha256(token.encode()).hexdigest()]
    assert all(cookie not in repr(value) for value in stored.values())


def test_idle_sessions_expire_and_use_keeps_them_alive(clock: FakeClock) -> None:
    sessions = PageSessions(idle=100, lifetime=10_000)
    used, _ = sessions.create()
    unused, _ = sessions.create()
    for _ in range(5):
        clock.advance(60)
        assert sessions.find(used) is not None
    assert sessions.find(unused) is None  # 300 seconds without use
    clock.advance(101)
    assert sessions.find(used) is None


def test_the_idle_limit_is_exclusive_at_its_edge(clock: FakeClock) -> None:
    sessions = PageSessions(idle=100, lifetime=10_000)
    cookie, _ = sessions.create()
    clock.advance(100)
    assert sessions.find(cookie) is not None
    clock.advance(100.5)
    assert sessions.find(cookie) is None


def test_a_session_in_constant_use_still_ends_after_its_lifetime(clock: FakeClock) -> None:
    sessions = PageSessions(idle=100, lifetime=250)
    cookie, _ = sessions.create()
    for _ in range(5):
        clock.advance(50)
        assert sessions.find(cookie) is not None  # t = 250
    clock.advance(1)
    assert sessions.find(cookie) is None


def test_expired_sessions_are_dropped_from_memory(clock: FakeClock) -> None:
    sessions = PageSessions(idle=10, lifetime=100)
    for _ in range(3):
        sessions.create()
    clock.advance(11)
    sessions.create()
    assert len(sessions._sessions) == 1


def test_a_login_token_is_redeemed_once() -> None:
    sessions = PageSessions()
    token, other = sessions.login_token(), sessions.login_token()
    assert token != other
    assert sessions.redeem(token) is True
    assert sessions.redeem(token) is False
    assert sessions.redeem("") is False
    assert sessions.redeem(token + "x") is False
    assert sessions.redeem(other) is True


def test_a_login_token_expires(clock: FakeClock) -> None:
    sessions = PageSessions(login_ttl=60)
    token, fresh = sessions.login_token(), sessions.login_token()
    clock.advance(61)
    assert sessions.redeem(token) is False
    assert sessions.redeem(token) is False
    assert sessions.redeem(fresh) is False


def test_a_short_lived_login_token_expires_in_real_time() -> None:
    sessions = PageSessions(login_ttl=0.01)
    token = sessions.login_token()
    time.sleep(0.05)
    assert sessions.redeem(token) is False


async def test_the_first_page_of_a_fresh_process_is_served(monkeypatch: pytest.MonkeyPatch, aiohttp_client: Any,
                                                          config: Config) -> None:
    """aiohttp warns (NotAppKeyWarning) the first time a process stores a plain-string key on a request.

    The suite turns warnings into errors, so a session stored under a str key makes the first page a
    process serves a 500; aiohttp remembers the key class-wide, which hides it from every later test.
    Forgetting what aiohttp has seen makes this test the first, whatever ran before it.
    """
    monkeypatch.setattr(web.BaseRequest, "_seen_str_keys", set())
    page = await new_browser(aiohttp_client, config)
    await page.log_in()
    assert page.csrf


# --- login with the key ---------------------------------------------------------------------------------


async def test_the_root_without_a_session_is_the_login_page(aiohttp_client: Any, config: Config) -> None:
    page = await new_browser(aiohttp_client, config)
    async with page.client.get("/", allow_redirects=False) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        html = await response.text()
        assert set_cookies(response) == []
    assert 'action="/login"' in html and 'name="key"' in html and 'type="password"' in html
    assert _Inputs(html).inputs["next"] == "/"
    assert _Inputs(html).meta["csrf-token"] == ""  # no session, no token, no logout form
    assert "/logout" not in html


async def test_the_right_key_starts_a_session(aiohttp_client: Any, config: Config) -> None:
    page = await new_browser(aiohttp_client, config)
    async with page.client.post("/login", data={"key": KEY, "next": "/"}, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/"
        header = session_cookie_header(response)
    attributes = cookie_attributes(header)
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "strict"
    assert attributes["path"] == "/"
    assert "secure" not in attributes  # plain http on loopback: a Secure cookie would never come back
    assert "max-age" not in attributes and "expires" not in attributes  # a browser-session cookie
    async with page.client.get("/", allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"].startswith("/browse/")


async def test_a_pasted_key_with_stray_spaces_is_accepted(aiohttp_client: Any, config: Config) -> None:
    page = await new_browser(aiohttp_client, config)
    await page.log_in(key=f"  {KEY} ")
    assert page.cookie


@pytest.mark.parametrize("key", ["wrong", "", KEY + "x", KEY[:-1]])
async def test_a_wrong_key_is_refused_with_the_form_again(aiohttp_client: Any, config: Config, key: str) -> None:
    page = await new_browser(aiohttp_client, config)
    async with page.client.post("/login", data={"key": key, "next": "/browse/tmp"},
                                allow_redirects=False) as response:
        assert response.status == 401
        assert response.content_type == "text/html"
        assert set_cookies(response) == []
        html = await response.text()
    assert 'data-testid="login-error"' in html and "That key is not right." in html
    assert _Inputs(html).inputs["next"] == "/browse/tmp"
    assert len(page.client.session.cookie_jar) == 0
    async with page.client.get("/files/list?directory=/") as response:
        assert response.status == 401


async def test_login_without_a_form_body_is_refused(aiohttp_client: Any, config: Config) -> None:
    page = await new_browser(aiohttp_client, config)
    async with page.client.post("/login", allow_redirects=False) as response:
        assert response.status == 401
        assert set_cookies(response) == []


@pytest.mark.parametrize("target", ["/browse/tmp", "/browse/tmp?sort=size&order=desc", "/browse/a%20b#x"])
async def test_login_goes_where_next_says(aiohttp_client: Any, config: Config, target: str) -> None:
    page = await new_browser(aiohttp_client, config)
    async with page.client.post("/login", data={"key": KEY, "next": target}, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == target


OFF_SITE = [
    "//evil.com", "https://evil.com", "http://evil.com/browse/", "evil.com", "javascript:alert(1)",
    "///evil.com", "https:evil.com", " //evil.com",
    # Browsers read a backslash as a slash and drop tabs and newlines in URLs: both become //evil.com.
    "/\\evil.com", "/\t/evil.com",
]


@pytest.mark.parametrize("target", OFF_SITE)
async def test_next_never_leaves_the_site(aiohttp_client: Any, config: Config, target: str) -> None:
    page = await new_browser(aiohttp_client, config)
    async with page.client.post("/login", data={"key": KEY, "next": target}, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/"
    async with page.client.get("/login", params={"next": target}) as response:
        assert response.status == 200
        assert _Inputs(await response.text()).inputs["next"] == "/"


async def test_a_page_without_a_session_sends_to_login_and_back(aiohttp_client: Any, config: Config,
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "home" / "my docs"
    folder.mkdir()
    page = await new_browser(aiohttp_client, config)
    wanted = f"/browse{folder}?sort=size&order=desc".replace(" ", "%20")
    async with page.client.get(wanted, allow_redirects=False) as response:
        assert response.status == 303
        login_url = response.headers["Location"]
    assert login_url.startswith("/login?next=/browse/")
    async with page.client.get(login_url) as response:
        assert response.status == 200
        next_path = _Inputs(await response.text()).inputs["next"]
    assert next_path == wanted
    async with page.client.post("/login", data={"key": KEY, "next": next_path}, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == wanted
    async with page.client.get(wanted) as response:
        assert response.status == 200
        assert str(folder) in await response.text()


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "http://evil.example"},
    {"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"},
    {"Origin": "null"},
], ids=["cross-site", "same-site", "foreign-origin", "same-origin-but-foreign-origin", "null-origin"])
async def test_a_cross_site_login_is_refused(aiohttp_client: Any, config: Config, headers: dict[str, str]) -> None:
    """Login CSRF: another site must not log the browser into this daemon (even with the right key)."""
    page = await new_browser(aiohttp_client, config)
    async with page.client.post("/login", data={"key": KEY, "next": "/"}, headers=headers,
                                allow_redirects=False) as response:
        assert response.status == 403
        assert set_cookies(response) == []
    assert len(page.client.session.cookie_jar) == 0


async def test_a_same_origin_login_is_accepted(aiohttp_client: Any, config: Config) -> None:
    page = await new_browser(aiohttp_client, config)
    async with page.client.post("/login", data={"key": KEY}, allow_redirects=False,
                                headers={"Sec-Fetch-Site": "same-origin", "Origin": page.origin}) as response:
        assert response.status == 303
        assert cookie_value(response)


# --- the one-time login link ---------------------------------------------------------------------------


async def test_the_login_link_works_once(aiohttp_client: Any, config: Config) -> None:
    page = await new_browser(aiohttp_client, config)
    token = page.client.app[SESSIONS].login_token()
    async with page.client.get("/", params={"token": token}, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/"  # the token leaves the address bar
        attributes = cookie_attributes(session_cookie_header(response))
    assert "httponly" in attributes and attributes["samesite"].lower() == "strict"
    async with page.client.get("/", allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"].startswith("/browse/")

    second = await new_browser(aiohttp_client, config)
    async with second.client.get("/", params={"token": token}, allow_redirects=False) as response:
        assert response.status == 401
        assert set_cookies(response) == []
        html = await response.text()
    assert 'data-testid="login-error"' in html and "already used" in html
    assert 'name="key"' in html


@pytest.mark.parametrize("token", ["", "bogus", "x" * 43])
async def test_a_made_up_login_link_is_refused(aiohttp_client: Any, config: Config, token: str) -> None:
    page = await new_browser(aiohttp_client, config)
    async with page.client.get("/", params={"token": token}, allow_redirects=False) as response:
        assert response.status == 401
        assert set_cookies(response) == []


async def test_an_expired_login_link_is_refused(aiohttp_client: Any, config: Config, clock: FakeClock) -> None:
    page = await new_browser(aiohttp_client, config)
    token = page.client.app[SESSIONS].login_token()
    clock.advance(3601)
    async with page.client.get("/", params={"token": token}, allow_redirects=False) as response:
        assert response.status == 401
        assert set_cookies(response) == []
        assert "expired" in await response.text()


async def test_the_login_link_is_still_good_just_before_it_expires(aiohttp_client: Any, config: Config,
                                                                   clock: FakeClock) -> None:
    page = await new_browser(aiohttp_client, config)
    token = page.client.app[SESSIONS].login_token()
    clock.advance(3599)
    async with page.client.get("/", params={"token": token}, allow_redirects=False) as response:
        assert response.status == 303
        assert cookie_value(response)


# --- expiry, restart and logout --------------------------------------------------------------------------


async def test_an_idle_session_expires(clock: FakeClock, browser: Browser, home: Path) -> None:
    clock.advance(12 * 3600 + 1)
    async with browser.client.get("/files/list", params={"directory": str(home)}) as response:
        assert response.status == 401
    async with browser.client.get("/browse/", allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"].startswith("/login?next=")


async def test_a_restart_forgets_every_session(aiohttp_client: Any, config: Config, browser: Browser,
                                               home: Path) -> None:
    restarted = await new_browser(aiohttp_client, config)  # same configuration, same key, new process state
    cookie = {"Cookie": f"{COOKIE}={browser.cookie}"}
    query = {"directory": str(home)}
    async with restarted.client.get("/files/list", params=query, headers=cookie) as response:
        assert response.status == 401
        assert await response.json() == {"detail": "Invalid API key"}
    async with restarted.client.post("/files/mkdir", json={"path": str(home / "x")},
                                     headers={**cookie, CSRF_HEADER: browser.csrf}) as response:
        assert response.status == 401
    assert not (home / "x").exists()
    async with restarted.client.get("/browse/", headers=cookie, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/login?next=/browse/"
    async with restarted.client.get("/", headers=cookie, allow_redirects=False) as response:
        assert response.status == 200  # the login page again
        assert 'action="/login"' in await response.text()
    # The old server still knows it.
    async with browser.client.get("/files/list", params=query) as response:
        assert response.status == 200


async def test_logout_revokes_the_session_and_clears_the_cookie(browser: Browser, home: Path) -> None:
    async with browser.client.post("/logout", data={"csrf_token": browser.csrf}, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/login"
        attributes = cookie_attributes(session_cookie_header(response))
    assert attributes.get("max-age") == "0" and attributes["path"] == "/"
    # Whether or not the browser forgets the cookie, the server does.
    cookie = {"Cookie": f"{COOKIE}={browser.cookie}"}
    browser.client.session.cookie_jar.clear()
    async with browser.client.get("/files/list", params={"directory": str(home)}, headers=cookie) as response:
        assert response.status == 401
    async with browser.client.get("/browse/", headers=cookie, allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"].startswith("/login")
    async with browser.client.post("/logout", data={"csrf_token": browser.csrf}, headers=cookie,
                                   allow_redirects=False) as response:
        assert response.status == 401


async def test_logout_by_fetch_with_the_header(browser: Browser) -> None:
    async with browser.client.post("/logout", headers={CSRF_HEADER: browser.csrf}, allow_redirects=False) as response:
        assert response.status == 303
    async with browser.client.get("/browse/", headers={"Cookie": f"{COOKIE}={browser.cookie}"},
                                  allow_redirects=False) as response:
        assert response.status == 303


@pytest.mark.parametrize("form", [{}, {"csrf_token": ""}, {"csrf_token": "wrong"}])
async def test_logout_without_the_token_is_refused(browser: Browser, form: dict[str, str]) -> None:
    """A cross-site form could otherwise log the user out (a nuisance, and a login-CSRF stepping stone)."""
    async with browser.client.post("/logout", data=form, allow_redirects=False) as response:
        assert response.status == 403
        assert set_cookies(response) == []
    async with browser.client.get("/", allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"].startswith("/browse/")


async def test_logout_with_the_token_from_another_site_is_refused(browser: Browser) -> None:
    async with browser.client.post("/logout", data={"csrf_token": browser.csrf}, allow_redirects=False,
                                   headers={"Sec-Fetch-Site": "cross-site"}) as response:
        assert response.status == 403
    async with browser.client.get("/", allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"].startswith("/browse/")


async def test_two_browsers_have_separate_sessions(aiohttp_client: Any, config: Config, browser: Browser,
                                                   home: Path) -> None:
    client = browser.client
    other = Browser(await aiohttp_client(client.server))
    await other.log_in()
    assert other.cookie != browser.cookie and other.csrf != browser.csrf
    # One session's token is no good with the other's cookie.
    async with other.client.post("/files/mkdir", json={"path": str(home / "x")},
                                 headers={CSRF_HEADER: browser.csrf}) as response:
        assert response.status == 403
    async with other.client.post("/logout", data={"csrf_token": other.csrf}, allow_redirects=False) as response:
        assert response.status == 303
    async with browser.client.get("/", allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"].startswith("/browse/")


# --- CSRF on the JSON API with a cookie ------------------------------------------------------------------


async def test_a_change_without_the_csrf_token_is_refused(browser: Browser, home: Path) -> None:
    target = home / "made"
    async with browser.client.post("/files/mkdir", json={"path": str(target)}) as response:
        assert response.status == 403
        assert await response.json() == {"detail": "Missing or invalid CSRF token, or a cross-site request"}
    assert not target.exists()


@pytest.mark.parametrize("token", ["", "wrong", "x" * 43])
async def test_a_change_with_a_wrong_csrf_token_is_refused(browser: Browser, home: Path, token: str) -> None:
    target = home / "made"
    async with browser.client.post("/files/mkdir", json={"path": str(target)},
                                   headers={CSRF_HEADER: token}) as response:
        assert response.status == 403
    assert not target.exists()


async def test_the_cookie_value_is_not_a_csrf_token(browser: Browser, home: Path) -> None:
    async with browser.client.post("/files/mkdir", json={"path": str(home / "made")},
                                   headers={CSRF_HEADER: browser.cookie}) as response:
        assert response.status == 403


async def test_a_change_with_the_csrf_token_is_done(browser: Browser, home: Path) -> None:
    target = home / "made"
    async with browser.client.post("/files/mkdir", json={"path": str(target)},
                                   headers={CSRF_HEADER: browser.csrf}) as response:
        assert response.status == 200, await response.text()
        assert await response.json() == {"path": str(target)}
    assert target.is_dir()
    # What a browser's fetch from our own page sends is accepted too.
    async with browser.client.post("/files/mkdir", json={"path": str(home / "second")}, headers={
            CSRF_HEADER: browser.csrf, "Sec-Fetch-Site": "same-origin", "Origin": browser.origin}) as response:
        assert response.status == 200
    assert (home / "second").is_dir()


async def test_every_unsafe_method_needs_the_token(browser: Browser, home: Path) -> None:
    victim = home / "victim.txt"
    victim.write_text("keep me")
    async with browser.client.delete("/files/delete", params={"path": str(victim)}) as response:
        assert response.status == 403
    async with browser.client.post("/files/write", json={"path": str(victim), "content": "gone"}) as response:
        assert response.status == 403
    async with browser.client.post("/files/move", json={"source": str(victim),
                                                        "destination": str(home / "moved")}) as response:
        assert response.status == 403
    assert victim.read_text() == "keep me"
    async with browser.client.delete("/files/delete", params={"path": str(victim)},
                                     headers={CSRF_HEADER: browser.csrf}) as response:
        assert response.status == 200
    assert not victim.exists()


async def test_a_csrf_token_in_a_multipart_body_does_not_count(browser: Browser, home: Path) -> None:
    """Only the header or a urlencoded form field: a multipart upload is never read for the token."""
    form = FormData()
    form.add_field("csrf_token", browser.csrf)
    form.add_field("file", b"payload", filename="dropped.txt")
    async with browser.client.post("/files/upload", params={"directory": str(home)}, data=form) as response:
        assert response.status == 403
    assert not (home / "dropped.txt").exists()


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"},
], ids=["cross-site", "same-site", "foreign-origin", "null-origin", "same-origin-but-foreign-origin"])
async def test_the_right_token_from_another_site_is_refused(browser: Browser, home: Path,
                                                            headers: dict[str, str]) -> None:
    target = home / "made"
    async with browser.client.post("/files/mkdir", json={"path": str(target)},
                                   headers={CSRF_HEADER: browser.csrf, **headers}) as response:
        assert response.status == 403
    assert not target.exists()


async def test_another_port_on_localhost_is_another_origin(browser: Browser, home: Path) -> None:
    """SameSite ignores ports: a page on localhost:9999 sends our cookie, but must get nothing back."""
    other_port = f"http://{browser.client.host}:{int(browser.client.port or 0) + 1}"
    query = {"directory": str(home)}
    async with browser.client.get("/files/list", params=query, headers={"Sec-Fetch-Site": "same-site"}) as response:
        assert response.status == 403
    async with browser.client.get("/files/list", params=query, headers={"Origin": other_port}) as response:
        assert response.status == 403
    async with browser.client.get("/files/view", params={"path": str(home)},
                                  headers={"Sec-Fetch-Site": "cross-site"}) as response:
        assert response.status == 403
    async with browser.client.get("/browse/", headers={"Sec-Fetch-Site": "cross-site"},
                                  allow_redirects=False) as response:
        assert response.status == 403


@pytest.mark.parametrize("headers", [{}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}],
                         ids=["no-fetch-metadata", "same-origin", "typed-url"])
async def test_reads_from_our_own_pages_need_no_token(browser: Browser, home: Path,
                                                      headers: dict[str, str]) -> None:
    (home / "seen.txt").write_text("x")
    async with browser.client.get("/files/list", params={"directory": str(home)}, headers=headers) as response:
        assert response.status == 200
        names = [entry["name"] for entry in (await response.json())["entries"]]
    assert "seen.txt" in names


async def test_same_origin_check_uses_our_exact_origin(browser: Browser, home: Path) -> None:
    query = {"directory": str(home)}
    async with browser.client.get("/files/list", params=query, headers={"Origin": browser.origin}) as response:
        assert response.status == 200
    for near_miss in (browser.origin + "/", browser.origin.replace("http:", "https:"),
                      f"http://localhost:{browser.client.port}", browser.origin + ".evil.example"):
        async with browser.client.get("/files/list", params=query, headers={"Origin": near_miss}) as response:
            assert response.status == 403, near_miss


# --- bearer-key calls are unaffected ----------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
], ids=["plain", "cross-site", "foreign-origin"])
async def test_bearer_calls_need_no_csrf_token(api: Api, home: Path, headers: dict[str, str]) -> None:
    target = home / "by-key"
    await api.json("POST", "/files/mkdir", json={"path": str(target)}, headers=headers)
    assert target.is_dir()
    listing = await api.json("GET", "/files/list", params={"directory": str(home)}, headers=headers)
    assert "by-key" in [entry["name"] for entry in listing["entries"]]
    await api.json("DELETE", "/files/delete", params={"path": str(target)}, headers=headers)
    assert not target.exists()


async def test_a_bearer_call_alongside_a_stale_cookie_still_works(api: Api, home: Path) -> None:
    await api.json("POST", "/files/mkdir", json={"path": str(home / "k")},
                   headers={"Cookie": f"{COOKIE}=stale", "Sec-Fetch-Site": "cross-site"})
    assert (home / "k").is_dir()


async def test_a_wrong_bearer_key_without_a_session_is_refused(api: Api, home: Path) -> None:
    await api.json("POST", "/files/mkdir", auth=False, status=401, json={"path": str(home / "never")},
                   headers={"Authorization": "Bearer wrong"})
    assert not os.path.exists(home / "never")
