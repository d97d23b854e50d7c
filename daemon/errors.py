"""The one error type the API raises; rendered into JSON in exactly one place (http.middleware)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failure the client should see: an HTTP status and a short, actionable detail.

    `key` is the JSON field carrying the message: FastAPI-style `detail` everywhere, except the
    terminal endpoints, which Open WebUI expects to answer `{"error": ...}`.
    """

    def __init__(self, status: int, detail: Any, *, key: str = "detail") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.key = key

    def body(self) -> dict[str, Any]:
        return {self.key: self.detail}


def bad_request(detail: str) -> ApiError:
    return ApiError(400, detail)


def not_found(detail: str) -> ApiError:
    return ApiError(404, detail)


def validation_failed(errors: list[dict[str, Any]]) -> ApiError:
    """422 in FastAPI's shape: `{"detail": [{type, loc, msg, input, ctx?}]}`."""
    return ApiError(422, errors)
