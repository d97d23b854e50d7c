"""POST /files/compare over a real server (worker process included), and the plain diff functions."""

from __future__ import annotations

import codecs
import difflib
import os
import random
import re
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import ApiError
from daemon.files import compare, ops
from daemon.files.compare import Side
from tests.conftest import Api, ApiFactory


async def compare_files(api: Api, original: str, revised: str, status: int = 200, **options: Any) -> Any:
    return await api.json("POST", "/files/compare", status, json={"original": original, "revised": revised,
                                                                  **options})


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


# --- over HTTP ------------------------------------------------------------------------------------


async def test_identical_files_have_no_hunks(api: Api, home: Path) -> None:
    write(home / "a.txt", "one\ntwo\n")
    write(home / "b.txt", "one\ntwo\n")
    reply = await compare_files(api, "a.txt", "b.txt")
    assert reply == {
        "original": {"path": str(home / "a.txt"), "name": "a.txt", "notices": []},
        "revised": {"path": str(home / "b.txt"), "name": "b.txt", "notices": []},
        "additions": 0, "deletions": 0, "hunks": [],
    }


async def test_a_changed_line_has_segments_and_counts(api: Api, home: Path) -> None:
    write(home / "old.py", "import os\nvalue = compute(1, 2)\nprint(value)\n")
    write(home / "new.py", "import os\nvalue = compute(1, 3)\nprint(value)\nprint('done')\n")
    reply = await compare_files(api, str(home / "old.py"), "new.py")
    assert (reply["additions"], reply["deletions"]) == (2, 1)
    [hunk] = reply["hunks"]
    assert hunk["header"] == "@@ -1,3 +1,4 @@"
    assert [(line["type"], line["oldNumber"], line["newNumber"]) for line in hunk["lines"]] == [
        ("context", 1, 1), ("removed", 2, None), ("added", None, 2), ("context", 3, 3), ("added", None, 4)]
    removed, added = hunk["lines"][1], hunk["lines"][2]
    assert removed["segments"] == [{"text": "value = compute(1, ", "changed": False},
                                   {"text": "2", "changed": True}, {"text": ")", "changed": False}]
    assert added["segments"][1] == {"text": "3", "changed": True}
    assert "".join(part["text"] for part in added["segments"]) == added["content"] == "value = compute(1, 3)"
    assert hunk["lines"][4]["segments"] == [{"text": "print('done')", "changed": False}]


async def test_ignore_whitespace_compares_without_spaces_but_shows_real_lines(api: Api, home: Path) -> None:
    write(home / "a.txt", "if x:\n    call( a )\nend\n")
    write(home / "b.txt", "if x:\n\tcall(a)\nend\n")
    assert (await compare_files(api, "a.txt", "b.txt", ignore_whitespace=True))["hunks"] == []
    reply = await compare_files(api, "a.txt", "b.txt", ignore_whitespace=False)
    assert [line["content"] for line in reply["hunks"][0]["lines"] if line["type"] != "context"] == [
        "    call( a )", "\tcall(a)"]


async def test_crlf_and_utf16_equal_plain_lf(api: Api, home: Path) -> None:
    write(home / "lf.txt", "hello\nworld\n")
    (home / "crlf.txt").write_bytes(b"hello\r\nworld\r\n")
    (home / "cr.txt").write_bytes(b"hello\rworld\r")
    (home / "utf16.txt").write_bytes("hello\r\nworld\r\n".encode("utf-16"))
    (home / "utf8bom.txt").write_bytes(codecs.BOM_UTF8 + b"hello\nworld\n")
    for other in ("crlf.txt", "cr.txt", "utf16.txt", "utf8bom.txt"):
        reply = await compare_files(api, "lf.txt", other)
        assert (reply["hunks"], reply["additions"], reply["deletions"]) == ([], 0, 0), other


async def test_binary_side_is_422_with_its_name(api: Api, home: Path) -> None:
    write(home / "a.txt", "text\n")
    (home / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    reply = await compare_files(api, "a.txt", "image.bin", 422)
    assert reply == {"detail": "image.bin: Unsupported binary file."}


async def test_missing_side_is_404_with_its_name(api: Api, home: Path) -> None:
    write(home / "a.txt", "text\n")
    assert await compare_files(api, "gone.txt", "a.txt", 404) == {"detail": "gone.txt: File not found."}
    assert await compare_files(api, "a.txt", "sub/gone.txt", 404) == {"detail": "gone.txt: File not found."}


async def test_directory_and_fifo_are_404_never_a_hang(api: Api, home: Path) -> None:
    write(home / "a.txt", "text\n")
    os.mkfifo(home / "pipe")  # No writer: an open without O_NONBLOCK would wait forever.
    (home / "folder").mkdir()
    assert await compare_files(api, "a.txt", "pipe", 404) == {"detail": "pipe: File not found."}
    assert await compare_files(api, "folder", "a.txt", 404) == {"detail": "folder: File not found."}


async def test_outside_the_root_is_403(api_with: ApiFactory, tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    write(root / "inside.txt", "inside\n")
    write(outside / "secret.txt", "secret\n")
    (root / "link_out").symlink_to(outside / "secret.txt")
    api = await api_with(file_root=root)
    for path in (str(outside / "secret.txt"), str(root / "link_out"), "../outside/secret.txt"):
        reply = await compare_files(api, str(root / "inside.txt"), path, 403)
        assert reply["detail"].endswith("Path is outside the allowed file root"), reply
        assert list(reply) == ["detail"]  # Nothing of the file's content.


async def test_sides_resolve_against_the_chat_cwd(api: Api, home: Path) -> None:
    (home / "project").mkdir()
    write(home / "project" / "a.txt", "x\n")
    write(home / "project" / "b.txt", "y\n")
    chat = {"X-Session-Id": "chat-1"}
    await api.json("POST", "/files/cwd", json={"path": str(home / "project")}, headers=chat)
    reply = await api.json("POST", "/files/compare", json={"original": "a.txt", "revised": "b.txt"}, headers=chat)
    assert reply["original"]["path"] == str(home / "project" / "a.txt")
    assert (reply["additions"], reply["deletions"]) == (1, 1)


async def test_too_many_lines_is_422_not_truncated(api: Api, home: Path) -> None:
    write(home / "a.txt", "x\n")
    write(home / "long.txt", "line\n" * (compare.MAX_LINES + 1))
    reply = await compare_files(api, "a.txt", "long.txt", 422)
    assert reply == {"detail": "long.txt: The file has more than 50,000 lines. Try smaller files."}


async def test_over_50_mib_is_413_without_reading_it(api: Api, home: Path) -> None:
    write(home / "a.txt", "x\n")
    os.truncate(write(home / "huge.txt", ""), compare.MAX_BYTES + 1)  # Sparse: nothing is written.
    reply = await compare_files(api, "huge.txt", "a.txt", 413)
    assert reply["detail"].startswith("huge.txt: The file is larger than 50 MiB")


async def test_needs_the_key_and_a_body(api: Api, home: Path) -> None:
    async with api.request("POST", "/files/compare", auth=False, json={"original": "a", "revised": "b"}) as r:
        assert r.status == 401
    async with api.request("POST", "/files/compare", json={"original": "a"}) as response:
        assert response.status in (400, 422)
        assert "detail" in await response.json()


async def test_not_in_the_openapi_document(api: Api) -> None:
    document = await api.json("GET", "/openapi.json")
    assert "/files/compare" not in document["paths"]


async def test_the_worker_is_stopped_at_the_time_limit(home: Path) -> None:
    write(home / "a.txt", "x\n")
    with ops.open_file(str(home / "a.txt")) as file, pytest.raises(ApiError) as caught:
        await compare.compare_in_worker([(file.fd, "a", "a"), (file.fd, "a", "a")], False, timeout=0.001)
    assert (caught.value.status, caught.value.detail) == (408, compare.TOO_SLOW)


# --- the plain functions --------------------------------------------------------------------------


def side(text: str, name: str = "f") -> Side:
    return Side(f"/{name}", name, compare.split_lines(text, name))


def unified_headers(old: list[str], new: list[str]) -> list[str]:
    return [line.strip() for line in difflib.unified_diff(old, new, lineterm="") if line.startswith("@@")]


def test_headers_and_lines_agree_with_unified_diff() -> None:
    generator = random.Random(12)
    for _ in range(200):
        old = [generator.choice("abcde") for _ in range(generator.randrange(0, 30))]
        new = [generator.choice("abcdef") for _ in range(generator.randrange(0, 30))]
        reply = compare.diff(Side("/o", "o", old), Side("/n", "n", new))
        assert [hunk["header"] for hunk in reply["hunks"]] == unified_headers(old, new)
        marks = {"context": " ", "removed": "-", "added": "+"}
        body = [marks[line["type"]] + line["content"] for hunk in reply["hunks"] for line in hunk["lines"]]
        expected = [line for line in difflib.unified_diff(old, new, lineterm="")
                    if not line.startswith(("@@", "---", "+++"))]
        assert body == expected
        assert reply["additions"] == sum(line.startswith("+") for line in expected)
        assert reply["deletions"] == sum(line.startswith("-") for line in expected)


def test_line_numbers_follow_each_side() -> None:
    reply = compare.diff(side("a\nb\nc\n"), side("a\nc\nd\n"))
    numbers = [(line["oldNumber"], line["newNumber"]) for line in reply["hunks"][0]["lines"]]
    assert numbers == [(1, 1), (2, None), (3, 2), (None, 3)]


def test_segments_tokenise_words_spaces_and_punctuation() -> None:
    left, right = compare.segments("foo(bar, baz)", "foo(bar,  qux)")
    assert left == [{"text": "foo(bar,", "changed": False}, {"text": " baz", "changed": True},
                    {"text": ")", "changed": False}]
    assert right == [{"text": "foo(bar,", "changed": False}, {"text": "  qux", "changed": True},
                     {"text": ")", "changed": False}]


def test_long_lines_get_one_segment() -> None:
    long = "x" * (compare.SEGMENT_LIMIT + 1)
    assert compare.segments(long, "y") == ([{"text": long, "changed": False}], [{"text": "y", "changed": False}])


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
def test_text_by_bom(encoding: str) -> None:
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE, "utf-32-le": codecs.BOM_UTF32_LE}
    data = bom.get(encoding, b"") + "caf\u00e9\r\n\u2603\n".encode(encoding)
    assert compare.decode_text(data, "f") == "caf\u00e9\n\u2603\n"


@pytest.mark.parametrize("data", [b"\x00abc", b"abc\x07", b"\xff\xfeab\x00\x00c", b"latin \xe9"])
def test_binaries_are_refused(data: bytes) -> None:
    with pytest.raises(ApiError, match=re.escape("f: Unsupported binary file.")):
        compare.decode_text(data, "f")


def test_limits_refuse_instead_of_truncating() -> None:
    with pytest.raises(ApiError, match="more than 2,000,000 characters"):
        compare.decode_text(b"x" * (compare.MAX_CHARACTERS + 1), "f")
    assert len(compare.split_lines("x\n" * compare.MAX_LINES, "f")) == compare.MAX_LINES
    with pytest.raises(ApiError, match="more than 50,000 lines"):
        compare.split_lines("x\n" * (compare.MAX_LINES + 1), "f")
