"""User regexes and globs, compiled for a linear-time engine (RE2), never for Python's `re`.

Python's `re` backtracks: `(a+)+$` over thirty `a`s and a `!` runs for minutes while holding the
GIL, which stops every other thread and the event loop. RE2 (the `google-re2` binding) matches in
time linear in the text, so no pattern a client sends can stall the daemon; the patterns RE2 cannot
run in linear time (back-references, look-around) are refused with a 400 instead of falling back.

Ordinary patterns keep Python's meaning: syntax errors are still reported in `re`'s words, `\\Z`
means end of text, and `\\w`, `\\d`, `\\s` are Unicode classes as in Python (RE2's are ASCII).
`\\b` stays RE2's ASCII word boundary: no linear-time engine here has a Unicode one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import re2

from daemon.errors import bad_request

#: Longer patterns are refused: a pattern is typed by hand, and RE2's compile time and memory grow with it.
MAX_PATTERN_LENGTH = 4096
#: RE2's memory budget for one compiled pattern; a pattern needing more is refused (400).
MAX_PATTERN_MEMORY = 32 * 1024 * 1024

UNSUPPORTED = ("Unsupported regex: {reason}. Patterns run on a linear-time engine (RE2), which has no "
               "back-references, look-ahead or look-behind")

#: Python's Unicode classes, spelled for RE2 as the members of a character class.
_UNICODE_CLASSES = {"w": r"\p{L}\p{N}_", "d": r"\p{Nd}", "s": r"\s\x{85}\x{a0}\p{Z}\x{1c}-\x{1f}"}


class Regex(Protocol):
    """What a compiled RE2 pattern offers (the binding has no type hints)."""

    def search(self, text: Any, pos: int | None = ..., endpos: int | None = ...) -> Any: ...

    def match(self, text: Any, pos: int | None = ..., endpos: int | None = ...) -> Any: ...


def user_regex(query: str, *, literal: bool, case_insensitive: bool, multiline: bool = False) -> Regex:
    """`query` compiled on RE2 with Python's meaning; a 400 if it is invalid, too big or unsupported.

    It searches UTF-8 bytes: the binding maps every match on a str back to character offsets in
    Python code, which made a per-line scan ten times slower than `re`.
    """
    if len(query) > MAX_PATTERN_LENGTH:
        raise bad_request(f"Pattern too long: at most {MAX_PATTERN_LENGTH} characters")
    _require_unicode(query)
    if literal:
        return _compile(re2.escape(query), case_insensitive, multiline, as_bytes=True)
    try:
        # Only to report syntax errors as the reference does: compiling is linear, nothing runs on `re`.
        re.compile(query)
    except re.error as exc:
        raise bad_request(f"Invalid regex: {exc}") from None
    except (RecursionError, OverflowError):
        raise bad_request("Invalid regex: too deeply nested") from None
    return _compile(python_to_re2(query), case_insensitive, multiline, as_bytes=True)


def _require_unicode(pattern: str) -> None:
    """RE2 reads UTF-8: a lone surrogate (which no UTF-8 text holds) is a 400, not a crash."""
    try:
        pattern.encode()
    except UnicodeEncodeError:
        raise bad_request("Invalid pattern: not valid Unicode") from None


def _compile(pattern: str, case_insensitive: bool, multiline: bool, *, as_bytes: bool = False) -> Regex:
    options = re2.Options()
    options.case_sensitive = not case_insensitive
    options.max_mem = MAX_PATTERN_MEMORY
    options.log_errors = False
    try:
        spelled = f"(?m){pattern}" if multiline else pattern
        regex: Regex = re2.compile(spelled.encode() if as_bytes else spelled, options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise bad_request(UNSUPPORTED.format(reason=reason)) from None
    return regex


def python_to_re2(pattern: str) -> str:
    """`pattern` with Python's meaning of `\\Z`, `\\w`, `\\W`, `\\d`, `\\D`, `\\s`, `\\S` spelled for RE2.

    Everything else passes through: RE2 reads the rest of Python's syntax alike, or refuses it.
    """
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        index += 1
        if char == "\\" and index < len(pattern):
            out.append(_escape(pattern[index], in_class))
            index += 1
            continue
        out.append(char)
        if in_class and char == "]":
            in_class = False
        elif not in_class and char == "[":
            in_class = True
            # A `]` right after `[` or `[^` is a literal, as in Python.
            for lead in ("^", "]"):
                if index < len(pattern) and pattern[index] == lead:
                    out.append(lead)
                    index += 1
    return "".join(out)


def _escape(letter: str, in_class: bool) -> str:
    lower = letter.lower()
    if letter == "Z":
        return r"\z"
    if lower not in _UNICODE_CLASSES:
        return "\\" + letter
    members = _UNICODE_CLASSES[lower]
    if letter == lower:
        return members if in_class else f"[{members}]"
    # A negated class inside a class cannot be spelled as a union in RE2: keep RE2's ASCII one there.
    return "\\" + letter if in_class else f"[^{members}]"


# --- globs ----------------------------------------------------------------------------------------


def glob_matcher(patterns: Iterable[str]) -> Callable[[str], bool] | None:
    """fnmatch's meaning for any of `patterns` (None when there are none), run on RE2."""
    translated = [glob_to_re2(pattern) for pattern in patterns]
    if not translated:
        return None
    if sum(map(len, translated)) > MAX_PATTERN_LENGTH * 4:
        raise bad_request(f"Glob patterns too long: at most {MAX_PATTERN_LENGTH} characters")
    match = _compile("(?s)(?:" + "|".join(translated) + r")\z", False, False).match
    return lambda name: match(name) is not None


def glob_to_re2(pattern: str) -> str:
    """Python 3.11's `fnmatch.translate` for RE2: the same classes and escapes, `*` as a plain `.*`
    (RE2 needs none of the atomic-group tricks `fnmatch` uses against backtracking)."""
    _require_unicode(pattern)
    out: list[str] = []
    index, length = 0, len(pattern)
    while index < length:
        char = pattern[index]
        index += 1
        if char == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = _class_end(pattern, index)
            if end < 0:
                out.append(r"\[")
            else:
                out.append(_glob_class(pattern[index:end]))
                index = end + 1
        else:
            out.append(re2.escape(char))
    return "".join(out)


def _class_end(pattern: str, start: int) -> int:
    """Where the `]` closing a class that opens before `start` is, or -1 (then `[` is a literal)."""
    index = start
    if index < len(pattern) and pattern[index] == "!":
        index += 1
    if index < len(pattern) and pattern[index] == "]":
        index += 1
    while index < len(pattern) and pattern[index] != "]":
        index += 1
    return index if index < len(pattern) else -1


def _glob_class(body: str) -> str:
    """A glob's `[...]` body as an RE2 class, with fnmatch's ranges, negation and empty classes."""
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    members: list[str] = []
    index = 0
    while index < len(body):
        if index + 2 < len(body) and body[index + 1] == "-":
            low, high = body[index], body[index + 2]
            if low <= high:  # fnmatch drops reversed ranges
                members.append(f"{_class_char(low)}-{_class_char(high)}")
            index += 3
        else:
            members.append(_class_char(body[index]))
            index += 1
    if not members:
        return "." if negate else r"[^\x00-\x{10FFFF}]"  # only reversed ranges: `[!..]` is any character, `[..]` none
    return ("[^" if negate else "[") + "".join(members) + "]"


def _class_char(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else char
