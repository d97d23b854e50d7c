"""A kernel slow to start (a busy machine) still starts: the kernel_info requests sent while it was
coming up are answered in order, and an answer to any of them counts. Waiting for the newest only
(one request sent per answer read) never caught up, and the start failed after its whole timeout."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import ApiFactory
from tests.notebooks.helpers import install_kernelspec, open_notebook, run_cell, write_notebook

#: Seconds the kernel waits before it starts: several kernel_info requests (one a second) queue up.
SLOW_START = 3.5


async def test_a_kernel_that_answers_only_after_several_requests_still_starts(
        api_with: ApiFactory, scratch_environment: Path) -> None:
    api = await api_with(notebook_start_timeout=30.0)
    late = f'sleep {SLOW_START}; exec "$0" -m ipykernel_launcher -f "$@"'
    install_kernelspec(scratch_environment, "late", ["/bin/sh", "-c", late, sys.executable, "{connection_file}"])
    write_notebook(scratch_environment / "late.ipynb", "6 * 7", kernel="late")
    session = await open_notebook(api, "late.ipynb")
    reply = await run_cell(api, session, 0)
    assert reply["status"] == "ok", reply
    assert "42" in str(reply["outputs"]), reply
