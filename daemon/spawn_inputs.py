"""What no child can be started with, found before the spawn instead of by it.

The kernel takes C strings: a NUL ends a command, a directory or an environment entry early, and an
environment name may not be empty or hold `=` (the entry would read as another name). Both
`POST /execute` and `POST /api/terminals` refuse such input with a 422, each in its own reply shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SpawnProblem:
    """Where in the request body the problem is (`("env", name)`, `("command",)`), what, and the value."""

    where: tuple[str, ...]
    message: str
    value: str


def spawn_problem(texts: Mapping[str, str | None], env: Mapping[str, str] | None) -> SpawnProblem | None:
    """The first thing in `env` or in `texts` (body field name: value) that no child can start with."""
    for name, value in (env or {}).items():
        if not name or "=" in name or "\0" in name:
            return SpawnProblem(("env", name), f"invalid environment variable name {name!r}", name)
        if "\0" in value:
            return SpawnProblem(("env", name), f"environment variable {name!r} holds a NUL byte", value)
    for field, text in texts.items():
        if text is not None and "\0" in text:
            return SpawnProblem((field,), f"{field} holds a NUL byte", text)
    return None
