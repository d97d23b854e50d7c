"""Attacks on the git API: names read as options, pathspec magic, commit ids, --root, a hanging git, no git."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from daemon.errors import ApiError
from daemon.git.runner import run_git
from tests.conftest import Api, ApiFactory, eventually
from tests.git.conftest import git


async def test_a_file_named_like_an_option_is_only_a_file(api: Api, repo: Path) -> None:
    (repo / "--all").write_text("dash\n")
    (repo / "other.txt").write_text("not to be staged\n")
    reply = await api.json("POST", "/git/stage", json={"path": str(repo), "files": ["--all"]})
    # Without `--` before the names, `git add -A --all` would have staged other.txt too.
    assert {entry["path"]: entry["kind"] for entry in reply["files"]} == {"--all": "ordinary",
                                                                          "other.txt": "untracked"}


async def test_a_diff_file_cannot_become_an_output_option(api: Api, repo: Path, tmp_path: Path) -> None:
    written = tmp_path / "pwned"
    (repo / "a.txt").write_text("changed\n")
    reply = await api.json("GET", "/git/diff", params={"path": str(repo), "file": f"--output={written}"})
    assert reply["diff"] == ""  # no such file: no change; never `git diff --output=...`
    assert not written.exists()


async def test_pathspec_magic_is_taken_literally(api: Api, repo: Path) -> None:
    (repo / "x.txt").write_text("x\n")
    await api.json("POST", "/git/stage", status=409, json={"path": str(repo), "files": [":(glob)*.txt"]})
    assert git(repo, "diff", "--cached", "--name-only") == ""


@pytest.mark.parametrize("commit", ["--output=/tmp/opentermd-pwned", "HEAD", "abc", "a" * 65, "1234 --stat", "..."])
async def test_a_commit_id_must_be_hexadecimal(api: Api, repo: Path, commit: str) -> None:
    reply = await api.json("GET", "/git/show", status=400, params={"path": str(repo), "commit": commit})
    assert reply == {"detail": "A commit id is 4 to 64 hexadecimal digits"}
    assert not Path("/tmp/opentermd-pwned").exists()


async def test_an_unknown_commit_is_404(api: Api, repo: Path) -> None:
    await api.json("GET", "/git/show", status=404, params={"path": str(repo), "commit": "deadbeef"})


@pytest.mark.parametrize(("file", "status"), [("../escape.txt", 403), ("sub/../../escape.txt", 403),
                                                ("/etc/passwd", 400), ("", 422), ("a\0b", 400)])
async def test_files_stay_inside_the_repository(api: Api, repo: Path, file: str, status: int) -> None:
    (repo.parent / "escape.txt").write_text("outside\n")
    files = [file] if file else []
    await api.json("POST", "/git/stage", status=status, json={"path": str(repo), "files": files})


async def test_root_confines_the_repository(api_with: ApiFactory, tmp_path: Path, scratch_environment: Path) -> None:
    # home is a repository; the root is a folder inside it, and another repository lies outside the root.
    git(scratch_environment, "init", "-q")
    root = scratch_environment / "root"
    (root / "work").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    git(outside, "init", "-q")
    api = await api_with(file_root=root)
    reply = await api.json("GET", f"/git/status?path={outside}", status=403)
    assert reply == {"detail": "Path is outside the allowed file root"}
    # The repository above the root is never found from inside it (nor its files listed).
    reply = await api.json("GET", f"/git/status?path={root / 'work'}", status=404)
    assert reply == {"detail": "Not inside a git repository"}
    git(root, "init", "-q")
    assert (await api.json("GET", f"/git/status?path={root / 'work'}"))["root"] == str(root)


async def test_a_hanging_git_is_killed_at_its_time_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    pid_file = tmp_path / "child.pid"
    # A git that starts a child of its own and hangs: the whole group must go.
    (fake / "git").write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {pid_file}\nwait\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(ApiError) as refused:
        await asyncio.wait_for(run_git(str(tmp_path), ["status"], timeout=0.5), 30)
    assert refused.value.status == 504
    child = int(pid_file.read_text())
    await eventually(lambda: not _alive(child), timeout=10)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_without_git_the_features_hide(api: Api, repo: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "no-git"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert (await api.json("GET", "/api/config", auth=False))["features"]["git"] is False
    reply = await api.json("GET", f"/git/status?path={repo}", status=404)
    assert reply == {"detail": "git is not installed on this machine"}
    monkeypatch.setenv("PATH", os.defpath)
    assert (await api.json("GET", "/api/config", auth=False))["features"]["git"] is True
