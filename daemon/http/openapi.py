"""`/openapi.json` built from the endpoint registry, in the shape FastAPI gives the reference.

Open WebUI turns every operation with an operationId into an LLM tool, so names, parameters and
descriptions here are a contract; `/docs` shows the same document in the vendored Swagger UI.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from daemon import __version__
from daemon.config import Config
from daemon.http.endpoints import Access, Endpoint
from daemon.http.inputs import NoInput, json_schema

REF = "#/components/schemas/{name}"

VALIDATION_SCHEMAS: dict[str, Any] = {
    "HTTPValidationError": {
        "properties": {
            "detail": {"items": {"$ref": "#/components/schemas/ValidationError"}, "type": "array",
                       "title": "Detail"}
        },
        "type": "object",
        "title": "HTTPValidationError",
    },
    "ValidationError": {
        "properties": {
            "loc": {"items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}, "type": "array",
                    "title": "Location"},
            "msg": {"type": "string", "title": "Message"},
            "type": {"type": "string", "title": "Error Type"},
            "input": {"title": "Input"},
            "ctx": {"type": "object", "title": "Context"},
        },
        "type": "object",
        "required": ["loc", "msg", "type"],
        "title": "ValidationError",
    },
}


def build(endpoints: Iterable[Endpoint], config: Config) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for endpoint in endpoints:
        if endpoint.in_schema:
            paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, config, schemas)
    if any("422" in op["responses"] for ops in paths.values() for op in ops.values()):
        schemas.update(VALIDATION_SCHEMAS)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Open Terminal", "description": "A remote terminal API.", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"HTTPBearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(endpoint: Endpoint, config: Config, schemas: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {}
    description = endpoint.describe(config)
    for key, value in (("summary", endpoint.summary), ("description", description),
                       ("operationId", endpoint.operation_id)):
        if value is not None:
            operation[key] = value
    if endpoint.access is Access.BEARER:
        operation["security"] = [{"HTTPBearer": []}]
    parameters = path_parameters(endpoint) + query_parameters(endpoint.query)
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(name=endpoint.body.__name__)}}},
        }
        _add_model(endpoint.body, schemas)
    responses: dict[str, Any] = {
        "200": {"description": "Successful Response", "content": {"application/json": {"schema": {}}}}
    }
    for status, text in endpoint.responses.items():
        responses[str(status)] = {"description": text}
    if parameters or endpoint.body is not None:
        responses["422"] = {
            "description": "Validation Error",
            "content": {"application/json": {"schema": {"$ref": REF.format(name="HTTPValidationError")}}},
        }
    operation["responses"] = responses
    return operation


def path_parameters(endpoint: Endpoint) -> list[dict[str, Any]]:
    """The OpenAPI parameters of the `{name}` parts of an endpoint's path."""
    return [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "string", "title": name.replace("_", " ").title()}}
        for name in endpoint.path_params
    ]


def query_parameters(model: type[msgspec.Struct]) -> list[dict[str, Any]]:
    """The OpenAPI parameters of a query model, without hidden fields and `default: null`."""
    if model is NoInput:
        return []
    schema = json_schema(model)
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        if prop.pop("x-hidden", False):
            continue
        prop = _without_null_defaults(prop)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameters.append(parameter)
    return parameters


def body_schema(model: type[msgspec.Struct]) -> dict[str, Any]:
    """A body model's JSON schema with its `$defs` kept local: what an MCP tool's input schema embeds."""
    schema = _strip_null_defaults(json_schema(model))
    for definition in schema.get("$defs", {}).values():
        _strip_null_defaults(definition)
    return schema


def _add_model(model: type[msgspec.Struct], schemas: dict[str, Any]) -> None:
    schema = json_schema(model, ref_template=REF)
    for name, definition in schema.pop("$defs", {}).items():
        schemas[name] = _strip_null_defaults(definition)
    schemas[model.__name__] = _strip_null_defaults(schema)


def _without_null_defaults(prop: dict[str, Any]) -> dict[str, Any]:
    # FastAPI leaves out `default: null`; Open WebUI's schema cleaner drops it anyway.
    return {key: value for key, value in prop.items() if not (key == "default" and value is None)}


def _strip_null_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties")
    if isinstance(properties, dict):
        schema["properties"] = {name: _without_null_defaults(prop) for name, prop in properties.items()}
    return schema
