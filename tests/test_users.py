"""Multi-user mode (daemon/users.py) over a real server: real Linux accounts (made by the daemon with
useradd, removed by these tests), real commands run as those uids, real files in 0700 homes.

Each isolation test has user A make something and user B try to reach it: it would pass B's request
(and fail the test) if the separation were removed.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon import cli, config, sandbox, users
from daemon.errors import ApiError
from daemon.keys import SESSIONS
from daemon.owner import Owner
from daemon.users import MISSING_USER, Users, account_name, check_prefix
from tests.conftest import KEY, Api, ApiFactory, eventually, make_config, output_text
from tests.files.test_reading_documents import make_docx

A = {"X-User-Id": "alice-0001-aaaa"}
B = {"X-User-Id": "bob-0002-bbbb"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="multi-user accounts need root and useradd")


@pytest.fixture
def homes() -> Iterator[tuple[Path, str]]:
    """A homes folder every account can pass through, and a prefix no other run uses; every account
    made with it is removed afterwards, whatever the test did."""
    prefix = f"t{secrets.token_hex(3)}-"
    folder = Path(tempfile.mkdtemp(prefix="opentermd-homes-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder, prefix
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix):
            subprocess.run(["userdel", "--force", "--remove", entry.pw_name], capture_output=True, check=False)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def multi(api_with: ApiFactory, homes: tuple[Path, str], tmp_path: Path) -> Api:
    folder, prefix = homes
    api: Api = await api_with(multi_user=True, user_prefix=prefix, user_homes=folder)
    return api


async def home_of(api: Api, user: dict[str, str]) -> str:
    """The user's home, as the daemon resolves `.` for them (made on this first request)."""
    reply = await api.json("GET", "/files/cwd", headers=user)
    return str(reply["cwd"])


# --- names -------------------------------------------------------------------------------------


def test_ids_sharing_eight_characters_get_different_accounts() -> None:
    # The reference keeps `[:8]` of the cleaned id: these two would share one account there.
    first, second = account_name("12345678-first"), account_name("12345678-second")
    assert first != second
    assert first.startswith("u12345678_") and second.startswith("u12345678_")


def test_account_names_are_valid_and_never_a_system_name() -> None:
    for user_id in ("root", "daemon", "", "..", "../../etc", "é", "a" * 500, "ROOT\n"):
        name = account_name(user_id, "ot-")
        assert name.startswith("ot-") and len(name) <= 32
        assert all(ch.isalnum() or ch in "_-" for ch in name)
        assert name not in ("root", "daemon")
    assert account_name("root") != "root"


def test_prefix_must_keep_names_valid() -> None:
    assert check_prefix("ot-") == "ot-"
    for bad in ("Ot", "-x", "a b", "x" * 13, "../"):
        with pytest.raises(ValueError):
            check_prefix(bad)


def test_settings_come_from_flag_environment_and_toml(tmp_path: Path) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text('multi_user = true\nuser_prefix = "fromtoml-"\n')
    none = tmp_path / "none.toml"
    base = {"cwd": str(tmp_path), "api_key": "k" * 16}
    from_toml = config.load(base, {}, config_file=toml, system_file=none)
    assert (from_toml.multi_user, from_toml.user_prefix) == (True, "fromtoml-")
    from_env = config.load(base, {"OPEN_TERMINAL_MULTI_USER": "false", "OPEN_TERMINAL_USER_PREFIX": "env-"},
                           config_file=toml, system_file=none)
    assert (from_env.multi_user, from_env.user_prefix) == (False, "env-")
    from_flag = config.load({**base, "multi_user": "true"}, {"OPEN_TERMINAL_MULTI_USER": "false"},
                            config_file=toml, system_file=none)
    assert from_flag.multi_user is True
    with pytest.raises(config.ConfigError):
        config.load(base, {"OPEN_TERMINAL_USER_PREFIX": "Bad Prefix"}, system_file=none)
    assert cli.parser().parse_args(["run", "--multi-user"]).multi_user == "true"


def test_without_the_sandbox_the_start_warns_that_users_see_each_others_processes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_config(tmp_path, multi_user=True, sandbox=None)
    with caplog.at_level("WARNING", logger="daemon.users"):
        assert users.from_config(settings, None) is not None
    warned = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warned == [users.NO_SANDBOX] and "see each other's processes" in warned[0]
    assert "--sandbox bwrap" in warned[0]
    caplog.clear()
    boxed = sandbox.from_config(make_config(tmp_path, sandbox="bwrap"))
    with caplog.at_level("WARNING", logger="daemon.users"):
        users.from_config(make_config(tmp_path, multi_user=True, sandbox="bwrap"), boxed)
    assert not [record for record in caplog.records if record.levelname == "WARNING"]


# --- requests need a user -----------------------------------------------------------------------


async def test_every_api_request_needs_the_user_id(multi: Api) -> None:
    for method, path in (("GET", "/files/list?directory=."), ("POST", "/execute"), ("GET", "/ports"),
                         ("GET", "/api/terminals")):
        async with multi.request(method, path, json={"command": "true"}) as response:
            assert (response.status, await response.json()) == (400, {"detail": MISSING_USER}), path
    async with multi.request("GET", "/health") as response:  # public: no user needed
        assert response.status == 200


async def test_single_user_mode_needs_no_user_id(api: Api) -> None:
    reply = await api.run("id -u; echo $HOME")
    assert output_text(reply).split() == ["0", os.environ["HOME"]]


async def test_the_system_prompt_names_the_users_account(multi: Api, homes: tuple[Path, str]) -> None:
    name = account_name(A["X-User-Id"], homes[1])
    prompt = (await multi.json("GET", "/system", headers=A))["prompt"]
    assert f"as user '{name}'" in prompt


async def test_without_a_key_it_is_still_401_first(multi: Api) -> None:
    async with multi.request("GET", "/files/list?directory=.", auth=False) as response:
        assert response.status == 401


# --- accounts and homes ------------------------------------------------------------------------


async def test_each_user_gets_an_account_and_a_private_home(multi: Api, homes: tuple[Path, str]) -> None:
    folder, prefix = homes
    home_a, home_b = await home_of(multi, A), await home_of(multi, B)
    assert home_a != home_b
    for home, user in ((home_a, A), (home_b, B)):
        entry = pwd.getpwnam(account_name(user["X-User-Id"], prefix))
        assert entry.pw_dir == home and Path(home).parent == folder and entry.pw_uid >= 1000
        info = os.stat(home)
        assert (info.st_uid, info.st_mode & 0o777) == (entry.pw_uid, 0o700)


async def test_commands_run_as_the_user_with_their_home(multi: Api, homes: tuple[Path, str]) -> None:
    _, prefix = homes
    reply = await multi.run("id -u; id -g; echo $HOME $USER; pwd; echo hi > made.txt", headers=A)
    entry = pwd.getpwnam(account_name(A["X-User-Id"], prefix))
    assert output_text(reply).split() == [str(entry.pw_uid), str(entry.pw_gid), entry.pw_dir, entry.pw_name,
                                          entry.pw_dir]
    made = os.stat(Path(entry.pw_dir) / "made.txt")
    assert (made.st_uid, made.st_gid) == (entry.pw_uid, entry.pw_gid)


async def test_a_command_cannot_read_or_write_another_users_home(multi: Api) -> None:
    home_b = await home_of(multi, B)
    await multi.json("POST", "/files/write", json={"path": "secret.txt", "content": "B's secret"}, headers=B)
    reply = await multi.run(f"cat {home_b}/secret.txt; ls {home_b}; touch {home_b}/planted; echo end", headers=A)
    text = output_text(reply)
    assert "B's secret" not in text and "Permission denied" in text
    assert not Path(home_b, "planted").exists()


async def test_an_existing_system_account_is_never_used(multi: Api, homes: tuple[Path, str]) -> None:
    """A name that is already a system account's (uid < 1000) is refused, not taken over."""
    _, prefix = homes
    user = {"X-User-Id": "sysuser-0003"}
    name = account_name(user["X-User-Id"], prefix)
    made = await asyncio.create_subprocess_exec("useradd", "--system", "--no-create-home", name)
    assert await made.wait() == 0
    assert pwd.getpwnam(name).pw_uid < 1000
    async with multi.request("GET", "/files/cwd", headers=user) as response:
        assert response.status == 403
        assert "system account" in (await response.json())["detail"]
    async with multi.request("POST", "/execute?wait=5", json={"command": "id -u"}, headers=user) as response:
        assert response.status == 403


async def test_chat_folders_are_per_user_even_with_the_same_chat_id(multi: Api) -> None:
    chat = {"X-Session-Id": "same-chat"}
    home_a, home_b = await home_of(multi, A), await home_of(multi, B)
    await multi.json("POST", "/files/mkdir", json={"path": "sub"}, headers=A)
    await multi.json("POST", "/files/cwd", json={"path": f"{home_a}/sub"}, headers={**A, **chat})
    assert (await multi.json("GET", "/files/cwd", headers={**A, **chat}))["cwd"] == f"{home_a}/sub"
    assert (await multi.json("GET", "/files/cwd", headers={**B, **chat}))["cwd"] == home_b
    reply = await multi.run("pwd", headers={**B, **chat})
    assert output_text(reply).strip() == home_b


async def test_a_command_cannot_read_the_daemons_state_or_another_users_output(multi: Api, tmp_path: Path) -> None:
    """The process logs (every user's output) live in the daemon's state folder: out of a user's reach."""
    await multi.run("echo B-output-secret", headers=B)
    state = tmp_path / "state"
    assert "B-output-secret" in "".join(path.read_text(errors="replace") for path in state.rglob("*") if path.is_file())
    reply = await multi.run(f"grep -r B-output-secret {state} 2>&1; echo end", headers=A)
    text = output_text(reply)
    assert "B-output-secret" not in text and "Permission denied" in text


# --- the file API ------------------------------------------------------------------------------


async def test_file_api_cannot_reach_another_users_files(multi: Api) -> None:
    home_b = await home_of(multi, B)
    await multi.json("POST", "/files/write", json={"path": "secret.txt", "content": "B's secret"}, headers=B)
    secret = f"{home_b}/secret.txt"
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/files/list", {"params": {"directory": home_b}}),
        ("GET", "/files/read", {"params": {"path": secret}}),
        ("GET", "/files/read", {"params": {"path": "../" + Path(home_b).name + "/secret.txt"}}),
        ("POST", "/files/write", {"json": {"path": f"{home_b}/planted.txt", "content": "x"}}),
        ("DELETE", "/files/delete", {"params": {"path": secret}}),
        ("GET", "/files/grep", {"params": {"query": "secret", "path": home_b}}),
        ("POST", "/files/archive", {"json": {"paths": [secret]}}),
        ("GET", "/files/download/link", {"params": {"path": secret}}),
        ("POST", "/files/move", {"json": {"source": secret, "destination": "stolen.txt"}}),
    ]
    for method, path, options in attempts:
        async with multi.request(method, path, headers=A, **options) as response:
            body = await response.json()
            assert response.status in (403, 404), (method, path, response.status, body)
            assert "B's secret" not in str(body)
    form = aiohttp.FormData()
    form.add_field("file", b"planted", filename="planted.txt")
    async with multi.request("POST", "/files/upload", params={"directory": home_b}, headers=A,
                             data=form) as response:
        assert response.status in (403, 404)
    assert "planted.txt" not in os.listdir(home_b) and "stolen.txt" not in os.listdir(await home_of(multi, A))
    assert Path(secret).read_text() == "B's secret"


async def test_a_link_in_ones_own_home_does_not_lead_into_anothers(multi: Api) -> None:
    """A's command plants links to B's home; the file API follows none of them out of A's home."""
    home_b = await home_of(multi, B)
    await multi.json("POST", "/files/write", json={"path": "secret.txt", "content": "B's secret"}, headers=B)
    await multi.run(f"ln -s {home_b}/secret.txt file-link && ln -s {home_b} folder-link", headers=A)
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/files/read", {"params": {"path": "file-link"}}),
        ("GET", "/files/list", {"params": {"directory": "folder-link"}}),
        ("POST", "/files/write", {"json": {"path": "folder-link/planted", "content": "x"}})]
    for method, path, options in attempts:
        async with multi.request(method, path, headers=A, **options) as response:
            assert response.status == 403, (path, await response.text())
    assert "planted" not in os.listdir(home_b)


async def test_what_the_file_api_makes_belongs_to_the_user(multi: Api, homes: tuple[Path, str]) -> None:
    _, prefix = homes
    home_a = Path(await home_of(multi, A))
    entry = pwd.getpwnam(account_name(A["X-User-Id"], prefix))
    await multi.json("POST", "/files/write", json={"path": "deep/er/w.txt", "content": "w"}, headers=A)
    await multi.json("POST", "/files/mkdir", json={"path": "folder"}, headers=A)
    form = aiohttp.FormData()
    form.add_field("file", b"up", filename="u.txt")
    async with multi.request("POST", "/files/upload", params={"directory": str(home_a)}, headers=A,
                             data=form) as response:
        assert response.status == 200, await response.text()
    await multi.json("POST", "/files/copy", json={"source": "deep", "destination": "copied"}, headers=A)
    made = ["deep", "deep/er", "deep/er/w.txt", "folder", "u.txt", "copied", "copied/er", "copied/er/w.txt"]
    assert {name: os.lstat(home_a / name).st_uid for name in made} == dict.fromkeys(made, entry.pw_uid)
    # So the user's own commands can change what the API wrote.
    reply = await multi.run("echo more >> deep/er/w.txt && rm -r copied && echo done", headers=A)
    assert "done" in output_text(reply)


async def test_no_shared_trash_to_list_restore_or_empty(multi: Api, scratch_environment: Path) -> None:
    """One trash for all would show each user the others' deleted files, and let one empty it for all."""
    home_b = Path(await home_of(multi, B))
    (home_b / "gone.txt").write_text("x")
    async with multi.request("DELETE", "/files/delete", params={"path": "gone.txt"}, headers=B) as response:
        assert response.status == 200
    assert not (home_b / "gone.txt").exists()
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/files/trash", {}), ("DELETE", "/files/trash", {}),
        ("POST", "/files/trash/restore", {"json": {"id": "x"}})]
    for method, path, options in attempts:
        async with multi.request(method, path, headers=A, **options) as response:
            assert response.status == 404, (method, path)
    assert not (scratch_environment / ".local/share/Trash").exists()  # for good, not into the daemon's trash


async def test_file_api_works_in_the_users_own_home(multi: Api) -> None:
    home_a = await home_of(multi, A)
    await multi.json("POST", "/files/write", json={"path": "notes/a.txt", "content": "mine"}, headers=A)
    reply = await multi.json("GET", "/files/read", params={"path": f"{home_a}/notes/a.txt"}, headers=A)
    assert "mine" in str(reply)
    listed = await multi.json("GET", "/files/list", params={"directory": "notes"}, headers=A)
    assert "a.txt" in str(listed)


async def test_the_audit_trail_shows_a_user_only_their_own_records(multi: Api) -> None:
    await multi.json("POST", "/files/write", json={"path": "b-private-name.txt", "content": "x"}, headers=B)
    await multi.json("POST", "/files/write", json={"path": "a-file.txt", "content": "x"}, headers=A)
    mine = await multi.json("GET", "/audit", headers=A)
    assert "a-file.txt" in str(mine) and "b-private-name" not in str(mine)
    assert {record["who"]["user"] for record in mine["records"]} == {A["X-User-Id"]}


# --- processes, terminals, ports ---------------------------------------------------------------


async def test_another_users_process_ids_answer_404(multi: Api) -> None:
    started = await multi.run("sleep 30", wait=0, headers=A)
    for path in (f"/execute/{started['id']}/status",):
        async with multi.request("GET", path, headers=B) as response:
            assert response.status == 404, path
    async with multi.request("DELETE", f"/execute/{started['id']}", headers=B) as response:
        assert response.status == 404
    listed = await multi.json("GET", "/execute", headers=B)
    assert started["id"] not in str(listed)
    await multi.json("DELETE", f"/execute/{started['id']}?force=true", headers=A)


async def test_no_notebooks_in_multi_user_mode(multi: Api) -> None:
    """A kernel would run as the daemon (so read every user's files): the routes are not there."""
    assert (await multi.json("GET", "/api/config"))["features"]["notebooks"] is False
    async with multi.request("POST", "/notebooks", json={"path": "a.ipynb"}, headers=A) as response:
        assert response.status == 404


async def test_another_users_terminal_answers_404(multi: Api, homes: tuple[Path, str]) -> None:
    created = await multi.json("POST", "/api/terminals", json={}, headers=A)
    # The shell runs as A (setpriv and env exec: the spawned pid becomes the shell, as A, once they have).
    uid = pwd.getpwnam(account_name(A["X-User-Id"], homes[1])).pw_uid
    status = Path(f"/proc/{created['pid']}/status")
    await eventually(lambda: "Name:\tbash" in status.read_text())
    assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status.read_text()
    listed = await multi.json("GET", "/api/terminals", headers=B)
    assert created["id"] not in str(listed)
    async with multi.request("DELETE", f"/api/terminals/{created['id']}", headers=B) as response:
        assert response.status == 404
    await multi.json("DELETE", f"/api/terminals/{created['id']}", headers=A)


async def test_ports_and_proxy_are_per_user(multi: Api) -> None:
    script = ("import socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\n"
              "print('PORT',s.getsockname()[1],flush=True)\nwhile True:\n c,_=s.accept()\n c.recv(1024)\n"
              " c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok')\n c.close()\n")
    await multi.json("POST", "/files/write", json={"path": "serve.py", "content": script}, headers=A)
    started = await multi.run("exec python3 serve.py", wait=0, headers=A)

    async def port() -> int | None:
        reply = await multi.json("GET", f"/execute/{started['id']}/status", headers=A)
        found = re.search(r"PORT (\d+)\r?\n", output_text(reply))  # the whole line, not a part of it
        return int(found.group(1)) if found else None

    number = await eventually(port)
    mine = await eventually(lambda: _listed(multi, A, number))
    assert mine
    assert not await _listed(multi, B, number)
    async with multi.request("GET", f"/proxy/{number}/", headers=B) as response:
        assert response.status == 404
    async with multi.request("GET", f"/proxy/{number}/", headers=A) as response:
        assert (response.status, await response.text()) == (200, "ok")
    await multi.json("DELETE", f"/execute/{started['id']}?force=true", headers=A)


async def _listed(api: Api, user: dict[str, str], port: int) -> bool:
    reply = await api.json("GET", "/ports", headers=user)
    return any(entry["port"] == port for entry in reply["ports"])


# --- with the sandbox --------------------------------------------------------------------------


@pytest.fixture
async def boxed(api_with: ApiFactory, homes: tuple[Path, str]) -> Api:
    if shutil.which("bwrap") is None:
        pytest.skip("needs bubblewrap")
    folder, prefix = homes
    api: Api = await api_with(multi_user=True, user_prefix=prefix, user_homes=folder, sandbox="bwrap")
    return api


async def test_in_the_sandbox_a_user_sees_only_their_home_and_processes(boxed: Api, homes: tuple[Path, str]) -> None:
    folder, prefix = homes
    home_b = await home_of(boxed, B)
    await boxed.json("POST", "/files/write", json={"path": "secret.txt", "content": "B's secret"}, headers=B)
    sleeper = await boxed.run("exec sleep 30", wait=0, headers=B)
    home_a = await home_of(boxed, A)
    reply = await boxed.run(f"id -u; ls -a {folder}; cat {home_b}/secret.txt; ps -eo args; echo end", headers=A)
    text = output_text(reply)
    entry = pwd.getpwnam(account_name(A["X-User-Id"], prefix))
    assert text.split()[0] == str(entry.pw_uid)
    assert Path(home_a).name in text and Path(home_b).name not in text.replace(home_b, "")
    assert "B's secret" not in text and "sleep 30" not in text
    await boxed.json("DELETE", f"/execute/{sleeper['id']}?force=true", headers=B)


def test_without_root_the_sandbox_alone_hides_the_other_homes(homes: tuple[Path, str], tmp_path: Path) -> None:
    """The non-root separation (one uid for everyone): each user's bwrap shows its own home only.
    Run here as root, which bwrap treats alike (its user namespace maps root to root)."""
    if shutil.which("bwrap") is None:
        pytest.skip("needs bubblewrap")
    folder, prefix = homes
    box = sandbox.from_config(make_config(tmp_path, sandbox="bwrap"))
    assert box is not None
    people = Users(folder, prefix, as_root=False, sandbox=box)
    alice, bob = people.account("alice"), people.account("bob")
    assert (os.stat(alice.home).st_mode & 0o777, Path(alice.home).parent) == (0o700, folder)
    Path(bob.home, "secret.txt").write_text("B's secret")
    confined = people.sandbox_for(Owner("alice"))
    assert confined is not None
    argv = confined.wrap(
        ["/bin/sh", "-c", f"ls -a {folder}; cat {bob.home}/secret.txt; echo mine > {alice.home}/a.txt"], alice.home)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.stdout.split() == [".", "..", Path(alice.home).name], done.stderr
    assert "B's secret" not in done.stdout + done.stderr
    assert Path(alice.home, "a.txt").read_text() == "mine\n"



def test_new_users_stop_at_the_cap_counted_on_disk(homes: tuple[Path, str]) -> None:
    """The attack: a new X-User-Id on every request, each making an account and a home."""
    folder, prefix = homes
    people = Users(folder, prefix, as_root=False, sandbox=None, max_users=2)
    people.account("first")
    people.account("second")
    with pytest.raises(ApiError) as refused:
        people.account("third")
    assert refused.value.status == 429 and not Path(folder, account_name("third", prefix)).exists()
    assert people.account("first").name == account_name("first", prefix)  # known users go on
    # A restart does not reset the count: the homes on disk are what is counted.
    again = Users(folder, prefix, as_root=False, sandbox=None, max_users=2)
    assert again.account("second").name == account_name("second", prefix)
    with pytest.raises(ApiError):
        again.account("third")


async def test_a_user_past_the_cap_gets_429(api_with: ApiFactory, homes: tuple[Path, str]) -> None:
    folder, prefix = homes
    api: Api = await api_with(multi_user=True, user_prefix=prefix, user_homes=folder, max_users=1)
    assert (await api.run("true", headers={"X-User-Id": "only"}))["exit_code"] == 0
    async with api.client.post("/execute", json={"command": "true"},
                               headers={"Authorization": f"Bearer {KEY}", "X-User-Id": "another"}) as reply:
        assert reply.status == 429 and "Too many users" in (await reply.json())["detail"]


async def test_a_document_preview_works_for_a_user_in_the_sandbox(boxed: Api) -> None:
    """The document worker runs in the user's sandbox (as the daemon: it reads only the file handed to it)."""
    home_a = Path(await home_of(boxed, A))
    (home_a / "report.docx").write_bytes(make_docx())
    reply = await boxed.json("GET", "/files/read", params={"path": "report.docx"}, headers=A)
    assert "Quarterly report" in reply["content"]


async def test_git_runs_for_the_user_in_their_repository_only(boxed: Api) -> None:
    home_a = await home_of(boxed, A)
    made = await boxed.run("git init -q repo && cd repo && echo one > f.txt && git add f.txt && "
                           "git -c user.name=a -c user.email=a@a commit -qm one && echo two > f.txt && echo ok",
                           headers=A)
    assert output_text(made).strip().endswith("ok"), output_text(made)
    status = await boxed.json("GET", "/git/status", params={"path": "repo"}, headers=A)
    assert "f.txt" in str(status)
    async with boxed.request("GET", "/git/status", params={"path": f"{home_a}/repo"}, headers=B) as response:
        assert response.status in (403, 404)


# --- the web pages ------------------------------------------------------------------------------------


async def page_login(api: Api, **form: str) -> int:
    async with api.client.post("/login", data=form, allow_redirects=False) as response:
        return response.status


async def test_the_login_form_asks_for_a_user_only_in_multi_user_mode(multi: Api, api: Api) -> None:
    for server, asks in ((multi, True), (api, False)):
        async with server.client.get("/login") as response:
            assert response.status == 200
            assert ('name="user"' in await response.text()) is asks


async def test_a_page_session_is_the_user_it_logged_in_as(multi: Api) -> None:
    mine, theirs = await home_of(multi, A), await home_of(multi, B)
    await multi.json("POST", "/files/write", headers=A, json={"path": "a-note.txt", "content": "a"})
    await multi.json("POST", "/files/write", headers=B, json={"path": "b-note.txt", "content": "b"})
    assert await page_login(multi, key=KEY) == 400  # the admin key alone names nobody
    assert await page_login(multi, key=KEY, user=" \n ") == 400
    assert await page_login(multi, key="wrong", user=A["X-User-Id"]) == 401
    assert await page_login(multi, key=KEY, user=A["X-User-Id"]) == 303
    async with multi.client.get("/") as response:  # the user's home
        page = await response.text()
        assert response.status == 200 and "a-note.txt" in page and "b-note.txt" not in page
    # The cookie's API calls are A's, whatever X-User-Id says; B's home is out of reach by URL.
    assert (await multi.json("GET", "/files/cwd", auth=False, headers=B))["cwd"] == mine
    async with multi.request("GET", f"/files/read?path={theirs}/b-note.txt", auth=False, headers=B) as response:
        assert response.status == 403
    async with multi.client.get(f"/browse{theirs}") as response:
        assert response.status == 403 and "b-note.txt" not in await response.text()
    async with multi.client.get(f"/browse{theirs}/b-note.txt") as response:
        assert response.status == 403
    theirs_running = await multi.run("true", headers=B)
    listed = await multi.json("GET", "/execute", auth=False, headers=B)
    assert theirs_running["id"] not in [entry["id"] for entry in listed]


async def test_a_login_link_is_not_taken_in_multi_user_mode(multi: Api) -> None:
    token = multi.client.app[SESSIONS].login_token()
    async with multi.client.get(f"/?token={token}", allow_redirects=False) as response:
        assert response.status == 400 and 'name="user"' in await response.text()
    assert not multi.client.app[SESSIONS].redeem("not-a-token")
    assert multi.client.app[SESSIONS].redeem(token)  # left unused


async def test_a_users_page_session_sees_no_trash_page(multi: Api, scratch_environment: Path) -> None:
    """The daemon's own trash (here its scratch HOME's) is nobody's in multi-user mode: the /trash page
    answers 404 as the trash API does (never listing what the daemon's trash holds), with no link to it."""
    stash = scratch_environment / ".local/share/Trash"
    (stash / "files").mkdir(parents=True)
    (stash / "info").mkdir()
    (stash / "files" / "daemon-secret.txt").write_text("x")
    (stash / "info" / "daemon-secret.txt.trashinfo").write_text(
        f"[Trash Info]\nPath={scratch_environment}/daemon-secret.txt\nDeletionDate=2026-01-01T00:00:00\n")
    assert await page_login(multi, key=KEY, user=A["X-User-Id"]) == 303
    async with multi.client.get("/trash") as response:
        text = await response.text()
        assert "daemon-secret" not in text
        assert response.status == 404
    async with multi.client.get("/") as response:
        assert 'href="/trash"' not in await response.text()  # and no link to it
