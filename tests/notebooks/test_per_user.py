"""Notebooks in multi-user mode: each user's kernel runs as their uid, in their sandbox, in their limit
group; another user's session ids are 404. Real accounts (made by the daemon, removed by the fixture),
real kernels, real cgroups.

Each test has user A's kernel try to reach what is not A's (B's home, the daemon's state and key) and
checks what the kernel is (its uid, its connection file's owner): without the uid switch, the sandbox or
the group these would read or show the daemon's own.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path
from typing import Any

import pytest

from daemon import config
from daemon.keys import NOTEBOOKS
from daemon.limit_endpoints import LIMITS
from daemon.limits import user_group
from daemon.sandbox import command_pid
from tests import test_users
from tests.conftest import KEY, Api, ApiFactory, eventually
from tests.notebooks.helpers import open_notebook, run_cell, write_notebook
from tests.test_limits import needs_cgroups
from tests.test_users import A, B, home_of

homes = test_users.homes  # the fixture: accounts with a prefix of this run's, removed afterwards

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None, reason="accounts need root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]

#: What a cell prints about its kernel: uid, the connection file's owner and mode, its folder's mode.
WHO = ("import os, ipykernel.connect as c\n"
       "f = c.get_connection_file(); s = os.stat(f); d = os.stat(os.path.dirname(f))\n"
       "print(os.getuid(), s.st_uid, oct(s.st_mode & 0o777), oct(d.st_mode & 0o777), d.st_uid)")


def _reads(path: str) -> str:
    """A cell that prints what it could read at `path`, or the error's name."""
    return (f"try:\n    print(repr(open({path!r}).read()))\nexcept OSError as e:\n    print(type(e).__name__)")


def _text(reply: dict[str, Any]) -> str:
    assert reply["status"] == "ok", reply
    return "".join(output.get("text", "") for output in reply["outputs"])


async def _multi(api_with: ApiFactory, homes: tuple[Path, str], tmp_path: Path, **settings: Any) -> Api:
    folder, prefix = homes
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "key").write_text(KEY)
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "secret").write_text("state secret\n")
    api: Api = await api_with(multi_user=True, user_prefix=prefix, user_homes=folder, sandbox="bwrap",
                              api_key_file=tmp_path / "keys" / "key", **settings)
    return api


async def _notebook_of(api: Api, user: dict[str, str], *sources: str) -> str:
    home = Path(await home_of(api, user))
    path = write_notebook(home / "n.ipynb", *sources)
    account = pwd.getpwnam(home.name)
    os.chown(path, account.pw_uid, account.pw_gid)
    return await open_notebook(api, path, headers=user)


async def test_a_users_kernel_is_theirs_and_sees_only_their_home(api_with: ApiFactory, homes: tuple[Path, str],
                                                                  tmp_path: Path) -> None:
    api = await _multi(api_with, homes, tmp_path)
    session = await _notebook_of(api, A, WHO)
    b_home = Path(await home_of(api, B))
    (b_home / "private.txt").write_text("B's secret\n")
    a_uid = pwd.getpwnam(Path(await home_of(api, A)).name).pw_uid
    uid, file_owner, file_mode, folder_mode, folder_owner = _text(await run_cell(api, session, 0, headers=A)).split()
    assert int(uid) == a_uid != 0
    assert (int(file_owner), int(folder_owner), file_mode, folder_mode) == (a_uid, a_uid, "0o600", "0o700")
    # B's home, the daemon's state and key file: hidden in A's sandbox (as root, unsandboxed, all readable).
    for path, secret in ((b_home / "private.txt", "B's secret"), (tmp_path / "state" / "secret", "state secret"),
                         (tmp_path / "keys" / "key", KEY)):
        text = _text(await run_cell(api, session, 0, _reads(str(path)), headers=A))
        assert secret not in text, path
    # The homes of everyone else on the machine are empty folders too.
    assert _text(await run_cell(api, session, 0, "import os; print(os.listdir('/root'))", headers=A)).strip() in (
        "[]", "['.pyenv']", str([p.name for p in Path('/root').iterdir() if p.name == '.pyenv']))


async def test_another_users_session_is_404(api_with: ApiFactory, homes: tuple[Path, str], tmp_path: Path) -> None:
    api = await _multi(api_with, homes, tmp_path)
    session = await _notebook_of(api, A, "1+1")
    for method, path, body in (("POST", f"/notebooks/{session}/execute", {"cell_index": 0}),
                               ("POST", f"/notebooks/{session}/interrupt", None),
                               ("DELETE", f"/notebooks/{session}", None)):
        await api.json(method, path, status=404, json=body, headers=B)
    assert (await run_cell(api, session, 0, headers=A))["status"] == "ok"  # still A's, untouched


@needs_cgroups
async def test_a_kernel_runs_in_its_own_group_under_its_users(api_with: ApiFactory, homes: tuple[Path, str],
                                                              tmp_path: Path) -> None:
    api = await _multi(api_with, homes, tmp_path, limit_processes=40, user_limit_processes=100)
    session = await _notebook_of(api, A, "import os; print(os.getuid())")
    kernel = api.client.app[NOTEBOOKS].get(session, A["X-User-Id"]).kernel
    group = api.client.app[LIMITS].controller_path(kernel.group, "pids")
    assert group.name.startswith("kernel-") and group.parent.name == user_group(A["X-User-Id"])
    assert (group / "pids.max").read_text().strip() == "40"
    assert (group.parent / "pids.max").read_text().strip() == "100"
    # The kernel (as A's uid, its cell's own output says) is in it, from its first instruction on.
    uid = int(_text(await run_cell(api, session, 0, headers=A)))
    kernel_pid = command_pid(kernel.pgid)
    assert os.stat(f"/proc/{kernel_pid}").st_uid == uid != 0
    assert str(kernel_pid) in (group / "cgroup.procs").read_text().split()
    await api.json("DELETE", f"/notebooks/{session}", headers=A)
    await eventually(lambda: not group.exists())


def test_notebooks_stay_off_without_the_sandbox_unless_the_interpreter_is_shared() -> None:
    settings = config.Config(api_key=KEY, multi_user=True, sandbox="off", enable_notebooks=True)
    shared = config._interpreter_shared()
    assert settings.enable_notebooks is shared
    assert config.Config(api_key=KEY, multi_user=True, sandbox="bwrap", enable_notebooks=True).enable_notebooks


@needs_cgroups
@pytest.mark.parametrize("mode", ["off", "bwrap"])
async def test_a_single_users_kernel_is_a_limit_group_too(api_with: ApiFactory, tmp_path: Path, mode: str) -> None:
    api = await api_with(sandbox=mode, limit_processes=30)
    path = write_notebook(tmp_path / "home" / "n.ipynb", "import os; print(os.getpid())")
    session = await open_notebook(api, path)
    kernel = api.client.app[NOTEBOOKS].get(session, "").kernel
    group = api.client.app[LIMITS].controller_path(kernel.group, "pids")
    assert (group / "pids.max").read_text().strip() == "30"
    assert (await run_cell(api, session, 0))["status"] == "ok"
    kernel_pid = kernel.pgid if mode == "off" else command_pid(kernel.pgid)  # past bwrap and its init
    assert str(kernel_pid) in (group / "cgroup.procs").read_text().split()
    await api.json("DELETE", f"/notebooks/{session}")
    await eventually(lambda: not group.exists())
