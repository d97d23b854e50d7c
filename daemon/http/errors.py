"""The one place errors become responses.

API routes answer JSON `{"detail": ...}` with the right status (the terminal endpoints `{"error": ...}`);
the styled error page (templates/error.html) goes to page routes (`Access.PAGE`), to any GET a browser
opened as a navigation (`Sec-Fetch-Dest: document`: a typed URL, a link, a bookmark), and to unknown
paths outside the API whose `Accept` prefers HTML. fetch(), curl and the tools keep JSON.
Handlers raise; nothing else catches an ApiError to render it.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from daemon.errors import ApiError, from_os_error
from daemon.http.endpoints import Access, json_response
from daemon.pages.layout import error_page

log = logging.getLogger(__name__)

#: Raised when writing to a client that went away (aiohttp's ClientConnectionResetError included).
CLIENT_GONE = (ConnectionResetError, BrokenPipeError)
#: nginx's status for "the client closed the connection"; only the access log ever sees it.
CLIENT_CLOSED_REQUEST = 499


def error_middleware(access: Mapping[Any, Access], api_segments: Collection[str]) -> Any:
    """`access` says which routes are pages; `api_segments` are the first path segments of the
    API (`files`, `execute`, ...), whose unknown paths stay JSON 404s whoever asks."""

    def wants_page(request: web.Request) -> bool:
        match = request.match_info
        if match.http_exception is None and access.get(match.route) is Access.PAGE:
            return True
        if request.method not in ("GET", "HEAD"):
            return False
        if is_navigation(request):
            # A person opened the URL in a tab (typed, a link, a bookmark): a page, whatever the
            # route; fetch(), curl and the tools never send Sec-Fetch-Dest: document.
            return True
        first = request.path.lstrip("/").partition("/")[0]
        return match.http_exception is not None and first not in api_segments and prefers_html(request)

    def respond(request: web.Request, status: int, body: dict[str, Any]) -> web.Response:
        if wants_page(request):
            return error_page(request, status, next(iter(body.values())))
        return json_response(body, status=status)

    @web.middleware
    async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return respond(request, exc.status, exc.body())
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = respond(request, exc.status, {"detail": _HTTP_DETAILS.get(exc.status, exc.reason)})
            if exc.status == 405 and "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except RequestPayloadError as exc:
            return _undecodable_body(request, exc)
        except TimeoutError as exc:
            # The client stalled mid-request: nothing useful can be sent back.
            log.debug("%s %s: %r", request.method, request.path, exc)
            raise
        except CLIENT_GONE as exc:
            if not _client_gone(request):
                raise
            # Mid-response, most often (a download, a stream). Re-raised, aiohttp would log an ERROR
            # with a traceback; answering lets it notice the closed socket quietly.
            log.debug("%s %s: the client went away: %r", request.method, request.path, exc)
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        except OSError as exc:
            # A file-system failure a handler did not expect still has a meaning for the client.
            error = from_os_error(exc)
            return respond(request, error.status, error.body())
        except Exception as exc:
            if _is_request_decoding_error(request, exc):
                return respond(request, 400, {"detail": f"Cannot decode the request: {exc}"})
            log.exception("unhandled error in %s %s", request.method, request.path)
            return respond(request, 500, {"detail": "Internal Server Error"})

    return render_errors


def is_navigation(request: web.Request) -> bool:
    """A top-level browser navigation, by the Fetch Metadata header every current browser sends."""
    return request.headers.get("Sec-Fetch-Dest") == "document"


def prefers_html(request: web.Request) -> bool:
    """`Accept` ranks text/html above JSON (a browser without Fetch Metadata; never `*/*` alone)."""
    ranks = _accept_ranks(request.headers.get("Accept", ""))
    html = max(ranks.get("text/html", 0.0), ranks.get("application/xhtml+xml", 0.0))
    return html > 0 and html >= ranks.get("application/json", 0.0)


def _accept_ranks(accept: str) -> dict[str, float]:
    ranks: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            ranks[media.lower()] = max(ranks.get(media.lower(), 0.0), quality)
    return ranks


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _undecodable_body(request: web.Request, exc: RequestPayloadError) -> web.Response:
    """A body that cannot be decoded (`Content-Encoding: gzip` over plain bytes): 400.

    The parser gave up on the body midway, so where the next request starts is unknown: the answer
    closes the connection (saying so, so that a client opens a new one instead of reusing it), and
    the body is marked finished so that aiohttp does not read the failed stream again.
    """
    request.content.feed_eof()
    encoding = request.headers.get("Content-Encoding")
    detail = f"Cannot decode the request body as Content-Encoding {encoding!r}" if encoding \
        else "The request body is incomplete or malformed"
    log.debug("%s %s: %s", request.method, request.path, exc)
    response = json_response({"detail": detail}, status=400)
    response.force_close()
    return response


def _is_request_decoding_error(request: web.Request, exc: Exception) -> bool:
    """A form in an unknown charset (LookupError) or bytes that are not in its charset."""
    if isinstance(exc, UnicodeDecodeError):
        return request.body_exists
    if isinstance(exc, LookupError) and request.charset:
        try:
            codecs.lookup(request.charset)
        except LookupError:
            return True
    return False


_HTTP_DETAILS = {
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request body too large",
}
