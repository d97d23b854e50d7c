"""Thin declarations for bytes in and out: view/serve, upload, archive, one-time links, skills."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from aiohttp.abc import AbstractStreamWriter
from msgspec import Meta, Struct

from daemon import audit
from daemon.errors import ApiError, bad_request, validation_failed
from daemon.files import ops, skills, transfer
from daemon.files.history import HISTORY
from daemon.files.locate import from_home
from daemon.files.naming import Conflict
from daemon.files.transfer import Link, LinkKind
from daemon.http.endpoints import Access, Call, hidden
from daemon.http.inputs import NoInput
from daemon.keys import CONFIG, DIRECTORIES, LINKS, PREVIEWS, SCOPE
from daemon.pages.layout import render

READ_BLOCK = 1024 * 1024
#: Types a browser would run as a page; served so they cannot act as this origin.
ACTIVE_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml")


class ViewQuery(Struct, kw_only=True):
    path: Annotated[str, Meta(description="Path to the file to view.")]
    preview: Annotated[bool, Meta(description="Return a best-effort rendered preview when available.")] = False


class UploadQuery(Struct, kw_only=True):
    directory: Annotated[str, Meta(description="Destination directory for the file.")]
    url: Annotated[str | None, Meta(
        description="An http(s) URL to fetch into the directory instead of a form upload.")] = None
    conflict: Annotated[Literal["replace", "refuse", "keep-both"], Meta(
        description="When the name is taken: replace it (the reference's way), refuse (409), "
        "or keep both (saved as `name (1).ext`, the next free number).")] = "replace"
    overwrite: Annotated[bool | None, Meta(description="`false` is `conflict=refuse`.")] = None

    def conflict_rule(self) -> Conflict:
        return Conflict.REFUSE if self.overwrite is False else Conflict(self.conflict)


class ArchiveRequest(Struct, kw_only=True):
    paths: Annotated[list[str], Meta(description="List of file or directory paths to include in the ZIP archive.")]


class PathQuery(Struct, kw_only=True):
    path: Annotated[str, Meta(description="Path of the file.")]


#: A share link lives from one minute to a week; the reference's default (OPEN_TERMINAL_LINK_TTL) otherwise.
MIN_LINK_LIFETIME, MAX_LINK_LIFETIME = 60, 7 * 24 * 3600


class LinkQuery(Struct, kw_only=True):
    path: Annotated[str, Meta(description="Path of the file.")]
    lifetime: Annotated[Annotated[int, Meta(ge=MIN_LINK_LIFETIME, le=MAX_LINK_LIFETIME)] | None, Meta(description=(
        "Seconds the link works (60 to 604800); the reply then says when it expires."))] = None


class ArchiveQuery(Struct, kw_only=True):
    paths: Annotated[list[str], Meta(description="Files and folders to put in the zip.")] = []


class DirectoryQuery(Struct, kw_only=True):
    directory: Annotated[str, Meta(description="Destination directory for the uploaded file.")]


class SkillQuery(Struct, kw_only=True):
    name: Annotated[str, Meta(description="Skill name from /skills.")]


# --- downloads --------------------------------------------------------------------------------------


class OpenedFileResponse(web.FileResponse):
    """aiohttp's FileResponse (sendfile, Range, ETag, 304) for a file we opened and checked already.

    It is served through `/proc/self/fd/N` of our own descriptor: the kernel reopens that very
    file, so what is sent is what was checked (a regular file beneath the root), whatever has
    happened to its path since. The descriptor is closed once the response has opened its own.
    """

    def __init__(self, fd: int, **kwargs: Any) -> None:
        super().__init__(f"/proc/self/fd/{fd}", **kwargs)
        self._close_fd = weakref.finalize(self, os.close, fd)

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            return await super().prepare(request)
        finally:
            self._close_fd()


def file_response(file: ops.OpenFile, path: str, mime: str | None = None, *,
                  attachment: bool = False) -> web.FileResponse:
    """sendfile with Range (206), ETag and If-None-Match (304); never sniffed, never active on this origin.

    The response gets its own copy of the descriptor: the caller closes `file` as usual.
    """
    mime = mime or mimetypes.guess_type(path)[0] or "application/octet-stream"
    headers = {"Content-Type": mime, "X-Content-Type-Options": "nosniff"}
    if mime.split(";")[0] in ACTIVE_TYPES:
        # An opaque origin: the page may run its own scripts but cannot reach the API or cookies.
        headers["Content-Security-Policy"] = "sandbox allow-scripts allow-forms allow-popups allow-modals"
    if attachment:
        headers["Content-Disposition"] = content_disposition(os.path.basename(path))
    return OpenedFileResponse(os.dup(file.fd), chunk_size=READ_BLOCK, headers=headers)


def content_disposition(filename: str) -> str:
    """`attachment; filename="x"`, plus RFC 6266's `filename*` when the name is not plain ASCII."""
    plain = filename.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    if plain == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def view_file(call: Call[ViewQuery, NoInput]) -> web.FileResponse:
    target = from_home(call, call.query.path)
    if call.query.preview:
        return await _preview(call, target)
    return await _view(call, target)


async def _preview(call: Call[Any, Any], target: str) -> web.FileResponse:
    """An office document as the PDF LibreOffice renders (files/preview.py); else the original bytes."""
    request = call.request
    with await asyncio.to_thread(ops.open_file, target, call.app[SCOPE].beneath) as file:
        pdf = await call.app[PREVIEWS].render(file, target, gone=lambda: client_gone(request))
        if pdf is None:
            return file_response(file, target)
    with pdf:
        return file_response(pdf, target, "application/pdf")


def client_gone(request: web.Request) -> bool:
    # aiohttp does not cancel a handler whose client left: a conversion asks this while it runs.
    return request.transport is None or request.transport.is_closing()


async def serve_file(call: Call[NoInput, NoInput]) -> web.FileResponse:
    """Path-based alias of view, so relative links inside an iframed HTML page resolve."""
    return await _view(call, from_home(call, "/" + call.path("path")))


async def _view(call: Call[Any, Any], target: str, *, attachment: bool = False) -> web.FileResponse:
    with await asyncio.to_thread(ops.open_file, target, call.app[SCOPE].beneath) as file:
        return file_response(file, target, attachment=attachment)


async def archive(call: Call[NoInput, ArchiveRequest]) -> web.StreamResponse:
    return await stream_archive(call, call.body.paths)


async def download_archive(call: Call[ArchiveQuery, NoInput]) -> web.StreamResponse:
    """A browser-managed zip download: `<a download href="...?paths=a&paths=b">` (GET), or a plain
    form POST of `paths` fields with `csrf_token` (too many paths for a URL). The reply streams as it
    is built, so the browser shows progress at once and neither side holds the archive."""
    paths = list(call.query.paths)
    if call.request.method == "POST":
        if call.request.content_type != "application/x-www-form-urlencoded":
            raise ApiError(415, "Send the paths as a form (application/x-www-form-urlencoded)")
        form = await call.request.post()  # already read (and cached) by the CSRF check
        paths += [value for value in form.getall("paths", []) if isinstance(value, str)]
    return await stream_archive(call, paths)


async def download_file(call: Call[PathQuery, NoInput]) -> web.FileResponse:
    """One file as a browser-managed download (`<a download href="/files/download?path=...">`)."""
    return await _view(call, from_home(call, call.query.path), attachment=True)


async def stream_archive(call: Call[Any, Any], paths: list[str]) -> web.StreamResponse:
    if not paths:
        raise bad_request("No paths provided")
    named = [(from_home(call, path), path) for path in paths]
    beneath = call.app[SCOPE].beneath
    opened = await asyncio.to_thread(transfer.open_targets, named, beneath)
    try:
        name = transfer.archive_name([target for target, _ in named])
        response = web.StreamResponse(headers={
            "Content-Type": "application/zip", "Content-Disposition": content_disposition(name)})
        await response.prepare(call.request)
    except BaseException:
        transfer.close_members(opened)
        raise
    await transfer.stream_zip(opened, beneath, response.write)
    await response.write_eof()
    return response


# --- uploads ----------------------------------------------------------------------------------------


async def upload_file(call: Call[UploadQuery, NoInput]) -> dict[str, object]:
    directory = from_home(call, call.query.directory)
    limit = call.app[CONFIG].max_upload_size
    conflict = call.query.conflict_rule()
    if call.query.url:
        async with transfer.fetch(call.query.url, call.app[CONFIG].upload_url_timeout, limit) as chunks:
            return await _save(call, directory, transfer.url_file_name(call.query.url), chunks, conflict)
    return await receive_form_upload(call, directory, conflict)


async def receive_form_upload(call: Call[Any, Any], directory: str,
                              conflict: Conflict = Conflict.REPLACE) -> dict[str, object]:
    """Stream the multipart field `file` into `directory`; other fields are skipped."""
    limit = call.app[CONFIG].max_upload_size
    if (call.request.content_length or 0) > limit:
        raise transfer.TooLarge(limit)
    if not call.request.content_type.startswith("multipart/"):
        raise _missing_file()
    try:
        reader = await call.request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "file":
                return await _save(call, directory, transfer.upload_name(part.filename), _chunks(part), conflict)
            await part.release()
    except (ValueError, AssertionError) as exc:
        raise bad_request(f"Malformed multipart body: {exc}") from None
    raise _missing_file()


async def _save(call: Call[Any, Any], directory: str, name: str, chunks: AsyncIterator[bytes],
                conflict: Conflict) -> dict[str, object]:
    target = os.path.join(directory, name)
    call.app[SCOPE].check(target)
    size, saved = await transfer.save_stream(chunks, target, call.app[CONFIG].max_upload_size,
                                             call.app[SCOPE].beneath, conflict, call.app[HISTORY].keeper("upload"))
    audit.record(call.app, "upload", call, path=saved, size=size)
    return {"path": saved, "size": size}


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(READ_BLOCK):
        yield chunk


def _missing_file() -> ApiError:
    return validation_failed([{"type": "missing", "loc": ["body", "file"], "msg": "Field required", "input": None}])


# --- one-time links ---------------------------------------------------------------------------------


def _link_url(request: web.Request, kind: LinkKind, token: str) -> dict[str, str]:
    return {"url": str(request.url.with_path(f"/files/{kind}/{token}").with_query(None))}


async def create_download_link(call: Call[LinkQuery, NoInput]) -> dict[str, object]:
    target = from_home(call, call.query.path)
    await asyncio.to_thread(ops.require_file, target, call.app[SCOPE].beneath)
    lifetime = call.query.lifetime
    reply: dict[str, object] = {**_link_url(call.request, "download",
                                            call.app[LINKS].create("download", target, lifetime))}
    if lifetime is not None:  # Without one the reply stays the reference's `{url}`.
        expires = datetime.now(UTC) + timedelta(seconds=lifetime)
        reply.update(expires_in=lifetime, expires_at=expires.isoformat(timespec="seconds").replace("+00:00", "Z"))
    return reply


async def create_upload_link(call: Call[DirectoryQuery, NoInput]) -> dict[str, str]:
    target = from_home(call, call.query.directory)
    if os.path.exists(target) and not os.path.isdir(target):
        raise bad_request("Destination is not a directory")
    return _link_url(call.request, "upload", call.app[LINKS].create("upload", target))


async def download_by_link(call: Call[NoInput, NoInput]) -> web.FileResponse:
    link = call.app[LINKS].find("download", call.path("token"))
    call.app[SCOPE].check(link.path)
    return await _view(call, link.path, attachment=True)


async def upload_form(call: Call[NoInput, NoInput]) -> web.Response:
    link = call.app[LINKS].find("upload", call.path("token"))
    # The pages' headers: a strict CSP with frame-ancestors, so the public form cannot be framed.
    return render(call.request, "upload_link.html", {"directory": link.path})


async def upload_by_link(call: Call[NoInput, NoInput]) -> dict[str, object]:
    links, token = call.app[LINKS], call.path("token")
    link: Link = links.take("upload", token)
    try:
        # Whoever holds the link has no key: they add a file, never replace one already there.
        return await receive_form_upload(call, link.path, Conflict.KEEP_BOTH)
    except BaseException:
        links.give_back(token, link)
        raise


# --- skills -----------------------------------------------------------------------------------------


async def list_skills(call: Call[NoInput, NoInput]) -> list[dict[str, Any]]:
    found = await asyncio.to_thread(skills.list_skills, call.app[DIRECTORIES].home)
    return [skill.summary() for skill in found]


async def read_skill(call: Call[SkillQuery, NoInput]) -> dict[str, Any]:
    return await asyncio.to_thread(skills.read_skill, call.app[DIRECTORIES].home, call.query.name)



ENDPOINTS = [
    hidden("GET", "/files/view", view_file, query=ViewQuery),
    hidden("GET", "/files/serve/{path:.*}", serve_file),
    hidden("POST", "/files/upload/link", create_upload_link, query=DirectoryQuery),
    hidden("GET", "/files/upload/{token}", upload_form, access=Access.PUBLIC),
    hidden("POST", "/files/upload/{token}", upload_by_link, access=Access.PUBLIC),
    hidden("POST", "/files/upload", upload_file, query=UploadQuery),
    hidden("POST", "/files/archive", archive, body=ArchiveRequest),
    hidden("GET", "/files/download/link", create_download_link, query=LinkQuery),
    hidden("GET", "/files/download", download_file, query=PathQuery),
    hidden("GET", "/files/archive/download", download_archive, query=ArchiveQuery),
    hidden("POST", "/files/archive/download", download_archive, query=ArchiveQuery),
    hidden("GET", "/files/download/{token}", download_by_link, access=Access.PUBLIC),
    hidden("GET", "/skills", list_skills),
    hidden("GET", "/skills/read", read_skill, query=SkillQuery),
]
