"""A failed write names the user's file, never the temp file it was written to (`.x.txt.1a2b3c4d.tmp`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Api


def frozen(path: Path) -> Iterator[Path]:
    """`path` made immutable (chattr +i: even root cannot change it) while the test runs."""
    subprocess.run(["chattr", "+i", str(path)], check=True)
    yield path
    subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture
def immutable(home: Path) -> Iterator[Path]:
    """A real immutable file: the rename of the new text over it fails."""
    target = home / "immutable.txt"
    target.write_text("keep me\n")
    yield from frozen(target)


@pytest.fixture
def locked(home: Path) -> Iterator[Path]:
    """An immutable folder: no new file (so no temp file) can be made in it."""
    folder = home / "locked"
    folder.mkdir()
    yield from frozen(folder)


async def test_replacing_an_immutable_file_names_it(api: Api, immutable: Path) -> None:
    body = await api.json("POST", "/files/write", status=403,
                          json={"path": str(immutable), "content": "new\n"})
    assert ".tmp" not in body["detail"], body
    assert body["detail"] == "Operation not permitted: immutable.txt"
    assert immutable.read_text() == "keep me\n"
    assert [path.name for path in immutable.parent.iterdir()] == ["immutable.txt"]  # no temp file left


async def test_a_folder_that_refuses_new_files_names_the_file(api: Api, locked: Path) -> None:
    body = await api.json("POST", "/files/write", status=403, json={"path": str(locked / "notes.txt"), "content": "x"})
    assert body["detail"] == "Operation not permitted: notes.txt"
