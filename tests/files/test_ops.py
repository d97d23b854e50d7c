"""List, read, display, write, replace, mkdir, delete, move, cwd: real files, real server."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from daemon.files import changes, ops
from tests.conftest import Api, ApiFactory

# --- list -------------------------------------------------------------------------------------------


async def test_list_gives_sorted_entries_with_types_sizes_and_writability(api: Api, home: Path) -> None:
    (home / "b.txt").write_text("hello")
    (home / "a_dir").mkdir()
    (home / ".hidden").write_text("")
    (home / "link").symlink_to(home / "a_dir")
    (home / "broken").symlink_to(home / "missing")
    reply = await api.json("GET", "/files/list")
    assert reply["dir"] == str(home) and reply["writable"] is True
    assert [entry["name"] for entry in reply["entries"]] == [".hidden", "a_dir", "b.txt", "link"]
    by_name = {entry["name"]: entry for entry in reply["entries"]}
    assert by_name["b.txt"]["type"] == "file" and by_name["b.txt"]["size"] == 5
    assert by_name["link"]["type"] == "directory"
    assert by_name["b.txt"]["modified"] == pytest.approx(os.stat(home / "b.txt").st_mtime)
    assert all(entry["writable"] is True for entry in reply["entries"])


async def test_list_of_a_relative_directory_follows_the_chat_cwd(api: Api, home: Path) -> None:
    (home / "project" / "src").mkdir(parents=True)
    (home / "project" / "src" / "main.py").write_text("")
    await api.json("POST", "/files/cwd", json={"path": "project"}, headers={"X-Session-Id": "chat1"})
    reply = await api.json("GET", "/files/list?directory=src", headers={"X-Session-Id": "chat1"})
    assert [entry["name"] for entry in reply["entries"]] == ["main.py"]
    other = await api.json("GET", "/files/list?directory=src", status=404, headers={"X-Session-Id": "chat2"})
    assert other == {"detail": "Directory not found"}


async def test_list_errors(api: Api, home: Path) -> None:
    (home / "file").write_text("")
    assert (await api.json("GET", "/files/list?directory=nope", status=404)) == {"detail": "Directory not found"}
    assert (await api.json("GET", "/files/list?directory=file", status=404)) == {"detail": "Directory not found"}
    reply = await api.json("GET", "/files/list?directory=a%00b", status=400)
    assert "NUL" in reply["detail"]
    reply = await api.json("GET", "/files/list?directory=" + "x" * 300, status=400)
    assert "longer than 255" in reply["detail"]
    reply = await api.json("GET", "/files/list?directory=" + "/x" * 2100, status=400)
    assert "longer than 4096" in reply["detail"]


def test_write_access_reads_the_mode_bits_like_access(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        access = ops.WriteAccess(fd)
    finally:
        os.close(fd)
    access.uid = 1000
    access.groups = {1000}
    mine = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 1000, 5, 0, 0, 0, 0))
    theirs = os.stat_result((stat.S_IFREG | 0o664, 0, 0, 1, 2000, 5, 0, 0, 0, 0))
    group = os.stat_result((stat.S_IFREG | 0o664, 0, 0, 1, 2000, 1000, 0, 0, 0, 0))
    assert access.allows(mine) and not access.allows(theirs) and access.allows(group)
    access.read_only = True
    assert not access.allows(mine)


# --- read -------------------------------------------------------------------------------------------


async def test_read_text_with_universal_newlines_and_line_ranges(api: Api, home: Path) -> None:
    (home / "t.txt").write_bytes(b"one\r\ntwo\rthree\nfour\x0bfive")
    whole = await api.json("GET", "/files/read?path=t.txt")
    assert whole == {"path": str(home / "t.txt"), "content": "one\ntwo\nthree\nfour\x0bfive", "total_lines": 5}
    middle = await api.json("GET", "/files/read?path=t.txt&start_line=2&end_line=4")
    assert middle["content"] == "two\nthree\nfour\x0b" and middle["total_lines"] == 5
    past = await api.json("GET", "/files/read?path=t.txt&start_line=9")
    assert past["content"] == "" and past["total_lines"] == 5
    empty = home / "empty.txt"
    empty.write_text("")
    assert (await api.json("GET", "/files/read?path=empty.txt"))["total_lines"] == 0


async def test_read_validates_line_numbers(api: Api, home: Path) -> None:
    (home / "t.txt").write_text("x")
    reply = await api.json("GET", "/files/read?path=t.txt&start_line=0", status=422)
    assert reply["detail"][0]["loc"] == ["query", "start_line"]


async def test_read_errors(api: Api, home: Path) -> None:
    (home / "dir").mkdir()
    assert (await api.json("GET", "/files/read?path=missing", status=404)) == {"detail": "File not found"}
    assert (await api.json("GET", "/files/read?path=dir", status=400))["detail"] == "Path is a directory, not a file"
    os.mkfifo(home / "pipe")
    assert (await api.json("GET", "/files/read?path=pipe", status=400))["detail"] == "Path is not a regular file"


async def test_read_of_a_large_file_is_streamed_and_identical(api: Api, home: Path) -> None:
    line = "é" * 50 + "\r\n"
    count = ops.LARGE_TEXT // len(line.encode()) + 1000
    (home / "big.txt").write_bytes((line * count).encode())
    reply = await api.json("GET", "/files/read?path=big.txt")
    assert reply["total_lines"] == count
    assert reply["content"] == ("é" * 50 + "\n") * count
    ranged = await api.json("GET", f"/files/read?path=big.txt&start_line={count - 1}")
    assert ranged["content"] == ("é" * 50 + "\n") * 2


async def test_read_of_a_large_binary_file_is_refused_after_the_text_attempt(api: Api, home: Path) -> None:
    (home / "big.bin").write_bytes(b"a" * (ops.LARGE_TEXT + 10) + b"\xff")
    reply = await api.json("GET", "/files/read?path=big.bin", status=415)
    assert reply == {"detail": f"Unsupported binary file type: application/octet-stream ({ops.LARGE_TEXT + 11} bytes)"}


@pytest.mark.parametrize("text", ["a\nb", "a\nb\n", "\n\n", "x\u2028y\x85z", "no newline"])
def test_large_reply_and_small_reply_agree(tmp_path: Path, text: str) -> None:
    import io
    import json

    path = tmp_path / "t.txt"
    path.write_text(text * 3, newline="")
    for lines in (ops.LineRange(), ops.LineRange(2, 3), ops.LineRange(None, 1)):
        small = ops.read_text(str(path), lines)
        assert small is not None
        spool = io.BytesIO()
        with ops.open_file(str(path)) as file:
            assert ops.write_large_text_reply(file, "p", lines, spool)
        large = json.loads(spool.getvalue())
        assert (large["content"], large["total_lines"]) == small


# --- display ----------------------------------------------------------------------------------------


async def test_display_reports_existence_and_never_fails(api: Api, home: Path) -> None:
    (home / "x.md").write_text("# hi")
    assert await api.json("GET", "/files/display?path=x.md") == {"path": str(home / "x.md"), "exists": True}
    assert await api.json("GET", "/files/display?path=nope.md") == {"path": str(home / "nope.md"), "exists": False}


# --- write and replace ------------------------------------------------------------------------------


async def test_write_creates_parents_and_reports_utf8_size(api: Api, home: Path) -> None:
    reply = await api.json("POST", "/files/write", json={"path": "deep/er/x.txt", "content": "héllo"})
    assert reply == {"path": str(home / "deep/er/x.txt"), "size": 6}
    assert (home / "deep/er/x.txt").read_text() == "héllo"
    assert [name for name in os.listdir(home / "deep/er")] == ["x.txt"]  # no temp file left behind


async def test_write_keeps_permissions_and_writes_through_symlinks(api: Api, home: Path) -> None:
    script = home / "run.sh"
    script.write_text("old")
    script.chmod(0o750)
    (home / "alias").symlink_to(script)
    await api.json("POST", "/files/write", json={"path": "alias", "content": "new"})
    assert script.read_text() == "new" and stat.S_IMODE(script.stat().st_mode) == 0o750
    assert (home / "alias").is_symlink()


async def test_new_files_get_the_default_mode(api: Api, home: Path) -> None:
    await api.json("POST", "/files/write", json={"path": "new.txt", "content": ""})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((home / "new.txt").stat().st_mode) == 0o666 & ~umask


async def test_write_onto_a_directory_is_a_clear_error(api: Api, home: Path) -> None:
    (home / "d").mkdir()
    reply = await api.json("POST", "/files/write", json={"path": "d", "content": "x"}, status=400)
    assert "directory" in reply["detail"].lower()
    assert await api.json("POST", "/files/write", json={"path": "d"}, status=422)


async def test_replace_applies_chunks_in_order(api: Api, home: Path) -> None:
    (home / "c.py").write_text("a = 1\nb = 1\nc = 1\n")
    reply = await api.json("POST", "/files/replace", json={"path": "c.py", "replacements": [
        {"target": "a = 1", "replacement": "a = 2"},
        {"target": "= 1", "replacement": "= 3", "allow_multiple": True},
    ]})
    assert (home / "c.py").read_text() == "a = 2\nb = 3\nc = 3\n"
    assert reply == {"path": str(home / "c.py"), "size": 18}


async def test_replace_within_a_line_range(api: Api, home: Path) -> None:
    (home / "c.txt").write_text("x\nx\nx\nx\n")
    await api.json("POST", "/files/replace", json={"path": "c.txt", "replacements": [
        {"target": "x", "replacement": "y", "start_line": 2, "end_line": 3, "allow_multiple": True}]})
    assert (home / "c.txt").read_text() == "x\ny\ny\nx\n"
    await api.json("POST", "/files/replace", json={"path": "c.txt", "replacements": [
        {"target": "x", "replacement": "z", "start_line": 4}]})
    assert (home / "c.txt").read_text() == "x\ny\ny\nz\n"


async def test_replace_errors_use_the_reference_texts(api: Api, home: Path) -> None:
    (home / "c.txt").write_text("dup dup")
    missing = await api.json("POST", "/files/replace", status=400, json={
        "path": "c.txt", "replacements": [{"target": "nothere", "replacement": ""}]})
    assert missing == {"detail": "Target string not found: 'nothere'"}
    many = await api.json("POST", "/files/replace", status=400, json={
        "path": "c.txt", "replacements": [{"target": "dup", "replacement": ""}]})
    assert many == {"detail": "Found 2 occurrences of target string but allow_multiple is false"}
    assert (home / "c.txt").read_text() == "dup dup"
    gone = await api.json("POST", "/files/replace", status=404, json={"path": "no.txt", "replacements": []})
    assert gone == {"detail": "File not found"}


async def test_replace_keeps_crlf_files_crlf(api: Api, home: Path) -> None:
    (home / "w.txt").write_bytes(b"one\r\ntwo\r\n")
    await api.json("POST", "/files/replace", json={"path": "w.txt", "replacements": [
        {"target": "one\ntwo", "replacement": "1\n2"}]})
    assert (home / "w.txt").read_bytes() == b"1\r\n2\r\n"


async def test_replace_refuses_binary_files(api: Api, home: Path) -> None:
    (home / "b.bin").write_bytes(b"\xff\xfe")
    reply = await api.json("POST", "/files/replace", status=415, json={
        "path": "b.bin", "replacements": [{"target": "a", "replacement": "b"}]})
    assert reply == {"detail": "File is not UTF-8 text"}


# --- mkdir, delete, move ----------------------------------------------------------------------------


async def test_mkdir_is_like_mkdir_p(api: Api, home: Path) -> None:
    assert await api.json("POST", "/files/mkdir", json={"path": "a/b/c"}) == {"path": str(home / "a/b/c")}
    assert await api.json("POST", "/files/mkdir", json={"path": "a/b/c"}) == {"path": str(home / "a/b/c")}
    (home / "f").write_text("")
    assert (await api.json("POST", "/files/mkdir", json={"path": "f"}, status=409))["detail"]


async def test_delete_files_trees_and_symlinks(api: Api, home: Path) -> None:
    (home / "tree/sub").mkdir(parents=True)
    (home / "tree/sub/x").write_text("")
    (home / "keep").mkdir()
    (home / "keep/precious").write_text("")
    (home / "link").symlink_to(home / "keep")
    assert await api.json("DELETE", "/files/delete?path=tree") == {"path": str(home / "tree"), "type": "directory"}
    assert not (home / "tree").exists()
    assert (home / ".local/share/Trash/files/tree/sub/x").exists()  # deleted means in the trash (test_trash.py)
    await api.json("DELETE", "/files/delete?path=link")
    assert not (home / "link").exists() and (home / "keep/precious").exists()
    assert (home / ".local/share/Trash/files/link").is_symlink()
    assert await api.json("DELETE", "/files/delete?path=tree", status=404) == {"detail": "Path not found"}
    assert (await api.json("DELETE", "/files/delete?path=/", status=400))["detail"]


async def test_move_renames_and_refuses_to_clobber(api: Api, home: Path) -> None:
    (home / "a.txt").write_text("a")
    (home / "b.txt").write_text("b")
    reply = await api.json("POST", "/files/move", json={"source": "a.txt", "destination": "c.txt"})
    assert reply == {"source": str(home / "a.txt"), "destination": str(home / "c.txt")}
    assert (home / "c.txt").read_text() == "a" and not (home / "a.txt").exists()
    clash = await api.json("POST", "/files/move", status=409, json={"source": "c.txt", "destination": "b.txt"})
    assert clash == {"detail": "Destination already exists"}
    assert (home / "b.txt").read_text() == "b"
    assert (await api.json("POST", "/files/move", status=404, json={"source": "zz", "destination": "y"})) == {
        "detail": "Source path not found"}
    assert (await api.json("POST", "/files/move", status=400, json={"source": "c.txt", "destination": "no/y"})) == {
        "detail": "Destination parent directory not found"}


async def test_move_a_directory_into_itself_is_refused(api: Api, home: Path) -> None:
    (home / "d").mkdir()
    reply = await api.json("POST", "/files/move", status=400, json={"source": "d", "destination": "d/inner"})
    assert reply["detail"]
    assert (home / "d").is_dir()


def test_move_across_file_systems(tmp_path: Path) -> None:
    """/dev/shm is another file system here; the copy lands atomically and the source goes."""
    shm = Path("/dev/shm")
    assert os.stat(shm).st_dev != os.stat(tmp_path).st_dev
    source = tmp_path / "tree"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f").write_text("data")
    destination = shm / f"opentermd-test-{os.getpid()}"
    try:
        changes.move(str(source), str(destination))
        assert (destination / "sub" / "f").read_text() == "data" and not source.exists()
        assert [name for name in os.listdir(shm) if name.startswith(".move-")] == []
    finally:
        import shutil

        shutil.rmtree(destination, ignore_errors=True)


# --- cwd --------------------------------------------------------------------------------------------


async def test_cwd_follows_the_chat_and_reports_the_browser_root(api: Api, home: Path) -> None:
    (home / "p").mkdir()
    first = await api.json("GET", "/files/cwd", headers={"X-Session-Id": "s"})
    assert first == {"cwd": str(home), "home": str(home), "root": {"path": str(home), "label": "Home"}}
    await api.json("POST", "/files/cwd", json={"path": "p"}, headers={"X-Session-Id": "s"})
    assert (await api.json("GET", "/files/cwd", headers={"X-Session-Id": "s"}))["cwd"] == str(home / "p")
    assert (await api.json("POST", "/files/cwd", json={"path": "zz"}, status=404)) == {"detail": "Directory not found"}


async def test_cwd_root_is_the_file_root_when_confined(api_with: ApiFactory, tmp_path: Path) -> None:
    root = tmp_path / "home" / "work"
    root.mkdir()
    api = await api_with(file_root=root)
    reply = await api.json("GET", "/files/cwd")
    assert reply["root"] == {"path": str(root), "label": "work"}


# --- the statuses of OS failures --------------------------------------------------------------------


async def test_disk_full_is_507_and_leaves_the_target_untouched(api: Api, small_disk: Path) -> None:
    (small_disk / "keep.txt").write_text("original")
    reply = await api.json("POST", "/files/write", status=507,
                           json={"path": str(small_disk / "keep.txt"), "content": "x" * 600_000})
    assert "space" in reply["detail"]
    assert (small_disk / "keep.txt").read_text() == "original"
    assert os.listdir(small_disk) == ["keep.txt"]


async def test_read_only_file_system_is_403(api: Api, small_disk: Path) -> None:
    import asyncio
    import subprocess

    await asyncio.to_thread(subprocess.run, ["mount", "-o", "remount,ro", str(small_disk)], check=True)
    reply = await api.json("POST", "/files/write", status=403, json={"path": str(small_disk / "x"), "content": ""})
    assert "Read-only" in reply["detail"]
    listing = await api.json("GET", f"/files/list?directory={small_disk}")
    assert listing["writable"] is False


def _call(url: str, key: str, method: str, path: str, body: object = None) -> tuple[int, object]:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url + path, method=method, data=json.dumps(body).encode() if body else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_permission_denied_is_403(tmp_path: Path) -> None:
    """A daemon without root's override capabilities meets real EACCES (tests run as root here)."""
    import subprocess

    from tests.test_cli import ROOT, _banner, daemon_command, environment

    (tmp_path / "secret.txt").write_text("s")
    (tmp_path / "secret.txt").chmod(0)
    (tmp_path / "locked").mkdir(mode=0o555)
    drop = "-dac_override,-dac_read_search"
    command = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}",
               *daemon_command("run", "--port", "0", "--cwd", str(tmp_path))]
    with subprocess.Popen(command, cwd=ROOT, env=environment(tmp_path), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        for running, url in _banner(process):
            key = running.key  # type: ignore[attr-defined]
            status, reply = _call(url, key, "GET", "/files/read?path=secret.txt")
            assert status == 403 and "Permission denied" in str(reply)
            status, reply = _call(url, key, "POST", "/files/write", {"path": "locked/new.txt", "content": "x"})
            assert status == 403 and "Permission denied" in str(reply)
            status, reply = _call(url, key, "GET", "/files/list?directory=locked")
            assert status == 200 and isinstance(reply, dict) and reply["writable"] is False
