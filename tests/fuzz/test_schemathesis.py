"""Schemathesis over /openapi.json against a real daemon: no input gives a 500, and no answer contradicts
the document for the statuses it documents.

`make test` runs a bounded, seeded run (the same cases every time); `make fuzz` a longer one with a fresh
seed: OPENTERMD_FUZZ_EXAMPLES raises the examples per operation, OPENTERMD_FUZZ_SEED replays a run.
The daemon runs as its own process with a scratch HOME, cwd and `--root`, and every case is confined
(`tests/fuzz/confine.py`) before it is sent, so nothing the fuzzer writes or runs can reach the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from daemon.app import declared_endpoints
from daemon.config import Config
from daemon.http import openapi
from daemon.http.endpoints import Endpoint
from tests.fuzz.confine import confined_body, confined_query
from tests.test_cli import _banner, daemon_command, environment

EXAMPLES = int(os.environ.get("OPENTERMD_FUZZ_EXAMPLES", "60"))
#: Fixed in `make test` so a run is reproducible; `make fuzz` draws a new one unless told.
SEED = int(os.environ["OPENTERMD_FUZZ_SEED"]) if os.environ.get("OPENTERMD_FUZZ_SEED") else (
    None if os.environ.get("OPENTERMD_FUZZ_EXAMPLES") else 20261205)
#: `make fuzz` also fuzzes these endpoints, kept out of /openapi.json (so out of the tools) like the reference's.
#: Left out: uploads (`?url=` fetches from the network), terminal creation (its body is read by hand),
#: one-time-link and proxy routes (their paths are patterns) and the web pages.
HIDDEN = frozenset({
    "GET /files/cwd", "POST /files/cwd", "POST /files/mkdir", "DELETE /files/delete", "POST /files/move",
    "GET /files/view", "GET /files/download/link", "POST /files/upload/link", "POST /files/archive",
    "GET /skills", "GET /skills/read", "GET /processes/{process_id}/status", "GET /api/terminals",
    "GET /api/terminals/{session_id}/recording", "DELETE /api/terminals/{session_id}", "GET /ports", "GET /system",
    "POST /files/rename", "POST /files/create", "POST /files/exists", "POST /files/copy", "POST /files/extract",
    "GET /files/download", "GET /files/archive/download", "GET /files/thumbnail",
    "GET /files/history", "GET /files/history/version", "GET /files/history/diff", "POST /files/history/restore",
    "GET /files/trash", "POST /files/trash/restore", "DELETE /files/trash", "GET /audit",
    "GET /git/status", "GET /git/diff", "GET /git/log", "GET /git/show",
    "POST /git/stage", "POST /git/unstage", "POST /git/discard", "POST /git/commit",
}) if os.environ.get("OPENTERMD_FUZZ_HIDDEN") else frozenset()

#: Statuses we answer that the reference's document leaves out (FastAPI lists only what a route declares,
#: not what it raises): the document must stay the reference's, so each is accepted here, with its reason.
FILE_ERRORS = frozenset({
    400,  # a path the file system cannot take (NUL), or of the wrong kind (a folder to read or write)
    403,  # outside --root (our addition; the fuzzer's paths are mapped inside it, so rare)
})
UNDOCUMENTED: dict[str, frozenset[int]] = {
    **{f"{method} {path}": FILE_ERRORS for method, path in (
        ("GET", "/files/list"), ("GET", "/files/read"), ("GET", "/files/display"), ("POST", "/files/write"),
        ("POST", "/files/replace"), ("GET", "/files/grep"), ("GET", "/files/matches"), ("GET", "/files/search"),
        ("GET", "/files/glob"))},
    # `cwd` is not a folder ("Working directory not found"); 429 past OPEN_TERMINAL_MAX_PROCESSES.
    "POST /execute": frozenset({404, 429}),
    # The reference declares the key for these two but documents no 401; 404 until the person's terminal
    # is connected, 409 once it has gone.
    "GET /api/terminals/user/output": frozenset({401, 404}),
    "POST /api/terminals/user/input": frozenset({401, 404, 409}),
}


@dataclass(frozen=True)
class Daemon:
    url: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="module")
def fuzzed_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    scratch = tmp_path_factory.mktemp("fuzz")
    root = scratch / "root"
    root.mkdir()
    (root / "notes.txt").write_text("hello\nworld\n")
    command = daemon_command("run", "--port", "0", "--cwd", str(root), "--root", str(root))
    with (scratch / "daemon.log").open("w") as log, subprocess.Popen(
            command, cwd=root, env=environment(scratch), stdout=subprocess.PIPE, stderr=log, text=True) as process:
        for running, url in _banner(process):
            yield Daemon(url, running.key)  # type: ignore[attr-defined]


def fuzz_config() -> schemathesis.Config:
    settings: dict[str, Any] = {
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        # Bounds a hung request (a failure) on a busy machine; a passing one takes milliseconds.
        "request-timeout": 60,
        # No example database: it would be written into the work tree and make a run depend on the last.
        "generation": {"max-examples": EXAMPLES, "database": "none"},
    }
    if SEED is not None:
        settings["seed"] = SEED
    return schemathesis.Config.from_dict(settings)


#: Headers that frame the request: a generated `Content-Length:` (empty) is refused by the HTTP parser with 400
#: before any operation is reached.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})


def documented_status(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code in UNDOCUMENTED.get(case.operation.label, frozenset()):
        return None
    if response.status_code == 400 and FRAMING_HEADERS & {name.lower() for name in case.headers or {}}:
        return None
    return status_code_conformance(ctx, response, case)


CHECKS = [not_a_server_error, documented_status, content_type_conformance, response_schema_conformance]



def fuzzed_endpoints(config: Config) -> list[Endpoint]:
    return [replace(endpoint, in_schema=True) if f"{endpoint.method} {endpoint.path}" in HIDDEN else endpoint
            for endpoint in declared_endpoints(config)]


#: The document /openapi.json serves, built by the same code from the same registry (test collection needs it
#: before any daemon runs; the first test proves the served one is this one).
#: The description of `run_command` names $SHELL: build it with the shell the daemon is given (`environment`), not
#: whatever the machine running the tests has (CI's is /bin/sh).
CONFIG = Config(api_key="fuzz")
with patch.dict(os.environ, SHELL=environment(Path("/nonexistent"))["SHELL"]):
    DOCUMENT = openapi.build(declared_endpoints(CONFIG), CONFIG)
    schema = schemathesis.openapi.from_dict(openapi.build(fuzzed_endpoints(CONFIG), CONFIG), config=fuzz_config())


def test_the_fuzzed_document_is_the_served_one(fuzzed_daemon: Daemon) -> None:
    request = urllib.request.Request(f"{fuzzed_daemon.url}/openapi.json", headers=fuzzed_daemon.auth)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.load(response)["paths"] == DOCUMENT["paths"]


@schema.parametrize()
def test_no_input_gives_a_server_error_or_contradicts_the_document(case: Any, fuzzed_daemon: Daemon) -> None:
    case.body = confined_body(case.body)
    case.query = confined_query(case.query)
    # A hidden endpoint has no document of the reference's to conform to: only "no 500" holds.
    checks = [not_a_server_error] if case.operation.label in HIDDEN else CHECKS
    case.call_and_validate(base_url=fuzzed_daemon.url, headers=fuzzed_daemon.auth, checks=checks)
