"""The one error type the API raises; rendered in exactly one place (http.errors): JSON, or a page."""

from __future__ import annotations

import errno
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


#: What an OS error means to a client. Anything else is a 400 with the OS's words, like the reference.
_ERRNO_STATUS = {
    errno.ENOENT: 404,
    errno.EACCES: 403,
    errno.EPERM: 403,
    errno.EROFS: 403,
    errno.EEXIST: 409,
    errno.ENOTEMPTY: 409,
    errno.EFBIG: 413,
    errno.ENOSPC: 507,
    errno.EDQUOT: 507,
    # The kernel refuses the read itself (/proc/<pid>/mem, a failing disk): the file is unreadable.
    errno.EIO: 403,
    # Out of descriptors is the server's state, not the request's fault: try again later.
    errno.EMFILE: 503,
    errno.ENFILE: 503,
}


def from_os_error(exc: OSError) -> ApiError:
    """An OSError as the client should see it: 404, 403, 409, 413, 507, or 400 for the rest."""
    status = _ERRNO_STATUS.get(exc.errno or 0, 400)
    if status == 507:
        return ApiError(507, "Not enough space on the disk; nothing was changed")
    reason = exc.strerror or str(exc)
    return ApiError(status, f"{reason}: {exc.filename}" if exc.filename else reason)
