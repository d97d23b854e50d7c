"""The web pages as a browser receives them: headers, listings, file previews, and XSS attempts.

Everything is asserted on the HTML the real server sends to a logged-in session, parsed the way a
browser would parse it (html.parser), so "escaped" means "no element or attribute came of it".
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from daemon.app import create_app
from daemon.config import Config
from daemon.http.sessions import COOKIE, CSRF_HEADER
from daemon.pages.icons import SPRITE_URL
from daemon.pages.listing import PAGE_SIZE
from tests.conftest import KEY, make_config
from tests.files.test_documents import PAGES, PDF_TEXT, make_pdf, make_png

# --- parsing ----------------------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    text: str = ""
    children: list[Element] = field(default_factory=list)

    def attr(self, name: str) -> str:
        return self.attrs.get(name) or ""


class Document(HTMLParser):
    """Every element of a page with its attributes and its text (character references decoded)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        if self._open:
            self._open[-1].children.append(element)
        self.elements.append(element)
        if tag not in VOID:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        if self._open:
            self._open[-1].children.append(element)
        self.elements.append(element)

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index].tag == tag:
                del self._open[index:]
                return

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data

    def all(self, tag: str | None = None, testid: str | None = None) -> list[Element]:
        return [element for element in self.elements
                if (tag is None or element.tag == tag) and (testid is None or element.attr("data-testid") == testid)]

    def one(self, tag: str | None = None, testid: str | None = None) -> Element:
        found = self.all(tag, testid)
        assert len(found) == 1, (tag, testid, len(found))
        return found[0]


def within(element: Element, tag: str) -> list[Element]:
    found: list[Element] = []
    for child in element.children:
        if child.tag == tag:
            found.append(child)
        found.extend(within(child, tag))
    return found


URL_ATTRIBUTES = {"href", "src", "action", "formaction", "data", "poster", "xlink:href"}


def is_our_icon(element: Element) -> bool:
    """icon() of daemon/pages/icons.py: an <svg> that only draws a symbol of our own sprite."""
    return (element.tag == "svg" and element.attr("class").startswith("icon ")
            and all(child.tag in ("use", "title") and not child.children for child in element.children)
            and all(child.attr("href").startswith(SPRITE_URL + "#") for child in element.children
                    if child.tag == "use"))


def assert_nothing_active(html: str) -> Document:
    """What the page itself would run: only our own script files; no handlers, no javascript: URLs."""
    page = Document(html)
    for element in page.elements:
        # A JSON data block (the image viewer's list, escaped by |tojson) is never run.
        if element.tag == "script" and element.attr("type") != "application/json":
            assert element.attr("src").startswith("/static/"), element
            assert not element.text.strip(), element
        assert element.tag not in ("object", "embed", "base", "style", "svg", "math", "frame", "frameset") \
            or is_our_icon(element), element
        if element.tag == "iframe":  # /files/serve/<path>: a PDF's tab is titled by its name
            assert element.attr("src").startswith(("/files/view?path=", "/files/serve/")), element
        if element.tag == "meta":
            assert (element.attr("http-equiv")).lower() != "refresh", element
        for name, value in element.attrs.items():
            assert not name.startswith("on"), element
            assert name != "style", element  # the CSP has no 'unsafe-inline' for styles either
            if name in URL_ATTRIBUTES:
                url = re.sub(r"[\x00-\x20]", "", value or "").lower()
                assert not url.startswith(("javascript:", "data:text", "vbscript:")), element
    return page


# --- a logged-in browser ----------------------------------------------------------------------------------


class Browser:
    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client
        self.csrf = ""

    async def log_in(self) -> None:
        async with self.client.post("/login", data={"key": KEY}, allow_redirects=False) as response:
            assert response.status == 303, await response.text()
        async with self.client.get("/") as response:
            page = Document(await response.text())
        self.csrf = next(m.attr("content") for m in page.all("meta") if m.attr("name") == "csrf-token")
        assert self.csrf

    async def page(self, url: str, status: int = 200) -> str:
        """The HTML at `url`, checked for the status, the page headers and the absence of active content."""
        async with self.client.get(url, allow_redirects=False) as response:
            html = await response.text()
            assert response.status == status, (response.status, html[:2000])
            assert response.content_type == "text/html"
            assert_page_headers(response.headers)
        assert_nothing_active(html)
        return html

    async def redirect(self, url: str) -> str:
        async with self.client.get(url, allow_redirects=False) as response:
            assert response.status == 303, await response.text()
            assert_page_headers(response.headers)
            return response.headers["Location"]


def assert_page_headers(headers: Any) -> None:
    policy = headers["Content-Security-Policy"]
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    assert directives["script-src"] == ["'self'"], policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, policy
    assert directives["object-src"] == ["'none'"], policy
    assert "frame-ancestors" in directives, policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Frame-Options"] in ("DENY", "SAMEORIGIN")


BrowserFactory = Callable[..., Awaitable[Browser]]


@pytest.fixture
def browser_with(aiohttp_client: Any, tmp_path: Path) -> BrowserFactory:
    async def start(**overrides: Any) -> Browser:
        browser = Browser(await aiohttp_client(create_app(make_config(tmp_path, **overrides))))
        await browser.log_in()
        return browser

    return start


@pytest.fixture
async def browser(browser_with: BrowserFactory) -> Browser:
    return await browser_with()


@pytest.fixture
def home(scratch_environment: Path) -> Path:
    return scratch_environment


def browse(path: Path | str) -> str:
    return "/browse" + quote(str(path))


def entry_names(html: str) -> list[str]:
    return [row.attr("data-name") for row in Document(html).all("tr", testid="entry")]


# --- headers and scripts on every page ------------------------------------------------------------------


async def test_every_page_has_the_security_headers_and_no_inline_script(
        aiohttp_client: Any, config: Config, browser: Browser, home: Path) -> None:
    (home / "notes.md").write_text("# Notes\n")
    (home / "data.csv").write_text("a,b\n1,2\n")
    (home / "code.py").write_text("print('hi')\n")
    (home / "page.html").write_text("<h1>hi</h1>")
    (home / "pic.png").write_bytes(make_png())
    (home / "doc.pdf").write_bytes(make_pdf(PAGES))
    (home / "blob.bin").write_bytes(b"\x00\xff\xfe")
    pages = [browse(home), browse("/"), *(browse(home / name) for name in os.listdir(home)),
             browse(home / "missing"), "/login", "/login?next=/browse/"]
    for url in pages:
        await browser.page(url, status=404 if url.endswith("missing") else 200)
    # Pages without a session: the login page, a refused key, a refused login link.
    anonymous = Browser(await aiohttp_client(browser.client.server))
    await anonymous.page("/")
    await anonymous.page("/?token=nope", status=401)
    async with anonymous.client.post("/login", data={"key": "wrong"}) as response:
        assert response.status == 401
        assert_page_headers(response.headers)
        assert_nothing_active(await response.text())
    # Redirects carry them too.
    await browser.redirect("/")
    await browser.redirect("/browse")


async def test_every_script_a_page_loads_is_served(browser: Browser, home: Path) -> None:
    """A page that names a missing script breaks in the browser (and logs a console error)."""
    (home / "notes.md").write_text("# Notes\n")
    sources: set[str] = set()
    for url in (browse(home), browse(home / "notes.md"), "/login"):
        html = await browser.page(url)
        sources |= {element.attr("src") for element in Document(html).all("script")}
        sources |= {element.attr("href") for element in Document(html).all("link")
                    if not element.attr("href").startswith("data:")}
    assert "/static/js/app.js" in sources
    missing = []
    for source in sorted(sources):
        async with browser.client.get(source) as response:
            if response.status != 200:
                missing.append((source, response.status))
    assert missing == []


async def test_the_code_stylesheet_is_public_css(aiohttp_client: Any, config: Config) -> None:
    client = await aiohttp_client(create_app(config))
    async with client.get("/pages/code.css") as response:
        assert response.status == 200
        assert response.content_type == "text/css"
        assert ".code .k" in await response.text()


async def test_pages_carry_the_csrf_token_and_a_logout_form(browser: Browser, home: Path) -> None:
    page = Document(await browser.page(browse(home)))
    meta = next(element for element in page.all("meta") if element.attr("name") == "csrf-token")
    assert meta.attr("content") == browser.csrf
    form = next(element for element in page.all("form") if element.attr("action") == "/logout")
    assert form.attr("method") == "post"
    hidden = within(form, "input")
    assert [(field.attr("name"), field.attr("value")) for field in hidden] == [("csrf_token", browser.csrf)]


# --- browsing a directory ---------------------------------------------------------------------------------


@pytest.fixture
def folder(home: Path) -> Path:
    """Two folders and three files with distinct sizes and modification times, and a hidden file."""
    root = home / "project"
    root.mkdir()
    (root / "zdir").mkdir()
    (root / "Adir").mkdir()
    for name, size, mtime in (("b.txt", 30, 3_000_000), ("A.txt", 10, 2_000_000), ("c.txt", 20, 1_000_000)):
        (root / name).write_bytes(b"x" * size)
        os.utime(root / name, (mtime, mtime))
    (root / ".secret").write_text("s")
    return root


@pytest.mark.parametrize(("query", "folders", "files"), [
    ("", ["Adir", "zdir"], ["A.txt", "b.txt", "c.txt"]),
    ("?sort=name&order=asc", ["Adir", "zdir"], ["A.txt", "b.txt", "c.txt"]),
    ("?sort=name&order=desc", ["zdir", "Adir"], ["c.txt", "b.txt", "A.txt"]),
    ("?sort=size&order=asc", None, ["A.txt", "c.txt", "b.txt"]),
    ("?sort=size&order=desc", None, ["b.txt", "c.txt", "A.txt"]),
    ("?sort=modified&order=asc", None, ["c.txt", "A.txt", "b.txt"]),
    ("?sort=modified&order=desc", None, ["b.txt", "A.txt", "c.txt"]),
])
async def test_folders_come_first_in_the_chosen_order(browser: Browser, folder: Path, query: str,
                                                      folders: list[str] | None, files: list[str]) -> None:
    names = entry_names(await browser.page(browse(folder) + query))
    # Folders first, whatever the order (their own order by size or date is not asserted).
    assert names[:2] == folders if folders else sorted(names[:2]) == ["Adir", "zdir"]
    assert names[2:] == files


async def test_a_listing_row_has_the_details(browser: Browser, folder: Path) -> None:
    (folder / "big.bin").write_bytes(b"\0" * 1536)
    page = Document(await browser.page(browse(folder)))
    rows = {row.attr("data-name"): row for row in page.all("tr", testid="entry")}
    big = rows["big.bin"]
    assert big.attr("data-type") == "file" and big.attr("data-path") == str(folder / "big.bin")
    assert "1.5 KB" in big.text
    assert within(big, "a")[0].attr("href") == browse(folder / "big.bin")
    download = next(a for a in within(big, "a") if a.attr("data-action") == "download")
    assert download.attr("download") == "big.bin"
    assert urlsplit(download.attr("href")).path == "/files/download"  # an attachment: a native download
    assert parse_qs(urlsplit(download.attr("href")).query) == {"path": [str(folder / "big.bin")]}
    assert rows["zdir"].attr("data-type") == "directory" and "KB" not in rows["zdir"].text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", rows["A.txt"].text)
    assert page.one("a", testid="parent").attr("href") == browse(folder.parent)
    assert [a.attr("href") for a in within(page.one("nav", testid="breadcrumbs"), "a")][-1] == browse(folder)
    assert page.one("section").attr("data-path") == str(folder)


async def test_the_sort_links_flip_the_order_of_the_active_column(browser: Browser, folder: Path) -> None:
    page = Document(await browser.page(browse(folder) + "?sort=size&order=asc&hidden=true&filter=txt"))
    size = page.one("a", testid="sort-size").attr("href")
    assert "sort=size" in size and "order=desc" in size and "hidden=true" in size and "filter=txt" in size
    assert "order=asc" in page.one("a", testid="sort-name").attr("href")


async def test_hidden_files_are_shown_on_request(browser: Browser, folder: Path) -> None:
    html = await browser.page(browse(folder))
    assert ".secret" not in entry_names(html)
    assert "hidden=true" in Document(html).one("a", testid="toggle-hidden").attr("href")
    shown = await browser.page(browse(folder) + "?hidden=true")
    assert ".secret" in entry_names(shown)
    assert "hidden=true" not in Document(shown).one("a", testid="toggle-hidden").attr("href")


async def test_the_filter_matches_names_without_regard_to_case(browser: Browser, folder: Path) -> None:
    assert entry_names(await browser.page(browse(folder) + "?filter=TXT")) == ["A.txt", "b.txt", "c.txt"]
    assert entry_names(await browser.page(browse(folder) + "?filter=dir")) == ["Adir", "zdir"]
    assert entry_names(await browser.page(browse(folder) + "?filter=secret")) == []
    assert entry_names(await browser.page(browse(folder) + "?filter=secret&hidden=true")) == [".secret"]
    empty = Document(await browser.page(browse(folder) + "?filter=nothing-like-it"))
    assert empty.one(testid="empty").text == "Nothing matches the filter."
    assert empty.one("input", testid="filter").attr("value") == "nothing-like-it"


async def test_an_empty_folder_says_so(browser: Browser, home: Path) -> None:
    (home / "empty").mkdir()
    page = Document(await browser.page(browse(home / "empty")))
    assert page.one(testid="empty").text == "This folder is empty."
    assert "0 entries" in page.one(testid="pages").text


@pytest.mark.parametrize("query", ["?sort=colour", "?order=up", "?page=0", "?page=x", "?hidden=maybe"])
async def test_a_bad_query_is_refused(browser: Browser, folder: Path, query: str) -> None:
    async with browser.client.get(browse(folder) + query, allow_redirects=False) as response:
        assert response.status == 422


async def test_a_large_folder_is_paginated(browser: Browser, home: Path) -> None:
    big = home / "big"
    big.mkdir()
    for number in range(1200):
        (big / f"f{number:04d}.txt").touch()
    first = await browser.page(browse(big))
    assert len(entry_names(first)) == PAGE_SIZE == 500
    assert entry_names(first)[0] == "f0000.txt"
    pages = Document(first).one(testid="pages")
    assert "1200 entries" in pages.text and "page 1 of 3" in pages.text
    assert "page=2" in Document(first).one("a", testid="next-page").attr("href")
    assert not Document(first).all("a", testid="prev-page")
    second = entry_names(await browser.page(browse(big) + "?page=2"))
    assert second[0] == "f0500.txt" and len(second) == 500
    third_html = await browser.page(browse(big) + "?page=3")
    third = entry_names(third_html)
    assert len(third) == 200
    assert third == [f"f{number:04d}.txt" for number in range(1000, 1200)]
    assert "page 3 of 3" in Document(third_html).one(testid="pages").text
    assert not Document(third_html).all("a", testid="next-page")
    assert "page=2" in Document(third_html).one("a", testid="prev-page").attr("href")
    # Past the end: the last page, not an empty one.
    assert entry_names(await browser.page(browse(big) + "?page=99")) == third
    # Order and paging combine: the largest names first.
    assert entry_names(await browser.page(browse(big) + "?order=desc&page=3"))[-1] == "f0000.txt"


async def test_the_last_folder_visited_is_remembered(browser: Browser, folder: Path, home: Path) -> None:
    assert await browser.redirect("/") == browse(home)  # a new session starts at home
    await browser.page(browse(folder / "zdir"))
    assert await browser.redirect("/") == browse(folder / "zdir")
    (folder / "A.txt").write_text("file pages do not count")
    await browser.page(browse(folder / "A.txt"))
    assert await browser.redirect("/") == browse(folder / "zdir")
    await browser.page(browse(home / "missing"), status=404)
    assert await browser.redirect("/") == browse(folder / "zdir")


async def test_the_last_folder_is_per_session(aiohttp_client: Any, browser: Browser, folder: Path,
                                              home: Path) -> None:
    await browser.page(browse(folder))
    second = Browser(await aiohttp_client(browser.client.server))
    await second.log_in()
    assert await second.redirect("/") == browse(home)
    assert await browser.redirect("/") == browse(folder)


async def test_browse_without_a_path_goes_home(browser: Browser, home: Path) -> None:
    assert await browser.redirect("/browse") == browse(home)
    await browser.page("/browse/")  # the root of the file system


async def test_a_missing_path_is_a_404_page(browser: Browser, home: Path) -> None:
    page = Document(await browser.page(browse(home / "no such thing"), status=404))
    assert page.one("h1").text.startswith("404 ")
    assert page.one(testid="error-detail").text
    assert [a.attr("href") for a in within(page.one("nav", testid="breadcrumbs"), "a")][-1] == \
        browse(home / "no such thing")


async def test_a_path_outside_the_root_is_a_403_page(browser_with: BrowserFactory, home: Path) -> None:
    inside = home / "inside"
    inside.mkdir()
    (inside / "ok.txt").write_text("fine")
    (home / "outside.txt").write_text("secret")
    os.symlink(home / "outside.txt", inside / "link.txt")
    confined = await browser_with(file_root=inside)
    await confined.page(browse(inside / "ok.txt"))
    for target in (home / "outside.txt", home, Path("/etc/passwd"), inside / "link.txt"):
        html = await confined.page(browse(target), status=403)
        assert "secret" not in html and "root:" not in html
        assert Document(html).one("h1").text.startswith("403 ")
    await confined.page(browse(inside) + "/../outside.txt", status=403)
    # The root's own listing leaves out what leads outside it.
    assert entry_names(await confined.page(browse(inside))) == ["ok.txt"]
    assert await confined.redirect("/browse") == browse(inside)


# --- file pages -------------------------------------------------------------------------------------------


async def test_a_csv_file_is_a_table(browser: Browser, home: Path) -> None:
    (home / "people.csv").write_text("name,age\nAda,36\nAlan,41\n")
    page = Document(await browser.page(browse(home / "people.csv")))
    table = page.one("table", testid="preview-table")
    assert [cell.text for cell in within(table, "th")] == ["name", "age"]
    assert [cell.text for cell in within(table, "td")] == ["Ada", "36", "Alan", "41"]
    assert page.one(testid="table-count").text == "Rows 1\u20132 of 2"
    assert page.one("section").attr("data-kind") == "table"


async def test_a_markdown_file_is_rendered_with_its_source(browser: Browser, home: Path) -> None:
    (home / "docs").mkdir()
    (home / "docs" / "README.md").write_text("# Title\n\nSome *words* and [a link](other.md#part).\n\n"
                                             "![pic](img/p.png)\n\n| a | b |\n|---|--:|\n| 1 | 2 |\n")
    page = Document(await browser.page(browse(home / "docs" / "README.md")))
    article = page.one("article", testid="preview-markdown")
    assert [h.text for h in within(article, "h1")] == ["Title"]
    assert [em.text for em in within(article, "em")] == ["words"]
    # The other document's heading ids carry the same prefix as this one's.
    assert within(article, "a")[0].attr("href") == browse(home / "docs" / "other.md") + "#user-content-part"
    assert within(article, "img")[0].attr("src") == "/files/view?path=" + quote(str(home / "docs" / "img/p.png"))
    assert within(article, "td")[1].attr("class") == "align-right"
    source = page.one(testid="preview-source")
    assert "hidden" in source.attrs and "# Title" in source.text
    assert page.all("button", testid="toggle-source")
    assert page.all("button", testid="edit")


async def test_code_is_highlighted(browser: Browser, home: Path) -> None:
    (home / "script.py").write_text("def greet(name):\n    return f'hi {name}'\n")
    page = Document(await browser.page(browse(home / "script.py")))
    source = page.one(testid="preview-source")
    keywords = [span.text for span in within(source, "span") if span.attr("class") == "k"]
    assert "def" in keywords and "return" in keywords
    assert [span.text for span in within(source, "span") if span.attr("class") == "nf"] == ["greet"]
    # Browsers drop the one newline that opens a textarea; the template puts one there for that.
    assert page.one("textarea").text == "\ndef greet(name):\n    return f'hi {name}'\n"


async def test_a_pdf_shows_the_viewer_and_its_text(browser: Browser, home: Path) -> None:
    (home / "report.pdf").write_bytes(make_pdf(PAGES))
    page = Document(await browser.page(browse(home / "report.pdf")))
    frame = page.one("iframe", testid="preview-pdf")
    # A URL ending in the file's name (the viewer's name to save it under); Raw opens a page titled with it.
    assert frame.attr("src") == "/files/serve" + quote(str(home / "report.pdf"))
    assert page.one("a", testid="raw").attr("href") == "/pdf?path=" + quote(str(home / "report.pdf"))
    assert page.one("pre", testid="pdf-text").text.strip() == PDF_TEXT
    assert not page.all(testid="edit")


async def test_a_broken_pdf_still_has_a_page(browser: Browser, home: Path) -> None:
    (home / "broken.pdf").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\nnot a pdf\n")
    page = Document(await browser.page(browse(home / "broken.pdf")))
    assert page.one("iframe", testid="preview-pdf")
    assert page.one("pre", testid="pdf-text").text == ""
    assert any(p.attr("class") == "error" and p.text for p in page.all("p"))


@pytest.mark.parametrize(("name", "data", "tag", "testid"), [
    ("pic.png", make_png(), "img", "preview-image"),
    ("song.mp3", b"ID3\x03\x00\x00\x00\x00\x00\x00", "audio", "preview-audio"),
    ("clip.mp4", b"\x00\x00\x00\x18ftypmp42", "video", "preview-video"),
])
async def test_media_is_shown_with_native_elements(browser: Browser, home: Path, name: str, data: bytes,
                                                   tag: str, testid: str) -> None:
    (home / name).write_bytes(data)
    page = Document(await browser.page(browse(home / name)))
    element = page.one(tag, testid=testid)
    assert element.attr("src") == "/files/view?path=" + quote(str(home / name))
    if tag != "img":
        assert "controls" in element.attrs
    assert not page.all(testid="edit")


async def test_a_binary_file_gets_a_note(browser: Browser, home: Path) -> None:
    (home / "blob.bin").write_bytes(bytes(range(256)))
    (home / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    for name in ("blob.bin", "latin.txt"):
        page = Document(await browser.page(browse(home / name)))
        assert "No preview" in page.one(testid="preview-binary").text
        assert not page.all(testid="edit") and not page.all("textarea")
        assert page.one("a", testid="download").attr("href") == "/files/view?path=" + quote(str(home / name))


async def test_an_html_file_is_source_and_a_sandboxed_frame(browser: Browser, home: Path) -> None:
    (home / "page.html").write_text("<h1 onclick=\"steal()\">Hi</h1><script>fetch('/files/list')</script>")
    html = await browser.page(browse(home / "page.html"))
    page = Document(html)
    frame = page.one("iframe", testid="preview-frame")
    assert frame.attr("sandbox") == "allow-scripts"
    assert frame.attr("src") == "/files/view?path=" + quote(str(home / "page.html"))
    assert "<h1" in page.one(testid="preview-source").text  # shown as text
    assert "fetch('/files/list')" in page.one(testid="preview-source").text
    # Nothing of the file became an element of the page: its only h1 is the page's own, the file's name.
    assert [heading.text for heading in page.all("h1")] == ["page.html"]


async def test_the_file_page_has_its_etag_and_links(browser: Browser, home: Path) -> None:
    (home / "notes.txt").write_text("hello\n")
    page = Document(await browser.page(browse(home / "notes.txt")))
    section = page.one("section")
    async with browser.client.get("/files/view", params={"path": str(home / "notes.txt")}) as response:
        assert response.status == 200
        assert section.attr("data-etag") == response.headers["ETag"]
    assert section.attr("data-path") == str(home / "notes.txt")
    assert page.one("a", testid="back").attr("href") == browse(home)
    assert page.one("a", testid="download").attr("download") == "notes.txt"
    assert page.one("title").text == "notes.txt · opentermd"


# --- XSS attempts -----------------------------------------------------------------------------------------

EVIL_NAME = "<img src=x onerror=alert(1)>.md"


async def test_a_hostile_file_name_is_escaped_in_the_listing(browser: Browser, home: Path) -> None:
    (home / "x").mkdir()
    (home / "x" / EVIL_NAME).write_text("# hi\n")
    html = await browser.page(browse(home / "x"))
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;.md" in html
    page = assert_nothing_active(html)
    assert not page.all("img")
    row = page.one("tr", testid="entry")
    assert row.attr("data-name") == EVIL_NAME and row.attr("data-path") == str(home / "x" / EVIL_NAME)
    link = within(row, "a")[0]
    assert link.text == EVIL_NAME and link.attr("href") == browse(home / "x" / EVIL_NAME)
    assert "<" not in link.attr("href")
    # And in the search-as-you-filter box, reflected from the query string.
    reflected = await browser.page(browse(home / "x") + "?filter=" + quote('"><script>alert(1)</script>'))
    assert "<script>alert(1)" not in reflected
    assert Document(reflected).one("input", testid="filter").attr("value") == '"><script>alert(1)</script>'


async def test_a_hostile_file_name_is_escaped_on_its_page(browser: Browser, home: Path) -> None:
    (home / "x").mkdir()
    (home / "x" / EVIL_NAME).write_text("# hi\n")
    html = await browser.page(browse(home / "x" / EVIL_NAME))
    assert "<img src=x" not in html
    page = assert_nothing_active(html)
    assert not page.all("img")
    assert page.one("title").text == f"{EVIL_NAME} · opentermd"
    assert "<title>&lt;img src=x onerror=alert(1)&gt;.md · opentermd</title>" in html
    crumbs = within(page.one("nav", testid="breadcrumbs"), "a")
    assert crumbs[-1].text == EVIL_NAME and crumbs[-1].attr("href") == browse(home / "x" / EVIL_NAME)
    assert page.one("a", testid="download").attr("download") == EVIL_NAME
    # Its 404 page too (a name that does not exist, reflected in the breadcrumbs).
    missing = await browser.page(browse(home / "x" / ("gone" + EVIL_NAME)), status=404)
    assert "<img src=x" not in missing


HOSTILE_MARKDOWN = """# Title

<script>alert(1)</script>

<img src=x onerror=alert(2)>

<iframe src="https://evil.example/"></iframe>

[click](javascript:alert(3)) [tab](java\tscript:alert(4)) [upper](JAVASCRIPT:alert(5))
[data](data:text/html;base64,PHNjcmlwdD5hbGVydCg2KTwvc2NyaXB0Pg==)

<a href="javascript:alert(7)">raw link</a>

![pic](x" onerror="alert(8))

[ok](https://example.com/)
"""


async def test_hostile_markdown_renders_nothing_active(browser: Browser, home: Path) -> None:
    (home / "evil.md").write_text(HOSTILE_MARKDOWN)
    html = await browser.page(browse(home / "evil.md"))
    page = assert_nothing_active(html)
    article = page.one("article", testid="preview-markdown")
    assert [h.text for h in within(article, "h1")] == ["Title"]
    for tag in ("script", "iframe", "object", "embed", "style"):
        assert not within(article, tag), tag
    for element in [article, *within(article, "a"), *within(article, "img"), *within(article, "p")]:
        assert not any(name.startswith("on") for name in element.attrs), element
    hrefs = [a.attr("href") for a in within(article, "a")]
    assert "https://example.com/" in hrefs
    assert all(not href.lower().startswith(("javascript", "data")) for href in hrefs), hrefs
    for image in within(article, "img"):
        assert image.attr("src").startswith("/files/view?path="), image
    # Raw HTML is shown as text, not dropped silently.
    assert "<script>alert(1)</script>" in article.text


async def test_a_csv_cell_with_html_is_text(browser: Browser, home: Path) -> None:
    (home / "evil.csv").write_text('id,payload\n1,<script>alert(1)</script>\n2,"<img src=x onerror=alert(2)>"\n')
    html = await browser.page(browse(home / "evil.csv"))
    page = assert_nothing_active(html)
    table = page.one("table", testid="preview-table")
    cells = [cell.text for cell in within(table, "td")]
    assert "<script>alert(1)</script>" in cells and "<img src=x onerror=alert(2)>" in cells
    assert not within(table, "img") and not within(table, "script")
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in html


async def test_an_svg_with_script_is_only_source_and_a_sandbox(browser: Browser, home: Path) -> None:
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
           '<script>alert(document.cookie)</script><circle r="5"/></svg>')
    (home / "evil.svg").write_text(svg)
    html = await browser.page(browse(home / "evil.svg"))
    page = assert_nothing_active(html)
    assert not page.all("img") and not page.all("svg") and not page.all("circle")
    frame = page.one("iframe", testid="preview-frame")
    assert frame.attr("sandbox") == "allow-scripts"
    assert "allow-same-origin" not in frame.attr("sandbox")
    assert "<script>alert(document.cookie)</script>" in page.one(testid="preview-source").text
    # The framed bytes come with a sandbox of their own, so even opened directly they have no origin.
    async with browser.client.get(frame.attr("src")) as response:
        assert response.status == 200
        assert response.content_type == "image/svg+xml"
        policy = response.headers["Content-Security-Policy"]
        assert policy.split()[0] == "sandbox" and "allow-same-origin" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert await response.text() == svg


@pytest.mark.parametrize("name", ["page.html", "page.htm", "page.xhtml", "data.xml", "pic.svg"])
async def test_active_types_are_served_sandboxed(browser: Browser, home: Path, name: str) -> None:
    (home / name).write_text("<html><script>alert(1)</script></html>")
    async with browser.client.get("/files/view", params={"path": str(home / name)}) as response:
        assert response.status == 200
        policy = response.headers.get("Content-Security-Policy", "")
        assert policy.startswith("sandbox") and "allow-same-origin" not in policy, (name, policy)


# --- the editor's precondition ---------------------------------------------------------------------------


async def test_a_save_with_the_current_etag_is_written(browser: Browser, home: Path) -> None:
    target = home / "edit.txt"
    target.write_text("first\n")
    async with browser.client.get("/files/view", params={"path": str(target)}) as response:
        etag = response.headers["ETag"]
    async with browser.client.post("/files/write", json={"path": str(target), "content": "second version\n"},
                                   headers={"If-Match": etag, CSRF_HEADER: browser.csrf}) as response:
        assert response.status == 200, await response.text()
        new_etag = response.headers["ETag"]
        assert await response.json() == {"path": str(target), "size": len("second version\n")}
    assert target.read_text() == "second version\n"
    assert new_etag != etag
    async with browser.client.get("/files/view", params={"path": str(target)}) as response:
        assert response.headers["ETag"] == new_etag
    # The new tag is good for the next save.
    async with browser.client.post("/files/write", json={"path": str(target), "content": "third\n"},
                                   headers={"If-Match": new_etag, CSRF_HEADER: browser.csrf}) as response:
        assert response.status == 200
    assert target.read_text() == "third\n"


async def test_a_save_over_a_changed_file_is_refused(browser: Browser, home: Path) -> None:
    target = home / "edit.txt"
    target.write_text("first\n")
    async with browser.client.get("/files/view", params={"path": str(target)}) as response:
        etag = response.headers["ETag"]
    target.write_text("changed by someone else\n")
    async with browser.client.post("/files/write", json={"path": str(target), "content": "mine\n"},
                                   headers={"If-Match": etag, CSRF_HEADER: browser.csrf}) as response:
        assert response.status == 409
        assert "changed" in (await response.json())["detail"]
    assert target.read_text() == "changed by someone else\n"


async def test_a_save_with_a_made_up_or_missing_file_tag_is_refused(browser: Browser, home: Path) -> None:
    target = home / "edit.txt"
    target.write_text("first\n")
    for tag in ('"0-0"', "", 'W/"nope"'):
        async with browser.client.post("/files/write", json={"path": str(target), "content": "mine\n"},
                                       headers={"If-Match": tag, CSRF_HEADER: browser.csrf}) as response:
            assert response.status == 409, tag
    assert target.read_text() == "first\n"
    # A file deleted since it was opened is not silently recreated.
    async with browser.client.get("/files/view", params={"path": str(target)}) as response:
        etag = response.headers["ETag"]
    target.unlink()
    async with browser.client.post("/files/write", json={"path": str(target), "content": "mine\n"},
                                   headers={"If-Match": etag, CSRF_HEADER: browser.csrf}) as response:
        assert response.status == 409
    assert not target.exists()


async def test_a_cookie_from_elsewhere_sees_no_page(browser: Browser, home: Path) -> None:
    cookie = browser.client.session.cookie_jar.filter_cookies(browser.client.make_url("/"))[COOKIE].value
    async with browser.client.get(browse(home), allow_redirects=False,
                                  headers={"Sec-Fetch-Site": "same-site", "Cookie": f"{COOKIE}={cookie}"}) as response:
        assert response.status == 403
        assert str(home) not in await response.text()


# --- errors are rendered in one place (http.errors): the styled page for pages, JSON for the API ---------


async def test_an_unreadable_file_is_a_styled_403_page_not_a_500(browser: Browser) -> None:
    """/proc/1/mem opens (we are root) but its first read fails with EIO."""
    page = Document(await browser.page("/browse/proc/1/mem", status=403))
    assert page.one("h1").text.startswith("403 ")
    assert page.one(testid="error-detail").text


async def test_an_unknown_page_path_is_the_styled_404_but_the_api_stays_json(browser: Browser) -> None:
    html_accept = {"Accept": "text/html,application/xhtml+xml"}
    async with browser.client.get("/no/such/page", headers=html_accept) as response:
        assert response.status == 404 and response.content_type == "text/html"
        assert_page_headers(response.headers)
        assert Document(await response.text()).one("h1").text.startswith("404 ")
    for path in ("/files/nope", "/execute/x/y/z", "/api/nope", "/no/such/page"):
        headers = html_accept if path.startswith(("/files", "/execute", "/api")) else {}
        async with browser.client.get(path, headers=headers) as response:
            assert response.status == 404
            assert await response.read() == b'{"detail":"Not Found"}'


async def test_the_public_upload_form_and_the_docs_cannot_be_framed(browser: Browser, home: Path) -> None:
    async with browser.client.post(f"/files/upload/link?directory={quote(str(home))}",
                                   headers={"Authorization": f"Bearer {KEY}"}) as response:
        link = urlsplit((await response.json())["url"]).path
    anonymous = aiohttp.ClientSession()
    try:
        async with anonymous.get(browser.client.make_url(link)) as response:
            assert response.status == 200
            assert_page_headers(response.headers)
            assert_nothing_active(await response.text())
    finally:
        await anonymous.close()
    async with browser.client.get("/docs") as response:
        assert response.status == 200
        assert "frame-ancestors 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]


# --- OPEN_TERMINAL_ENABLE_TERMINAL -----------------------------------------------------------------------


def terminal_links(html: str) -> list[str]:
    return [href for element in Document(html).all()
            if (href := element.attr("href")) == "/terminal" or href.startswith(("/terminal/", "/terminal?"))]


@pytest.mark.parametrize("enabled", [True, False])
async def test_the_pages_link_to_the_terminal_only_when_it_is_enabled(
        browser_with: BrowserFactory, tmp_path: Path, enabled: bool) -> None:
    browser = await browser_with(enable_terminal=enabled)
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / "notes.txt").write_text("hello\n")
    for url, status in [(browse(tmp_path / "home"), 200), (browse(tmp_path / "home" / "notes.txt"), 200),
                        (browse(tmp_path / "home" / "missing"), 404)]:
        links = terminal_links(await browser.page(url, status))
        folder_page = status == 200 and url.endswith("/home")  # "Terminal here" on a folder's page
        here = ["/terminal?" + urlencode({"cwd": str(tmp_path / "home")})] if folder_page else []
        assert links == (["/terminal", *here] if enabled else []), url
    async with browser.client.get("/terminal", allow_redirects=False) as response:
        assert (response.status == 404) is not enabled
