"""A directory listing arranged for a page: hidden files, filter, sort, folders first, one page at a time."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

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
