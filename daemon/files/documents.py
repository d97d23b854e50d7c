"""Text from documents (PDF, Word, Excel, PowerPoint, RTF, OpenDocument, EPUB, e-mail), extracted in a
separate worker process (`daemon.files.worker`).

The parsers are pure Python or libxml2 fed with untrusted input: a hostile document can spin for
minutes, inflate a zip bomb or nest XML without end. In a worker it can only hurt itself: it gets a
time limit, a memory limit and its own process group, which is killed when the time is up or the
request goes away. The extractors themselves (`daemon.files.extractors`, lxml and friends) are
imported only there, so the server never loads them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from daemon.errors import ApiError
from daemon.files import worker

#: The hidden command line that runs the worker: `opentermd __extract-text <path> <kind>`.
WORKER_COMMAND = worker.EXTRACT_TEXT
WORKER_MEMORY = 2 * 1024**3
#: What a worker that died without saying why (killed, crashed) is reported as (the reference's words).
WORKER_FAILED = "Document worker failed. Check that the document libraries are installed and the files are readable."
TEXT_ONLY = "Text only; formatting, images and layout are not compared."


@dataclass(frozen=True)
class Kind:
    """A document type: its name (the extractor's), MIME type, suffix and what a comparison of it leaves out."""

    name: str
    mime: str
    suffix: str
    notices: tuple[str, ...] = ()


_SHEET_NOTICE = "Compares extracted cell values; formulas and formatting are not compared."
_SLIDE_NOTICE = "Compares extracted slide text; speaker notes and embedded objects are excluded."
#: In the reference's order: the first whose MIME type or suffix matches wins.
KINDS = (
    Kind("pdf", "application/pdf", ".pdf"),
    Kind("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", ".docx",
         ("Headers, footers, comments, footnotes and text boxes are excluded. "
          "Tracked insertions are included; tracked deletions are excluded.",)),
    Kind("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ".xlsx", (_SHEET_NOTICE,)),
    # Unlike the reference, tables and grouped shapes are read, so its notice saying they are not is left out.
    Kind("pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation", ".pptx",
         (_SLIDE_NOTICE,)),
    Kind("rtf", "application/rtf", ".rtf"),
    Kind("xls", "application/vnd.ms-excel", ".xls", (_SHEET_NOTICE,)),
    Kind("odt", "application/vnd.oasis.opendocument.text", ".odt"),
    Kind("ods", "application/vnd.oasis.opendocument.spreadsheet", ".ods", (_SHEET_NOTICE,)),
    Kind("odp", "application/vnd.oasis.opendocument.presentation", ".odp", (_SLIDE_NOTICE,)),
    Kind("epub", "application/epub+zip", ".epub"),
    Kind("eml", "message/rfc822", ".eml", ("Compares message headers and body; attachments are excluded.",)),
)
BY_NAME = {kind.name: kind for kind in KINDS}


def document_kind(path: str, mime: str | None) -> Kind | None:
    """The document type of a file by its MIME type or (case-insensitive) suffix, or None."""
    lower = path.lower()
    return next((kind for kind in KINDS if kind.mime == mime or lower.endswith(kind.suffix)), None)


def is_document(path: str, mime: str) -> bool:
    return document_kind(path, mime) is not None


async def extract_text(fd: int, kind: Kind, timeout: float) -> str:
    """The document's text, or 422 with the reason it could not be read.

    The worker reads the file the server opened and checked (`fd`) through `/dev/fd/N`, never the
    path again, which may lead elsewhere by now.
    """
    late = ApiError(422, f"Text extraction took longer than {timeout:g} s; the document may be damaged")
    code, output, errors = await worker.run(WORKER_COMMAND, [f"/dev/fd/{fd}", kind.name], timeout=timeout,
                                            on_timeout=late, fds=(fd,))
    if code == 1 and errors.strip():
        raise ApiError(422, f"Cannot extract text from this document: {worker.last_line(errors)}")
    if code != 0:
        raise ApiError(422, WORKER_FAILED)
    return output.decode("utf-8", "replace")


def worker_main(args: list[str]) -> int:
    """Runs in the worker process: write the text to stdout, or one line of error to stderr."""
    if len(args) != 2 or args[1] not in BY_NAME:
        print(f"usage: {WORKER_COMMAND} <path> <{'|'.join(BY_NAME)}>", file=sys.stderr)
        return 2
    source, name = args
    worker.limit_memory(WORKER_MEMORY)
    stdout = sys.stdout.buffer

    def write(text: str) -> None:
        stdout.write(text.encode("utf-8", "replace"))

    try:
        from daemon.files import extractors

        with open(source, "rb") as file:
            extractors.extract(name, file, write)
    except MemoryError:
        print(f"the document needs more than the worker's {WORKER_MEMORY // 2**30} GiB of memory", file=sys.stderr)
        return 1
    except Exception as exc:  # Any failure is reported, in one line, to the server.
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    return 0
