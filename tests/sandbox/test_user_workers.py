"""Multi-user as root: a document worker runs as the request's user's uid inside their sandbox (the uid
switched inside bwrap, which reaches the daemon's interpreter), so a parser a hostile document takes over
is that user, not root: a root-only file beside the document stays unreadable to it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from daemon import sandbox, users
from daemon.errors import ApiError
from daemon.files import worker
from tests import test_users
from tests.conftest import make_config

homes = test_users.homes  # the fixture: accounts with a prefix of this run's, removed afterwards

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None, reason="accounts need root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]


@pytest.mark.parametrize("inside", [True, False])
async def test_a_users_document_worker_runs_as_that_user(tmp_path: Path, homes: tuple[Path, str],
                                                         monkeypatch: pytest.MonkeyPatch, inside: bool,
                                                         request: pytest.FixtureRequest) -> None:
    folder, prefix = homes
    box = sandbox.from_config(make_config(tmp_path, sandbox="bwrap"))
    people = users.Users(folder, prefix, as_root=True, sandbox=box)
    account = people.account("alice-worker")
    # Root's, where the sandbox shows the host (/var/tmp): the user cannot read it, root can.
    note = Path("/var/tmp") / f"opentermd-s2-{os.getpid()}-{inside}.eml"
    note.write_text("Subject: hi\n\nroot's eyes only\n")
    note.chmod(0o600)
    request.addfinalizer(lambda: note.unlink(missing_ok=True))
    if not inside:  # the control: as before, the worker as the daemon (root in bwrap's namespace)
        monkeypatch.setattr(sandbox.Sandbox, "inside", lambda self: self)
    token = sandbox.CURRENT.set(people.sandbox_of(account))
    try:
        code, output, errors = await worker.run(worker.EXTRACT_TEXT, [str(note), "eml"], timeout=60,
                                                on_timeout=ApiError(408, "slow"))
    finally:
        sandbox.CURRENT.reset(token)
    if not inside:
        assert code == 0 and b"root's eyes only" in output
        return
    assert code == 1 and b"root's eyes only" not in output and b"PermissionError" in errors
