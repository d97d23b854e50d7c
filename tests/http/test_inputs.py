"""Typed inputs: lenient validation, pydantic's error items, and pydantic-shaped JSON schemas."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from msgspec import Meta, Struct, field

from daemon.errors import ApiError
from daemon.http.inputs import HIDDEN, decode_json, json_schema, list_fields, validate


class Chunk(Struct, kw_only=True):
    target: Annotated[str, Meta(description="What to find.")]
    start_line: Annotated[Annotated[int, Meta(ge=1)] | None, Meta(description="First line.")] = None


class Form(Struct, kw_only=True):
    name: Annotated[str, Meta(description="A name.", examples=["ada"])]
    count: Annotated[int, Meta(ge=1, le=10)] = 1
    ratio: float = 0.5
    flag: bool = False
    mode: Literal["fast", "slow"] = "fast"
    kind: Annotated[str, Meta(pattern="^(a|b)$")] = "a"
    tags: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)
    secret: Annotated[bool, HIDDEN] = False


def error_of(data: Any) -> dict[str, Any]:
    with pytest.raises(ApiError) as caught:
        validate(Form, data, ["body"])
    assert caught.value.status == 422
    [error] = caught.value.detail
    assert isinstance(error, dict)
    return error


def test_lenient_like_pydantic_lax_mode() -> None:
    form = validate(Form, {"name": "x", "count": "3", "ratio": "2", "flag": "True", "tags": ["a"]}, ["query"])
    assert (form.count, form.ratio, form.flag, form.tags) == (3, 2.0, True, ["a"])
    assert validate(Form, {"name": "x", "count": 4.0, "unknown": 1}, ["body"]).count == 4


@pytest.mark.parametrize(("data", "expected"), [
    ({}, {"type": "missing", "loc": ["body", "name"], "msg": "Field required", "input": {}}),
    ({"name": "x", "count": "many"},
     {"type": "int_parsing", "loc": ["body", "count"],
      "msg": "Input should be a valid integer, unable to parse string as an integer", "input": "many"}),
    ({"name": "x", "count": True},
     {"type": "int_type", "loc": ["body", "count"], "msg": "Input should be a valid integer", "input": True}),
    ({"name": "x", "count": 0},
     {"type": "greater_than_equal", "loc": ["body", "count"], "msg": "Input should be greater than or equal to 1",
      "input": 0, "ctx": {"ge": 1}}),
    ({"name": "x", "count": 11},
     {"type": "less_than_equal", "loc": ["body", "count"], "msg": "Input should be less than or equal to 10",
      "input": 11, "ctx": {"le": 10}}),
    ({"name": "x", "ratio": "half"},
     {"type": "float_parsing", "loc": ["body", "ratio"],
      "msg": "Input should be a valid number, unable to parse string as a number", "input": "half"}),
    ({"name": "x", "flag": "perhaps"},
     {"type": "bool_parsing", "loc": ["body", "flag"],
      "msg": "Input should be a valid boolean, unable to interpret input", "input": "perhaps"}),
    ({"name": 5}, {"type": "string_type", "loc": ["body", "name"], "msg": "Input should be a valid string",
                   "input": 5}),
    ({"name": "x", "kind": "c"},
     {"type": "string_pattern_mismatch", "loc": ["body", "kind"], "msg": "String should match pattern '^(a|b)$'",
      "input": "c", "ctx": {"pattern": "^(a|b)$"}}),
    ({"name": "x", "tags": "a"},
     {"type": "list_type", "loc": ["body", "tags"], "msg": "Input should be a valid list", "input": "a"}),
    ({"name": "x", "env": []},
     {"type": "dict_type", "loc": ["body", "env"], "msg": "Input should be a valid dictionary", "input": []}),
    (["x"], {"type": "dict_type", "loc": ["body"], "msg": "Input should be a valid dictionary", "input": ["x"]}),
    ({"name": "x", "chunks": [{"target": "a"}, {}]},
     {"type": "missing", "loc": ["body", "chunks", 1, "target"], "msg": "Field required", "input": {}}),
    ({"name": "x", "chunks": [{"target": "a", "start_line": 0}]},
     {"type": "greater_than_equal", "loc": ["body", "chunks", 0, "start_line"],
      "msg": "Input should be greater than or equal to 1", "input": 0, "ctx": {"ge": 1}}),
])
def test_errors_are_fastapi_items_with_pydantic_types(data: Any, expected: dict[str, Any]) -> None:
    assert error_of(data) == expected


def test_a_wrong_literal_names_the_value() -> None:
    error = error_of({"name": "x", "mode": "warp"})
    assert error["type"] == "literal_error" and error["loc"] == ["body", "mode"] and "'warp'" in error["msg"]


def test_a_dict_value_of_the_wrong_type_is_located() -> None:
    error = error_of({"name": "x", "env": {"A": 1}})
    assert error["type"] == "string_type" and error["loc"][:2] == ["body", "env"]


def test_malformed_json_gives_the_byte_position() -> None:
    with pytest.raises(ApiError) as caught:
        decode_json(Form, b'{"name": nope}', ["body"])
    [error] = caught.value.detail
    assert error["type"] == "json_invalid" and error["msg"] == "JSON decode error"
    assert error["loc"][0] == "body" and 9 <= error["loc"][1] <= 13, "a byte offset within `nope`"
    assert decode_json(Form, b'{"name": "ok", "count": "2"}', ["body"]).count == 2


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000,
                                 b'{"name": "x", "env": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"])
def test_json_nested_too_deep_is_a_422_not_a_crash(raw: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        decode_json(Form, raw, ["body"])
    assert caught.value.status == 422 and caught.value.detail[0]["loc"][0] == "body"
    assert caught.value.detail[0]["type"] in ("json_invalid", "dict_type")


def test_validation_errors_of_json_carry_the_input() -> None:
    with pytest.raises(ApiError) as caught:
        decode_json(Form, b'{"name": "x", "count": -4}', ["body"])
    assert caught.value.detail[0]["input"] == -4


def test_list_fields() -> None:
    assert list_fields(Form) == {"tags", "chunks"}


def test_schema_is_written_as_pydantic_writes_it() -> None:
    schema = json_schema(Form, ref_template="#/components/schemas/{name}")
    properties = schema["properties"]
    assert schema["title"] == "Form" and schema["type"] == "object" and schema["required"] == ["name"]
    assert properties["name"] == {"title": "Name", "type": "string", "description": "A name.", "examples": ["ada"]}
    assert properties["count"] == {"title": "Count", "type": "integer", "minimum": 1, "maximum": 10, "default": 1}
    assert properties["mode"] == {"title": "Mode", "type": "string", "enum": ["fast", "slow"], "default": "fast"}
    assert properties["tags"] == {"title": "Tags", "anyOf": [{"type": "array", "items": {"type": "string"}},
                                                             {"type": "null"}], "default": None}
    assert "default" not in properties["env"] and "default" not in properties["chunks"], "factories have none"
    assert properties["chunks"]["items"] == {"$ref": "#/components/schemas/Chunk"}
    assert properties["secret"]["x-hidden"] is True
    chunk = schema["$defs"]["Chunk"]
    assert chunk["properties"]["start_line"] == {
        "title": "Start Line", "description": "First line.",
        "anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None}


def test_a_model_without_required_fields_lists_none() -> None:
    class Options(Struct, kw_only=True):
        verbose: bool = False

    assert "required" not in json_schema(Options) and "$defs" not in json_schema(Options)
