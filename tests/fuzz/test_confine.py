"""The fuzzer's confinement: what it generates is only printed, and its paths stay beneath the root."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fuzz.confine import confined_body, confined_query, harmless_command, inside

NASTY = ["rm -rf ~", "$(touch pwned)", "`touch pwned`", "'; touch pwned; '", "a\nb", "\\'\"$HOME", "-n", ""]


@pytest.mark.parametrize("text", NASTY)
def test_a_generated_command_is_only_printed(tmp_path: Path, text: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(["bash", "-c", harmless_command(text)], cwd=work, capture_output=True, timeout=30)
    assert result.stdout.decode() == text
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(("path", "confined"), [
    ("/etc/passwd", "etc/passwd"), ("../../x", "x"), ("a/../../b", "b"), ("~", "./~"), ("~root/.ssh", "./~root/.ssh"),
    ("/", ""), ("", ""), ("notes.txt", "notes.txt"), ("a\0b", "a\0b"),
])
def test_paths_stay_beneath_the_working_directory(path: str, confined: str) -> None:
    assert inside(path) == confined


def test_bodies_and_queries_are_confined_field_by_field() -> None:
    body = confined_body({"command": "rm -rf /", "cwd": "/", "env": {"LD_PRELOAD": "/x.so"}, "path": "/etc/x",
                          "paths": ["/a", 1], "content": "/etc/x"})
    assert body == {"command": "printf %s 'rm -rf /'", "cwd": "", "env": {"FUZZ_LD_PRELOAD": "/x.so"},
                    "path": "etc/x", "paths": ["a", 1], "content": "/etc/x"}
    assert confined_body(["not", "an", "object"]) == ["not", "an", "object"]
    assert confined_query({"directory": "/", "path": ["../x"], "query": "/etc"}) == {
        "directory": "", "path": ["x"], "query": "/etc"}
