"""/notebooks over a real server with real ipykernel kernels: outputs, saving, busy, interrupt, limits."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import nbformat
import pytest

from tests.conftest import Api, ApiFactory, eventually, needs_host_view, process_group_members
from tests.notebooks.helpers import PNG_B64, SHOW_IMAGE, open_notebook, plain, run_cell, write_notebook

SLEEP = "import time\ntime.sleep(600)"


async def test_each_kind_of_output_comes_back_in_nbformat_shape_and_is_saved(
        api: Api, scratch_environment: Path) -> None:
    path = write_notebook(scratch_environment / "work.ipynb", "print('hello')", "1 + 1", SHOW_IMAGE, "1 / 0",
                          markdown="# Title")
    reply = await api.json("POST", "/notebooks", json={"path": "work.ipynb"})
    assert re.fullmatch(r"[0-9a-f]{12}", reply["id"]) and reply == {"id": reply["id"], "kernel": "python3",
                                                                    "status": "ready"}
    session = reply["id"]
    assert await run_cell(api, session, 0) == {"status": "ok", "execution_count": 1, "outputs": [
        {"output_type": "stream", "name": "stdout", "text": "hello\n"}]}
    assert await run_cell(api, session, 1) == {"status": "ok", "execution_count": 2, "outputs": [
        {"output_type": "execute_result", "execution_count": 2, "metadata": {}, "data": {"text/plain": "2"}}]}
    image = await run_cell(api, session, 2)
    assert image["status"] == "ok" and [o["output_type"] for o in image["outputs"]] == ["display_data"]
    assert image["outputs"][0]["data"]["image/png"].strip() == PNG_B64
    error = await run_cell(api, session, 3)
    assert error["status"] == "error" and error["execution_count"] == 4
    [failure] = error["outputs"]
    assert failure["output_type"] == "error" and failure["ename"] == "ZeroDivisionError"
    assert failure["evalue"] == "division by zero" and any("1 / 0" in re.sub(r"\x1b\[[0-9;]*m", "", line)
                                                             for line in failure["traceback"])
    assert await run_cell(api, session, 4) == {"status": "ok", "execution_count": None, "outputs": []}
    assert await api.json("GET", f"/notebooks/{session}") == {
        "id": session, "path": str(path), "kernel": "python3", "status": "ready"}

    saved = nbformat.read(path, as_version=4)
    nbformat.validate(saved)
    assert [cell.get("execution_count") for cell in saved.cells] == [1, 2, 3, 4, None]
    assert saved.cells[0].outputs[0].text == "hello\n"
    assert saved.cells[1].outputs[0].data["text/plain"] == "2"
    assert saved.cells[2].outputs[0].data["image/png"].strip() == PNG_B64
    assert saved.cells[3].outputs[0].ename == "ZeroDivisionError"
    assert not [name for name in os.listdir(scratch_environment) if name.endswith(".tmp")]

    # A new source replaces the cell's, in the reply and in the file; state lives on in the kernel.
    assert plain(await run_cell(api, session, 1, "x = 41\nx + 1")) == "42"
    assert nbformat.read(path, as_version=4).cells[1].source == "x = 41\nx + 1"
    assert plain(await run_cell(api, session, 0, "x")) == "41"


async def test_a_running_cell_makes_the_session_busy_and_an_interrupt_ends_it(
        api: Api, scratch_environment: Path) -> None:
    write_notebook(scratch_environment / "slow.ipynb", SLEEP, "'after'")
    session = await open_notebook(api, "slow.ipynb")
    running = asyncio.ensure_future(run_cell(api, session, 0))

    async def busy() -> bool:
        return bool((await api.json("GET", f"/notebooks/{session}"))["status"] == "busy")

    await eventually(busy)
    assert await api.json("POST", f"/notebooks/{session}/execute", status=409, json={"cell_index": 1}) == {
        "detail": "Cell already executing"}
    assert (await api.json("POST", f"/notebooks/{session}/interrupt"))["id"] == session
    reply = await asyncio.wait_for(running, 30)
    assert reply["status"] == "error" and reply["outputs"][-1]["ename"] == "KeyboardInterrupt"
    assert (await api.json("GET", f"/notebooks/{session}"))["status"] == "ready"
    assert plain(await run_cell(api, session, 1)) == "'after'"


async def test_a_cell_past_the_time_limit_is_interrupted_and_says_so(
        api_with: ApiFactory, scratch_environment: Path) -> None:
    api = await api_with(notebook_cell_timeout=1.0)
    write_notebook(scratch_environment / "limit.ipynb", "kept = 'still here'", SLEEP, "kept")
    session = await open_notebook(api, "limit.ipynb")
    await run_cell(api, session, 0)
    reply = await run_cell(api, session, 1)
    assert reply["status"] == "error"
    assert [o.get("ename") for o in reply["outputs"]] == ["KeyboardInterrupt", "CellTimeoutError"]
    assert reply["outputs"][-1]["evalue"] == "The cell ran past the 1 s limit and was interrupted"
    assert plain(await run_cell(api, session, 2)) == "'still here'"  # interrupted, not restarted


#: Small notebooks are saved on the event loop, large ones in a worker thread (table.INLINE_SAVE_BYTES).
SIZES = pytest.mark.parametrize("padding", [0, 200_000], ids=["small", "large"])


@SIZES
async def test_small_and_large_notebooks_are_saved_with_their_outputs(
        api: Api, scratch_environment: Path, padding: int) -> None:
    path = write_notebook(scratch_environment / "sized.ipynb", "6 * 7", markdown="x" * padding)
    session = await open_notebook(api, path)
    assert plain(await run_cell(api, session, 0)) == "42"
    saved = nbformat.read(path, as_version=4)
    nbformat.validate(saved)
    assert saved.cells[0].outputs[0]["data"]["text/plain"] == "42" and len(saved.cells[1].source) == padding


@SIZES
async def test_a_failed_save_is_reported_and_leaves_what_is_there(
        api: Api, scratch_environment: Path, padding: int) -> None:
    path = write_notebook(scratch_environment / "swap.ipynb", "1 + 1", markdown="x" * padding)
    session = await open_notebook(api, path)
    path.unlink()
    os.mkfifo(path)  # never replaced by a write, never opened by one
    reply = await run_cell(api, session, 0)
    assert reply["status"] == "ok" and plain(reply) == "2"
    assert reply["save_error"].startswith("The notebook was not saved: ") and "regular file" in reply["save_error"]
    assert path.is_fifo()


async def test_kernels_get_the_commands_environment_and_the_notebooks_folder(
        aiohttp_client: object, tmp_path: Path, scratch_environment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.app import create_app
    from tests.conftest import make_config

    monkeypatch.setenv("OPEN_TERMINAL_API_KEY", "must-not-leak")
    api = Api(await aiohttp_client(create_app(make_config(tmp_path))))  # type: ignore[operator]
    (scratch_environment / "sub").mkdir()
    write_notebook(scratch_environment / "sub" / "env.ipynb",
                   "import os\nrepr(([k for k in os.environ if k.startswith('OPEN_TERMINAL')], os.getcwd()))")
    session = await open_notebook(api, "sub/env.ipynb")
    # repr() in the cell: IPython's pretty printer wraps a result past 79 characters (long tmp paths).
    assert plain(await run_cell(api, session, 0)) == repr(repr(([], str(scratch_environment / "sub"))))


@needs_host_view("the cell reads its process group id, which a pid namespace renumbers")
async def test_delete_kills_the_kernels_whole_process_group(api: Api, scratch_environment: Path) -> None:
    write_notebook(scratch_environment / "group.ipynb",
                   "import os, subprocess\nchild = subprocess.Popen(['sleep', '600'])\nos.getpgid(0)")
    session = await open_notebook(api, "group.ipynb")
    group = int(plain(await run_cell(api, session, 0)))
    assert len(process_group_members(group)) >= 2  # the kernel and the sleep it started
    assert await api.json("DELETE", f"/notebooks/{session}") == {"status": "stopped"}
    await eventually(lambda: not process_group_members(group))
    assert await api.json("GET", f"/notebooks/{session}", status=404) == {"detail": "Session not found"}
    await api.json("DELETE", f"/notebooks/{session}", status=404)
