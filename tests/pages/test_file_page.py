# ruff: noqa: F811
"""The file page's labels and previews of issue 13: type names, sizes, CSV pages and sorting, the image
viewer's folder list, a new file opening in the editor."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

import pytest

from daemon.pages.files_view import type_name

# The page tests' fixtures (a real server and a signed-in client), used by name as pytest does.
from tests.pages.test_views import Browser, Document, browse, browser, browser_with, home  # noqa: F401


@pytest.mark.parametrize(("name", "mime", "kind", "expected"), [
    ("app.ts", "text/vnd.trolltech.linguist", "text", "TypeScript"),
    ("main.go", "application/octet-stream", "text", "Go"),
    ("deploy.yaml", "application/octet-stream", "text", "YAML"),
    ("README.md", "text/markdown", "markdown", "Markdown"),
    ("notes.txt", "text/plain", "text", "Text"),
    ("data.csv", "text/csv", "table", "text/csv"),
    ("analysis.ipynb", "application/octet-stream", "notebook", "Jupyter notebook"),
    ("photo.png", "image/png", "image", "image/png"),
    ("blob.bin", "application/octet-stream", "binary", "application/octet-stream"),
])
def test_type_names(name: str, mime: str, kind: str, expected: str) -> None:
    assert type_name(name, mime, kind) == expected


async def test_meta_names_the_language_and_a_human_size(browser: Browser, home: Path) -> None:
    (home / "app.ts").write_text("const x: number = 1;\n")
    page = Document(await browser.page(browse(home / "app.ts")))
    assert page.one(testid="type-name").text == "TypeScript"
    assert page.one(testid="size").text == "21 B"
    (home / "big.bin").touch()
    os.truncate(home / "big.bin", 50 * 1024 * 1024)
    page = Document(await browser.page(browse(home / "big.bin")))
    size = page.one(testid="size")
    assert (size.text, size.attr("title")) == ("50 MB", "52,428,800 bytes")


async def test_a_new_empty_file_opens_in_the_editor(browser: Browser, home: Path) -> None:
    (home / "new.txt").write_text("")
    (home / "old.txt").write_text("text\n")
    def section(html: str) -> dict[str, str | None]:
        (found,) = [element for element in Document(html).all("section") if element.attr("id") == "file"]
        return found.attrs

    assert section(await browser.page(browse(home / "new.txt")))["data-open-editor"] == "true"
    assert "data-open-editor" not in section(await browser.page(browse(home / "old.txt")))


async def test_csv_pages_and_sorts_every_row(browser: Browser, home: Path) -> None:
    (home / "n.csv").write_text("n,name\n" + "".join(f"{n},row{n}\n" for n in range(1, 1201)))
    page = Document(await browser.page(browse(home / "n.csv") + "?page=3&column=0&order=desc"))
    assert page.one(testid="table-count").text == "Rows 1,001\u20131,200 of 1,200"
    cells = [row.text for row in page.all("td")]
    assert cells[:2] == ["200", "row200"] and cells[-2:] == ["1", "row1"]
    headers = page.all("a", testid="sort-column")
    assert headers[0].attr("href") == "?column=0&order=asc" and "active" in (headers[0].attr("class") or "")
    assert page.one(testid="table-prev").attr("href") == "?page=2&column=0&order=desc"
    first = Document(await browser.page(browse(home / "n.csv")))
    assert first.one(testid="table-next").attr("href") == "?page=2"


async def test_an_image_page_lists_the_folders_images_in_order(browser: Browser, home: Path) -> None:
    for name in ("b.png", "A.jpg", "c.gif", "notes.txt", "icon.svg"):
        (home / name).write_bytes(b"x")
    os.mkdir(home / "d.png")
    page = Document(await browser.page(browse(home / "b.png")))
    (script,) = [element for element in page.all("script") if element.attr("id") == "viewer-images"]
    images = json.loads(script.text)
    assert [image["name"] for image in images] == ["A.jpg", "b.png", "c.gif"]
    assert images[1]["src"] == "/files/view?path=" + quote(str(home / "b.png"))
    assert images[1]["href"] == browse(home / "b.png")


async def test_the_pdf_page_is_titled_with_the_name_and_confined(browser: Browser, home: Path) -> None:
    (home / "My report.pdf").write_bytes(b"%PDF-1.4\n")
    page = Document(await browser.page("/pdf?path=" + quote(str(home / "My report.pdf"))))
    assert page.one("title").text == "My report.pdf"
    assert page.one("iframe").attr("src") == "/files/serve" + quote(str(home / "My report.pdf"))
    await browser.page("/pdf?path=" + quote(str(home / "missing.pdf")), status=404)  # the styled error page
    await browser.page("/pdf?path=" + quote(str(home)), status=400)
