"""Compare two files line by line, as the reference's `POST /files/compare` does (CONTRACT §5.2).

Plain functions, no HTTP: `load_side` turns a file's bytes into lines (text, or a document's text
through `LOADERS`, the extractors `read_file` uses), `diff` builds the reply's hunks with intraline
segments. `worker_main` runs both in a worker process (`daemon.files.worker`), where a hostile pair of files can only
exhaust its own time and memory.

Choices where the reference leaves room:
- bytes that are not UTF-8 and carry no UTF-16/32 BOM are "Unsupported binary file." (422);
- every line carries `segments`: context lines, unpaired lines and changed pairs with a side over
  4096 characters get one segment `{text: <the line>, changed: false}`, so a renderer that only
  draws segments still shows the line (its `type` already says it changed).
"""

from __future__ import annotations

import codecs
import difflib
import io
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from daemon.errors import ApiError
from daemon.files import documents, worker

MAX_BYTES = 50 * 1024 * 1024
MAX_CHARACTERS = 2_000_000
MAX_LINES = 50_000
#: Changed line pairs get intraline segments only when both are this short (tokens are quadratic).
SEGMENT_LIMIT = 4096
CONTEXT = 3
TIMEOUT = 60.0
WORKER_MEMORY = 2 * 1024**3
TOO_SLOW = "Comparison exceeded the 60 second limit. Try smaller files."
BINARY = "Unsupported binary file."
TOO_LONG = ("Extracted text exceeds the comparison limit (2 million characters / 50,000 lines). "
            "Nothing was truncated.")
#: C0 controls other than tab, newline, form feed and carriage return, and DEL: what binaries carry.
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")
#: Words, runs of spaces, and single punctuation marks: the units an intraline change is shown in.
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")
_SPACE = re.compile(r"\s+")
_BOMS = (  # UTF-32 first: its little-endian BOM begins with UTF-16's.
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass
class Side:
    """One file as compared: where it is, what it is called, its lines and what the reader should know."""

    path: str
    name: str
    lines: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "notices": self.notices}


def refuse(name: str, reason: str, status: int = 422) -> ApiError:
    return ApiError(status, f"{name}: {reason}")


# --- reading a side -------------------------------------------------------------------------------


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 (with or without BOM), UTF-16 or UTF-32 by BOM; newlines made `\\n`; 422 for binaries."""
    encoding = next((codec for bom, codec in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        raise refuse(name, BINARY) from None
    if _CONTROL.search(text):
        raise refuse(name, BINARY)
    if len(text) > MAX_CHARACTERS:
        raise refuse(name, f"The file has more than {MAX_CHARACTERS:,} characters. Try smaller files.")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_lines(text: str, name: str) -> list[str]:
    """Lines without their `\\n`; a final newline ends the last line, it does not start another."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if len(lines) > MAX_LINES:
        raise refuse(name, f"The file has more than {MAX_LINES:,} lines. Try smaller files.")
    return lines


def text_lines(data: bytes, side: Side) -> None:
    side.lines = split_lines(decode_text(data, side.name), side.name)


def document_loader(kind: documents.Kind) -> Callable[[bytes, Side], None]:
    """Lines of a document's text, through the extractors `read_file` uses (strict: never truncated)."""

    def load(data: bytes, side: Side) -> None:
        from daemon.files import extractors  # lxml and the office libraries: in the worker only

        parts: list[str] = []
        try:
            extractors.extract(kind.name, io.BytesIO(data), parts.append, limit=2 * MAX_CHARACTERS, strict=True)
        except MemoryError:
            raise
        except Exception as exc:
            # A file named like a document that is really text (notes.docx holding Markdown) compares as
            # text, as read_file reads it; anything else says why it could not be read.
            try:
                text_lines(data, side)
            except ApiError:
                raise refuse(side.name, str(exc) or type(exc).__name__) from None
            return
        text = "".join(parts).replace("\r\n", "\n").replace("\r", "\n")
        lines = text.splitlines()
        if len(text) > MAX_CHARACTERS or len(lines) > MAX_LINES:
            raise refuse(side.name, TOO_LONG)
        if not text.strip():
            raise refuse(side.name, "No extractable text. This document cannot be compared.")
        side.lines = lines
        side.notices = [documents.TEXT_ONLY, *kind.notices]

    return load


#: How a file's bytes become lines, by lower-case suffix; anything else is read as text.
LOADERS: dict[str, Callable[[bytes, Side], None]] = {kind.suffix: document_loader(kind) for kind in documents.KINDS}


def load_side(source: str, path: str, name: str) -> Side:
    """Read `source` (a path or /dev/fd/N) for the file known as `path`: at most MAX_BYTES."""
    side = Side(path, name)
    with open(source, "rb") as file:
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise refuse(name, "The file is larger than 50 MiB. Try smaller files.", 413)
    loader = next((load for suffix, load in LOADERS.items() if name.lower().endswith(suffix)), text_lines)
    loader(data, side)
    return side


# --- the diff -------------------------------------------------------------------------------------


def unified_range(start: int, stop: int) -> str:
    """A hunk side as `diff -u` writes it: `3` for one line, `3,4` for more, `2,0` for none."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start if not length else start + 1},{length}"


def without_spaces(line: str) -> str:
    return _SPACE.sub("", line)


def segments(old: str, new: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The two lines cut into runs of unchanged and changed tokens (words, spaces, punctuation)."""
    if len(old) > SEGMENT_LIMIT or len(new) > SEGMENT_LIMIT:
        return whole(old), whole(new)
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    left: list[dict[str, Any]] = []
    right: list[dict[str, Any]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        _append(left, "".join(a[i1:i2]), tag != "equal")
        _append(right, "".join(b[j1:j2]), tag != "equal")
    return left, right


def _append(runs: list[dict[str, Any]], text: str, changed: bool) -> None:
    if not text:
        return
    if runs and runs[-1]["changed"] == changed:
        runs[-1]["text"] += text
    else:
        runs.append({"text": text, "changed": changed})


def whole(line: str) -> list[dict[str, Any]]:
    return [{"text": line, "changed": False}]


def _line(kind: str, old: int | None, new: int | None, content: str,
          parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": kind, "oldNumber": old, "newNumber": new, "content": content,
            "segments": whole(content) if parts is None else parts}


def _changed(old: list[str], new: list[str], i1: int, i2: int, j1: int, j2: int) -> Iterator[dict[str, Any]]:
    """A replace block: removed lines then added lines, the pairs (in order) with intraline segments."""
    pairs = min(i2 - i1, j2 - j1)
    parts = [segments(old[i1 + k], new[j1 + k]) for k in range(pairs)]
    for k, i in enumerate(range(i1, i2)):
        yield _line("removed", i + 1, None, old[i], parts[k][0] if k < pairs else None)
    for k, j in enumerate(range(j1, j2)):
        yield _line("added", None, j + 1, new[j], parts[k][1] if k < pairs else None)


def _hunk_lines(old: list[str], new: list[str], group: list[tuple[str, int, int, int, int]]
                ) -> Iterator[dict[str, Any]]:
    for tag, i1, i2, j1, j2 in group:
        if tag == "equal":
            for k in range(i2 - i1):
                yield _line("context", i1 + k + 1, j1 + k + 1, new[j1 + k])
        elif tag == "replace":
            yield from _changed(old, new, i1, i2, j1, j2)
        elif tag == "delete":
            yield from (_line("removed", i + 1, None, old[i]) for i in range(i1, i2))
        else:
            yield from (_line("added", None, j + 1, new[j]) for j in range(j1, j2))


def diff(original: Side, revised: Side, ignore_whitespace: bool = False) -> dict[str, Any]:
    """The reply document: both sides, the counts of added and removed lines, and the hunks."""
    old, new = original.lines, revised.lines
    keys = (list(map(without_spaces, old)), list(map(without_spaces, new))) if ignore_whitespace else (old, new)
    matcher = difflib.SequenceMatcher(None, *keys, autojunk=False)
    additions = deletions = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            deletions += i2 - i1
            additions += j2 - j1
    hunks = []
    if additions or deletions:
        for group in matcher.get_grouped_opcodes(CONTEXT):
            first, last = group[0], group[-1]
            header = f"@@ -{unified_range(first[1], last[2])} +{unified_range(first[3], last[4])} @@"
            hunks.append({"header": header, "lines": list(_hunk_lines(old, new, group))})
    return {"original": original.summary(), "revised": revised.summary(),
            "additions": additions, "deletions": deletions, "hunks": hunks}


# --- the worker -----------------------------------------------------------------------------------


def worker_main(args: list[str]) -> int:
    """Runs in the worker: a JSON job on stdin, the reply on stdout, or a refusal on stderr.

    The job is `{"sides": [[source, path, name], [source, path, name]], "ignore_whitespace": bool}`.
    """
    worker.limit_memory(WORKER_MEMORY)
    try:
        job = orjson.loads(sys.stdin.buffer.read())
        original, revised = (load_side(*side) for side in job["sides"])
        sys.stdout.buffer.write(orjson.dumps(diff(original, revised, bool(job["ignore_whitespace"]))))
    except ApiError as exc:
        sys.stderr.buffer.write(orjson.dumps({"status": exc.status, "detail": exc.detail}))
        return worker.REFUSED
    except MemoryError:
        sys.stderr.buffer.write(orjson.dumps({"status": 422, "detail": "The comparison needs too much memory. "
                                              "Try smaller files."}))
        return worker.REFUSED
    except Exception as exc:  # Reported, in one line, to the server.
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    return 0


async def compare_in_worker(sides: list[tuple[int, str, str]], ignore_whitespace: bool,
                            timeout: float = TIMEOUT) -> bytes:
    """The reply document as JSON bytes, computed by a worker from the open files `(fd, path, name)`."""
    job = {"sides": [[f"/dev/fd/{fd}", path, name] for fd, path, name in sides],
           "ignore_whitespace": ignore_whitespace}
    code, output, errors = await worker.run(
        worker.COMPARE, [], timeout=timeout, on_timeout=ApiError(408, TOO_SLOW),
        fds=[fd for fd, _, _ in sides], stdin=orjson.dumps(job))
    if code == worker.REFUSED:
        refusal = orjson.loads(errors)
        raise ApiError(refusal["status"], refusal["detail"])
    if code != 0:
        raise ApiError(422, f"Cannot compare these files: {worker.last_line(errors)}")
    return output
