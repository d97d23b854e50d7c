"""Keep a fuzzed request's side effects inside the scratch folder of the daemon under test.

The fuzzer sends arbitrary strings, and `run_command` runs its string in a shell: a generated
`rm -rf ~` must never run. Rather than drop those fields, each is rewritten into a harmless form
that keeps the awkward characters (NUL, newlines, quotes, non-UTF-8-looking text) the daemon must
survive, so the validation and output paths still see them.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any

#: Fields that name a file or folder; mapped beneath the daemon's cwd (which is also its `--root`).
PATH_FIELDS = frozenset({"path", "directory", "cwd", "source", "destination", "paths"})


def inside(value: str) -> str:
    """A relative path that cannot climb out of the working directory: `/etc/passwd` -> `etc/passwd`,
    `../../x` -> `x`, `~/x` -> `./~/x` (not the home), `` stays `` (an empty path is an input the daemon
    must refuse safely itself)."""
    if not value:
        return value
    relative = posixpath.normpath("/" + value).lstrip("/")
    return f"./{relative}" if relative.startswith("~") else relative


def harmless_command(value: str) -> str:
    """A command that only prints the generated text: the shell gets it as one quoted argument."""
    return "printf %s " + shlex.quote(value)


def confined_body(body: Any) -> Any:
    if not isinstance(body, dict):
        return body  # a malformed body is refused before anything runs
    confined = {name: _confined_field(name, value) for name, value in body.items()}
    if isinstance(confined.get("command"), str):
        confined["command"] = harmless_command(confined["command"])
    if isinstance(confined.get("env"), dict):
        # BASH_ENV, LD_PRELOAD or PATH would make even printf run something else; a prefix keeps
        # the odd characters (`=`, NUL) that name validation must reject.
        confined["env"] = {f"FUZZ_{name}": value for name, value in confined["env"].items()}
    return confined


def confined_query(query: dict[str, Any] | None) -> dict[str, Any] | None:
    if not query:
        return query
    return {name: _confined_field(name, value) for name, value in query.items()}


def _confined_field(name: str, value: Any) -> Any:
    if name not in PATH_FIELDS:
        return value
    if isinstance(value, str):
        return inside(value)
    if isinstance(value, list):
        return [inside(item) if isinstance(item, str) else item for item in value]
    return value
