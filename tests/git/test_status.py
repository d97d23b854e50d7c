"""Status over a real repository: every kind porcelain v2 reports, names with spaces and newlines, +/- counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import Api
from tests.git.conftest import git, git_exit


def by_path(reply: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["path"]: entry for entry in reply["files"]}


async def test_status_reports_every_kind_with_counts(api: Api, repo: Path) -> None:
    (repo / "a.txt").write_text("one\nTWO\nthree\nfour\n")  # unstaged: +2 -1
    (repo / "b.txt").write_text("bee\nsting\n")
    git(repo, "add", "b.txt")  # staged: +1
    git(repo, "mv", "old.txt", "new name.txt")  # renamed, with a space
    (repo / "line\nbreak.txt").write_text("x\ny\n")  # untracked, a newline in its name
    (repo / "folder").mkdir()
    (repo / "folder" / "inner.txt").write_text("in\n")
    reply = await api.json("GET", f"/git/status?path={repo}")
    assert reply["root"] == str(repo) and reply["branch"] == "main" and len(reply["commit"]) == 40
    files = by_path(reply)
    assert set(files) == {"a.txt", "b.txt", "new name.txt", "line\nbreak.txt", "folder/"}
    a = files["a.txt"]
    assert (a["kind"], a["index"], a["worktree"], a["staged"], a["unstaged"], a["mark"]) == \
        ("ordinary", ".", "M", False, True, "M")
    assert (a["unstaged_added"], a["unstaged_removed"]) == (2, 1)
    b = files["b.txt"]
    assert (b["index"], b["worktree"], b["staged"], b["unstaged"]) == ("M", ".", True, False)
    assert (b["staged_added"], b["staged_removed"]) == (1, 0)
    renamed = files["new name.txt"]
    assert (renamed["kind"], renamed["original"], renamed["mark"]) == ("renamed", "old.txt", "R")
    assert (renamed["staged_added"], renamed["staged_removed"]) == (0, 0)
    untracked = files["line\nbreak.txt"]
    assert (untracked["kind"], untracked["mark"], untracked["unstaged_added"]) == ("untracked", "?", 2)


async def test_unmerged_and_deleted_and_added(api: Api, repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "a.txt").write_text("theirs\n")
    git(repo, "commit", "-q", "-am", "theirs")
    git(repo, "checkout", "-q", "main")
    (repo / "a.txt").write_text("ours\n")
    git(repo, "commit", "-q", "-am", "ours")
    assert git_exit(repo, "merge", "other") != 0  # the conflict
    (repo / "b.txt").unlink()
    (repo / "fresh.txt").write_text("new\n")
    git(repo, "add", "fresh.txt")
    files = by_path(await api.json("GET", f"/git/status?path={repo}"))
    assert (files["a.txt"]["kind"], files["a.txt"]["mark"]) == ("unmerged", "U")
    assert files["b.txt"]["mark"] == "D" and files["fresh.txt"]["mark"] == "A"


async def test_a_folder_outside_any_repository_is_404(api: Api, scratch_environment: Path) -> None:
    (scratch_environment / "plain").mkdir()
    reply = await api.json("GET", f"/git/status?path={scratch_environment / 'plain'}", status=404)
    assert reply == {"detail": "Not inside a git repository"}


async def test_status_from_a_subfolder_and_empty_repository(api: Api, scratch_environment: Path) -> None:
    empty = scratch_environment / "empty"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "trunk")
    (empty / "sub").mkdir()
    (empty / "sub" / "f.txt").write_text("f\n")
    reply = await api.json("GET", f"/git/status?path={empty / 'sub'}")
    assert (reply["root"], reply["branch"], reply["commit"]) == (str(empty), "trunk", None)
    assert [entry["path"] for entry in reply["files"]] == ["sub/"]
    assert await api.json("GET", f"/git/log?path={empty}") == {"root": str(empty), "commits": []}
