"""Rename and create: a name is one component (never a path out of the folder), and neither ever
replaces an existing entry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Api, ApiFactory

BAD_NAMES = [
    ("../x.txt", "Name must not contain '/'"),
    ("sub/x.txt", "Name must not contain '/'"),
    ("..", "Name must not be '..'"),
    (".", "Name must not be '.'"),
    ("", "Name must not be empty or only spaces"),
    ("   ", "Name must not be empty or only spaces"),
    ("a\0b", "Name must not contain a NUL character"),
    ("é" * 128, "Name is longer than 255 bytes"),
]


@pytest.mark.parametrize(("name", "reason"), BAD_NAMES)
async def test_rename_refuses_a_name_that_is_not_one_component(api: Api, home: Path, name: str, reason: str) -> None:
    """The accident of issue 13: renaming to `../x.txt` moved the file out of its folder."""
    (home / "dir").mkdir()
    (home / "dir/a.txt").write_text("a")
    reply = await api.json("POST", "/files/rename", json={"path": "dir/a.txt", "name": name}, status=400)
    assert reply == {"detail": reason}
    assert os.listdir(home / "dir") == ["a.txt"]
    assert sorted(os.listdir(home)) == ["dir"]


@pytest.mark.parametrize(("name", "reason"), BAD_NAMES)
async def test_create_refuses_the_same_names(api: Api, home: Path, name: str, reason: str) -> None:
    for kind in ("file", "folder"):
        reply = await api.json("POST", "/files/create", json={"directory": ".", "name": name, "type": kind},
                               status=400)
        assert reply == {"detail": reason}
    assert os.listdir(home) == []


async def test_rename_in_place_and_never_over_another_entry(api: Api, home: Path) -> None:
    (home / "a.txt").write_text("a")
    (home / "b.txt").write_text("b")
    reply = await api.json("POST", "/files/rename", json={"path": "a.txt", "name": "b.txt"}, status=409)
    assert reply == {"detail": "File exists: b.txt"}
    assert (home / "a.txt").read_text() == "a" and (home / "b.txt").read_text() == "b"
    reply = await api.json("POST", "/files/rename", json={"path": "a.txt", "name": "c d.txt"})
    assert reply == {"source": str(home / "a.txt"), "destination": str(home / "c d.txt")}
    assert sorted(os.listdir(home)) == ["b.txt", "c d.txt"]


async def test_rename_moves_a_symlink_never_its_target(api: Api, home: Path) -> None:
    (home / "target.txt").write_text("t")
    (home / "link").symlink_to(home / "target.txt")
    await api.json("POST", "/files/rename", json={"path": "link", "name": "renamed"})
    assert os.readlink(home / "renamed") == str(home / "target.txt")
    assert (home / "target.txt").read_text() == "t"


async def test_rename_of_a_missing_entry_or_the_home_is_refused(api: Api, home: Path) -> None:
    assert (await api.json("POST", "/files/rename", json={"path": "nope", "name": "x"}, status=404)) == {
        "detail": "Source path not found"}
    await api.json("POST", "/files/rename", json={"path": str(home), "name": "x"}, status=400)


async def test_create_never_clobbers_and_can_take_the_next_free_name(api: Api, home: Path) -> None:
    (home / "notes.txt").write_text("keep me")
    reply = await api.json("POST", "/files/create", json={"directory": ".", "name": "notes.txt"}, status=409)
    assert reply == {"detail": "File exists: notes.txt"}
    assert (home / "notes.txt").read_text() == "keep me"
    reply = await api.json("POST", "/files/create", json={"directory": ".", "name": "notes.txt",
                                                          "conflict": "keep-both"})
    assert reply == {"path": str(home / "notes (1).txt"), "type": "file"}
    assert (home / "notes (1).txt").read_bytes() == b""
    for expected in ("New folder", "New folder (1)"):
        reply = await api.json("POST", "/files/create", json={"directory": ".", "name": "New folder",
                                                              "type": "folder", "conflict": "keep-both"})
        assert reply == {"path": str(home / expected), "type": "folder"}
        assert (home / expected).is_dir()
    await api.json("POST", "/files/create", json={"directory": ".", "name": "New folder", "type": "folder"},
                   status=409)
    await api.json("POST", "/files/create", json={"directory": "missing", "name": "x"}, status=404)


async def test_create_and_rename_stay_beneath_the_root(api_with: ApiFactory, home: Path, tmp_path: Path) -> None:
    api = await api_with(file_root=home)
    (home / "escape").symlink_to(tmp_path)
    await api.json("POST", "/files/create", json={"directory": "escape", "name": "x"}, status=403)
    assert not (tmp_path / "x").exists()


async def test_which_names_exist(api: Api, home: Path) -> None:
    (home / "a.txt").write_text("a")
    (home / "folder").mkdir()
    (home / "broken").symlink_to(home / "nowhere")
    reply = await api.json("POST", "/files/exists", json={"directory": ".",
                                                          "names": ["a.txt", "b.txt", "folder", "broken", "x/y", ""]})
    assert reply == {"existing": ["a.txt", "folder", "broken"]}
    assert await api.json("POST", "/files/exists", json={"directory": "missing", "names": ["a"]}) == {"existing": []}
