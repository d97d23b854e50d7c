"""Text from documents (PDF), extracted in a separate worker process (`daemon.files.worker`).

pypdf is pure Python: a hostile PDF can spin for minutes or eat memory. In a worker it can only
hurt itself: it gets a time limit, a memory limit and its own process group, which is killed
when the time is up or the request goes away.
"""

from __future__ import annotations

import sys

from daemon.errors import ApiError
from daemon.files import worker

#: The hidden command line that runs the worker: `opentermd __extract-text <path>`.
WORKER_COMMAND = worker.EXTRACT_TEXT
EXTRACTABLE_TYPES = frozenset({"application/pdf"})
EXTRACTABLE_SUFFIXES = (".pdf",)
WORKER_MEMORY = 2 * 1024**3
MAX_TEXT = 256 * 1024 * 1024


def is_document(path: str, mime: str) -> bool:
    return mime in EXTRACTABLE_TYPES or path.lower().endswith(EXTRACTABLE_SUFFIXES)


async def extract_text(path: str, timeout: float, *, fd: int | None = None) -> str:
    """The document's text (pages joined by newlines), or 422 with the reason it could not be read.

    With `fd` (the file opened and checked already) the worker reads that very file through
    `/dev/fd/N`, never the path again, which may lead elsewhere by now.
    """
    late = ApiError(422, f"Text extraction took longer than {timeout:g} s; the document may be damaged")
    code, output, errors = await worker.run(
        WORKER_COMMAND, [path if fd is None else f"/dev/fd/{fd}"], timeout=timeout, on_timeout=late,
        fds=() if fd is None else (fd,))
    if code != 0:
        raise ApiError(422, f"Cannot extract text from this document: {worker.last_line(errors)}")
    return output.decode("utf-8", "replace")


def worker_main(args: list[str]) -> int:
    """Runs in the worker process: write the text to stdout, or one line of error to stderr."""
    if len(args) != 1:
        print("usage: __extract-text <path>", file=sys.stderr)
        return 2
    path = args[0]
    worker.limit_memory(WORKER_MEMORY)
    try:
        from pypdf import PdfReader

        reader = PdfReader(path)
        written = 0
        for index, page in enumerate(reader.pages):
            text = ("\n" if index else "") + (page.extract_text() or "")
            written += len(text)
            if written > MAX_TEXT:
                raise ValueError("the extracted text is too large")
            sys.stdout.write(text)
    except Exception as exc:  # Any failure is reported, in one line, to the server.
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    return 0
