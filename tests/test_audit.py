"""The audit trail: one JSON line per change, who made it, rotated and bounded, read back by path and time."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.app import create_app
from daemon.audit import AuditLog, Query, record
from daemon.config import Config
from daemon.http.sessions import CSRF_HEADER
from tests.conftest import KEY, Api, ApiFactory, make_config
from tests.pages.test_views import Browser, Document

OWUI = {"X-User-Id": "user-42", "X-Session-Id": "chat-7"}


def lines(config: Config) -> list[dict[str, Any]]:
    path = config.state_dir / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def records(api: Api, **query: Any) -> list[dict[str, Any]]:
    reply = await api.json("GET", "/audit", params=query)
    found: list[dict[str, Any]] = reply["records"]
    return found


async def test_a_write_is_recorded_with_who_and_never_the_key(api: Api, config: Config) -> None:
    target = config.cwd / "notes.txt"
    await api.json("POST", "/files/write", json={"path": str(target), "content": "hello"}, headers=OWUI)
    [entry] = await records(api)
    assert entry["kind"] == "write" and entry["path"] == str(target) and entry["size"] == 5
    assert entry["who"] == {"by": "api", "user": "user-42", "session": "chat-7"}
    assert entry["route"] == "POST /files/write"
    assert entry == lines(config)[0]
    assert KEY not in (config.state_dir / "audit" / "audit.jsonl").read_text()


async def test_every_kind_of_change_is_recorded(api: Api, config: Config) -> None:
    home = config.cwd
    home.mkdir(parents=True, exist_ok=True)
    await api.json("POST", "/files/write", json={"path": str(home / "a.txt"), "content": "one two"})
    await api.json("POST", "/files/replace", json={"path": str(home / "a.txt"),
                                                   "replacements": [{"target": "one", "replacement": "1"}]})
    await api.json("POST", "/files/mkdir", json={"path": str(home / "dir")})
    await api.json("POST", "/files/create", json={"directory": str(home), "name": "b.txt", "type": "file"})
    await api.json("POST", "/files/rename", json={"path": str(home / "b.txt"), "name": "c.txt"})
    await api.json("POST", "/files/move", json={"source": str(home / "c.txt"), "destination": str(home / "dir/c.txt")})
    await api.json("POST", "/files/copy", json={"source": str(home / "a.txt"), "destination": str(home / "d.txt")})
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("inside.txt", "x")
    (home / "z.zip").write_bytes(packed.getvalue())
    await api.json("POST", "/files/extract", json={"path": str(home / "z.zip"), "destination": str(home / "out")})
    form = aiohttp.FormData()
    form.add_field("file", b"uploaded", filename="up.txt")
    await api.json("POST", f"/files/upload?directory={home}", data=form)
    await api.json("DELETE", "/files/delete", params={"path": str(home / "d.txt")})
    await api.run("true")
    kinds = [entry["kind"] for entry in reversed(await records(api))]
    assert kinds == ["write", "replace", "create", "create", "rename", "move", "copy", "extract", "upload",
                     "delete", "command"]
    by_kind = {entry["kind"]: entry for entry in await records(api)}
    assert by_kind["move"]["source"] == str(home / "c.txt")
    assert by_kind["move"]["destination"] == str(home / "dir/c.txt")
    assert by_kind["delete"]["path"] == str(home / "d.txt") and by_kind["delete"]["type"] == "file"
    assert by_kind["upload"]["path"] == str(home / "up.txt")
    assert by_kind["command"]["command"] == "true"


async def test_a_refused_change_is_not_recorded(api: Api, config: Config) -> None:
    await api.json("DELETE", "/files/delete", status=404, params={"path": str(config.cwd / "missing")})
    assert await records(api) == []


async def test_a_page_session_is_recorded_as_the_page(aiohttp_client: Any, config: Config) -> None:
    browser = Browser(await aiohttp_client(create_app(config)))
    await browser.log_in()
    target = config.cwd / "page.txt"
    async with browser.client.post("/files/write", json={"path": str(target), "content": "x"},
                                   headers={CSRF_HEADER: browser.csrf}) as response:
        assert response.status == 200
    [entry] = lines(config)
    assert entry["who"] == {"by": "page"}
    cookie_values = [cookie.value for cookie in browser.client.session.cookie_jar]
    text = (config.state_dir / "audit" / "audit.jsonl").read_text()
    assert cookie_values and not any(value in text for value in cookie_values)
    assert browser.csrf not in text


async def test_path_filter_is_the_path_or_below(api: Api, config: Config) -> None:
    for name in ("proj/a.txt", "proj/sub/b.txt", "project.txt", "other.txt"):
        await api.json("POST", "/files/write", json={"path": str(config.cwd / name), "content": "x"})
    await api.json("POST", "/files/move", json={"source": str(config.cwd / "other.txt"),
                                                "destination": str(config.cwd / "proj/other.txt")})
    found = await records(api, path=str(config.cwd / "proj"))
    assert [entry["kind"] for entry in found] == ["move", "write", "write"]
    assert found[1]["path"].endswith("proj/sub/b.txt")
    assert [entry["path"] for entry in await records(api, path="project.txt")] == [str(config.cwd / "project.txt")]


async def test_time_range_and_limit(api: Api, config: Config) -> None:
    trail = AuditLog(config.state_dir / "audit")
    for stamp in (1000.0, 2000.0, 3000.0, 4000.0):
        trail.append({"ts": stamp, "kind": "write", "who": {"by": "api"}, "path": f"/x/{int(stamp)}"})
    trail.close()
    assert [entry["ts"] for entry in await records(api, since="2000", until="3000")] == [3000.0, 2000.0]
    assert [entry["ts"] for entry in await records(api, limit=1)] == [4000.0]
    assert [entry["ts"] for entry in await records(api, since="1970-01-01T00:50:00+00:00")] == [4000.0, 3000.0]


@pytest.mark.parametrize("query", [{"since": "yesterday"}, {"until": "nan"}])
async def test_a_bad_time_is_a_clear_400(api: Api, query: dict[str, str]) -> None:
    reply = await api.json("GET", "/audit", status=400, params=query)
    assert "not a time" in reply["detail"]


async def test_a_bad_limit_is_422_and_the_key_is_needed(api: Api) -> None:
    await api.json("GET", "/audit", status=422, params={"limit": "0"})
    await api.json("GET", "/audit", status=401, auth=False)


def test_rotation_keeps_the_trail_bounded(tmp_path: Path) -> None:
    trail = AuditLog(tmp_path / "audit", max_bytes=1000, keep=3)
    for number in range(500):
        record(trail, "write", {"by": "api"}, path=f"/f/{number}")
    trail.close()
    files = sorted(path.name for path in (tmp_path / "audit").iterdir())
    assert files == ["audit.1.jsonl", "audit.2.jsonl", "audit.3.jsonl", "audit.jsonl"]
    assert all(path.stat().st_size < 1100 for path in (tmp_path / "audit").iterdir())
    newest = trail.search(Query(limit=30))
    assert [entry["path"] for entry in newest] == [f"/f/{number}" for number in range(499, 469, -1)]


def test_a_long_field_is_cut(tmp_path: Path) -> None:
    trail = AuditLog(tmp_path / "audit")
    record(trail, "command", {"by": "api"}, command="x" * 100_000)
    [entry] = trail.search(Query())
    assert len(entry["command"]) == 2001


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    trail = AuditLog(tmp_path / "audit")
    record(trail, "write", {"by": "api"}, path="/a")
    with open(trail.live, "ab") as file:
        file.write(b'{"ts": 5, "kind": "wri')  # the daemon died here
    trail.close()
    trail = AuditLog(tmp_path / "audit")  # the next start
    record(trail, "write", {"by": "api"}, path="/b")
    assert [entry["path"] for entry in trail.search(Query())] == ["/b", "/a"]


async def test_a_state_dir_that_refuses_the_trail_never_fails_the_change(api_with: ApiFactory,
                                                                           tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "audit").write_text("a file where the folder should be")
    api = await api_with()
    target = make_config(tmp_path).cwd / "still.txt"
    await api.json("POST", "/files/write", json={"path": str(target), "content": "saved"})
    assert target.read_text() == "saved"
    assert await records(api) == []


async def test_the_activity_page_lists_changes_escaped(aiohttp_client: Any, config: Config) -> None:
    browser = Browser(await aiohttp_client(create_app(config)))
    await browser.log_in()
    evil = config.cwd / "<img src=x onerror=alert(1)>.txt"
    async with browser.client.post("/files/write", json={"path": str(evil), "content": "x"},
                                   headers={CSRF_HEADER: browser.csrf, **OWUI}) as response:
        assert response.status == 200
    page = Document(await browser.page("/activity"))
    [row] = page.all(testid="activity-row")
    assert row.attr("data-kind") == "write"
    assert evil.name in row.text
    assert "page" in page.one(testid="activity-who").text and "user-42" in page.one(testid="activity-who").text
    empty = Document(await browser.page("/activity?path=" + str(config.cwd / "elsewhere")))
    assert empty.one(testid="activity-empty")
    assert os.path.basename(str(evil)) not in "".join(el.text for el in empty.all(testid="activity-row"))


async def test_restores_from_the_trash_and_the_history_are_recorded(api: Api, config: Config) -> None:
    target = config.cwd / "twice.txt"
    await api.json("POST", "/files/write", json={"path": str(target), "content": "one"})
    await api.json("POST", "/files/write", json={"path": str(target), "content": "two"})
    [version] = (await api.json("GET", "/files/history", params={"path": str(target)}))["versions"]
    await api.json("POST", "/files/history/restore", json={"path": str(target), "id": version["id"]})
    await api.json("DELETE", "/files/delete", params={"path": str(target)})
    [item] = (await api.json("GET", "/files/trash"))["entries"]
    await api.json("POST", "/files/trash/restore", json={"id": item["id"]})
    await api.json("DELETE", "/files/trash")
    found = await records(api, path=str(target))
    assert [(entry["kind"], entry.get("origin")) for entry in found] == [
        ("restore", "trash"), ("delete", None), ("restore", "history"), ("write", None), ("write", None)]
    assert found[2]["version"] == version["id"]
    [purge] = [entry for entry in await records(api) if entry["kind"] == "purge"]
    assert purge["id"] == "the whole trash" and purge["removed"] == 0
