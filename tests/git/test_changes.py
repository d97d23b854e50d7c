"""Diff, stage, unstage, discard, commit, log and show over a real repository, through the hidden API."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.conftest import Api, ApiFactory
from tests.git.conftest import git


async def test_diff_staged_and_unstaged(api: Api, repo: Path) -> None:
    (repo / "a.txt").write_text("one\nstaged\nthree\n")
    git(repo, "add", "a.txt")
    (repo / "a.txt").write_text("one\nstaged\nthree\n<b>worktree</b>\n")
    unstaged = await api.json("GET", f"/git/diff?path={repo}&file=a.txt")
    assert "+<b>worktree</b>" in unstaged["diff"] and "-two" not in unstaged["diff"]
    assert unstaged["truncated"] is False
    staged = await api.json("GET", f"/git/diff?path={repo}&file=a.txt&staged=true")
    assert "-two\n+staged" in staged["diff"] and "worktree" not in staged["diff"]


async def test_an_untracked_file_diffs_as_all_added(api: Api, repo: Path) -> None:
    (repo / "new.txt").write_text("hello\n")
    reply = await api.json("GET", f"/git/diff?path={repo}&file=new.txt")
    assert "+hello" in reply["diff"]


async def test_stage_unstage_commit_log_show(api: Api, repo: Path) -> None:
    (repo / "a.txt").write_text("one\n2\nthree\n")
    (repo / "with space.txt").write_text("s\n")
    reply = await api.json("POST", "/git/stage", json={"path": str(repo), "files": ["a.txt", "with space.txt"]})
    assert {entry["path"]: entry["index"] for entry in reply["files"]} == {"a.txt": "M", "with space.txt": "A"}
    reply = await api.json("POST", "/git/unstage", json={"path": str(repo), "files": ["with space.txt"]})
    assert {entry["path"]: entry["kind"] for entry in reply["files"]} == \
        {"a.txt": "ordinary", "with space.txt": "untracked"}
    await api.json("POST", "/git/commit", status=422, json={"path": str(repo), "message": "  \n"})
    reply = await api.json("POST", "/git/commit", json={"path": str(repo), "message": "--amend is my message"})
    commit = reply["committed"]
    assert [entry["path"] for entry in reply["files"]] == ["with space.txt"]
    assert git(repo, "log", "-1", "--format=%s%n%an").splitlines() == ["--amend is my message", "Repo Person"]
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "2"  # a new commit, nothing amended
    log = await api.json("GET", f"/git/log?path={repo}&limit=5")
    newest = log["commits"][0]
    assert (newest["commit"], newest["subject"]) == (commit, "--amend is my message")
    assert log["commits"][1]["subject"] == "first" and log["commits"][0]["author"] == "Repo Person"
    shown = await api.json("GET", f"/git/show?path={repo}&commit={commit[:10]}")
    assert shown["commit"] == commit and shown["message"] == "--amend is my message"
    assert "-two\n+2" in shown["diff"]
    await api.json("POST", "/git/commit", status=409, json={"path": str(repo), "message": "nothing staged"})
    recorded = (await api.json("GET", "/audit", params={"path": str(repo)}))["records"]
    assert [(entry["kind"], entry.get("commit")) for entry in recorded] == [("commit", commit)]


async def test_unstage_before_the_first_commit(api: Api, scratch_environment: Path) -> None:
    empty = scratch_environment / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    (empty / "f.txt").write_text("f\n")
    reply = await api.json("POST", "/git/stage", json={"path": str(empty), "files": ["f.txt"]})
    assert reply["files"][0]["mark"] == "A"
    reply = await api.json("POST", "/git/unstage", json={"path": str(empty), "files": ["f.txt"]})
    assert reply["files"][0]["kind"] == "untracked"
    assert (empty / "f.txt").read_text() == "f\n"


async def test_discard_keeps_the_discarded_text_in_the_history_first(api: Api, repo: Path) -> None:
    (repo / "a.txt").write_text("an agent's rewrite\n")
    (repo / "b.txt").unlink()
    reply = await api.json("POST", "/git/discard", json={"path": str(repo), "files": ["a.txt", "b.txt"]})
    assert reply["files"] == []
    assert reply["discarded"] == {"restored": ["a.txt", "b.txt"], "trashed": [], "kept": ["a.txt"]}
    assert (repo / "a.txt").read_text() == "one\ntwo\nthree\n" and (repo / "b.txt").read_text() == "bee\n"
    versions = (await api.json("GET", f"/files/history?path={repo / 'a.txt'}"))["versions"]
    assert [version["route"] for version in versions] == ["git-discard"]
    async with api.request("GET", f"/files/history/version?path={repo / 'a.txt'}&id={versions[0]['id']}") as got:
        assert await got.read() == b"an agent's rewrite\n"
    recorded = (await api.json("GET", "/audit", params={"path": str(repo)}))["records"]
    assert [(entry["kind"], entry["files"]) for entry in recorded] == [("discard", ["a.txt", "b.txt"])]
    # Nothing unstaged: nothing to throw away.
    await api.json("POST", "/git/discard", status=409, json={"path": str(repo), "files": ["a.txt"]})


#: The trash is built beside the git room (issue 14, part A); until it is there, untracked files are refused.
TRASH_THERE = importlib.util.find_spec("daemon.files.trash_endpoints") is not None


async def test_discard_of_an_untracked_file_moves_it_to_the_trash(api: Api, repo: Path) -> None:
    (repo / "draft.txt").write_text("only copy\n")
    if not TRASH_THERE:
        await api.json("POST", "/git/discard", status=409, json={"path": str(repo), "files": ["draft.txt"]})
        assert (repo / "draft.txt").read_text() == "only copy\n"
        return
    reply = await api.json("POST", "/git/discard", json={"path": str(repo), "files": ["draft.txt"]})
    assert reply["discarded"]["trashed"] == ["draft.txt"] and not (repo / "draft.txt").exists()
    trashed = await api.json("GET", "/files/trash")
    assert [entry["name"] for entry in trashed["entries"]] == ["draft.txt"]


async def test_without_the_trash_an_untracked_file_is_never_discarded(api_with: ApiFactory, repo: Path) -> None:
    api = await api_with(**({"trash": False} if TRASH_THERE else {}))
    (repo / "draft.txt").write_text("only copy\n")
    reply = await api.json("POST", "/git/discard", status=409, json={"path": str(repo), "files": ["draft.txt"]})
    assert "trash" in reply["detail"]
    assert (repo / "draft.txt").read_text() == "only copy\n"
