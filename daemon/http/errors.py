"""The one place errors become responses: JSON `{"detail": ...}` with the right status."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from daemon.errors import ApiError
from daemon.http.endpoints import json_response

log = logging.getLogger(__name__)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = _HTTP_DETAILS.get(exc.status, exc.reason)
        response = json_response({"detail": detail}, status=exc.status)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (ConnectionResetError, TimeoutError) as exc:
        # The client went away or stalled mid-request; nothing useful can be sent back.
        log.debug("%s %s: %s", request.method, request.path, exc)
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_response({"detail": "Internal Server Error"}, status=500)


_HTTP_DETAILS = {
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request body too large",
}
