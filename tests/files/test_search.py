"""grep, glob, search and matches: real files in a scratch home, a real server, both grep engines."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from daemon.files import grep, search
from daemon.files.paths import FileScope
from tests.conftest import Api, ApiFactory, needs_host_view

RG = shutil.which("rg")


@pytest.fixture(params=["rg", "python"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Run a test with ripgrep on PATH, then with a PATH that has git and find but no ripgrep."""
    if request.param == "rg" and RG is None:
        pytest.skip("ripgrep is not installed")
    if request.param == "python":
        tools = tmp_path / "bin-without-rg"
        tools.mkdir()
        for tool in ("git", "find", "bwrap"):  # bwrap: the daemon's sandbox, not a search tool
            found = shutil.which(tool)
            if found:
                (tools / tool).symlink_to(found)
        monkeypatch.setenv("PATH", str(tools))
    return str(request.param)


def write(base: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, newline="")


async def get(api: Api, endpoint: str, status: int = 200, **params: Any) -> Any:
    """GET /files/{endpoint}; a list value becomes repeated keys."""
    pairs = [(key, str(item)) for key, value in params.items()
             for item in (value if isinstance(value, list) else [value])]
    return await api.json("GET", f"/files/{endpoint}", status=status, params=pairs)


def lines(reply: dict[str, Any], base: Path) -> list[tuple[str, int, str]]:
    return [(os.path.relpath(match["file"], base), match["line"], match["content"]) for match in reply["matches"]]


def git_init(directory: Path) -> None:
    subprocess.run(["git", "init", "-q", str(directory)], check=True)


# --- grep -------------------------------------------------------------------------------------------


async def test_grep_gives_lines_in_walk_order(api: Api, home: Path, engine: str) -> None:
    write(home, {"b.txt": "foo\nbar\nfoo bar\n", "a.txt": "no\nfoo\n", "sub/c.txt": "foo\n",
                 "a_dir/d.txt": "x foo", ".hidden/e.txt": "foo\n"})
    reply = await get(api, "grep", query="foo")
    assert reply["query"] == "foo" and reply["path"] == str(home) and reply["truncated"] is False
    assert lines(reply, home) == [
        ("a.txt", 2, "foo"), ("b.txt", 1, "foo"), ("b.txt", 3, "foo bar"),
        (".hidden/e.txt", 1, "foo"), ("a_dir/d.txt", 1, "x foo"), ("sub/c.txt", 1, "foo")]


async def test_grep_regex_literal_and_case(api: Api, home: Path, engine: str) -> None:
    write(home, {"f.txt": "a.c\nabc\nABC\n"})
    assert [m["line"] for m in (await get(api, "grep", query="a.c"))["matches"]] == [1, 2]
    assert [m["line"] for m in (await get(api, "grep", query="a.c", regex="false"))["matches"]] == [1]
    insensitive = await get(api, "grep", query="abc", case_insensitive="true")
    assert [m["line"] for m in insensitive["matches"]] == [2, 3]
    assert [m["line"] for m in (await get(api, "grep", query="^a\\w+$"))["matches"]] == [2]


async def test_grep_include_filters_basenames_repeated_or_as_a_list_literal(api: Api, home: Path,
                                                                            engine: str) -> None:
    write(home, {"a.py": "hit\n", "b.md": "hit\n", "c.txt": "hit\n", "sub/d.py": "hit\n", "[x].py": "hit\n"})
    def names(reply: dict[str, Any]) -> list[str]:
        return [os.path.relpath(m["file"], home) for m in reply["matches"]]
    assert names(await get(api, "grep", query="hit", include="['*.py']")) == ["[x].py", "a.py", "sub/d.py"]
    assert names(await get(api, "grep", query="hit", include=["*.py", "*.md"])) == [
        "[x].py", "a.py", "b.md", "sub/d.py"]
    # fnmatch on the basename: brackets are a character class, a slash never matches.
    assert names(await get(api, "grep", query="hit", include="[ab].*")) == ["a.py", "b.md"]
    assert names(await get(api, "grep", query="hit", include="sub/*.py")) == []


async def test_grep_files_only_and_truncation(api: Api, home: Path, engine: str) -> None:
    write(home, {"a.txt": "x\nx\nx\n", "b.txt": "x\n", "c.txt": "y\n"})
    files = await get(api, "grep", query="x", match_per_line="false")
    assert files["matches"] == [{"file": str(home / "a.txt")}, {"file": str(home / "b.txt")}]
    assert files["truncated"] is False
    # Which matches fill a truncated answer depends on ripgrep's threads; walk order within it.
    two = await get(api, "grep", query="x", max_results=2)
    assert len(two["matches"]) == 2 and two["truncated"] is True
    assert set(lines(two, home)) <= {("a.txt", 1, "x"), ("a.txt", 2, "x"), ("a.txt", 3, "x"), ("b.txt", 1, "x")}
    # Like the reference, reaching the limit counts as truncated even when nothing is left out.
    exact = await get(api, "grep", query="x", match_per_line="false", max_results=2)
    assert len(exact["matches"]) == 2 and exact["truncated"] is True


async def test_grep_skips_binary_and_non_utf8_files_and_reads_line_ends_like_python(
        api: Api, home: Path, engine: str) -> None:
    write(home, {"bin.dat": b"\x00\x01needle\x00", "latin1.txt": b"caf\xe9 needle\n", "nul.txt": b"needle\x00\n",
                 "crlf.txt": b"needle\r\nother\r\nneedle$\r\n", "cr.txt": b"one\rneedle\rthree needle",
                 "bom.txt": "\ufeffneedle\n", "emoji.txt": "😀 needle\n"})
    reply = await get(api, "grep", query="needle$")
    assert lines(reply, home) == [
        ("bom.txt", 1, "\ufeffneedle"), ("cr.txt", 2, "needle"), ("cr.txt", 3, "three needle"),
        ("crlf.txt", 1, "needle"), ("emoji.txt", 1, "😀 needle")]
    # (ripgrep misses `^` after a lone "\r" when nothing else in that file matches: cr.txt is left out.)
    reply = await get(api, "grep", query="^needle", include="crlf.txt")
    assert lines(reply, home) == [("crlf.txt", 1, "needle"), ("crlf.txt", 3, "needle$")]


async def test_grep_patterns_ripgrep_refuses_fall_back_to_re2(api: Api, home: Path, engine: str) -> None:
    write(home, {"f.txt": "foobar\nfoobaz\nabab\n"})
    # ripgrep has no \Z; Python's meaning (end of text) runs on RE2.
    assert [m["line"] for m in (await get(api, "grep", query="ba[rz]\\Z"))["matches"]] == [1, 2]


async def test_grep_refuses_patterns_without_a_linear_time_match(api: Api, home: Path, engine: str) -> None:
    write(home, {"f.txt": "foobar\nabab\n"})
    for pattern in ("foo(?=bar)", "(ab)\\1", "(?<!foo)ba", "(?P<x>a)(?P=x)"):
        reply = await get(api, "grep", 400, query=pattern)
        assert reply["detail"].startswith("Unsupported regex: ") and "linear-time engine" in reply["detail"]


async def test_grep_reads_symlinked_files_but_does_not_enter_symlinked_directories(
        api: Api, home: Path, engine: str) -> None:
    write(home, {"real/a.txt": "needle\n"})
    (home / "link.txt").symlink_to(home / "real" / "a.txt")
    (home / "dirlink").symlink_to(home / "real")
    (home / "fifo").mkdir()
    os.mkfifo(home / "fifo" / "pipe")
    reply = await get(api, "grep", query="needle")
    assert lines(reply, home) == [("link.txt", 1, "needle"), ("real/a.txt", 1, "needle")]


async def test_grep_a_single_file_ignores_include(api: Api, home: Path, engine: str) -> None:
    write(home, {"notes.md": "one\ntwo needle\n"})
    reply = await get(api, "grep", query="needle", path="notes.md", include="*.py")
    assert reply["path"] == str(home / "notes.md") and lines(reply, home) == [("notes.md", 2, "two needle")]


async def test_grep_path_follows_the_chat_cwd(api: Api, home: Path) -> None:
    write(home, {"project/src/a.py": "needle\n", "src/other.py": "needle\n"})
    chat = {"X-Session-Id": "chat1"}
    await api.json("POST", "/files/cwd", json={"path": "project"}, headers=chat)
    reply = await api.json("GET", "/files/grep?query=needle&path=src", headers=chat)
    assert [m["file"] for m in reply["matches"]] == [str(home / "project" / "src" / "a.py")]


async def test_grep_errors(api: Api, home: Path, engine: str) -> None:
    assert await get(api, "grep", 404, query="x", path="missing") == {"detail": "Search path not found"}
    reply = await get(api, "grep", 400, query="(unclosed")
    assert reply["detail"].startswith("Invalid regex: missing ), unterminated subpattern")
    for bad in (0, 501):
        await get(api, "grep", 422, query="x", max_results=bad)
    assert (await get(api, "grep", 422))["detail"][0]["loc"] == ["query", "query"]


def test_both_engines_agree_with_each_other(tmp_path: Path) -> None:
    if RG is None:
        pytest.skip("ripgrep is not installed")
    tree = tmp_path / "tree"
    write(tree, {f"d{i % 7}/f{i}.txt": f"alpha {i}\nbeta\nAlpha gamma {i}\n" for i in range(60)})
    for query, regex, insensitive in [("alpha", True, False), ("Alpha", False, True), (r"gamma \d+$", True, False)]:
        options: dict[str, Any] = dict(regex=regex, case_insensitive=insensitive, include=None,
                                       match_per_line=True, max_results=500, scope=FileScope(None))
        with_rg = grep.grep(str(tree), query, rg=RG, **options)
        in_python = grep.grep(str(tree), query, rg=None, **options)
        assert with_rg == in_python and with_rg["matches"]


@pytest.mark.parametrize("pattern", [r"\s+$", r"b$", r"^b", r"(?m)^$", r"a\nb", r"[^x]$", r"\bb\b", r"\Bb",
                                     r"b\Z", r"\Ab", r"(?s).b.", r"$\n?", r"^$", r"\s*$"])
def test_the_whole_file_prefilter_never_hides_a_matching_line(pattern: str) -> None:
    text = "a b\nb\n\nab \nb"
    job = grep.GrepJob.of(pattern, regex=True, case_insensitive=False, max_results=100)
    # Each line is searched alone, without its newline (as ripgrep does).
    expected = [n for n, line in enumerate(text.split("\n"), 1) if re.search(pattern, line)]
    assert [number for number, _ in grep.matching_lines(text, job, 100)] == expected


# --- glob -------------------------------------------------------------------------------------------


async def test_glob_matches_names_or_relative_paths_with_stat_info(api: Api, home: Path) -> None:
    write(home, {"a.py": "print()\n", "src/b.py": "", "src/deep/c.py": "", "src/readme.md": "", ".hidden.py": ""})
    reply = await get(api, "glob", pattern="*.py")
    assert reply["pattern"] == "*.py" and reply["path"] == str(home) and reply["truncated"] is False
    assert [m["path"] for m in reply["matches"]] == [".hidden.py", "a.py", "src/b.py", "src/deep/c.py"]
    first = reply["matches"][1]
    assert first["type"] == "file" and first["size"] == 8
    assert first["modified"] == pytest.approx(os.stat(home / "a.py").st_mtime)
    assert [m["path"] for m in (await get(api, "glob", pattern="src/*.md"))["matches"]] == ["src/readme.md"]


async def test_glob_exclude_type_and_truncation(api: Api, home: Path) -> None:
    write(home, {"a/x.txt": "", "a/y.log": "", "b/z.txt": ""})
    assert [m["path"] for m in (await get(api, "glob", pattern="*", exclude=["*.log", "b"]))["matches"]] == [
        "a", "a/x.txt", "b/z.txt"]
    directories = await get(api, "glob", pattern="*", type="directory")
    assert [(m["path"], m["type"]) for m in directories["matches"]] == [("a", "directory"), ("b", "directory")]
    assert [m["path"] for m in (await get(api, "glob", pattern="*", type="file"))["matches"]] == [
        "a/x.txt", "a/y.log", "b/z.txt"]
    cut = await get(api, "glob", pattern="*", max_results=2)
    assert [m["path"] for m in cut["matches"]] == ["a", "b"] and cut["truncated"] is True


async def test_glob_lists_symlinked_directories_without_entering_them(api: Api, home: Path) -> None:
    write(home, {"real/f.txt": ""})
    (home / "link").symlink_to(home / "real")
    (home / "broken").symlink_to(home / "missing")
    reply = await get(api, "glob", pattern="*")
    assert [(m["path"], m["type"]) for m in reply["matches"]] == [
        ("link", "directory"), ("real", "directory"), ("real/f.txt", "file")]


async def test_glob_errors(api: Api, home: Path) -> None:
    write(home, {"file.txt": ""})
    for path in ("missing", "file.txt"):
        assert await get(api, "glob", 404, pattern="*", path=path) == {"detail": "Search directory not found"}
    await get(api, "glob", 422, pattern="*", type="link")
    await get(api, "glob", 422, pattern="*", max_results=501)
    await get(api, "glob", 422)


# --- search -----------------------------------------------------------------------------------------


async def test_search_ranks_exact_then_prefix_then_substring_then_shorter(api: Api, home: Path) -> None:
    write(home, {"my_config.py": "", "config": "", "configuration.md": "", "config.py": "", "sub/app_config": "",
                 "unrelated.txt": ""})
    reply = await get(api, "search", query="Config")
    assert [r["name"] for r in reply["results"]] == [
        "config", "config.py", "configuration.md", "app_config", "my_config.py"]
    top = reply["results"][0]
    assert top == {"path": str(home / "config"), "name": "config", "type": "file", "size": 0,
                   "modified": pytest.approx(os.stat(home / "config").st_mtime)}
    assert [r["name"] for r in (await get(api, "search", query="config", limit=2))["results"]] == [
        "config", "config.py"]


async def test_search_type_hidden_and_an_empty_query(api: Api, home: Path) -> None:
    write(home, {"docs/a.txt": "", ".secret/docs.txt": "", ".docsrc": ""})
    assert [r["name"] for r in (await get(api, "search", query="docs"))["results"]] == ["docs"]
    hidden = await get(api, "search", query="docs", show_hidden="true")
    assert [r["name"] for r in hidden["results"]] == ["docs", "docs.txt", ".docsrc"]
    assert [r["type"] for r in (await get(api, "search", query="docs", type="directory"))["results"]] == ["directory"]
    everything = await get(api, "search")
    assert sorted(r["name"] for r in everything["results"]) == ["a.txt", "docs"]


async def test_search_follows_gitignore_inside_a_work_tree(api: Api, home: Path) -> None:
    write(home, {"repo/.gitignore": "build/\n*.log\n", "repo/src/app.py": "", "repo/build/app.py": "",
                 "repo/app.log": "", "plain/build/app.py": "", "plain/app.log": ""})
    git_init(home / "repo")
    repo = await get(api, "search", query="app", path="repo")
    assert [r["path"] for r in repo["results"]] == [str(home / "repo" / "src" / "app.py")]
    directories = await get(api, "search", query="s", path="repo", type="directory")
    assert [r["name"] for r in directories["results"]] == ["src"]
    plain = await get(api, "search", query="app", path="plain")
    assert sorted(r["name"] for r in plain["results"]) == ["app.log", "app.py"]


async def test_search_errors(api: Api, home: Path) -> None:
    write(home, {"file.txt": ""})
    assert await get(api, "search", 404, path="file.txt") == {"detail": "Search directory not found"}
    await get(api, "search", 422, limit=101)
    await get(api, "search", 422, type="both")


# --- matches ----------------------------------------------------------------------------------------


async def test_matches_scores_names_paths_then_contents(api: Api, home: Path, engine: str) -> None:
    write(home, {"notes": "", "notes.md": "", "my_notes.txt": "", "notes_dir/x.txt": "", "other.txt": "see NOTES\n",
                 "zz/readme.txt": "nothing here\n"})
    reply = await get(api, "matches", query="Notes")
    assert [(r["relative_path"], r["name_match"]) for r in reply["results"]] == [
        ("notes", True), ("notes.md", True), ("notes_dir", True), ("my_notes.txt", True),
        ("notes_dir/x.txt", True), ("other.txt", False)]
    assert reply["next_offset"] is None
    content = reply["results"][-1]
    assert content == {"path": str(home / "other.txt"), "relative_path": "other.txt", "name": "other.txt",
                       "type": "file", "name_match": False,
                       "content_matches": [{"line": 1, "column": 5, "text": "see NOTES"}]}


async def test_matches_columns_count_utf16_units_and_stop_at_three(api: Api, home: Path, engine: str) -> None:
    write(home, {"emoji.txt": "😀😀 needle\nnone\n\U0001d4b3needle\nneedle\nneedle again\n"})
    reply = await get(api, "matches", query="needle")
    assert reply["results"][0]["content_matches"] == [
        {"line": 1, "column": 6, "text": "😀😀 needle"},
        {"line": 3, "column": 3, "text": "\U0001d4b3needle"},
        {"line": 4, "column": 1, "text": "needle"}]


async def test_matches_pages_with_next_offset(api: Api, home: Path, engine: str) -> None:
    write(home, {f"item{i}.txt": "" for i in range(5)})
    first = await get(api, "matches", query="item", limit=2)
    assert [r["name"] for r in first["results"]] == ["item0.txt", "item1.txt"] and first["next_offset"] == 2
    second = await get(api, "matches", query="item", offset=2, limit=2)
    assert [r["name"] for r in second["results"]] == ["item2.txt", "item3.txt"] and second["next_offset"] == 4
    last = await get(api, "matches", query="item", offset=4, limit=2)
    assert [r["name"] for r in last["results"]] == ["item4.txt"] and last["next_offset"] is None
    assert (await get(api, "matches", query="item", offset=9))["results"] == []


async def test_matches_hidden_files_binary_files_and_gitignore(api: Api, home: Path, engine: str) -> None:
    write(home, {".env": "TOKEN=needle\n", "bin.dat": b"\x00needle", "ignored.log": "needle\n", "kept.txt": "needle\n",
                 ".gitignore": "*.log\n"})
    git_init(home)
    shown = await get(api, "matches", query="needle")
    assert [r["name"] for r in shown["results"]] == ["kept.txt"]
    hidden = await get(api, "matches", query="needle", show_hidden="true")
    assert [r["name"] for r in hidden["results"]] == [".env", "kept.txt"]


async def test_matches_errors(api: Api, home: Path) -> None:
    write(home, {"file.txt": ""})
    assert await get(api, "matches", 400, query="   ") == {"detail": "Query must not be blank"}
    assert await get(api, "matches", 404, query="x", path="file.txt") == {"detail": "Search directory not found"}
    await get(api, "matches", 422, query="x", limit=101)
    await get(api, "matches", 422, query="x", offset=-1)
    await get(api, "matches", 422)


# --- --root -----------------------------------------------------------------------------------------


@needs_host_view("links leave --root for tmp_path beside it, which the sandbox hides anyway")
async def test_searches_under_root_never_reach_through_symlinks_that_leave_it(
        api_with: ApiFactory, tmp_path: Path, engine: str) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    write(root, {"inside.txt": "needle inside\n"})
    write(outside, {"secret.txt": "needle TOPSECRET\n", "deep/secret.txt": "needle TOPSECRET\n"})
    (root / "in_link.txt").symlink_to(root / "inside.txt")
    (root / "out_link.txt").symlink_to(outside / "secret.txt")
    (root / "out_dir").symlink_to(outside)
    api: Api = await api_with(file_root=root)
    found = await get(api, "grep", query="needle", path=str(root))
    assert lines(found, root) == [("in_link.txt", 1, "needle inside"), ("inside.txt", 1, "needle inside")]
    globbed = await get(api, "glob", pattern="*", path=str(root))
    assert [m["path"] for m in globbed["matches"]] == ["in_link.txt", "inside.txt"]
    named = await get(api, "search", path=str(root))
    assert sorted(r["name"] for r in named["results"]) == ["in_link.txt", "inside.txt"]
    matched = await get(api, "matches", query="secret", path=str(root))
    assert matched["results"] == []
    assert (await get(api, "grep", 403, query="x", path=str(outside)))["detail"] == (
        "Path is outside the allowed file root")


# --- the plain functions ----------------------------------------------------------------------------


def test_walk_is_os_walk_in_sorted_order(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write(tree, {"b/z.txt": "", "b/a.txt": "", "a/c/d.txt": "", "e.txt": ""})
    walked = [(os.path.relpath(top, tree), [d.name for d in dirs], [f.name for f in files])
              for top, dirs, files in search.walk(str(tree), FileScope(None))]
    assert walked == [(".", ["a", "b"], ["e.txt"]), ("a", ["c"], []), ("a/c", [], ["d.txt"]),
                      ("b", [], ["a.txt", "z.txt"])]


def test_best_keeps_the_smallest_keys_and_the_earliest_of_equals() -> None:
    best = search.Best(2)
    for sequence, (rank, name) in enumerate([(2, "c"), (1, "b"), (1, "a"), (1, "b")]):
        if best.admits((rank, sequence)):
            best.add((rank, sequence), {"name": name})
    assert best.items == [{"name": "b"}, {"name": "a"}]
