"""The pages' SVG icons: which lucide icons are vendored, the `icon()` template global, and the
icon of a listing entry (folder, symlink, broken symlink, or a file by its suffix).

The icons come from npm (lucide-static, ISC) as one sprite, `/static/vendor/icons/sprite.svg`, built
by the Makefile with `python -m daemon.pages.icons SOURCE_DIR SPRITE` from the names below: one request
for every icon on a page, and `<use href>` to a same-origin file needs nothing from the CSP.
Run as a script this module needs only the standard library (the Makefile may run it before the venv).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

SPRITE_URL = "/static/vendor/icons/sprite.svg"
#: Every icon the sprite holds; `icon()` refuses other names, so a typo fails a test, not a page.
ICON_NAMES = (
    "folder", "folder-open", "folder-input", "folder-plus", "file", "file-plus", "file-text",
    "file-code", "file-image", "file-archive", "file-spreadsheet", "file-video", "file-audio",
    "file-type", "link", "link-2-off", "notebook", "terminal", "upload", "download", "trash-2", "copy",
    "pencil", "share-2", "ellipsis", "search", "x", "chevron-left", "chevron-right", "chevron-up",
    "chevron-down", "zoom-in", "zoom-out", "sun", "moon", "eye", "eye-off", "plus", "check", "archive",
    "house", "log-in", "log-out", "git-compare", "layout-grid", "list", "refresh-cw", "external-link",
    "circle-alert", "triangle-alert", "maximize-2", "settings", "keyboard",
)
#: Aliases the brief and other pages may use for the same drawing.
ALIASES = {"more-horizontal": "ellipsis", "move": "folder-input", "home": "house", "pdf": "file-type"}

#: Suffix (lower case, with the dot) -> icon; a file matching none gets `file`.
SUFFIX_ICONS: Mapping[str, str] = {
    **dict.fromkeys((".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".whl", ".deb"),
                    "file-archive"),
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".bmp", ".ico", ".avif", ".tif",
                     ".tiff", ".heic"), "file-image"),
    **dict.fromkeys((".csv", ".tsv", ".xlsx", ".xls", ".ods", ".parquet"), "file-spreadsheet"),
    **dict.fromkeys((".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v"), "file-video"),
    **dict.fromkeys((".mp3", ".wav", ".ogg", ".flac", ".m4a", ".opus", ".aac"), "file-audio"),
    **dict.fromkeys((".txt", ".md", ".markdown", ".rst", ".log", ".doc", ".docx", ".odt", ".rtf", ".epub",
                     ".eml"), "file-text"),
    **dict.fromkeys((".py", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".go", ".rs", ".c", ".h", ".cc", ".cpp",
                     ".hpp", ".java", ".kt", ".rb", ".php", ".sh", ".bash", ".zsh", ".fish", ".html",
                     ".css", ".scss", ".json", ".yaml", ".yml", ".toml", ".ini", ".xml", ".sql", ".lua",
                     ".swift", ".cs", ".r", ".jl", ".pl", ".mk", ".dockerfile"), "file-code"),
    ".pdf": "file-type",
    ".ipynb": "notebook",
}
#: Names that say their kind without a suffix.
NAME_ICONS: Mapping[str, str] = dict.fromkeys(
    ("makefile", "dockerfile", "containerfile", "justfile", "rakefile", "gemfile"), "file-code")
#: MIME major types, for entries that know their type but not a telling suffix.
MIME_ICONS: Mapping[str, str] = {"image": "file-image", "video": "file-video", "audio": "file-audio",
                                 "text": "file-text"}


def icon_name(name: str) -> str:
    """The sprite's id for `name` (aliases resolved); ValueError for a name the sprite lacks."""
    resolved = ALIASES.get(name, name)
    if resolved not in ICON_NAMES:
        raise ValueError(f"no icon named {name!r}")
    return resolved


def entry_icon(entry: Mapping[str, Any]) -> str:
    """The icon of a listing entry: `{"name", "type"}` plus, when known, `"symlink"` (bool),
    `"broken"` (bool: a symlink whose target is missing) and `"mime"`."""
    if entry.get("broken"):
        return "link-2-off"
    if entry.get("symlink"):
        return "link"
    if entry.get("type") == "directory":
        return "folder"
    return file_icon(str(entry.get("name", "")), entry.get("mime"))


def file_icon(name: str, mime: str | None = None) -> str:
    lowered = name.lower()
    if lowered in NAME_ICONS:
        return NAME_ICONS[lowered]
    dot = lowered.rfind(".")
    if dot > 0 and lowered[dot:] in SUFFIX_ICONS:
        return SUFFIX_ICONS[lowered[dot:]]
    if mime:
        if mime == "application/pdf":
            return "file-type"
        return MIME_ICONS.get(mime.partition("/")[0], "file")
    return "file"


# The stroke attributes live on the <svg> (the sprite's symbols carry only paths) and the <use>
# content inherits them; currentColor follows the text colour of the light and dark themes.
_DRAWING = ('fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" '
            'stroke-linejoin="round" focusable="false"')


def icon(name: str, label: str | None = None, class_: str = "") -> Any:
    """`<svg>` markup for a template: decorative (aria-hidden) without a label; with one,
    `role="img"` and a `<title>`, so a screen reader says the label."""
    from markupsafe import Markup  # here, so that the sprite builder runs on a bare Python

    classes = escape(f"icon icon-{icon_name(name)} {class_}".strip())
    href = f"{SPRITE_URL}#{icon_name(name)}"
    if label is None:
        return Markup(f'<svg class="{classes}" {_DRAWING} aria-hidden="true"><use href="{href}"></use></svg>')
    return Markup(f'<svg class="{classes}" {_DRAWING} role="img">'
                  f'<title>{escape(label)}</title><use href="{href}"></use></svg>')


def install(environment: Any) -> None:
    """Register the template globals on the pages' Jinja environment."""
    environment.globals["icon"] = icon
    environment.globals["entry_icon"] = entry_icon


_SVG_BODY = re.compile(r"<svg\b[^>]*>(.*?)</svg>", re.S)


def build_sprite(source: Path, names: tuple[str, ...] = ICON_NAMES) -> str:
    """One `<svg>` of `<symbol id=name>`s from lucide's single-icon files (paths only)."""
    symbols = []
    for name in names:
        text = (source / f"{name}.svg").read_text(encoding="utf-8")
        match = _SVG_BODY.search(text)
        if match is None:
            raise ValueError(f"{name}.svg has no <svg> element")
        body = " ".join(line.strip() for line in match.group(1).splitlines() if line.strip())
        symbols.append(f'<symbol id="{name}" viewBox="0 0 24 24">{body}</symbol>')
    return ('<svg xmlns="http://www.w3.org/2000/svg">'
            "<!-- lucide-static (ISC licence, https://lucide.dev) -->" + "".join(symbols) + "</svg>\n")


if __name__ == "__main__":
    source_dir, sprite = Path(sys.argv[1]), Path(sys.argv[2])
    sprite.parent.mkdir(parents=True, exist_ok=True)
    sprite.write_text(build_sprite(source_dir), encoding="utf-8")
