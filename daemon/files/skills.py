"""Agent Skills kept on this machine (`~/.agents/skills/<name>/SKILL.md` and friends), as the reference lists them."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

from daemon.errors import ApiError, not_found
from daemon.files.ops import open_file, os_errors

SKILL_DIRECTORIES = (".agents/skills", ".cptr/skills", ".claude/skills", ".codex/skills")
MAX_DESCRIPTION = 1024
MAX_RESOURCE_DEPTH = 4
MAX_RESOURCES = 50


@dataclass(frozen=True)
class Skill:
    id: str
    name: str
    description: str
    location: str
    scope: str = "global"
    source: str = "terminal"

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def list_skills(home: str) -> list[Skill]:
    """Every skill with a description; the first directory to define a name wins."""
    skills: dict[str, Skill] = {}
    for root in dict.fromkeys(os.path.normpath(os.path.join(home, path)) for path in SKILL_DIRECTORIES):
        for skill in _skills_in(root):
            skills.setdefault(skill.name, skill)
    return list(skills.values())


def read_skill(home: str, name: str) -> dict[str, Any]:
    for skill in list_skills(home):
        if skill.name == name:
            with os_errors():
                _, body = parse_frontmatter(_read_text(skill.location))
            resources = skill_resources(os.path.dirname(skill.location))
            return {**skill.summary(), "content": body, "resources": resources}
    raise not_found("Skill not found")


def _skills_in(root: str) -> list[Skill]:
    if not os.path.isdir(root):
        return []
    found = []
    for directory in sorted(os.listdir(root)):
        location = os.path.join(root, directory, "SKILL.md")
        if directory.startswith(".") or not os.path.isdir(os.path.join(root, directory)):
            continue
        try:
            frontmatter, _ = parse_frontmatter(_read_text(location))
        except (OSError, UnicodeDecodeError, ApiError):
            continue  # Missing, unreadable, not text, or not a regular file (a FIFO must not block).
        description = frontmatter.get("description", "").strip()
        name = (frontmatter.get("name") or directory).strip()
        if description and name:
            found.append(Skill(f"terminal:{quote(name, safe='')}", name, description[:MAX_DESCRIPTION], location))
    return found


def _read_text(path: str) -> str:
    """A regular file's text with universal newlines (as open() in text mode reads it)."""
    with open_file(path) as file:
        return file.read().decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def parse_frontmatter(text: str) -> tuple[dict[str, str], str]:
    """The `---` block's simple `key: value` pairs and the body after it.

    Handles what real SKILL.md files use: quoted values, and `>`/`|` block scalars with their
    chomping marks (`>-`, `|+`) and blank lines inside. Not a YAML parser: nothing else is needed.
    """
    if not text.startswith("---\n"):
        return {}, text.strip()
    end = text.find("\n---", 4)
    if end < 0:
        return {}, text.strip()
    fields: dict[str, str] = {}
    lines = text[4:end].splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip() or line.lstrip().startswith("#") or ":" not in line or line[:1] in " \t":
            continue
        key, value = (part.strip() for part in line.split(":", 1))
        if value[:1] in (">", "|") and value[1:] in ("", "-", "+"):
            block, index = _block_lines(lines, index)
            fields[key] = _fold(block) if value[0] == ">" else "\n".join(block)
        else:
            fields[key] = _unquote(value)
    body_start = text.find("\n", end + 1)
    return fields, text[body_start + 1:].strip() if body_start >= 0 else ""


def _block_lines(lines: list[str], index: int) -> tuple[list[str], int]:
    """The indented (or blank) lines of a block scalar starting at `index`, stripped."""
    block = []
    while index < len(lines) and (lines[index][:1] in (" ", "\t") or not lines[index].strip()):
        block.append(lines[index].strip())
        index += 1
    while block and not block[-1]:
        block.pop()
    return block, index


def _fold(block: list[str]) -> str:
    """Folded style: lines of a paragraph join with spaces, blank lines separate paragraphs."""
    paragraphs = "\n".join(block).split("\n\n")
    return "\n".join(" ".join(paragraph.split("\n")) for paragraph in paragraphs)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def skill_resources(directory: str, prefix: str = "", depth: int = 0) -> list[str]:
    """Files beside SKILL.md (relative paths, depth < 4, at most 50, no dotfiles)."""
    found: list[str] = []
    if depth >= MAX_RESOURCE_DEPTH:
        return found
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return found
    for name in names:
        if len(found) >= MAX_RESOURCES:
            break
        if name.startswith(".") or name == "SKILL.md":
            continue
        path, relative = os.path.join(directory, name), f"{prefix}/{name}" if prefix else name
        if os.path.isdir(path):
            found.extend(skill_resources(path, relative, depth + 1))
        elif os.path.isfile(path):
            found.append(relative)
    return found[:MAX_RESOURCES]
