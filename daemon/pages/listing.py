"""A directory listing arranged for a page: hidden files, filter, sort, folders first, one page at a time."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlencode

SortKey = Literal["name", "size", "modified"]
PAGE_SIZE = 500
UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


@dataclass(frozen=True)
class View:
    """How the user asked to see a directory (all of it comes from the query string)."""

    sort: SortKey = "name"
    descending: bool = False
    hidden: bool = False
    filter: str = ""
    page: int = 1

    def query(self, **changes: Any) -> str:
        """This view's query string (with `changes`), for the page's own links: sort, order, hidden, filter, page."""
        values = {"sort": self.sort, "order": "desc" if self.descending else "asc",
                  "hidden": "true" if self.hidden else "false", "filter": self.filter, "page": self.page}
        values.update(changes)
        return urlencode({key: value for key, value in values.items() if value not in ("", None)})


@dataclass(frozen=True)
class Page:
    entries: list[dict[str, Any]]
    total: int
    page: int
    pages: int


def arrange(entries: list[dict[str, Any]], view: View) -> Page:
    """Folders first, then the chosen order; only `PAGE_SIZE` rows, so 10,000 entries render fast."""
    needle = view.filter.casefold()
    chosen = [entry for entry in entries
              if (view.hidden or not entry["name"].startswith(".")) and needle in entry["name"].casefold()]
    chosen.sort(key=lambda entry: _order(entry, view.sort), reverse=view.descending)
    chosen.sort(key=lambda entry: entry["type"] != "directory")
    pages = max(1, math.ceil(len(chosen) / PAGE_SIZE))
    page = min(max(1, view.page), pages)
    return Page(chosen[(page - 1) * PAGE_SIZE:page * PAGE_SIZE], len(chosen), page, pages)


def mark_symlinks(directory: str, entries: list[dict[str, Any]],
                  visible: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    """The entries with symlinks marked (`symlink`, `target`), plus the broken symlinks, which the
    listing API skips (it stats each entry through its link), so that the page can show and delete them.

    One more scandir of the folder: d_type says which entries are links without a stat per entry.
    """
    links: dict[str, str] = {}
    broken: list[dict[str, Any]] = []
    listed = {entry["name"] for entry in entries}
    try:
        with os.scandir(directory) as found:
            for item in found:
                if not item.is_symlink():
                    continue
                try:
                    links[item.name] = os.readlink(item.path)
                except OSError:
                    continue
                # Not listed: broken, or left out by `visible` (a link out of --root), which stays out.
                if item.name not in listed and not os.path.exists(item.path) \
                        and (visible is None or visible(item.path)):
                    broken.append(_broken_link(item, links[item.name]))
    except OSError:
        return entries  # the listing itself succeeded: show it without the marks
    if not links:
        return entries
    marked = [{**entry, "symlink": True, "target": links[entry["name"]]} if entry["name"] in links else entry
              for entry in entries]
    return marked + broken


def _broken_link(item: os.DirEntry[str], target: str) -> dict[str, Any]:
    try:
        modified = item.stat(follow_symlinks=False).st_mtime
    except OSError:
        modified = 0.0
    return {"name": item.name, "type": "file", "size": 0, "modified": modified, "writable": True,
            "symlink": True, "broken": True, "target": target}


def _order(entry: dict[str, Any], key: SortKey) -> Any:
    if key == "name":
        return (entry["name"].casefold(), entry["name"])
    return entry[key]


def human_size(size: int) -> str:
    """1536 -> '1.5 KB' (powers of 1024, one decimal below 10)."""
    value = float(size)
    for unit in UNITS:
        if value < 1024 or unit == UNITS[-1]:
            if unit == "B":
                return f"{size} B"
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")
