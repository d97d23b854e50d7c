"""The icon set: every name exists in lucide-static, the sprite holds them, entries get the right icon."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest

from daemon.pages import icons

LUCIDE = Path(__file__).resolve().parents[2] / "node_modules" / "lucide-static" / "icons"


def test_every_icon_name_is_a_lucide_icon_and_lands_in_the_sprite() -> None:
    if not LUCIDE.is_dir():
        pytest.skip("node_modules/lucide-static is not installed (npm ci)")
    sprite = icons.build_sprite(LUCIDE)
    assert re.findall(r'<symbol id="([^"]+)"', sprite) == list(icons.ICON_NAMES)
    assert "<path" in sprite and "class=" not in sprite
    assert all(alias_target in icons.ICON_NAMES for alias_target in icons.ALIASES.values())
    assert set(icons.SUFFIX_ICONS.values()) | set(icons.MIME_ICONS.values()) <= set(icons.ICON_NAMES)


@pytest.mark.parametrize(("entry", "expected"), [
    ({"name": "src", "type": "directory"}, "folder"),
    ({"name": "latest", "type": "directory", "symlink": True}, "link"),
    ({"name": "gone", "type": "file", "symlink": True, "broken": True}, "link-2-off"),
    ({"name": "report.PDF", "type": "file"}, "file-type"),
    ({"name": "photo.jpeg", "type": "file"}, "file-image"),
    ({"name": "data.tsv", "type": "file"}, "file-spreadsheet"),
    ({"name": "backup.tar.gz", "type": "file"}, "file-archive"),
    ({"name": "main.go", "type": "file"}, "file-code"),
    ({"name": "Makefile", "type": "file"}, "file-code"),
    ({"name": "analysis.ipynb", "type": "file"}, "notebook"),
    ({"name": "notes.md", "type": "file"}, "file-text"),
    ({"name": "clip", "type": "file", "mime": "video/mp4"}, "file-video"),
    ({"name": ".bashrc", "type": "file"}, "file"),
    ({"name": "blob.bin", "type": "file"}, "file"),
])
def test_entry_icon(entry: dict[str, object], expected: str) -> None:
    assert icons.entry_icon(entry) == expected


def test_icon_markup_is_decorative_or_labelled_and_escaped() -> None:
    environment = jinja2.Environment(autoescape=True)
    icons.install(environment)
    decorative = environment.from_string("{{ icon('folder') }}").render()
    assert decorative == ('<svg class="icon icon-folder" fill="none" stroke="currentColor" stroke-width="2" '
                          'stroke-linecap="round" stroke-linejoin="round" focusable="false" aria-hidden="true">'
                          '<use href="/static/vendor/icons/sprite.svg#folder"></use></svg>')
    labelled = environment.from_string("{{ icon('more-horizontal', label=name) }}").render(name="<b>More</b>")
    assert 'role="img"' in labelled and "aria-hidden" not in labelled
    assert "<title>&lt;b&gt;More&lt;/b&gt;</title>" in labelled and "#ellipsis" in labelled
    with pytest.raises(ValueError, match="no icon named 'folderr'"):
        icons.icon("folderr")
