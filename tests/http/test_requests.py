"""Request parsing: the quirks Open WebUI's backend sends, and errors in FastAPI's shape."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from msgspec import Struct
from multidict import MultiDict

from daemon.errors import ApiError
from daemon.http.endpoints import parse_query
from tests.conftest import AUTH, Api


class Example(Struct, kw_only=True):
    include: list[str] | None = None
    flag: bool = False
    count: int = 1


@pytest.mark.parametrize(("query", "expected"), [
    ([("include", "['*.py', '*.md']")], ["*.py", "*.md"]),
    ([("include", '["*.py"]')], ["*.py"]),
    ([("include", "*.py"), ("include", "*.md")], ["*.py", "*.md"]),
    ([("include", "[broken")], ["[broken"]),
    ([("include", "null")], None),
])
def test_list_parameters_accept_literals_and_repeats(query: list[tuple[str, str]], expected: object) -> None:
    assert parse_query(Example, MultiDict(query)).include == expected


@pytest.mark.parametrize(("value", "expected"), [("True", True), ("False", False), ("true", True), ("1", True),
                                                 ("NULL", False)])
def test_booleans_accept_python_spelling(value: str, expected: bool) -> None:
    assert parse_query(Example, MultiDict([("flag", value)])).flag is expected


def test_bad_values_are_422_in_fastapi_shape() -> None:
    with pytest.raises(ApiError) as caught:
        parse_query(Example, MultiDict([("count", "many")]))
    assert caught.value.status == 422
    assert caught.value.detail == [{"type": "int_parsing", "loc": ["query", "count"],
                                    "msg": "Input should be a valid integer, unable to parse string as an integer",
                                    "input": "many"}]


async def test_wait_null_means_return_at_once(api: Api) -> None:
    reply = await api.json("POST", "/execute?wait=null", json={"command": "sleep 3"})
    assert reply["status"] == "running"
    await api.json("DELETE", f"/execute/{reply['id']}?force=True")
    status = await api.json("GET", f"/execute/{reply['id']}/status")
    assert status["status"] == "killed" and status["exit_code"] == -9


@pytest.mark.parametrize("query", ["wait=-1", "wait=301", "wait=abc", "tail=0", "tail=x"])
async def test_out_of_range_queries_are_422(api: Api, query: str) -> None:
    body = await api.json("POST", f"/execute?{query}", status=422, json={"command": "true"})
    assert body["detail"][0]["loc"][0] == "query"


async def test_body_errors(api: Api) -> None:
    missing = await api.json("POST", "/execute", status=422)
    assert missing == {"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]}
    broken = await api.json("POST", "/execute", status=422, data=b"{nope", headers={"Content-Type": "application/json"})
    assert broken["detail"][0]["type"] == "json_invalid"
    no_command = await api.json("POST", "/execute", status=422, json={"cwd": "/"})
    assert no_command["detail"][0]["loc"] == ["body", "command"]
    deep = await api.json("POST", "/execute", status=422, data=b"[" * 100_000 + b"]" * 100_000,
                          headers={"Content-Type": "application/json"})
    assert deep["detail"][0]["loc"] == ["body"], "a 422 like any other, not a crash"
    wrong_type = await api.json("POST", "/execute", status=422, json=["echo"])
    assert wrong_type["detail"][0]["loc"] == ["body"]
    form = await api.json("POST", "/execute", status=415, data=b"command=ls",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert "application/json" in form["detail"]


async def test_unknown_body_keys_are_ignored(api: Api) -> None:
    reply = await api.json("POST", "/execute?wait=5", json={"command": "echo ok", "wait": 5, "tail": None, "x": 1})
    assert reply["status"] == "done"


async def test_unknown_paths_and_methods_are_json(api: Api) -> None:
    assert await api.json("GET", "/nowhere", status=404) == {"detail": "Not Found"}
    assert await api.json("PUT", "/execute", status=405) == {"detail": "Method Not Allowed"}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_is_not_in_its_content_encoding_is_400_and_the_client_can_go_on(
        api: Api, encoding: str, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's 500: `Content-Encoding: gzip` over a plain body. One connection for both requests."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        headers = {**AUTH, "Content-Type": "application/json", "Content-Encoding": encoding}
        async with session.post(api.client.make_url("/execute"), data=b'{"command": "echo hi"}',
                                headers=headers) as response:
            assert response.status == 400
            assert await response.json() == {
                "detail": f"Cannot decode the request body as Content-Encoding {encoding!r}"}
            assert response.headers["Connection"] == "close", "the client must not reuse this connection"
        async with session.get(api.client.make_url("/health")) as response:
            assert response.status == 200 and await response.json() == {"status": "ok"}
    await api.json("GET", "/execute")
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/x-www-form-urlencoded; charset=no-such-charset", b"key=abc"),
    ("application/x-www-form-urlencoded; charset=utf-8", b"key=\xff\xfe"),
])
async def test_a_form_in_a_bad_charset_is_400(api: Api, content_type: str, body: bytes) -> None:
    origin = str(api.client.make_url("/")).rstrip("/")
    reply = await api.json("POST", "/login", status=400, auth=False, data=body,
                           headers={"Content-Type": content_type, "Origin": origin})
    assert reply["detail"].startswith("Cannot decode the request: ")

