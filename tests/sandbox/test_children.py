"""Notebook kernels, document workers and git run in the commands' sandbox: each reads the daemon's
state through the same path a command would, and finds the empty folder. Each is tried with the
sandbox off as well, where the state is read: the control that shows the sandbox is what stops it."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon import sandbox
from daemon.errors import ApiError
from daemon.files import worker
from tests.conftest import make_config
from tests.notebooks.helpers import open_notebook, run_cell, write_notebook
from tests.test_sandbox import sandboxed

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture
def marker() -> Iterator[Path]:
    """A path outside the workspace that a sandboxed child cannot create (/var/tmp is read-only there)."""
    path = Path("/var/tmp") / f"opentermd-sandbox-{uuid.uuid4().hex}"
    yield path
    path.unlink(missing_ok=True)


def _git(repo: Path, *arguments: str) -> None:
    subprocess.run(["git", "-C", str(repo), *arguments], check=True, capture_output=True)


@pytest.mark.parametrize("mode", ["bwrap", "off"])
async def test_a_repositorys_hook_runs_in_the_sandbox(aiohttp_client: Any, workspace: Path,
                                                      marker: Path, mode: str) -> None:
    repo = workspace / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.invalid")
    _git(repo, "config", "user.name", "t")
    (repo / "a.txt").write_text("a\n")
    _git(repo, "add", "a.txt")
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ncat {workspace}/state/secret > {workspace}/leak\n"
                    f"ls /proc | grep -c '^[0-9]' > {workspace}/procs\ntouch {marker}\nexit 0\n")
    hook.chmod(0o755)
    api = await sandboxed(aiohttp_client, workspace, sandbox=mode)
    await api.json("POST", "/git/commit", json={"path": str(repo), "message": "one"})
    leaked = (workspace / "leak").read_text()
    if mode == "off":  # the control: the hook reads the state and writes anywhere
        assert "state secret" in leaked and marker.exists()
        return
    assert leaked == "" and not marker.exists()
    assert int((workspace / "procs").read_text()) <= 6


@pytest.mark.parametrize("mode", ["bwrap", "off"])
async def test_a_notebook_kernel_runs_in_the_sandbox(aiohttp_client: Any, workspace: Path,
                                                     marker: Path, mode: str) -> None:
    cell = (f"import os\ntry:\n    text = open({str(workspace / 'state' / 'secret')!r}).read()\n"
            "except OSError as exc:\n    text = type(exc).__name__\n"
            f"try:\n    open({str(marker)!r}, 'w').close()\nexcept OSError:\n    pass\n"
            "print(text.strip(), sum(name.isdigit() for name in os.listdir('/proc')))")
    write_notebook(workspace / "probe.ipynb", cell)
    api = await sandboxed(aiohttp_client, workspace, sandbox=mode)
    session = await open_notebook(api, workspace / "probe.ipynb")
    reply = await run_cell(api, session, 0)
    text, processes = reply["outputs"][0]["text"].rsplit(" ", 1)
    await api.json("DELETE", f"/notebooks/{session}")
    if mode == "off":
        assert text == "state secret" and marker.exists()
        return
    assert text == "FileNotFoundError" and not marker.exists()
    assert int(processes) <= 6  # bwrap's init, the kernel and its few children: not the host's


@pytest.mark.parametrize("mode", ["bwrap", "off"])
async def test_a_document_worker_runs_in_the_sandbox(workspace: Path, mode: str) -> None:
    note = workspace / "state" / "note.eml"
    note.write_text("Subject: hello\n\nstate secret in a mail\n")
    box = sandbox.from_config(make_config(workspace, cwd=workspace, state_dir=workspace / "state", sandbox=mode))
    token = sandbox.CURRENT.set(box)
    try:
        code, output, errors = await worker.run(worker.EXTRACT_TEXT, [str(note), "eml"], timeout=60,
                                                on_timeout=ApiError(408, "slow"))
    finally:
        sandbox.CURRENT.reset(token)
    if mode == "off":
        assert code == 0 and b"state secret" in output
        return
    assert code == 1 and b"state secret" not in output and b"FileNotFoundError" in errors
