"""`--root` confinement: every file endpoint refuses paths that lead outside the root, with 403.

The tree (all real files, under a resolved tmp_path):

    root/inside.txt, root/sub/note.txt     ordinary files inside the root
    root/link_in   -> root/inside.txt      a symlink that stays inside
    root/link_out  -> outside/secret.txt   a symlink (final component) that leads out
    root/dirlink   -> outside/             a symlinked directory (an ancestor) that leads out
    root/dangling  -> outside/dangling.txt a symlink to a file that does not exist yet, outside
    outside/...                            TOPSECRET content that must never be read or touched
    root-evil/...                          a sibling whose name starts with the root's name
    home/                                  the server's home (outside the root)

After every refused request the whole tree must be byte-for-byte as it was: nothing read through,
nothing created, renamed, deleted or touched outside (directory mtimes included).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from yarl import URL

from tests.conftest import AUTH, Api, ApiFactory, needs_host_view

DENIED = "Path is outside the allowed file root"
SECRET = "TOPSECRET"


# --- the tree ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    base: Path
    root: Path
    outside: Path
    sibling: Path
    home: Path


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    base = tmp_path.resolve()
    root, outside, sibling, home = base / "root", base / "outside", base / "root-evil", base / "home"
    root.mkdir()
    (root / "inside.txt").write_text("inside text\nsecond line\n")
    (root / "sub").mkdir()
    (root / "sub" / "note.txt").write_text("note in sub\n")
    outside.mkdir()
    (outside / "secret.txt").write_text(f"{SECRET} outside\n")
    (outside / "sub").mkdir()
    (outside / "sub" / "deep.txt").write_text(f"{SECRET} deep\n")
    sibling.mkdir()
    (sibling / "secret.txt").write_text(f"{SECRET} sibling\n")
    (home / "homefile.txt").write_text(f"{SECRET} home\n")
    (root / "link_in").symlink_to(root / "inside.txt")
    (root / "link_out").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to(outside)
    (root / "dangling").symlink_to(outside / "dangling.txt")
    return Tree(base, root, outside, sibling, home)


Snapshot = dict[str, tuple[str, Any, int]]


def snapshot(base: Path) -> Snapshot:
    """Every entry under base (not following symlinks): kind, content or link target, mtime."""
    found: Snapshot = {}
    for directory, subdirectories, files in os.walk(base):
        if Path(directory) == base:
            subdirectories[:] = [name for name in subdirectories if name != "state"]
        for name in [*subdirectories, *files]:
            path = Path(directory) / name
            relative = str(path.relative_to(base))
            info = path.lstat()
            if path.is_symlink():
                found[relative] = ("link", os.readlink(path), info.st_mtime_ns)
            elif path.is_dir():
                found[relative] = ("dir", None, info.st_mtime_ns)
            else:
                found[relative] = ("file", path.read_bytes(), info.st_mtime_ns)
    found["."] = ("dir", None, base.stat().st_mtime_ns)
    return found


@pytest.fixture
async def confined(api_with: ApiFactory, tree: Tree) -> Api:
    api: Api = await api_with(file_root=tree.root)
    return api


# --- raw requests (so that %2e%2e and .. reach the server untouched) -------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: CIMultiDictProxy[str]

    def json(self) -> Any:
        assert self.headers.get("Content-Type", "").startswith("application/json"), (self.status, self.body)
        return json.loads(self.body)


async def send(api: Api, method: str, raw_target: str, *, auth: bool = True, **kwargs: Any) -> Reply:
    """Send `raw_target` (path and query, already percent-encoded) exactly as written."""
    url = URL(str(api.client.make_url("/")).rstrip("/") + raw_target, encoded=True)
    headers = {**(AUTH if auth else {}), **kwargs.pop("headers", {})}
    async with api.client.session.request(method, url, headers=headers, **kwargs) as response:
        return Reply(response.status, await response.read(), response.headers)


def q(value: str) -> str:
    return quote(value, safe="/~")


def form(content: bytes = b"uploaded bytes\n", filename: str = "payload.txt") -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("file", content, filename=filename, content_type="application/octet-stream")
    return data


# --- every endpoint, as a function of the path under test ---------------------------------------------

Sender = Callable[[Api, Tree, str], Awaitable[Reply]]


@dataclass(frozen=True)
class Case:
    """One endpoint and one of its path parameters.

    kind: what the path should name for the request to make sense: an existing file ("file"), an
    existing directory ("dir") or something that does not exist yet ("new").
    in_query: the value travels in the URL (and must be given percent-encoded), not in a JSON body.
    """

    name: str
    kind: str
    in_query: bool
    send: Sender


def _get(path: str, parameter: str, extra: str = "") -> Sender:
    async def run(api: Api, tree: Tree, value: str) -> Reply:
        return await send(api, "GET", f"{path}?{extra}{parameter}={value}")
    return run


async def _serve(api: Api, tree: Tree, value: str) -> Reply:
    return await send(api, "GET", "/files/serve/" + value.lstrip("/"))


async def _delete(api: Api, tree: Tree, value: str) -> Reply:
    return await send(api, "DELETE", f"/files/delete?path={value}")


async def _upload(api: Api, tree: Tree, value: str) -> Reply:
    return await send(api, "POST", f"/files/upload?directory={value}", data=form())


async def _upload_link(api: Api, tree: Tree, value: str) -> Reply:
    return await send(api, "POST", f"/files/upload/link?directory={value}")


def _post(path: str, body: Callable[[Tree, str], dict[str, Any]]) -> Sender:
    async def run(api: Api, tree: Tree, value: str) -> Reply:
        return await send(api, "POST", path, json=body(tree, value))
    return run


CASES = [
    Case("list", "dir", True, _get("/files/list", "directory")),
    Case("read", "file", True, _get("/files/read", "path")),
    Case("display", "file", True, _get("/files/display", "path")),
    Case("view", "file", True, _get("/files/view", "path")),
    Case("serve", "file", True, _serve),
    Case("delete-file", "file", True, _delete),
    Case("delete-dir", "dir", True, _delete),
    Case("upload", "dir", True, _upload),
    Case("download-link", "file", True, _get("/files/download/link", "path")),
    Case("upload-link", "dir", True, _upload_link),
    Case("grep", "dir", True, _get("/files/grep", "path", f"query={SECRET}&")),
    Case("glob", "dir", True, _get("/files/glob", "path", "pattern=*&")),
    Case("search", "dir", True, _get("/files/search", "path", "query=secret&")),
    Case("matches", "dir", True, _get("/files/matches", "path", f"query={SECRET}&")),
    Case("write-new", "new", False, _post("/files/write", lambda t, v: {"path": v, "content": "pwned"})),
    Case("write-existing", "file", False, _post("/files/write", lambda t, v: {"path": v, "content": "pwned"})),
    Case("replace", "file", False, _post("/files/replace", lambda t, v: {
        "path": v, "replacements": [{"target": SECRET, "replacement": "pwned", "allow_multiple": True}]})),
    Case("mkdir", "new", False, _post("/files/mkdir", lambda t, v: {"path": v})),
    Case("move-source", "file", False, _post("/files/move", lambda t, v: {
        "source": v, "destination": str(t.root / "moved-in")})),
    Case("move-destination", "new", False, _post("/files/move", lambda t, v: {
        "source": str(t.root / "inside.txt"), "destination": v})),
    Case("archive", "file", False, _post("/files/archive", lambda t, v: {"paths": [v]})),
    Case("archive-mixed", "file", False, _post("/files/archive", lambda t, v: {
        "paths": [str(t.root / "inside.txt"), v]})),
    Case("cwd", "dir", False, _post("/files/cwd", lambda t, v: {"path": v})),
]


def _case_param(case: Case) -> Any:
    return pytest.param(case, id=case.name)


# Paths that lead outside the root, by kind. Relative ones resolve against the root (home is outside it).
ESCAPES: dict[str, Callable[[Tree], dict[str, str]]] = {
    "dotdot-relative": lambda t: {
        "file": "../outside/secret.txt", "dir": "../outside", "new": "../outside/created.txt"},
    "dotdot-absolute": lambda t: {
        "file": f"{t.root}/../outside/secret.txt", "dir": f"{t.root}/../outside",
        "new": f"{t.root}/../outside/created.txt"},
    "dotdot-from-subdir": lambda t: {
        "file": "sub/../../outside/secret.txt", "dir": "sub/../../outside", "new": "sub/../../outside/created.txt"},
    "absolute-outside": lambda t: {
        "file": str(t.outside / "secret.txt"), "dir": str(t.outside), "new": str(t.outside / "created.txt")},
    "sibling-sharing-the-root-prefix": lambda t: {
        "file": str(t.sibling / "secret.txt"), "dir": str(t.sibling), "new": str(t.sibling / "created.txt")},
    "symlink-final-component": lambda t: {
        "file": str(t.root / "link_out"), "dir": str(t.root / "dirlink"), "new": str(t.root / "dangling")},
    "symlink-final-component-relative": lambda t: {"file": "link_out", "dir": "dirlink", "new": "dangling"},
    "symlink-ancestor": lambda t: {
        "file": str(t.root / "dirlink" / "secret.txt"), "dir": str(t.root / "dirlink" / "sub"),
        "new": str(t.root / "dirlink" / "newdir" / "created.txt")},
    "tilde-home": lambda t: {"file": "~/homefile.txt", "dir": "~", "new": "~/created.txt"},
}

# The same, percent-encoded in the URL: only for values that travel in the URL.
ENCODED_ESCAPES: dict[str, Callable[[Tree], dict[str, str]]] = {
    "pct-dotdot": lambda t: {
        "file": "%2e%2e/outside/secret.txt", "dir": "%2e%2e/outside", "new": "%2e%2e/outside/created.txt"},
    "pct-dotdot-and-slashes": lambda t: {
        "file": "%2E%2E%2Foutside%2Fsecret.txt", "dir": "%2E%2E%2Foutside", "new": "%2E%2E%2Foutside%2Fcreated.txt"},
    "pct-dotdot-absolute": lambda t: {
        "file": q(str(t.root)) + "/%2e%2e/outside/secret.txt", "dir": q(str(t.root)) + "/%2e%2e/outside",
        "new": q(str(t.root)) + "/%2e%2e/outside/created.txt"},
}


def assert_denied(reply: Reply) -> None:
    assert reply.status == 403, (reply.status, reply.body[:300])
    body = reply.json()
    assert body == {"detail": DENIED}


@pytest.mark.parametrize("escape", list(ESCAPES))
@pytest.mark.parametrize("case", [_case_param(case) for case in CASES])
async def test_paths_leading_outside_the_root_are_403(confined: Api, tree: Tree, case: Case, escape: str) -> None:
    value = ESCAPES[escape](tree)[case.kind]
    before = snapshot(tree.base)
    reply = await case.send(confined, tree, q(value) if case.in_query else value)
    assert_denied(reply)
    assert snapshot(tree.base) == before
    assert not (tree.outside / "created.txt").exists() and not (tree.outside / "newdir").exists()
    assert SECRET.encode() not in reply.body


@pytest.mark.parametrize("escape", list(ENCODED_ESCAPES))
@pytest.mark.parametrize("case", [_case_param(case) for case in CASES if case.in_query])
async def test_percent_encoded_traversal_in_the_url_is_403(
        confined: Api, tree: Tree, case: Case, escape: str) -> None:
    before = snapshot(tree.base)
    reply = await case.send(confined, tree, ENCODED_ESCAPES[escape](tree)[case.kind])
    assert_denied(reply)
    assert snapshot(tree.base) == before


@pytest.mark.parametrize("raw", [
    "{root}/%2e%2e/outside/secret.txt",
    "{root}/%2E%2E/%2e%2e/{base_name}/outside/secret.txt",
    "{root}%2f%2e%2e%2foutside%2fsecret.txt",
    "{root}/../outside/secret.txt",
    "{root}/sub/../../outside/secret.txt",
    "{outside}/secret.txt",
    "{root}/link_out",
    "{root}/dirlink/secret.txt",
    "{root}/dirlink/sub/deep.txt",
])
async def test_serve_paths_leading_outside_the_root_are_403(confined: Api, tree: Tree, raw: str) -> None:
    target = raw.format(root=q(str(tree.root)).lstrip("/"), outside=q(str(tree.outside)).lstrip("/"),
                        base_name=q(tree.base.name))
    before = snapshot(tree.base)
    reply = await send(confined, "GET", "/files/serve/" + target)
    assert_denied(reply)
    assert snapshot(tree.base) == before


# --- inside the root everything still works ----------------------------------------------------------


async def test_list_inside_the_root_hides_symlinks_that_lead_out(confined: Api, tree: Tree) -> None:
    listing = await confined.json("GET", "/files/list")
    assert listing["dir"] == str(tree.root)
    assert [entry["name"] for entry in listing["entries"]] == ["inside.txt", "link_in", "sub"]
    link_in = next(entry for entry in listing["entries"] if entry["name"] == "link_in")
    assert link_in["size"] == len("inside text\nsecond line\n") and link_in["type"] == "file"
    sub = await confined.json("GET", f"/files/list?directory={q(str(tree.root / 'sub'))}")
    assert sub["dir"] == str(tree.root / "sub")
    assert [entry["name"] for entry in sub["entries"]] == ["note.txt"]


async def test_read_display_view_and_serve_inside_the_root(confined: Api, tree: Tree) -> None:
    inside = tree.root / "inside.txt"
    read = await confined.json("GET", "/files/read?path=inside.txt")
    assert read == {"path": str(inside), "content": "inside text\nsecond line\n", "total_lines": 2}
    through_link = await confined.json("GET", "/files/read?path=link_in&start_line=2")
    assert through_link == {"path": str(tree.root / "link_in"), "content": "second line\n", "total_lines": 2}
    assert await confined.json("GET", f"/files/display?path={q(str(inside))}") == {"path": str(inside),
                                                                                  "exists": True}
    for target in (f"/files/view?path={q(str(inside))}", "/files/view?path=sub/note.txt",
                   "/files/serve/" + q(str(inside)).lstrip("/")):
        reply = await send(confined, "GET", target)
        assert reply.status == 200, target
        assert reply.body in (b"inside text\nsecond line\n", b"note in sub\n")


async def test_missing_paths_inside_the_root_are_404_not_403(confined: Api, tree: Tree) -> None:
    assert await confined.json("GET", "/files/read?path=nope.txt", status=404) == {"detail": "File not found"}
    assert await confined.json("GET", "/files/list?directory=nope", status=404) == {
        "detail": "Directory not found"}
    assert await confined.json("GET", "/files/display?path=nope.txt") == {
        "path": str(tree.root / "nope.txt"), "exists": False}
    assert await confined.json("DELETE", "/files/delete?path=nope.txt", status=404) == {"detail": "Path not found"}
    await confined.json("GET", "/files/view?path=nope.txt", status=404)


async def test_write_a_new_file_inside_the_root(confined: Api, tree: Tree) -> None:
    reply = await confined.json("POST", "/files/write", json={"path": "new/deep/file.txt", "content": "héllo\n"})
    target = tree.root / "new" / "deep" / "file.txt"
    assert reply == {"path": str(target), "size": len("héllo\n".encode())}
    assert target.read_text() == "héllo\n"
    absolute = tree.root / "abs.txt"
    assert (await confined.json("POST", "/files/write", json={"path": str(absolute), "content": "x"}))["size"] == 1
    assert absolute.read_text() == "x"


async def test_write_through_a_symlink_that_stays_inside(confined: Api, tree: Tree) -> None:
    await confined.json("POST", "/files/write", json={"path": "link_in", "content": "rewritten\n"})
    assert (tree.root / "link_in").is_symlink()
    assert (tree.root / "inside.txt").read_text() == "rewritten\n"


async def test_a_literal_percent_name_in_a_json_body_stays_inside(confined: Api, tree: Tree) -> None:
    before = snapshot(tree.outside)
    reply = await confined.json("POST", "/files/write", json={"path": "%2e%2e/outside/x.txt", "content": "x"})
    assert reply["path"] == str(tree.root / "%2e%2e" / "outside" / "x.txt")
    assert (tree.root / "%2e%2e" / "outside" / "x.txt").read_text() == "x"
    assert snapshot(tree.outside) == before


async def test_replace_mkdir_move_delete_inside_the_root(confined: Api, tree: Tree) -> None:
    replaced = await confined.json("POST", "/files/replace", json={
        "path": "inside.txt", "replacements": [{"target": "second", "replacement": "2nd"}]})
    assert replaced == {"path": str(tree.root / "inside.txt"), "size": len("inside text\n2nd line\n")}
    assert (tree.root / "inside.txt").read_text() == "inside text\n2nd line\n"

    assert await confined.json("POST", "/files/mkdir", json={"path": "made/a/b"}) == {
        "path": str(tree.root / "made" / "a" / "b")}
    assert (tree.root / "made" / "a" / "b").is_dir()

    moved = await confined.json("POST", "/files/move", json={"source": "sub/note.txt", "destination": "made/note.txt"})
    assert moved == {"source": str(tree.root / "sub" / "note.txt"), "destination": str(tree.root / "made" / "note.txt")}
    assert (tree.root / "made" / "note.txt").read_text() == "note in sub\n"
    assert not (tree.root / "sub" / "note.txt").exists()

    assert await confined.json("DELETE", "/files/delete?path=made") == {
        "path": str(tree.root / "made"), "type": "directory"}
    assert not (tree.root / "made").exists()
    assert await confined.json("DELETE", "/files/delete?path=link_in") == {
        "path": str(tree.root / "link_in"), "type": "file"}
    assert not (tree.root / "link_in").is_symlink() and (tree.root / "inside.txt").exists()


async def test_upload_into_the_root(confined: Api, tree: Tree) -> None:
    reply = await send(confined, "POST", "/files/upload?directory=uploads/new", data=form(b"abc"))
    assert reply.status == 200, reply.body
    target = tree.root / "uploads" / "new" / "payload.txt"
    assert reply.json() == {"path": str(target), "size": 3}
    assert target.read_bytes() == b"abc"


async def test_upload_onto_a_symlink_that_leads_out_is_403(confined: Api, tree: Tree) -> None:
    (tree.root / "sub" / "payload.txt").symlink_to(tree.outside / "secret.txt")
    (tree.root / "sub" / "fresh.txt").symlink_to(tree.outside / "fresh.txt")
    before = snapshot(tree.base)
    assert_denied(await send(confined, "POST", "/files/upload?directory=sub", data=form(b"pwned")))
    assert_denied(await send(confined, "POST", "/files/upload?directory=sub", data=form(b"pwned", "fresh.txt")))
    assert snapshot(tree.base) == before
    assert (tree.outside / "secret.txt").read_text() == f"{SECRET} outside\n"
    assert not (tree.outside / "fresh.txt").exists()


async def test_upload_link_to_a_symlinked_directory_is_403(confined: Api, tree: Tree) -> None:
    """Even a link created before the symlink was swapped in must not write outside."""
    created = await send(confined, "POST", "/files/upload/link?directory=later")
    assert created.status == 200, created.body
    (tree.root / "later").symlink_to(tree.outside)
    before = snapshot(tree.base)
    async with confined.client.session.post(created.json()["url"], data=form(b"pwned")) as response:
        assert response.status == 403, await response.text()
        assert await response.json() == {"detail": DENIED}
    assert snapshot(tree.base) == before


async def test_archive_leaves_out_symlinks_that_lead_out(confined: Api, tree: Tree) -> None:
    adir = tree.root / "adir"
    (adir / "nested").mkdir(parents=True)
    (adir / "a.txt").write_text("a\n")
    (adir / "nested" / "b.txt").write_text("b\n")
    (adir / "leak").symlink_to(tree.outside / "secret.txt")
    (adir / "nested" / "leak2").symlink_to(tree.outside / "sub" / "deep.txt")
    (adir / "leakdir").symlink_to(tree.outside)
    (adir / "inlink").symlink_to(tree.root / "inside.txt")
    reply = await send(confined, "POST", "/files/archive", json={"paths": ["adir"]})
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/zip"
    assert reply.headers["Content-Disposition"] == 'attachment; filename="adir.zip"'
    with zipfile.ZipFile(io.BytesIO(reply.body)) as archive:
        assert sorted(archive.namelist()) == ["adir/a.txt", "adir/inlink", "adir/nested/b.txt"]
        assert archive.read("adir/inlink") == b"inside text\nsecond line\n"
        assert archive.read("adir/nested/b.txt") == b"b\n"


async def test_archive_of_the_whole_root_contains_nothing_from_outside(confined: Api, tree: Tree) -> None:
    reply = await send(confined, "POST", "/files/archive", json={"paths": ["."]})
    assert reply.status == 200, reply.body
    with zipfile.ZipFile(io.BytesIO(reply.body)) as archive:
        names = sorted(archive.namelist())
        assert names == ["root/inside.txt", "root/link_in", "root/sub/note.txt"]
        assert all(SECRET.encode() not in archive.read(name) for name in names)


async def test_links_inside_the_root(confined: Api, tree: Tree) -> None:
    download = await confined.json("GET", "/files/download/link?path=inside.txt")
    async with confined.client.session.get(download["url"]) as response:
        assert response.status == 200
        assert await response.read() == b"inside text\nsecond line\n"
    upload = await confined.json("POST", "/files/upload/link?directory=sub")
    async with confined.client.session.post(upload["url"], data=form(b"via link")) as response:
        assert response.status == 200, await response.text()
        assert await response.json() == {"path": str(tree.root / "sub" / "payload.txt"), "size": 8}
    assert (tree.root / "sub" / "payload.txt").read_bytes() == b"via link"


async def test_set_cwd_inside_the_root(confined: Api, tree: Tree) -> None:
    headers = {"X-Session-Id": "chat-1"}
    assert await confined.json("POST", "/files/cwd", json={"path": "sub"}, headers=headers) == {
        "cwd": str(tree.root / "sub")}
    read = await confined.json("GET", "/files/read?path=note.txt", headers=headers)
    assert read["path"] == str(tree.root / "sub" / "note.txt")
    assert_denied(await send(confined, "GET", "/files/read?path=../../outside/secret.txt", headers=headers))


async def test_get_cwd_reports_a_directory_inside_the_root(confined: Api, tree: Tree) -> None:
    """Home is outside the root, so relative paths start at the root: the reported cwd must agree,
    or a file browser that opens at `cwd` gets 403 on its very first listing."""
    reply = await confined.json("GET", "/files/cwd")
    assert reply["root"] == {"path": str(tree.root), "label": "root"}
    assert reply["cwd"] == str(tree.root)
    await confined.json("GET", f"/files/list?directory={q(reply['cwd'])}")


@pytest.mark.parametrize("path", ["{root}", ".", "", "{root}/", "sub/..", "{root}/sub/..", "{alias}"])
async def test_the_root_itself_cannot_be_deleted(confined: Api, tree: Tree, path: str) -> None:
    (tree.base / "alias").symlink_to(tree.root)
    before = snapshot(tree.root)
    value = path.format(root=tree.root, alias=tree.base / "alias")
    reply = await send(confined, "DELETE", f"/files/delete?path={q(value)}")
    # The alias lies outside the root (403); the root itself, however named, is never removable (400).
    assert reply.status == (403 if path == "{alias}" else 400), reply.body
    assert isinstance(reply.json()["detail"], str)
    assert snapshot(tree.root) == before


async def test_the_root_cannot_be_moved_away(confined: Api, tree: Tree) -> None:
    before = snapshot(tree.root)
    reply = await send(confined, "POST", "/files/move", json={"source": ".", "destination": "sub/root"})
    assert reply.status >= 400
    reply = await send(confined, "POST", "/files/move", json={"source": ".", "destination": str(tree.base / "gone")})
    assert reply.status == 400, reply.body
    reply = await send(confined, "POST", "/files/move", json={"source": str(tree.root),
                                                              "destination": str(tree.base / "gone")})
    assert reply.status == 400, reply.body
    assert snapshot(tree.root) == before


@needs_host_view("the root is named through a link outside the sandbox's workspace")
async def test_a_root_given_through_a_symlink(api_with: ApiFactory, tree: Tree) -> None:
    alias = tree.base / "alias"
    alias.symlink_to(tree.root)
    api: Api = await api_with(file_root=alias)
    read = await api.json("GET", f"/files/read?path={q(str(alias / 'inside.txt'))}")
    assert read["content"] == "inside text\nsecond line\n"
    assert_denied(await send(api, "GET", f"/files/read?path={q(str(alias / 'link_out'))}"))
    assert_denied(await send(api, "GET", f"/files/read?path={q(str(tree.outside / 'secret.txt'))}"))


async def test_home_inside_the_root_stays_the_base_of_relative_paths(api_with: ApiFactory, tree: Tree) -> None:
    (tree.home / "hello.txt").write_text("hi\n")
    api: Api = await api_with(file_root=tree.base)
    read = await api.json("GET", "/files/read?path=hello.txt")
    assert read["path"] == str(tree.home / "hello.txt") and read["content"] == "hi\n"
    assert_denied(await send(api, "GET", "/files/read?path=../../etc/passwd"))
    assert_denied(await send(api, "GET", "/files/read?path=/etc/passwd"))


# --- search endpoints (daemon/files/search_endpoints.py) -----------------------------------------------


async def _search(api: Api, endpoint: str, query: str) -> Any:
    reply = await send(api, "GET", f"/files/{endpoint}?{query}")
    assert reply.status == 200, (reply.status, reply.body[:300])
    return reply.json()


async def test_grep_inside_the_root_finds_files_but_nothing_through_symlinks(confined: Api, tree: Tree) -> None:
    found = await _search(confined, "grep", "query=note+in+sub")
    assert [match["file"] for match in found["matches"]] == [str(tree.root / "sub" / "note.txt")]
    leaked = await _search(confined, "grep", f"query={SECRET}")
    assert leaked["matches"] == []


async def test_glob_inside_the_root_finds_files_but_nothing_through_symlinks(confined: Api, tree: Tree) -> None:
    found = await _search(confined, "glob", "pattern=note.txt")
    assert [match["path"] for match in found["matches"]] == ["sub/note.txt"]
    for pattern in ("*secret*", "deep.txt"):
        assert (await _search(confined, "glob", f"pattern={q(pattern)}"))["matches"] == []


async def test_search_inside_the_root_finds_files_but_nothing_through_symlinks(confined: Api, tree: Tree) -> None:
    found = await _search(confined, "search", "query=note")
    assert [result["path"] for result in found["results"]] == [str(tree.root / "sub" / "note.txt")]
    assert (await _search(confined, "search", "query=deep"))["results"] == []
    assert (await _search(confined, "search", "query=secret"))["results"] == []


async def test_matches_inside_the_root_finds_files_but_nothing_through_symlinks(confined: Api, tree: Tree) -> None:
    found = await _search(confined, "matches", "query=note")
    assert str(tree.root / "sub" / "note.txt") in [result["path"] for result in found["results"]]
    leaked = await _search(confined, "matches", f"query={SECRET}")
    assert leaked["results"] == []


# --- paths that change after they were approved --------------------------------------------------------


async def test_a_download_link_whose_file_became_a_symlink_out_is_refused(confined: Api, tree: Tree) -> None:
    url = (await confined.json("GET", "/files/download/link?path=inside.txt"))["url"]
    (tree.root / "inside.txt").unlink()
    (tree.root / "inside.txt").symlink_to(tree.outside / "secret.txt")
    async with confined.client.session.get(url) as response:
        body = await response.read()
        assert response.status == 403, body
        assert SECRET.encode() not in body


async def test_a_session_cwd_that_became_a_symlink_out_falls_back_to_the_root(confined: Api, tree: Tree) -> None:
    headers = {"X-Session-Id": "chat-2"}
    await confined.json("POST", "/files/cwd", json={"path": "sub"}, headers=headers)
    (tree.root / "sub" / "note.txt").unlink()
    (tree.root / "sub").rmdir()
    (tree.root / "sub").symlink_to(tree.outside)
    reply = await send(confined, "GET", "/files/read?path=secret.txt", headers=headers)
    assert reply.status in (403, 404), reply.body
    assert SECRET.encode() not in reply.body
    listing = await send(confined, "GET", "/files/list", headers=headers)
    assert SECRET.encode() not in listing.body and b"secret.txt" not in listing.body


def browser_multipart(filename: str, content: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart body as a browser sends it: the file name raw (UTF-8), not percent-encoded."""
    boundary = "----opentermdTestBoundary7MA4YWxkTrZu0gW"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def test_an_upload_file_name_cannot_climb_out(confined: Api, tree: Tree) -> None:
    before = snapshot(tree.outside)
    body, headers = browser_multipart("../../outside/evil.txt", b"climber")
    reply = await send(confined, "POST", "/files/upload?directory=sub", data=body, headers=headers)
    assert reply.status == 200, reply.body
    assert reply.json() == {"path": str(tree.root / "sub" / "evil.txt"), "size": 7}
    body, headers = browser_multipart("..", b"climber")
    reply = await send(confined, "POST", "/files/upload?directory=sub", data=body, headers=headers)
    assert reply.status == 400, reply.body
    assert snapshot(tree.outside) == before
