"""The page's listing: symlinks marked, broken ones listed (the listing API skips them), query strings."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.files import ops
from daemon.pages.listing import View, arrange, mark_symlinks


def test_links_are_marked_and_a_broken_one_is_listed(tmp_path: Path) -> None:
    tmp_path = tmp_path / "folder"
    tmp_path.mkdir()
    (tmp_path / "real.txt").write_text("real")
    (tmp_path / "alias").symlink_to(tmp_path / "real.txt")
    (tmp_path / "dangling").symlink_to("nowhere/at/all")
    listed = ops.list_directory(str(tmp_path))["entries"]
    assert sorted(entry["name"] for entry in listed) == ["alias", "real.txt"], "the API skips the broken link"

    entries = {entry["name"]: entry for entry in mark_symlinks(str(tmp_path), listed)}
    assert entries["alias"]["symlink"] is True and entries["alias"]["target"] == str(tmp_path / "real.txt")
    assert "symlink" not in entries["real.txt"]
    assert entries["dangling"] == {"name": "dangling", "type": "file", "size": 0,
                                   "modified": os.lstat(tmp_path / "dangling").st_mtime, "writable": True,
                                   "symlink": True, "broken": True, "target": "nowhere/at/all"}


def test_a_link_left_out_by_the_root_stays_out(tmp_path: Path) -> None:
    inside, outside = tmp_path / "root", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("no")
    (inside / "out").symlink_to(outside / "secret")
    (inside / "broken-out").symlink_to(outside / "missing")

    def visible(path: str) -> bool:
        return os.path.realpath(path).startswith(str(inside) + "/")

    listed = ops.list_directory(str(inside), visible)["entries"]
    assert mark_symlinks(str(inside), listed, visible) == []


def test_a_hidden_broken_link_follows_show_hidden(tmp_path: Path) -> None:
    tmp_path = tmp_path / "folder"
    tmp_path.mkdir()
    (tmp_path / ".dangling").symlink_to("gone")
    entries = mark_symlinks(str(tmp_path), ops.list_directory(str(tmp_path))["entries"])
    assert arrange(entries, View()).entries == []
    assert [entry["name"] for entry in arrange(entries, View(hidden=True)).entries] == [".dangling"]


def test_the_view_query_keeps_hidden_and_filter() -> None:
    view = View(sort="size", descending=True, hidden=True, filter="a b&c", page=3)
    assert view.query() == "sort=size&order=desc&hidden=true&filter=a+b%26c&page=3"
    assert view.query(page=None, hidden="false") == "sort=size&order=desc&hidden=false&filter=a+b%26c"
