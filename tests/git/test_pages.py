"""The changes page and the listing's marks, rendered by a real server (the browser test drives the buttons)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

from daemon.pages.changes_view import diff_lines
from tests.conftest import Api
from tests.git.conftest import git
from tests.pages.test_views import Browser


async def browser_of(api: Api) -> Browser:
    browser = Browser(api.client)
    await browser.log_in()
    return browser


async def test_listing_marks_and_the_changes_link(api: Api, repo: Path) -> None:
    (repo / "a.txt").write_text("changed\n")
    (repo / "untracked.txt").write_text("u\n")
    (repo / "sub").mkdir()
    (repo / "sub" / "inner.txt").write_text("i\n")
    git(repo, "rm", "-q", "b.txt")
    html = await (await browser_of(api)).page(f"/browse{repo}")
    marks = {}
    for row in html.split("<tr class=")[1:]:
        name, mark = re.search(r'data-name="([^"]*)"', row), re.search(r'data-testid="git-mark"[^>]*>([^<]+)<', row)
        if name and mark:
            marks[name[1]] = mark[1]
    assert marks == {"a.txt": "M", "sub": "?", "untracked.txt": "?"}
    assert f'href="/changes?{urlencode({"path": str(repo)})}"' in html


async def test_no_changes_link_outside_a_repository(api: Api, scratch_environment: Path) -> None:
    html = await (await browser_of(api)).page(f"/browse{scratch_environment}")
    assert "open-changes" not in html and "git-mark" not in html


async def test_the_changes_page_escapes_and_colours_the_diff(api: Api, repo: Path) -> None:
    (repo / "a.txt").write_text("one\n<script>alert(1)</script>\nthree\n")
    html = await (await browser_of(api)).page(f"/changes?{urlencode({'path': str(repo)})}")
    assert "<script>alert(1)" not in html and "+&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'class="diff-line removed" data-kind="removed">-two' in html


def test_diff_lines_tell_a_removed_dash_line_from_a_header() -> None:
    text = ("diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n--- not a header\n"
            "++x\n same\n\\ No newline at end of file\n")
    kinds = [(line.kind, line.text) for line in diff_lines(text).lines]
    assert kinds == [("header", "diff --git a/x b/x"), ("header", "index 1..2 100644"), ("header", "--- a/x"),
                     ("header", "+++ b/x"), ("hunk", "@@ -1,2 +1,2 @@"), ("removed", "--- not a header"),
                     ("added", "++x"), ("context", " same"), ("note", "\\ No newline at end of file")]
    assert diff_lines("a\nb\nc\n", max_lines=2).cut
