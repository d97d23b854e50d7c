"""`python -m daemon` and the single executable's entry point.

A worker process (`opentermd __compare ...`, `__extract-text`) goes straight to its job: the command
line's imports (asyncio, the configuration, the server) cost it tens of milliseconds it never uses.
"""

from __future__ import annotations

import sys

from daemon import launcher  # the standard library only

if sys.argv[1:2] == [launcher.ARGUMENT]:  # a frozen binary's daemon/resident.py `launcher_argv`
    raise SystemExit(launcher.main())

from daemon.files import worker

if worker.is_worker_command(sys.argv[1:]):
    raise SystemExit(worker.main(sys.argv[1:]))

from daemon.cli import main  # after the worker check: only the server and the command line need it

raise SystemExit(main())
