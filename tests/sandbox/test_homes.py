"""Other people's homes (`/root`, `/home`) are empty folders in the sandbox, for commands and the file API
alike, except the workspace (bound back) and the daemon's own interpreter (read-only, so it still runs).
Each attack is tried with the sandbox off too, where it works: the control."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon import sandbox
from tests.conftest import KEY, Api, output_text
from tests.test_sandbox import sandboxed

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture
def someone() -> Iterator[Path]:
    """Another person's home under /home, with a file of theirs (removed afterwards)."""
    home = Path("/home") / f"opentermd-s2-{uuid.uuid4().hex[:12]}"
    home.mkdir(mode=0o755)
    (home / "diary.txt").write_text("someone's diary\n")
    yield home
    shutil.rmtree(home)


@pytest.fixture
def workspace_in_home(someone: Path) -> Path:
    """A workspace inside that /home folder: bound back, its neighbour (the diary) still hidden."""
    workspace = someone / "work"
    (workspace / "state").mkdir(parents=True)
    (workspace / "keys").mkdir()
    (workspace / "keys" / "key").write_text(KEY)
    (workspace / "mine.txt").write_text("my own file\n")
    return workspace


async def test_a_command_finds_other_homes_empty(aiohttp_client: Any, workspace: Path, someone: Path) -> None:
    boxed = await sandboxed(aiohttp_client, workspace)
    open_ = await sandboxed(aiohttp_client, workspace, sandbox="off")
    script = f"cat {someone}/diary.txt 2>/dev/null; echo ===; ls -A /home; echo ---; ls -A /root"
    assert "someone's diary" in output_text(await open_.run(script))
    text = output_text(await boxed.run(script))
    assert "someone's diary" not in text
    home_listing, root_listing = (part.split() for part in text.split("===")[1].split("---"))
    assert home_listing == []
    # Only the way to the daemon's interpreter, when it lies under /root (here: /root/.pyenv/...).
    allowed = {folder.relative_to("/root").parts[0] for folder in sandbox.interpreter_folders()
               if folder.is_relative_to("/root")}
    assert set(root_listing) <= allowed


async def test_the_file_api_refuses_other_homes_too(aiohttp_client: Any, workspace: Path, someone: Path) -> None:
    boxed = await sandboxed(aiohttp_client, workspace)
    open_ = await sandboxed(aiohttp_client, workspace, sandbox="off")
    diary = {"path": str(someone / "diary.txt")}
    await open_.json("GET", "/files/read", params=diary)
    assert "hidden by the sandbox" in (await boxed.json("GET", "/files/read", status=403, params=diary))["detail"]
    await boxed.json("GET", "/files/list", status=403, params={"directory": "/root"})
    await boxed.json("POST", "/files/write", status=403, json={"path": str(someone / "planted.txt"), "content": "x"})
    assert not (someone / "planted.txt").exists()


async def test_a_workspace_inside_a_home_stays_visible(workspace_in_home: Path, aiohttp_client: Any) -> None:
    # The home's fixture first: torn down after the client's, once the app (which writes its logs into the
    # workspace's state folder) has closed. The other way round its removal raced a last log write.
    api: Api = await sandboxed(aiohttp_client, workspace_in_home)
    text = output_text(await api.run(f"cat mine.txt; cat {workspace_in_home.parent}/diary.txt; echo written > new.txt"))
    assert "my own file" in text and "someone's diary" not in text
    assert (workspace_in_home / "new.txt").read_text() == "written\n"
    assert (await api.json("GET", "/files/read", params={"path": "mine.txt"}))["content"] == "my own file\n"


async def test_the_daemons_interpreter_still_runs_inside(aiohttp_client: Any, workspace: Path) -> None:
    api = await sandboxed(aiohttp_client, workspace)
    reply = await api.run(f"{sys.executable} -c 'import json, sys; print(json.dumps(sys.prefix))'; "
                          f"touch {sys.base_prefix}/planted; echo touch=$?")
    text = output_text(reply)
    assert sys.prefix in text and "touch=1" in text  # it runs, and read-only
    assert not Path(sys.base_prefix, "planted").exists()


def test_revealed_folders_are_only_the_interpreters_under_a_hidden_one(tmp_path: Path) -> None:
    from tests.conftest import make_config

    box = sandbox.from_config(make_config(tmp_path, sandbox="bwrap"))
    assert box is not None
    assert set(box.revealed) <= set(sandbox.interpreter_folders())
    assert all(any(folder.is_relative_to(hidden) for hidden in (*box.hidden, sandbox.OWN_TMP))
               for folder in box.revealed)
    assert {Path("/root"), Path("/home")} <= set(box.hidden)
    for folder in box.revealed:  # the file API reads them, as commands do, and writes nothing there
        assert box.access(folder / "lib") == sandbox.Access.READ
