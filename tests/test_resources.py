"""Resources and environments alike from source and from the single executable."""

from __future__ import annotations

import sys

import pytest

from daemon.resources import root, static_dir, templates_dir, without_launcher

LAUNCHED = {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/tmp/_MEIabc:/opt/mine", "LD_LIBRARY_PATH_ORIG": "/opt/mine",
            "_PYI_ARCHIVE_FILE": "/usr/local/bin/opentermd", "_PYI_PARENT_PROCESS_LEVEL": "1"}


def test_from_source_the_folders_are_the_checkouts() -> None:
    assert (templates_dir() / "base.html").is_file() and (static_dir() / "css" / "app.css").is_file()
    assert templates_dir().parent == root()


def test_frozen_commands_get_the_users_library_path_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert without_launcher(LAUNCHED) == {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/mine"}
    unset_before = {"LD_LIBRARY_PATH": "/tmp/_MEIabc", "_PYI_APPLICATION_HOME_DIR": "/tmp/_MEIabc", "HOME": "/h"}
    assert without_launcher(unset_before) == {"HOME": "/h"}


def test_from_source_the_library_path_is_the_users(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sys, "frozen", raising=False)
    assert without_launcher({"LD_LIBRARY_PATH": "/opt/mine", "TERM": "xterm"}) == {
        "LD_LIBRARY_PATH": "/opt/mine", "TERM": "xterm"}
