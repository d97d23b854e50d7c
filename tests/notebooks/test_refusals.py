"""What /notebooks refuses, and how: bad files, bad indexes, other users, no kernel, too many kernels."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.conftest import Api, ApiFactory, process_stats
from tests.notebooks.helpers import install_kernelspec, open_notebook, run_cell, write_notebook


async def test_files_that_are_not_notebooks_are_refused_before_any_kernel(
        api_with: ApiFactory, scratch_environment: Path, tmp_path: Path) -> None:
    api = await api_with(file_root=scratch_environment)
    home = scratch_environment
    (home / "broken.ipynb").write_text('{"cells": [')
    (home / "wrong.ipynb").write_text('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"x": 1}]}')
    (home / "latin1.ipynb").write_bytes(b'{"cells": "\xff"}')
    os.mkfifo(home / "fifo.ipynb")
    os.truncate(_touch(home / "huge.ipynb"), 65 * 1024 * 1024)  # sparse: refused from the stat, never read
    (tmp_path / "outside.ipynb").write_text("{}")

    async def refused(path: str, status: int) -> str:
        detail: str = (await api.json("POST", "/notebooks", status=status, json={"path": path}))["detail"]
        return detail

    assert await refused("missing.ipynb", 404) == f"Notebook not found: {home / 'missing.ipynb'}"
    for broken in ("broken.ipynb", "wrong.ipynb", "latin1.ipynb"):
        assert (await refused(broken, 400)).startswith("Invalid notebook: ")
    assert await refused("fifo.ipynb", 400) == "Path is not a regular file"
    assert await refused(".", 400) == "Path is a directory, not a file"
    assert await refused("huge.ipynb", 413) == f"Notebook is larger than 64 MiB: {home / 'huge.ipynb'}"
    assert await refused(str(tmp_path / "outside.ipynb"), 403) == "Path is outside the allowed file root"
    assert await refused("../outside.ipynb", 403) == "Path is outside the allowed file root"
    assert await refused("a\0b", 400) == "Path must not contain NUL bytes"
    missing_path = await api.json("POST", "/notebooks", status=422, json={})
    assert missing_path["detail"][0]["loc"] == ["body", "path"]
    await api.json("POST", "/notebooks", status=401, auth=False, json={"path": "x.ipynb"})


async def test_sessions_belong_to_their_user_and_indexes_are_checked(api: Api, scratch_environment: Path) -> None:
    write_notebook(scratch_environment / "mine.ipynb", "1")
    alice, bob = {"X-User-Id": "alice"}, {"X-User-Id": "bob"}
    session = await open_notebook(api, "mine.ipynb", headers=alice)
    for method, path, body in (("GET", "", None), ("POST", "/execute", {"cell_index": 0}),
                               ("POST", "/interrupt", None), ("DELETE", "", None)):
        for stranger in (bob, {}):
            reply = await api.json(method, f"/notebooks/{session}{path}", status=404, headers=stranger, json=body)
            assert reply == {"detail": "Session not found"}
    for index in (1, -1, 10**6):
        assert await api.json("POST", f"/notebooks/{session}/execute", status=400, headers=alice,
                              json={"cell_index": index}) == {"detail": f"cell_index {index} out of range (0..0)"}
    await api.json("POST", f"/notebooks/{session}/execute", status=422, headers=alice, json={"cell_index": "x"})
    await api.json("GET", "/notebooks/000000000000", status=404, headers=alice)
    # The chat does not matter: the notebook viewer is not tied to one.
    assert (await run_cell(api, session, 0, headers={**alice, "X-Session-Id": "other-chat"}))["status"] == "ok"


async def test_no_kernel_that_can_start_is_a_clear_500_and_leaves_no_process(
        api_with: ApiFactory, scratch_environment: Path) -> None:
    api = await api_with(notebook_start_timeout=2.0)
    install_kernelspec(scratch_environment, "gone", ["/nonexistent/python", "-f", "{connection_file}"])
    # A Python without ipykernel: -S leaves out site-packages, where ipykernel lives.
    install_kernelspec(scratch_environment, "bare", [sys.executable, "-S", "-m", "ipykernel_launcher",
                                                     "-f", "{connection_file}"])
    install_kernelspec(scratch_environment, "mute", ["sleep", "612.5"])  # starts, never answers
    for name in ("gone", "bare", "mute"):
        write_notebook(scratch_environment / f"{name}.ipynb", "1", kernel=name)

    async def refused(name: str) -> str:
        detail: str = (await api.json("POST", "/notebooks", status=500, json={"path": f"{name}.ipynb"}))["detail"]
        assert detail.startswith(f"Failed to start kernel '{name}': ")
        return detail

    assert "No such file or directory: /nonexistent/python" in await refused("gone")
    assert "No module named ipykernel_launcher" in await refused("bare")
    assert "it did not answer within 2 s" in await refused("mute")
    assert not [pid for pid, fields in process_stats().items() if _command(pid) == ["sleep", "612.5"]
                and fields[0] != "Z"]


def _touch(path: Path) -> Path:
    path.touch()
    return path


def _command(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


async def test_an_unknown_kernel_name_falls_back_to_python3(api: Api, scratch_environment: Path) -> None:
    write_notebook(scratch_environment / "julia.ipynb", "1", kernel="julia-1.10")
    assert (await api.json("POST", "/notebooks", json={"path": "julia.ipynb"}))["kernel"] == "python3"


async def test_the_number_of_live_kernels_is_capped(api_with: ApiFactory, scratch_environment: Path) -> None:
    api = await api_with(max_notebooks=1)
    write_notebook(scratch_environment / "one.ipynb", "1")
    first = await open_notebook(api, "one.ipynb")
    assert await api.json("POST", "/notebooks", status=429, json={"path": "one.ipynb"}) == {
        "detail": "Too many notebook sessions (1): stop one with DELETE /notebooks/{id}"}
    await api.json("DELETE", f"/notebooks/{first}")
    await open_notebook(api, "one.ipynb")


async def test_notebooks_can_be_turned_off(api_with: ApiFactory, scratch_environment: Path) -> None:
    api = await api_with(enable_notebooks=False)
    write_notebook(scratch_environment / "off.ipynb", "1")
    assert (await api.json("GET", "/api/config", auth=False))["features"]["notebooks"] is False
    assert await api.json("POST", "/notebooks", status=404, json={"path": "off.ipynb"}) == {"detail": "Not Found"}
