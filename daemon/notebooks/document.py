"""Read a notebook file (bounded, regular files only, validated) and write it back atomically.

Plain functions, no HTTP: they run in a worker thread (`asyncio.to_thread`). nbformat is imported
here, off the daemon's start path: this module is loaded with the first notebook.
"""

from __future__ import annotations

import os
from typing import Any

import nbformat
from nbformat.reader import reads as parse_json_notebook

from daemon.errors import ApiError, bad_request
from daemon.files import ops
from daemon.files.beneath import Beneath

#: The longest validation message quoted back: jsonschema's messages hold the offending instance.
MAX_REASON = 300


def read_notebook(path: str, opener: Beneath, max_bytes: int) -> tuple[Any, int]:
    """The notebook at `path` as an nbformat v4 node, and its size in bytes: 404 when missing, 400 for a
    directory, FIFO or device, 413 past `max_bytes`, 400 "Invalid notebook: ..." when it is not valid."""
    try:
        file = ops.open_file(path, opener)
    except ApiError as exc:
        if exc.status == 404:
            raise ApiError(404, f"Notebook not found: {path}") from None
        raise
    with file:
        if file.info.st_size > max_bytes:
            raise ApiError(413, f"Notebook is larger than {max_bytes // (1024 * 1024)} MiB: {path}")
        data = _read_at_most(file.fd, max_bytes)
    return parse_notebook(data), len(data)


def _read_at_most(fd: int, limit: int) -> bytes:
    """Read from the descriptor checked, never past `limit` (a file may grow after its stat)."""
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = os.read(fd, min(1024 * 1024, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    raise ApiError(413, f"Notebook is larger than {limit // (1024 * 1024)} MiB")


def parse_notebook(data: bytes) -> Any:
    """Parse, upgrade to v4 and validate; any failure is the file's fault: 400 "Invalid notebook"."""
    try:
        notebook = nbformat.convert(parse_json_notebook(data.decode("utf-8")), 4)
        nbformat.validate(notebook)
    except Exception as exc:  # nbformat raises JSON, schema, version, key and recursion errors alike
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise bad_request(f"Invalid notebook: {reason[:MAX_REASON]}") from None
    return notebook


def notebook_bytes(notebook: Any) -> bytes:
    """The notebook as Jupyter writes it (one-space indent, trailing newline). Not validated again:
    it was valid when read, and cells only get outputs built from the kernel's own messages."""
    text: str = nbformat.v4.writes(notebook)
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def save_notebook(path: str, notebook: Any, opener: Beneath) -> int:
    """Replace the file atomically (temp file + rename, keeping its mode); raises ApiError on failure.

    Not fsync'ed: the notebook is saved after every cell, and a sync was a third of a `1+1` round trip.
    Readers still never see half a file; a crash may lose the last seconds of runs (the reference
    writes in place, where a crash or a full disk leaves half a notebook). Returns the bytes written.
    """
    data = notebook_bytes(notebook)
    ops.atomic_write(path, data, opener, durable=False)
    return len(data)
