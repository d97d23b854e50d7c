"""/skills and /skills/read (CONTRACT §5.2): Agent Skills found under the server's home."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api


def write_skill(home: Path, place: str, directory: str, frontmatter: str, body: str = "Body text.\n") -> Path:
    """`home/<place>/<directory>/SKILL.md` with the given frontmatter lines; returns its path."""
    location = home / place / directory / "SKILL.md"
    location.parent.mkdir(parents=True, exist_ok=True)
    location.write_text(f"---\n{frontmatter.strip()}\n---\n{body}")
    return location


def expected(name: str, description: str, location: Path, quoted: str | None = None) -> dict[str, Any]:
    return {"id": f"terminal:{quoted or name}", "name": name, "description": description,
            "location": str(location), "scope": "global", "source": "terminal"}


async def skills_by_name(api: Api) -> dict[str, dict[str, Any]]:
    listed = await api.json("GET", "/skills")
    assert isinstance(listed, list)
    by_name = {skill["name"]: skill for skill in listed}
    assert len(by_name) == len(listed), "a name is listed twice"
    return by_name


async def test_no_skill_directories_means_an_empty_list(api: Api) -> None:
    assert await api.json("GET", "/skills") == []


async def test_skills_from_agents_and_claude_directories(api: Api, scratch_environment: Path) -> None:
    home = scratch_environment
    alpha = write_skill(home, ".agents/skills", "alpha", "name: alpha\ndescription: Alpha does things")
    beta = write_skill(home, ".claude/skills", "beta", "name: beta\ndescription: Beta helps")
    assert await skills_by_name(api) == {
        "alpha": expected("alpha", "Alpha does things", alpha),
        "beta": expected("beta", "Beta helps", beta),
    }


async def test_folded_and_literal_blocks(api: Api, scratch_environment: Path) -> None:
    write_skill(scratch_environment, ".agents/skills", "folded",
                "name: folded\ndescription: >\n  First line\n  second line\nlicense: MIT")
    write_skill(scratch_environment, ".agents/skills", "literal",
                "name: literal\ndescription: |\n  Line one\n  Line two\n")
    skills = await skills_by_name(api)
    assert skills["folded"]["description"] == "First line second line"
    assert skills["literal"]["description"] == "Line one\nLine two"


@pytest.mark.parametrize(("block", "description"), [
    pytest.param(">-\n  Folded\n  and stripped", "Folded and stripped", id="folded-strip"),
    pytest.param("|-\n  Literal\n  and stripped", "Literal\nand stripped", id="literal-strip"),
    pytest.param(">+\n  Folded\n  and kept", "Folded and kept", id="folded-keep"),
    pytest.param("|\n  Line one\n\n  Line three", "Line one\n\nLine three", id="literal-blank-line"),
])
async def test_block_scalars_with_chomping_and_blank_lines(
        api: Api, scratch_environment: Path, block: str, description: str) -> None:
    write_skill(scratch_environment, ".agents/skills", "block", f"name: block\ndescription: {block}\nlicense: MIT")
    skills = await skills_by_name(api)
    assert skills["block"]["description"] == description


async def test_quoted_values(api: Api, scratch_environment: Path) -> None:
    location = write_skill(scratch_environment, ".agents/skills", "quoted",
                           "name: \"quoted name\"\ndescription: 'Says: hello, world'")
    skills = await skills_by_name(api)
    assert skills == {"quoted name": expected("quoted name", "Says: hello, world", location, "quoted%20name")}


async def test_quotes_inside_a_plain_value_are_kept(api: Api, scratch_environment: Path) -> None:
    write_skill(scratch_environment, ".agents/skills", "plain", "name: plain\ndescription: Say 'hi'")
    write_skill(scratch_environment, ".agents/skills", "plain2", "name: plain2\ndescription: Don't stop")
    skills = await skills_by_name(api)
    assert skills["plain"]["description"] == "Say 'hi'"
    assert skills["plain2"]["description"] == "Don't stop"


async def test_crlf_skill_files(api: Api, scratch_environment: Path) -> None:
    location = scratch_environment / ".agents" / "skills" / "windows" / "SKILL.md"
    location.parent.mkdir(parents=True)
    location.write_bytes(b"---\r\nname: windows\r\ndescription: Written on Windows\r\n---\r\nBody line\r\n")
    skills = await skills_by_name(api)
    assert skills == {"windows": expected("windows", "Written on Windows", location)}
    assert (await api.json("GET", "/skills/read?name=windows"))["content"].strip() == "Body line"


async def test_id_is_the_url_quoted_name(api: Api, scratch_environment: Path) -> None:
    write_skill(scratch_environment, ".agents/skills", "odd", "name: PDF & Word tools\ndescription: Reads documents")
    skills = await skills_by_name(api)
    assert skills["PDF & Word tools"]["id"] == "terminal:PDF%20%26%20Word%20tools"


@pytest.mark.parametrize("frontmatter", [
    "name: silent",
    "name: silent\ndescription:",
    "name: silent\ndescription: \"\"",
    "name: silent\ndescription: '   '",
])
async def test_skills_without_a_description_are_skipped(
        api: Api, scratch_environment: Path, frontmatter: str) -> None:
    write_skill(scratch_environment, ".agents/skills", "silent", frontmatter)
    write_skill(scratch_environment, ".agents/skills", "loud", "name: loud\ndescription: Speaks")
    assert list(await skills_by_name(api)) == ["loud"]
    assert await api.json("GET", "/skills/read?name=silent", status=404) == {"detail": "Skill not found"}


async def test_files_without_frontmatter_and_stray_entries_are_ignored(api: Api, scratch_environment: Path) -> None:
    skills_dir = scratch_environment / ".agents" / "skills"
    (skills_dir / "plain").mkdir(parents=True)
    (skills_dir / "plain" / "SKILL.md").write_text("# Just markdown\n\ndescription: not frontmatter\n")
    (skills_dir / "empty-dir").mkdir()
    (skills_dir / "README.md").write_text("---\nname: stray\ndescription: a file, not a skill directory\n---\n")
    write_skill(scratch_environment, ".agents/skills", "real", "name: real\ndescription: The only one")
    assert list(await skills_by_name(api)) == ["real"]


async def test_name_defaults_to_the_directory_and_dot_directories_are_skipped(
        api: Api, scratch_environment: Path) -> None:
    location = write_skill(scratch_environment, ".codex/skills", "nameless", "description: Has no name field")
    write_skill(scratch_environment, ".codex/skills", ".hidden", "name: hidden\ndescription: In a dot directory")
    assert await skills_by_name(api) == {"nameless": expected("nameless", "Has no name field", location)}


async def test_the_first_of_a_name_wins(api: Api, scratch_environment: Path) -> None:
    home = scratch_environment
    first = write_skill(home, ".agents/skills", "dup", "name: dup\ndescription: from agents")
    write_skill(home, ".claude/skills", "dup", "name: dup\ndescription: from claude")
    write_skill(home, ".claude/skills", "other-dir", "name: dup\ndescription: from claude, another directory")
    claude = write_skill(home, ".claude/skills", "dup2", "name: dup2\ndescription: from claude")
    write_skill(home, ".codex/skills", "dup2", "name: dup2\ndescription: from codex")
    skills = await skills_by_name(api)
    assert skills == {"dup": expected("dup", "from agents", first), "dup2": expected("dup2", "from claude", claude)}
    read = await api.json("GET", "/skills/read?name=dup")
    assert read["location"] == str(first) and read["description"] == "from agents"


async def test_descriptions_are_capped_at_1024_characters(api: Api, scratch_environment: Path) -> None:
    description = "".join(chr(ord("a") + index % 26) for index in range(3000))
    write_skill(scratch_environment, ".agents/skills", "long", f"name: long\ndescription: {description}")
    skills = await skills_by_name(api)
    assert skills["long"]["description"] == description[:1024]
    assert (await api.json("GET", "/skills/read?name=long"))["description"] == description[:1024]


async def test_read_returns_the_body_and_resources(api: Api, scratch_environment: Path) -> None:
    body = "# Alpha\n\nUse it well.\n"
    location = write_skill(scratch_environment, ".agents/skills", "alpha-dir",
                           "name: alpha skill\ndescription: Alpha does things", body)
    directory = location.parent
    for relative in ["reference.md", "scripts/run.sh", "a/b/deep.txt", "a/b/c/edge.txt", "a/b/c/d/over.txt",
                     ".hidden", ".git/config", "scripts/.secret", "sub/SKILL.md"]:
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(relative)
    reply = await api.json("GET", "/skills/read?name=alpha+skill")
    resources = reply.pop("resources")
    content = reply.pop("content")
    assert reply == expected("alpha skill", "Alpha does things", location, "alpha%20skill")
    assert content.strip() == body.strip()
    assert "---" not in content and "description:" not in content
    # Depth counts the directories below the skill's own: files in up to three of them are listed.
    assert sorted(resources) == ["a/b/c/edge.txt", "a/b/deep.txt", "reference.md", "scripts/run.sh"]


async def test_resources_are_limited_to_50(api: Api, scratch_environment: Path) -> None:
    location = write_skill(scratch_environment, ".claude/skills", "many", "name: many\ndescription: Many files")
    created = {f"file-{index:02d}.txt" for index in range(60)}
    for name in created:
        (location.parent / name).write_text(name)
    resources = (await api.json("GET", "/skills/read?name=many"))["resources"]
    assert len(resources) == 50
    assert len(set(resources)) == 50 and set(resources) <= created


async def test_unknown_skill_is_404(api: Api, scratch_environment: Path) -> None:
    write_skill(scratch_environment, ".agents/skills", "alpha", "name: alpha\ndescription: Alpha")
    assert await api.json("GET", "/skills/read?name=beta", status=404) == {"detail": "Skill not found"}
    assert await api.json("GET", "/skills/read?name=ALPHA", status=404) == {"detail": "Skill not found"}
    assert await api.json("GET", "/skills/read?name=terminal:alpha", status=404) == {"detail": "Skill not found"}


async def test_read_needs_a_name(api: Api) -> None:
    reply = await api.json("GET", "/skills/read", status=422)
    assert reply["detail"][0]["loc"] == ["query", "name"]


async def test_the_key_is_required(api: Api, scratch_environment: Path) -> None:
    write_skill(scratch_environment, ".agents/skills", "alpha", "name: alpha\ndescription: Alpha")
    for path in ("/skills", "/skills/read?name=alpha"):
        assert await api.json("GET", path, auth=False, status=401) == {"detail": "Invalid API key"}
        assert await api.json("GET", path, auth=False, status=401,
                              headers={"Authorization": "Bearer wrong"}) == {"detail": "Invalid API key"}
