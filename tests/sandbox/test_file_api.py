"""With `--sandbox bwrap` the file API sees what commands see: hidden paths 403 for reads too, writes
in the workspace only. Each attack is tried with the sandbox off as well, where it works: the control
that shows the refusal comes from the sandbox."""

from __future__ import annotations

import shutil
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
def outside() -> Iterator[Path]:
    """A folder outside the workspace that commands see read-only (/var/tmp is bound from the host;
    the host's /tmp is not what they see)."""
    folder = Path("/var/tmp") / f"opentermd-sandbox-test-{uuid.uuid4().hex}"
    folder.mkdir()
    (folder / "readable.txt").write_text("outside\n")
    yield folder
    shutil.rmtree(folder)


async def both(aiohttp_client: Any, workspace: Path) -> tuple[Api, Api]:
    """The same workspace served with the sandbox on, and off (the control)."""
    return (await sandboxed(aiohttp_client, workspace),
            await sandboxed(aiohttp_client, workspace, sandbox="off"))


async def status(api: Api, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with api.request(method, path, **kwargs) as response:
        return response.status, await response.json()


async def test_hidden_files_are_refused_for_reads(aiohttp_client: Any, workspace: Path) -> None:
    boxed, open_ = await both(aiohttp_client, workspace)
    for path in (workspace / "keys" / "key", workspace / "state" / "secret"):
        code, body = await status(boxed, "GET", "/files/read", params={"path": str(path)})
        assert code == 403 and "hidden by the sandbox" in body["detail"], body
        assert (await status(open_, "GET", "/files/read", params={"path": str(path)}))[0] == 200
    code, body = await status(boxed, "GET", "/files/list", params={"directory": str(workspace / "state")})
    assert code == 403
    assert (await status(open_, "GET", "/files/list", params={"directory": str(workspace / "state")}))[0] == 200


async def test_a_link_planted_by_a_command_does_not_lead_the_file_api_into_the_state(
        aiohttp_client: Any, workspace: Path) -> None:
    boxed, _ = await both(aiohttp_client, workspace)
    reply = await boxed.run(f"ln -s {workspace}/state/secret leak && ln -s {workspace}/state into && "
                            "cat leak; echo cat=$?")
    assert "state secret" not in output_text(reply)  # the command sees the empty tmpfs
    assert (await status(boxed, "GET", "/files/read", params={"path": str(workspace / "leak")}))[0] == 403
    assert (await status(boxed, "GET", "/files/read", params={"path": str(workspace / "into" / "secret")}))[0] == 403
    code, _ = await status(boxed, "POST", "/files/write",
                           json={"path": str(workspace / "into" / "planted"), "content": "x"})
    assert code == 403 and not (workspace / "state" / "planted").exists()
    grep = await boxed.json("GET", "/files/grep", params={"query": "state secret", "path": str(workspace)})
    assert grep["matches"] == []
    found = await boxed.json("GET", "/files/search", params={"query": "secret", "path": str(workspace)})
    assert all("state" not in str(entry) for entry in found.get("results", found.get("matches", [])))


async def test_writes_outside_the_workspace_are_refused(aiohttp_client: Any, workspace: Path, outside: Path) -> None:
    boxed, open_ = await both(aiohttp_client, workspace)
    assert (await boxed.json("GET", "/files/read", params={"path": str(outside / "readable.txt")}))["content"]
    code, body = await status(boxed, "POST", "/files/write", json={"path": str(outside / "new.txt"), "content": "x"})
    assert code == 403 and "read-only in the sandbox" in body["detail"]
    assert not (outside / "new.txt").exists()
    code, _ = await status(boxed, "POST", "/files/mkdir", json={"path": str(outside / "made")})
    assert code == 403 and not (outside / "made").exists()
    code, _ = await status(boxed, "DELETE", "/files/delete", params={"path": str(outside / "readable.txt")})
    assert code == 403 and (outside / "readable.txt").exists()
    (workspace / "mine.txt").write_text("mine\n")
    code, _ = await status(boxed, "POST", "/files/move",
                           json={"source": str(workspace / "mine.txt"), "destination": str(outside / "mine.txt")})
    assert code == 403 and (workspace / "mine.txt").exists()
    code, _ = await status(boxed, "POST", "/files/move",
                           json={"source": str(outside / "readable.txt"), "destination": str(workspace / "r.txt")})
    assert code == 403 and (outside / "readable.txt").exists()
    # The same commands as writes inside the workspace work, and the control writes outside.
    await boxed.json("POST", "/files/write", json={"path": str(workspace / "sub" / "new.txt"), "content": "in"})
    assert (workspace / "sub" / "new.txt").read_text() == "in"
    await open_.json("POST", "/files/write", json={"path": str(outside / "new.txt"), "content": "x"})
    assert (outside / "new.txt").exists()


async def test_the_hidden_state_folder_in_the_workspace_cannot_be_removed_or_replaced(
        aiohttp_client: Any, workspace: Path) -> None:
    boxed, _ = await both(aiohttp_client, workspace)
    code, _ = await status(boxed, "DELETE", "/files/delete", params={"path": str(workspace / "state")})
    assert code == 403 and (workspace / "state" / "secret").exists()
    code, _ = await status(boxed, "POST", "/files/move",
                           json={"source": str(workspace / "state"), "destination": str(workspace / "taken")})
    assert code == 403 and (workspace / "state" / "secret").exists()
    (workspace / "decoy").mkdir()
    code, _ = await status(boxed, "POST", "/files/move",
                           json={"source": str(workspace / "decoy"), "destination": str(workspace / "keys" / "key")})
    assert code == 403 and (workspace / "keys" / "key").read_text() == KEY


async def test_the_hosts_tmp_proc_and_dev_are_not_the_sandboxs(aiohttp_client: Any, workspace: Path) -> None:
    boxed, _ = await both(aiohttp_client, workspace)
    for path in ("/proc/self/environ", "/proc/1/cmdline", "/dev/null", "/tmp"):
        code, _ = await status(boxed, "GET", "/files/read" if path != "/tmp" else "/files/list",
                               params={"path" if path != "/tmp" else "directory": path})
        assert code == 403, path


def test_one_definition_for_the_argv_and_the_file_api(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "key").write_text(KEY)
    box = sandbox.Sandbox("/usr/bin/bwrap", tmp_path, hidden=(tmp_path / "state",), hidden_files=(tmp_path / "key",))
    argv = box.prefix("/")
    for mount in box.mounts():
        assert " ".join(mount.argv) in " ".join(argv)
    access = sandbox.Access
    assert box.access(tmp_path / "a" / "b") == access.WRITE
    assert box.access(tmp_path / "state" / "x") == access.NONE == box.access(tmp_path / "key")
    assert box.access("/usr/bin/env") == access.READ
    assert box.access("/tmp/other") == access.NONE  # the workspace is under /tmp here; the rest of /tmp is not
